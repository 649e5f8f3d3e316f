r"""The 13 regions of the one-hidden-layer plane's stable strip, and what tells a region from
its neighbours (see `widelimits.limits.classify` for the map and its conventions).

A point is given by :math:`(q_\sigma, \tilde q)`, or by :math:`(q_\sigma, s)` with
:math:`s = q_\sigma + \tilde q`; exponents are exact `Fraction` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Region", "REGIONS", "plane_region", "neighbours", "word"]

_HALF = Fraction(1, 2)


@dataclass(frozen=True)
class Region:
    """One of the 13 regions of the stable strip (the table in `widelimits.limits.classify`)."""

    index: int
    name: str
    kind: str  # "point" | "edge" | "ray" | "cell"
    point: tuple[float, float]  # a representative (q_sigma, q_tilde)


REGIONS: list[Region] = [
    Region(1, "upper-left ray", "ray", (-1.5, 1.5)),
    Region(2, "MF point", "point", (-1.0, 1.0)),
    Region(3, "upper edge between MF and sym-default", "edge", (-0.75, 0.75)),
    Region(4, "sym-default point", "point", (-0.5, 0.5)),
    Region(5, "upper-right ray", "ray", (0.0, 0.0)),
    Region(6, "cell left of the kernel line", "cell", (-1.5, 1.25)),
    Region(7, "kernel line between NTK and MF", "edge", (-0.75, 0.5)),
    Region(8, "cell between the kernel and logits lines", "cell", (-0.625, 0.375)),
    Region(9, "logits line between NTK and sym-default", "edge", (-0.5, 0.25)),
    Region(10, "cell right of the logits line", "cell", (0.0, -0.25)),
    Region(11, "lower-left ray", "ray", (-1.0, 0.5)),
    Region(12, "NTK point", "point", (-0.5, 0.0)),
    Region(13, "lower-right ray", "ray", (0.0, -0.5)),
]


def word(exponent: Fraction) -> str:
    """The order of a width exponent in words: "vanish", "bounded" or "diverge"."""
    return "vanish" if exponent < 0 else "bounded" if exponent == 0 else "diverge"


def plane_region(q_sigma: Fraction, q_tilde: Fraction) -> tuple[int, str] | None:
    """(index, name) of the region of a point of the strip, None outside it."""
    s = q_sigma + q_tilde
    if s > 0 or s < -_HALF:
        return None
    kernel_line = -1 - s  # q_sigma of the kernel line at this height
    if s == 0:
        row = [(q_sigma < -1, 1), (q_sigma == -1, 2), (q_sigma < -_HALF, 3), (q_sigma == -_HALF, 4)]
        default = 5
    elif s == -_HALF:
        row = [(q_sigma < -_HALF, 11), (q_sigma == -_HALF, 12)]
        default = 13
    else:
        row = [
            (q_sigma < kernel_line, 6),
            (q_sigma == kernel_line, 7),
            (q_sigma < -_HALF, 8),
            (q_sigma == -_HALF, 9),
        ]
        default = 10
    index = next((i for cond, i in row if cond), default)
    return index, REGIONS[index - 1].name


def _properties_of(q_sigma: Fraction, s: Fraction) -> tuple:
    """The four properties that tell the 13 regions apart, at (q_sigma, s) in the strip."""
    return (
        word(q_sigma + _HALF),
        word(s + 1 + q_sigma),
        s == 0,
        s == -_HALF,
    )


def _phrase(i: int, value) -> str:
    """Property ``i`` of `_properties_of` in words."""
    if i == 0:
        return f"logits {value}"
    if i == 1:
        return f"kernel {value}"
    if i == 2:
        return "kernel evolving" if value else "kernel frozen"
    return "initial logits kept" if value else "initial logits dropped"


def _instead(new: str, old: str) -> str:
    """"kernel frozen instead of evolving": the words both phrases start with, once."""
    *subject, word = new.split(" ")
    return f"{new} instead of {old.split(' ')[-1]}" if old.startswith(" ".join(subject)) else (
        f"{new} instead of {old}")  # fmt: skip


def _next(critical: list[Fraction], x: Fraction, up: bool) -> Fraction | None:
    """The nearest place in a direction where the region changes: the next critical value if
    ``x`` is inside an interval, a point inside the next interval if ``x`` is critical."""
    beyond = sorted(v for v in critical if (v > x if up else v < x))
    if x not in critical:
        return (beyond[0] if up else beyond[-1]) if beyond else None
    if not beyond:
        return x + (1 if up else -1)
    edge = beyond[0] if up else beyond[-1]
    return (x + edge) / 2


def neighbours(q_sigma: Fraction, q_tilde: Fraction) -> str:
    """One line: which properties change in each direction (q_sigma at fixed s, and s at fixed
    q_sigma), with the region reached."""
    s = q_sigma + q_tilde
    here = _properties_of(q_sigma, s)
    horizontal = [-1 - s, -_HALF]
    vertical = [Fraction(0), -_HALF] + ([-1 - q_sigma] if -_HALF < -1 - q_sigma < 0 else [])
    parts = []
    moves = (("left", horizontal, q_sigma, False), ("right", horizontal, q_sigma, True),
             ("down", vertical, s, False), ("up", vertical, s, True))  # fmt: skip
    for label, critical, x, up in moves:
        y = _next(critical, x, up)
        if y is None:
            continue
        qs, ss = (y, s) if label in ("left", "right") else (q_sigma, y)
        if ss > 0 or ss < -_HALF:
            edge = "diverging (s > 0)" if ss > 0 else "stagnating (s < -1/2)"
            parts.append(f"{label}: {edge}")
            continue
        there = _properties_of(qs, ss)
        index = plane_region(qs, ss - qs)[0]
        changes = [
            _instead(_phrase(i, b), _phrase(i, a))
            for i, (a, b) in enumerate(zip(here, there, strict=True))
            if a != b
        ]
        parts.append(f"{label}: region {index} ({', '.join(changes)})")
    return "; ".join(parts)
