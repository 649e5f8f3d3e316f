r"""Where a width scaling lands on the map of infinite-width limits.

Two descriptions of how hyperparameters scale with the width are understood here.

**The one-hidden-layer plane** (Golikov, "Dynamically stable infinite-width limits of neural
classifiers"). The network is :math:`f(x) = \sum_r a_r \phi(w_r \cdot x)` with :math:`d` hidden
units; relative to a reference width :math:`d^*`, :math:`\rho = d / d^*`, and

.. math::

    \operatorname{std}(a) = \sigma^* \rho^{q_\sigma}, \quad \operatorname{std}(w) \text{ fixed},
    \quad \eta_w = \eta^* \rho^{\tilde q}, \quad \eta_a = \eta^* \rho^{\tilde q + 2 q_\sigma}.

Sign convention: the exponents enter with a *plus* sign. This is widelimits' convention; read
the paper's formulas with that in mind before comparing signs. With
:math:`s = q_\sigma + \tilde q`, the orders as :math:`\rho \to \infty` are

- logits at init :math:`\rho^{\lambda}`, :math:`\lambda = q_\sigma + 1/2`;
- learning-rate-weighted tangent kernel at init :math:`\rho^{\kappa}`,
  :math:`\kappa = \tilde q + 2 q_\sigma + 1`;
- relative weight change per step :math:`\rho^{s}\, \overline{|\ell'|}` and logit change per
  step :math:`\rho^{\kappa}\, \overline{|\ell'|}` (:math:`\overline{|\ell'|}` the mean loss
  derivative).

The theory page derives what the properties mean over a training run. With
:math:`U_T = \sum_{t < T} \overline{|\ell'_t|}`, the relative change
:math:`\lVert \Theta_T - \Theta_0 \rVert_F / \lVert \Theta_0 \rVert_F` of the kernel is
:math:`A\, U_T^2 \rho^{2s} + B\, U_T \rho^{s - 1/2}` (a coherent second-order part and a
sign-incoherent first-order part summed over :math:`d` units), so:

- at a **fixed number of steps** (``kernel_evolves``, Golikov's property) the kernel evolves
  iff :math:`s = 0`, its change tending to :math:`A U_T^2`; the incoherent part dominates
  while :math:`U_T^2 \ll B / (A \sqrt\rho)`, so a few steps show :math:`\rho^{-1/2}` even in MF;
- at a **fixed training loss** (``kernel_evolves_at_fixed_loss``), gradient flow needs
  :math:`U \sim \rho^{\max(\lambda, 0) - \kappa}` and moves the weights by
  :math:`\rho^{-1/2 - \min(\lambda, 0)}` (``fixed_loss_weight_exponent``): only the readout's
  scale matters, and the kernel evolves iff :math:`q_\sigma \le -1`. Where
  :math:`\kappa > \max(\lambda, 0)` (``step_overshoots``) one step moves the logits further
  than needed: BCE saturates after :math:`O(1)` steps (:math:`U_T` stays small, the limit of
  the kernel change is :math:`A U_\infty^2`, small) and MSE diverges (``mse_verdict``: stable
  iff :math:`\kappa = 0`). Sym-default is such a point: ``note`` says so.

The dynamically stable strip is :math:`-1/2 \le s \le 0`: above it (:math:`s > 0`) the weights
move by a diverging relative amount per step ("diverging"); below it the logits move by a
vanishing relative amount ("stagnating"). In coordinates :math:`(q_\sigma, s)` the strip is a
horizontal band, and three lines cut it:

- the logits line :math:`q_\sigma = -1/2` (logits :math:`\Theta(1)` at init), NTK to sym-default;
- the kernel line :math:`q_\sigma = -1 - s` (kernel :math:`\Theta(1)` at init), NTK to MF;
- the upper edge :math:`s = 0` (the kernel evolves at a fixed number of steps).

Both inner lines meet the lower edge :math:`s = -1/2` at NTK :math:`= (-1/2, 0)`; on the
upper edge they end at MF :math:`= (-1, 1)` and sym-default :math:`= (-1/2, 1/2)`. The pieces
are 13 regions, numbered row by row from the upper edge down, left to right (`REGIONS` has a
representative of each). Four properties tell them apart: the words of :math:`\lambda` and
:math:`\kappa` (vanish, bounded, diverge) and the row, given by ``kernel_evolves``
(:math:`s = 0`) and ``init_logits_matter`` (:math:`s = -1/2`: only on the lower edge are the
logit increments of the order of the initial logits, so the initial function survives in the
normalized limit). The first three alone give 11 combinations: the open cells 6 and 10 share
them with the lower rays 11 and 13. ``neighbours`` says, in one line, which of the four change
in each direction.

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

No stable point has all three finite-width-like properties (bounded non-vanishing logits,
bounded non-vanishing kernel, evolving kernel): they require :math:`q_\sigma = -1/2`,
:math:`s = -1/2` and :math:`s = 0`.

**abc-parametrizations** (Yang & Hu, Tensor Programs IV). Layer :math:`l = 1, \dots, L+1`
of an MLP with :math:`L` hidden layers uses :math:`W^l = n^{-a_l} w^l`,
:math:`w^l \sim \mathcal N(0, n^{-2 b_l})` and SGD rate :math:`\eta n^{-c_l}`. With one global
:math:`c`

.. math::

    r = \min(a_{L+1} + b_{L+1},\ 2 a_{L+1} + c) + c - 1 + \min_{l \le L} [2 a_l + 1(l = 1)];

stable iff :math:`a_1 + b_1 = 0`, :math:`a_l + b_l = 1/2` (:math:`1 < l \le L`),
:math:`a_{L+1} + b_{L+1} \ge 1/2`, :math:`r \ge 0`, :math:`2 a_{L+1} + c \ge 1` and
:math:`a_{L+1} + b_{L+1} + r \ge 1`; nontrivial iff :math:`a_{L+1} + b_{L+1} + r = 1` or
:math:`2 a_{L+1} + c = 1`; feature learning iff stable and :math:`r = 0`; kernel regime iff
stable, nontrivial and :math:`r > 0`. With per-layer :math:`c_l` we use the per-layer form
(Yang & Hu treat per-layer learning rates in their appendix; this form is re-derived here from
the same bookkeeping, the update of layer :math:`l` acting on a width-:math:`n` vector
contributes :math:`n^{1 - 2 a_l - c_l}`, on the input :math:`n^{-2 a_1 - c_1}`):

.. math::

    r = \min(a_{L+1} + b_{L+1},\ 2 a_{L+1} + c_{L+1}) - 1
        + \min_{l \le L} [2 a_l + c_l + 1(l = 1)],

and :math:`c_{L+1}` replaces :math:`c` in the other conditions. All of this is for SGD: abc
exponents meant for Adam (e.g. ``Scaling.mup(optimizer="adam")``) get no meaningful TP verdict
here. The per-layer :math:`r` equals the global one when all :math:`c_l` are equal, and it is
invariant under the per-layer symmetry :math:`(a_l + t_l, b_l - t_l, c_l - 2 t_l)`, which
leaves SGD trajectories unchanged. For a TP-stable abc the width exponents of logits, kernel,
feature update (:math:`-r`) and the fixed-loss weight change are filled in too, at any depth.
In the plane :math:`r = -s`.

A one-hidden-layer abc (two layers) lies in the plane when, after the symmetry sets
:math:`a_l = 0`, :math:`b_1 = 0` and :math:`c_2 = c_1 + 2 b_2`; then :math:`q_\sigma = -b_2`
and :math:`\tilde q = -c_1`. In invariant form: :math:`a_1 + b_1 = 0`,
:math:`q_\sigma = -(a_2 + b_2)`, :math:`\tilde q = -(2 a_1 + c_1)` and
:math:`2 a_2 + c_2 = 2 a_1 + c_1 + 2 (a_2 + b_2)`. For such an abc `classify` reports the plane
region too; NTK, MF and one-hidden-layer muP land on the NTK and MF points. The standard
parametrization with one rate :math:`1/n` is not in the plane (its readout rate is
:math:`\rho^{-1}`, the plane's would be :math:`\rho^{-2}`).

For an abc that is not in the plane, the plane fields are None and ``stable``/``verdict`` come
from Tensor Programs: "diverging" when not TP-stable, "stagnating" when stable but trivial.
Note that the two notions of stability differ: the plane's is about logits normalized by their
own scale (classifiers), so e.g. the upper-right ray is plane-stable but not TP-stable.

Exponents are handled as exact fractions (floats go through ``Fraction.limit_denominator``),
so equalities such as :math:`s = 0` are exact.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction

from .regions import REGIONS, Region, neighbours, plane_region, word

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
class Classification:
    r"""What `classify` found. Exponent fields are exact `Fraction` values (None where undefined).

    Plane fields (None for an abc outside the plane): ``q_sigma``, ``q_tilde``, ``region``,
    ``region_index`` (also None when unstable), ``kernel_evolves`` (:math:`s = 0`: at a fixed
    number of steps), ``feature_learning`` (the same in the plane: hidden weights move by a
    relative :math:`\Theta(1)`), ``weight_change_exponent`` (:math:`s`),
    ``logit_change_exponent`` (:math:`s + 1/2`, relative to the initial logits),
    ``init_logits_matter`` (:math:`s = -1/2`), ``note`` (one line where the fixed-step and
    fixed-loss predictions part, else None) and ``neighbours`` (one line: which properties
    change towards each neighbouring region). For a TP-stable abc outside the plane,
    ``kernel_evolves`` and ``feature_learning`` are :math:`r = 0` (at a fixed number of steps).

    Exponents also given for a TP-stable abc: ``logits_exponent`` and ``kernel_exponent`` with
    their words ("vanish" | "bounded" | "diverge"), ``feature_update_exponent`` (:math:`s`, or
    :math:`-r`), ``kernel_change_exponent`` (:math:`2s` or :math:`-2r`, at fixed steps),
    ``fixed_loss_weight_exponent`` and ``kernel_evolves_at_fixed_loss`` (gradient flow to a
    fixed training loss), ``step_overshoots`` (:math:`\kappa > \max(\lambda, 0)`) and
    ``mse_verdict`` (plain gradient descent on the squared loss at a fixed base rate).
    Tensor-Programs fields (None unless the input was an abc): ``r``, ``tp_stable``,
    ``tp_nontrivial``, ``tp_feature_learning``, ``tp_kernel_regime``.
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
    feature_update_exponent: Fraction | None = None
    kernel_change_exponent: Fraction | None = None
    fixed_loss_weight_exponent: Fraction | None = None
    kernel_evolves_at_fixed_loss: bool | None = None
    step_overshoots: bool | None = None
    mse_verdict: str | None = None
    note: str | None = None
    neighbours: str | None = None
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
        if self.kernel_evolves_at_fixed_loss is not None:
            parts.append(
                "at a fixed loss the kernel "
                + ("evolves" if self.kernel_evolves_at_fixed_loss else "is frozen")
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


def _sequence(values, what: str) -> list:
    if isinstance(values, (str, bytes, Mapping)):
        raise TypeError(f"{what} must be a sequence of numbers, got {values!r}")
    try:
        return list(values)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of numbers, got {values!r}") from None


# ---------------------------------------------------------------------------------- the plane
def _plane_fields(q_sigma: Fraction, q_tilde: Fraction) -> dict:
    s = q_sigma + q_tilde
    logits_exponent = q_sigma + _HALF
    kernel_exponent = q_tilde + 2 * q_sigma + 1
    stable = -_HALF <= s <= 0
    found = plane_region(q_sigma, q_tilde)
    # gradient flow to a fixed training loss: the logits must move by rho^max(lambda, 0), they
    # move by rho^kappa per unit of summed |l'|, the weights by rho^s: rho^(-1/2 - min(lambda, 0))
    fixed_loss = -_HALF - min(logits_exponent, Fraction(0))
    overshoots = kernel_exponent > max(logits_exponent, Fraction(0))
    fields = dict(
        stable=stable,
        verdict="stable" if stable else "diverging" if s > 0 else "stagnating",
        region=None if found is None else found[1],
        region_index=None if found is None else found[0],
        q_sigma=q_sigma,
        q_tilde=q_tilde,
        logits_exponent=logits_exponent,
        logits=word(logits_exponent),
        kernel_exponent=kernel_exponent,
        kernel=word(kernel_exponent),
        kernel_evolves=s >= 0,
        feature_learning=s >= 0,
        weight_change_exponent=s,
        logit_change_exponent=s + _HALF,
        init_logits_matter=s <= -_HALF,
        feature_update_exponent=s,
        kernel_change_exponent=2 * s,
        fixed_loss_weight_exponent=fixed_loss,
        kernel_evolves_at_fixed_loss=fixed_loss >= 0,
        step_overshoots=overshoots,
        mse_verdict=(
            "stable" if kernel_exponent == 0 else "diverging" if kernel_exponent > 0
            else "stagnating"
        ),
    )
    fields["note"] = _plane_note(fields) if stable else None
    fields["neighbours"] = neighbours(q_sigma, q_tilde) if stable else None
    return fields


def _plane_note(f: dict) -> str | None:
    """Where the fixed-step and fixed-loss predictions part, one line (None where they agree)."""
    if f["kernel_evolves"] == f["kernel_evolves_at_fixed_loss"]:
        return None
    if f["kernel_evolves"]:
        return (
            "kernel evolves at a fixed number of steps (relative change ~ A U_T^2, U_T the "
            "summed |l'|) but not at a fixed training loss (weights move by rho^"
            f"{_fmt(f['fixed_loss_weight_exponent'])} in gradient flow)"
            + (
                "; one step overshoots (logits move by rho^"
                f"{_fmt(f['kernel_exponent'])}): BCE saturates after O(1) steps, so U_T stays "
                "small, and MSE diverges"
                if f["step_overshoots"]
                else ""
            )
        )
    return (
        "kernel frozen at a fixed number of steps, but reaching a fixed training loss takes "
        f"long enough that the weights move by rho^{_fmt(f['fixed_loss_weight_exponent'])} "
        "(q_sigma <= -1): the fixed-loss limit is not lazy"
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
    fields = _abc_exponent_fields(a, b, c, r) if stable else {}
    return fields | dict(
        r=r,
        tp_stable=stable,
        tp_nontrivial=nontrivial,
        tp_feature_learning=stable and r == 0,
        tp_kernel_regime=stable and nontrivial and r > 0,
    )


def _abc_exponent_fields(
    a: list[Fraction], b: list[Fraction], c: list[Fraction], r: Fraction
) -> dict:
    r"""Width exponents of a TP-stable abc-parametrization (hidden forward scales stable).

    Logits at init :math:`\lambda = 1/2 - (a + b)_{L+1}`; learning-rate-weighted kernel at init
    :math:`\kappa = \max_l \kappa_l`, layer :math:`l`'s share
    :math:`\kappa_l = -c_l - 2 a_l + [l > 1] + [l \le L]\,(1 - 2 (a + b)_{L+1})`; feature
    update per step :math:`-r`; kernel change at fixed steps :math:`-2r`; weights at a fixed
    training loss :math:`-r + \max(\lambda, 0) - \kappa`.
    """
    last = len(a) - 1
    readout = 1 - 2 * (a[last] + b[last])
    logits = readout / 2
    kernel = max(-c[i] - 2 * a[i] + (1 if i > 0 else 0) + (readout if i < last else 0)
                 for i in range(last + 1))  # fmt: skip
    fixed_loss = -r + max(logits, Fraction(0)) - kernel
    return dict(
        logits_exponent=logits,
        logits=word(logits),
        kernel_exponent=kernel,
        kernel=word(kernel),
        kernel_evolves=r == 0,
        feature_learning=r == 0,
        feature_update_exponent=-r,
        kernel_change_exponent=-2 * r,
        fixed_loss_weight_exponent=fixed_loss,
        kernel_evolves_at_fixed_loss=fixed_loss >= 0,
        step_overshoots=kernel > max(logits, Fraction(0)),
        mse_verdict="stable" if kernel == 0 else "diverging" if kernel > 0 else "stagnating",
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
        return Classification(**(tp | _plane_fields(*coords)))
    if not tp["tp_stable"]:
        verdict = "diverging"
    elif not tp["tp_nontrivial"]:
        verdict = "stagnating"
    else:
        verdict = "stable"
    return Classification(stable=verdict == "stable", verdict=verdict, **tp)


# ------------------------------------------------------------------------------------- public
def classify(scaling) -> Classification:
    r"""Classify a width scaling (module docstring for the map and the conventions).

    ``scaling`` is one of:

    - a pair ``(q_sigma, q_tilde)`` of the one-hidden-layer plane (plus-sign convention:
      :math:`\operatorname{std}(a) = \sigma^* \rho^{q_\sigma}`,
      :math:`\eta_w = \eta^* \rho^{\tilde q}`,
      :math:`\eta_a = \eta^* \rho^{\tilde q + 2 q_\sigma}`);
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
