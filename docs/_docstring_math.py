"""Find formulas written as plain text in docstrings: they must be :math: or ``.. math::``.

Used by ``conf.py`` (the documentation build fails on a finding) and by
``tests/test_docstring_math.py``.  The text checked is what remains of a docstring once maths,
literals, cross-references, directives and literal blocks are taken out, so a formula inside
``:math:`...```, a ``.. math::`` block, ````code```` or a ``::`` block never counts.  The patterns
are ones that ordinary prose does not contain (a ``^``, ``sqrt(``, ``||``, ``sigma_w``, ``Theta``,
``Tdot``, ``k11``/``k12``/``k22``, ``N(0, ``), so a finding is a formula left unmarked.
"""

from __future__ import annotations

import re

PATTERNS = {
    "a power or transpose written with ^": re.compile(r"[\w)\]}]\^[\w({-]"),
    "sqrt(...)": re.compile(r"\bsqrt\("),
    "a norm written with ||": re.compile(r"\|\|"),
    "sigma_w / sigma_b": re.compile(r"\bsigma_[wb]\b"),
    "Theta": re.compile(r"\bTheta\b"),
    "Tdot": re.compile(r"\bTdot\b"),
    "k11 / k12 / k22": re.compile(r"\bk(?:11|12|22)\b"),
    "N(0, ...)": re.compile(r"\bN\(0,"),
}

# roles (:math:`..`, :class:`..`), ``literals`` and `references`; spans may cross lines
_INLINE = re.compile(r":[\w:.+-]+:`[^`]*`|``.+?``|`[^`]*`", re.S)
# napoleon's field lists: ":param W_std:", ":type x:", ":raises ValueError:"
_FIELD = re.compile(r"^\s*:(?:param|type|raises|returns|rtype|ivar|var|cvar)\b[^:]*:", re.M)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def prose(lines: list[str]) -> str:
    """The text of reStructuredText ``lines`` without directives, literal blocks and markup."""
    kept: list[str] = []
    skip_deeper_than: int | None = None
    for line in lines:
        if skip_deeper_than is not None:
            if not line.strip() or _indent(line) > skip_deeper_than:
                continue
            skip_deeper_than = None
        stripped = line.strip()
        if stripped.startswith(".. ") or stripped.startswith(">>>"):
            skip_deeper_than = _indent(line)  # a directive (math, code, note) and its body
            continue
        if stripped.endswith("::"):
            kept.append(line.rstrip()[:-2])  # the paragraph introduces a literal block
            skip_deeper_than = _indent(line)
            continue
        kept.append(line)
    text = "\n".join(kept)
    return _FIELD.sub(" ", _INLINE.sub(" ", text))


def plain_formulas(lines: list[str]) -> list[str]:
    """One message per unmarked formula pattern found in ``lines`` (rST, after napoleon)."""
    text = prose(lines)
    found = []
    for what, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            start = text.rfind("\n", 0, match.start()) + 1
            end = text.find("\n", match.end())
            context = text[start : end if end >= 0 else len(text)].strip()
            found.append(f"{what}: {context!r}")
    return found


# Docstrings converted by another change still in flight; drop a name here once its docstrings
# mark their formulas (the check then covers it like every other module).
PENDING: tuple[str, ...] = ()


def is_pending(name: str, obj: object = None) -> bool:
    """Whether the documented ``name`` (or ``obj``'s module) is exempt for now (`PENDING`)."""
    module = getattr(obj, "__name__" if isinstance(obj, type(re)) else "__module__", None) or ""
    return any(n == p or n.startswith(p + ".") for p in PENDING for n in (name, str(module)))
