r"""Where a width scaling lands on the map of infinite-width limits.

Two descriptions of how hyperparameters scale with the width are understood here.

**The one-hidden-layer plane** (Golikov, "Dynamically stable infinite-width limits of neural
classifiers"). The network is f(x) = sum_r a_r phi(w_r . x) with d hidden units; relative to a
reference width d*, rho = d / d*, and

    std(a) = sigma* rho^{q_sigma},   std(w) fixed,
    eta_w = eta* rho^{q_tilde},      eta_a = eta* rho^{q_tilde + 2 q_sigma}.

Sign convention: the exponents enter with a *plus* sign. This is widelimits' convention; read
the paper's formulas with that in mind before comparing signs.
As rho -> infinity (orders derived from these scalings):

    logits at init                  rho^{q_sigma + 1/2}
    tangent kernel at init          rho^{q_tilde + 2 q_sigma + 1}
    relative weight change / step   rho^{q_tilde + q_sigma}
    relative logit change / step    rho^{q_tilde + q_sigma + 1/2}   (kernel over logits)

Write s = q_sigma + q_tilde. The dynamically stable strip is -1/2 <= s <= 0: above it (s > 0)
the weights move by a diverging relative amount per step ("diverging"); below it (s < -1/2)
the logits move by a vanishing relative amount ("stagnating"). In coordinates (q_sigma, s) the
strip is the horizontal band s in [-1/2, 0], and three lines cut it:

- the logits line  q_sigma = -1/2          (logits Theta(1) at init), from NTK to sym-default;
- the kernel line  q_sigma = -1 - s        (kernel Theta(1) at init), from NTK to MF;
- the upper edge   s = 0                   (the kernel evolves during training).

Both inner lines meet the lower edge s = -1/2 at the same point, NTK = (-1/2, 0); on the upper
edge they end at MF = (-1, 1) and sym-default = (-1/2, 1/2). The pieces are 13 regions, numbered
row by row from the upper edge down, left to right (`REGIONS` has a representative of each):

====  =========================================  ===========  =======  =======  ========  ====
 #    region                                     (qs, qt)     logits   kernel   evolves   init
====  =========================================  ===========  =======  =======  ========  ====
 1    upper-left ray                             (-3/2, 3/2)  vanish   vanish   yes       no
 2    MF point                                   (-1, 1)      vanish   bounded  yes       no
 3    upper edge between MF and sym-default      (-3/4, 3/4)  vanish   diverge  yes       no
 4    sym-default point                          (-1/2, 1/2)  bounded  diverge  yes       no
 5    upper-right ray                            (0, 0)       diverge  diverge  yes       no
 6    cell left of the kernel line               (-3/2, 5/4)  vanish   vanish   no        no
 7    kernel line between NTK and MF             (-3/4, 1/2)  vanish   bounded  no        no
 8    cell between the kernel and logits lines   (-5/8, 3/8)  vanish   diverge  no        no
 9    logits line between NTK and sym-default    (-1/2, 1/4)  bounded  diverge  no        no
 10   cell right of the logits line              (0, -1/4)    diverge  diverge  no        no
 11   lower-left ray                             (-1, 1/2)    vanish   vanish   no        yes
 12   NTK point                                  (-1/2, 0)    bounded  bounded  no        yes
 13   lower-right ray                            (0, -1/2)    diverge  diverge  no        yes
====  =========================================  ===========  =======  =======  ========  ====

The last column, ``init_logits_matter``, is s == -1/2: only on the lower edge are the logit
increments of the same order as the initial logits (relative logit change Theta(1)), so the
random initial function survives in the (normalized) limit model; inside the strip the
increments dominate it. It is what separates the lower rays 11 and 13 from the open cells 6 and
10, which share the other three properties. The three properties (logits, kernel, evolving)
alone are sometimes said to give each of the 13 regions its own combination; with the exponent
formulas above that holds for 11 of them, and the fourth property is needed for those two pairs.
No stable point has all three finite-width-like properties (bounded non-vanishing logits,
bounded non-vanishing kernel, evolving kernel): they require q_sigma = -1/2, s = -1/2 and s = 0.

**abc-parametrizations** (Yang & Hu, Tensor Programs IV). Layer l = 1..L+1 of an MLP with L
hidden layers uses W^l = n^{-a_l} w^l, w^l ~ N(0, n^{-2 b_l}) and SGD rate eta n^{-c_l}. With one
global c

    r = min(a_{L+1} + b_{L+1}, 2 a_{L+1} + c) + c - 1 + min_{l<=L} [2 a_l + 1(l = 1)];

stable iff a_1 + b_1 = 0, a_l + b_l = 1/2 (1 < l <= L), a_{L+1} + b_{L+1} >= 1/2, r >= 0,
2 a_{L+1} + c >= 1 and a_{L+1} + b_{L+1} + r >= 1; nontrivial iff a_{L+1} + b_{L+1} + r = 1 or
2 a_{L+1} + c = 1; feature learning iff stable and r = 0; kernel regime iff stable, nontrivial
and r > 0. With per-layer c_l we use the per-layer form (Yang & Hu treat per-layer learning
rates in their appendix; this form is re-derived here from the same bookkeeping, the update of
layer l acting on a width-n vector contributes n^{1 - 2 a_l - c_l}, on the input n^{-2 a_1 - c_1}):

    r = min(a_{L+1} + b_{L+1}, 2 a_{L+1} + c_{L+1}) - 1 + min_{l<=L} [2 a_l + c_l + 1(l = 1)],

and c_{L+1} replaces c in the other conditions. All of this is for SGD: abc exponents meant
for Adam (e.g. ``Scaling.mup(optimizer="adam")``) get no meaningful TP verdict here.
The per-layer r equals the global one when all c_l are equal, and it is invariant under the
per-layer symmetry (a_l + t_l, b_l - t_l, c_l - 2 t_l), which leaves SGD trajectories unchanged
(so is the global one under a common t).

A one-hidden-layer abc (two layers) lies in the plane when, after the symmetry sets a_l = 0,
b_1 = 0 and c_2 = c_1 + 2 b_2; then q_sigma = -b_2 and q_tilde = -c_1. In invariant form:
a_1 + b_1 = 0, q_sigma = -(a_2 + b_2), q_tilde = -(2 a_1 + c_1) and 2 a_2 + c_2 =
2 a_1 + c_1 + 2 (a_2 + b_2). For such an abc `classify` reports the plane region too; NTK, MF and
one-hidden-layer muP land on the NTK and MF points. The standard parametrization with one rate
1/n is not in the plane (its readout rate is rho^{-1}, the plane's would be rho^{-2}).

For an abc that is not in the plane, the plane fields are None and ``stable``/``verdict`` come
from Tensor Programs: "diverging" when not TP-stable, "stagnating" when stable but trivial.
Note that the two notions of stability differ: the plane's is about logits normalized by their
own scale (classifiers), so e.g. the upper-right ray is plane-stable but not TP-stable.

Exponents are handled as exact fractions (floats go through ``Fraction.limit_denominator``),
so equalities such as s == 0 are exact.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction

__all__ = ["NAMED_POINTS", "REGIONS", "Classification", "Region", "classify"]

NAMED_POINTS: dict[str, tuple[float, float]] = {
    "MF": (-1, 1),
    "NTK": (-0.5, 0),
    "sym-default": (-0.5, 0.5),
    "diverge": (1, 1),
    "stagnate": (-1, -1),
}

_MAX_DENOMINATOR = 1_000_000
_HALF = Fraction(1, 2)


@dataclass(frozen=True)
class Region:
    """One of the 13 regions of the stable strip (module docstring table)."""

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


@dataclass(frozen=True)
class Classification:
    """What `classify` found. Exponent fields are exact `Fraction` values (None where undefined).

    Plane fields (None for an abc outside the plane): ``q_sigma``, ``q_tilde``, ``region``,
    ``region_index`` (also None when unstable), the exponents of logits and kernel at init with
    their words ("vanish" | "bounded" | "diverge"), ``kernel_evolves`` (s == 0),
    ``feature_learning`` (the same as kernel_evolves in the plane: hidden weights move by a
    relative Theta(1)), ``weight_change_exponent`` (s), ``logit_change_exponent`` (s + 1/2) and
    ``init_logits_matter`` (s == -1/2). Tensor-Programs fields (None unless the input was an abc):
    ``r``, ``tp_stable``, ``tp_nontrivial``, ``tp_feature_learning``, ``tp_kernel_regime``.
    """

    stable: bool
    verdict: str
    region: str | None = None
    region_index: int | None = None
    q_sigma: Fraction | None = None
    q_tilde: Fraction | None = None
    logits_exponent: Fraction | None = None
    logits: str | None = None
    kernel_exponent: Fraction | None = None
    kernel: str | None = None
    kernel_evolves: bool | None = None
    feature_learning: bool | None = None
    weight_change_exponent: Fraction | None = None
    logit_change_exponent: Fraction | None = None
    init_logits_matter: bool | None = None
    r: Fraction | None = None
    tp_stable: bool | None = None
    tp_nontrivial: bool | None = None
    tp_feature_learning: bool | None = None
    tp_kernel_regime: bool | None = None

    def properties(self) -> dict:
        """All fields as a plain dict; exact fractions become floats (JSON-friendly)."""
        return {k: float(v) if isinstance(v, Fraction) else v for k, v in asdict(self).items()}

    def __str__(self) -> str:
        parts = []
        if self.q_sigma is not None:
            parts.append(f"(q_sigma, q_tilde) = ({_fmt(self.q_sigma)}, {_fmt(self.q_tilde)})")
        parts.append(self.verdict)
        if self.region is not None:
            parts.append(f"region {self.region_index} ({self.region})")
        if self.logits is not None:
            parts.append(
                f"logits {self.logits} (rho^{_fmt(self.logits_exponent)}), "
                f"kernel {self.kernel} (rho^{_fmt(self.kernel_exponent)}), "
                f"kernel {'evolves' if self.kernel_evolves else 'frozen'}"
            )
        if self.r is not None:
            regime = (
                "feature learning"
                if self.tp_feature_learning
                else "kernel regime"
                if self.tp_kernel_regime
                else "trivial"
                if self.tp_stable
                else "unstable"
            )
            parts.append(f"TP: r = {_fmt(self.r)}, {regime}")
        return "; ".join(parts)


def _fmt(x: Fraction | None) -> str:
    return "None" if x is None else str(x)


# ------------------------------------------------------------------------------------ numbers
def _exact(x, what: str) -> Fraction:
    """A finite real number as an exact Fraction (floats via limit_denominator)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{what} must be a real number, got {x!r}")
    if isinstance(x, numbers.Integral):
        return Fraction(int(x))
    try:  # floats, numpy and torch scalars
        value = float(x)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what} must be a real number, got {x!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {x!r}")
    return Fraction(value).limit_denominator(_MAX_DENOMINATOR)


def _word(exponent: Fraction) -> str:
    return "vanish" if exponent < 0 else "bounded" if exponent == 0 else "diverge"


def _sequence(values, what: str) -> list:
    if isinstance(values, (str, bytes, Mapping)):
        raise TypeError(f"{what} must be a sequence of numbers, got {values!r}")
    try:
        return list(values)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of numbers, got {values!r}") from None


# ---------------------------------------------------------------------------------- the plane
def _plane_region(q_sigma: Fraction, q_tilde: Fraction) -> tuple[int, str] | None:
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


def _plane_fields(q_sigma: Fraction, q_tilde: Fraction) -> dict:
    s = q_sigma + q_tilde
    logits_exponent = q_sigma + _HALF
    kernel_exponent = q_tilde + 2 * q_sigma + 1
    stable = -_HALF <= s <= 0
    found = _plane_region(q_sigma, q_tilde)
    return dict(
        stable=stable,
        verdict="stable" if stable else "diverging" if s > 0 else "stagnating",
        region=None if found is None else found[1],
        region_index=None if found is None else found[0],
        q_sigma=q_sigma,
        q_tilde=q_tilde,
        logits_exponent=logits_exponent,
        logits=_word(logits_exponent),
        kernel_exponent=kernel_exponent,
        kernel=_word(kernel_exponent),
        kernel_evolves=s >= 0,
        feature_learning=s >= 0,
        weight_change_exponent=s,
        logit_change_exponent=s + _HALF,
        init_logits_matter=s <= -_HALF,
    )


# ----------------------------------------------------------------------------------- abc side
def _abc_exponents(a, b, c) -> tuple[list[Fraction], list[Fraction], list[Fraction]]:
    a = [_exact(x, f"a[{i}]") for i, x in enumerate(_sequence(a, "a"))]
    n = len(a)
    if n < 2:
        raise ValueError(
            f"an abc-parametrization needs at least 2 layers (one hidden layer and the "
            f"readout), got {n} entries in a"
        )
    b = [_exact(x, f"b[{i}]") for i, x in enumerate(_sequence(b, "b"))]
    if len(b) != n:
        raise ValueError(f"b has {len(b)} entries but a has {n}: one exponent per layer")
    if isinstance(c, (numbers.Real, Fraction)) and not isinstance(c, bool):
        c = [_exact(c, "c")] * n  # one global learning-rate exponent
    else:
        c = [_exact(x, f"c[{i}]") for i, x in enumerate(_sequence(c, "c"))]
        if len(c) != n:
            raise ValueError(
                f"c has {len(c)} entries but a has {n}: one exponent per layer (or one number)"
            )
    return a, b, c


def _tp_fields(a: list[Fraction], b: list[Fraction], c: list[Fraction]) -> dict:
    last = len(a) - 1  # layer L + 1 (0-based)
    out_ab = a[last] + b[last]
    out_ac = 2 * a[last] + c[last]
    hidden = min(2 * a[i] + c[i] + (1 if i == 0 else 0) for i in range(last))
    r = min(out_ab, out_ac) - 1 + hidden
    stable = (
        a[0] + b[0] == 0
        and all(a[i] + b[i] == _HALF for i in range(1, last))
        and out_ab >= _HALF
        and r >= 0
        and out_ac >= 1
        and out_ab + r >= 1
    )
    nontrivial = out_ab + r == 1 or out_ac == 1
    return dict(
        r=r,
        tp_stable=stable,
        tp_nontrivial=nontrivial,
        tp_feature_learning=stable and r == 0,
        tp_kernel_regime=stable and nontrivial and r > 0,
    )


def _abc_plane_coordinates(a, b, c) -> tuple[Fraction, Fraction] | None:
    if len(a) != 2 or a[0] + b[0] != 0:
        return None
    q_sigma = -(a[1] + b[1])
    q_tilde = -(2 * a[0] + c[0])
    if 2 * a[1] + c[1] != -(q_tilde + 2 * q_sigma):
        return None
    return q_sigma, q_tilde


def _classify_abc(a, b, c) -> Classification:
    a, b, c = _abc_exponents(a, b, c)
    tp = _tp_fields(a, b, c)
    coords = _abc_plane_coordinates(a, b, c)
    if coords is not None:
        return Classification(**_plane_fields(*coords), **tp)
    if not tp["tp_stable"]:
        verdict = "diverging"
    elif not tp["tp_nontrivial"]:
        verdict = "stagnating"
    else:
        verdict = "stable"
    return Classification(stable=verdict == "stable", verdict=verdict, **tp)


# ------------------------------------------------------------------------------------- public
def classify(scaling) -> Classification:
    """Classify a width scaling (module docstring for the map and the conventions).

    ``scaling`` is one of:

    - a pair ``(q_sigma, q_tilde)`` of the one-hidden-layer plane (plus-sign convention:
      std(a) = sigma* rho^{q_sigma}, eta_w = eta* rho^{q_tilde}, eta_a = eta* rho^{q_tilde +
      2 q_sigma});
    - an object with per-layer sequences ``a``, ``b``, ``c`` (an abc-parametrization, layer 1
      reads the inputs; ``c`` may be one number, a global learning-rate exponent) — also a
      mapping with those keys. The Tensor-Programs fields are filled, and the plane fields too
      when a one-hidden-layer abc lies in the plane;
    - an object (or mapping) with ``q_sigma`` and ``q_tilde``.

    Raises TypeError for unsupported objects or non-numbers and ValueError for non-finite
    numbers or inconsistent lengths of a, b, c.
    """
    if isinstance(scaling, Mapping):
        if {"a", "b", "c"} <= scaling.keys():
            return _classify_abc(scaling["a"], scaling["b"], scaling["c"])
        if {"q_sigma", "q_tilde"} <= scaling.keys():
            return _classify_plane(scaling["q_sigma"], scaling["q_tilde"])
        raise TypeError(
            "a mapping must have keys 'a', 'b', 'c' or 'q_sigma', 'q_tilde'; "
            f"got {sorted(map(str, scaling.keys()))}"
        )
    if all(hasattr(scaling, k) for k in ("a", "b", "c")):
        if getattr(scaling, "optimizer", "sgd") != "sgd":
            raise ValueError(
                "classify's stability conditions are those of SGD; this scaling's learning-rate "
                f"exponents are meant for {scaling.optimizer!r}, where they do not apply"
            )
        return _classify_abc(scaling.a, scaling.b, scaling.c)
    if hasattr(scaling, "q_sigma") and hasattr(scaling, "q_tilde"):
        return _classify_plane(scaling.q_sigma, scaling.q_tilde)
    if isinstance(scaling, (tuple, list)):
        if len(scaling) != 2:
            raise ValueError(
                f"a plane scaling is a pair (q_sigma, q_tilde), got {len(scaling)} numbers"
            )
        return _classify_plane(*scaling)
    if hasattr(scaling, "__len__") and hasattr(scaling, "__getitem__") and len(scaling) == 2:
        if not isinstance(scaling, (str, bytes)):
            return _classify_plane(scaling[0], scaling[1])  # e.g. a numpy array
    raise TypeError(
        "classify expects a pair (q_sigma, q_tilde), an object with attributes q_sigma and "
        f"q_tilde, or an object with per-layer sequences a, b, c; got {type(scaling).__name__}"
    )


def _classify_plane(q_sigma, q_tilde) -> Classification:
    return Classification(**_plane_fields(_exact(q_sigma, "q_sigma"), _exact(q_tilde, "q_tilde")))
