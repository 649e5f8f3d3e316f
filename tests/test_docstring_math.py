"""Formulas in public docstrings are marked up as maths, so the API reference typesets them.

The documentation build runs the same check (docs/conf.py) on exactly the docstrings it renders;
this test gives the answer in a second, over the same public names (every ``__all__`` of the
API modules and the documented members of their classes), after napoleon's conversion.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import types
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
from sphinx.ext.napoleon import Config  # noqa: E402
from sphinx.ext.napoleon.docstring import GoogleDocstring  # noqa: E402
from sphinx.pycode import ModuleAnalyzer  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "_docstring_math", Path(__file__).resolve().parents[1] / "docs" / "_docstring_math.py"
)
docmath = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docmath)

API_MODULES = [
    "widelimits", "widelimits.finite", "widelimits.predict", "widelimits.limits",
    "widelimits.linear", "widelimits.scale", "widelimits.sklearn", "widelimits.from_module",
    "widelimits.testing",
]  # fmt: skip


def _as_rst(doc: str) -> list[str]:
    return GoogleDocstring(inspect.cleandoc(doc), Config(napoleon_use_rtype=False)).lines()


def _public_docstrings() -> dict[str, tuple[object, str]]:
    """Every documented public name and its docstring: modules, __all__ names, class members
    (methods, properties, and attributes with a docstring under them, as autodoc reads them)."""
    found: dict[str, tuple[object, str]] = {}
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        found[module_name] = (module, module.__doc__ or "")
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            found.setdefault(f"{module_name}.{name}", (value, value.__doc__ or ""))
            if inspect.isclass(value):
                for member, attr in vars(value).items():
                    if member.startswith("_"):
                        continue
                    if isinstance(attr, (staticmethod, classmethod)):
                        attr = attr.__func__
                    if isinstance(attr, property):
                        attr = attr.fget
                    if inspect.isfunction(attr) and attr.__doc__:
                        found.setdefault(f"{module_name}.{name}.{member}", (attr, attr.__doc__))
                attr_docs = ModuleAnalyzer.for_module(value.__module__).find_attr_docs()
                for (owner, member), lines in attr_docs.items():
                    if owner == value.__qualname__ and not member.startswith("_"):
                        found.setdefault(
                            f"{module_name}.{name}.{member}", (value, "\n".join(lines))
                        )
    return found


def test_public_docstrings_mark_their_formulas():
    docstrings = _public_docstrings()
    assert len(docstrings) > 150  # the walk really reaches the API (about 190 names today)
    problems = [
        f"{name}: {problem}"
        for name, (obj, doc) in docstrings.items()
        if doc and not docmath.is_pending(name, obj)
        for problem in docmath.plain_formulas(_as_rst(doc))
    ]
    assert not problems, "formulas in plain text (use :math:`...` or '.. math::'):\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize(
    "text",
    [
        "Kernel map: K' = sigma_w^2 K + sigma_b^2.",
        "The scale sqrt(k11 k22) of an entry.",
        "Frobenius error ||a - b|| / ||b||.",
        "the outputs f_0 ~ N(0, K) at initialization",
        "Returns (T, Tdot) for each entry.",
        "multiplies the NTK, Theta' = Tdot * Theta",
    ],
)
def test_plain_formulas_are_found(text):
    assert docmath.plain_formulas(_as_rst(f"Summary.\n\n{text}\n"))


@pytest.mark.parametrize(
    "text",
    [
        r"Kernel map: :math:`K' = \sigma_w^2 K + \sigma_b^2` and :class:`widelimits.Dense`.",
        "Displayed:\n\n.. math::\n\n    K' = \\sigma_w^2 K + \\sigma_b^2\n\nafter it.",
        "A table::\n\n    fn    k11, k22 <= 1\n    tanh  7e-9\n\nafter it.",
        "Code ``2**20 // degree**2`` and ``x^T``, a `Layer`, plain words about a delta method.",
        "Args:\n    sigma_w: a parameter named like a symbol.\n",
        ">>> k = net.kernel(x)  # Theta^2\n",
    ],
)
def test_marked_formulas_and_code_are_not_flagged(text):
    assert docmath.plain_formulas(_as_rst(f"Summary.\n\n{text}\n")) == []


def test_pending_modules_are_named_exactly():
    assert docmath.is_pending("widelimits.limits.classify") == bool(docmath.PENDING)
    assert not docmath.is_pending("widelimits.linear.fit_power")
    assert not docmath.is_pending("widelimits.limitsx", types.SimpleNamespace(__module__="x"))
