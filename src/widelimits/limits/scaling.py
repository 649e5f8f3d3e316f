r"""How a network's hyperparameters scale with its width: abc-parametrizations.

A `Scaling` gives, for each of the L + 1 weight layers of an MLP with L hidden layers, three
exponents of rho = width / ref_width:

    forward multiplier   W^l = rho^{-a_l} w^l
    initialization       w^l ~ N(0, s_l^2 rho^{-2 b_l})
    learning rate        eta_l = eta rho^{-c_l}

The constants s_l = W_std / sqrt(fan_in at the reference width) make every scaling coincide
at ``width == ref_width`` with the standard-initialized network trained by plain SGD at rate
eta: scalings differ only in how they move away from it as the width grows.  This is Yang & Hu's
abc-parametrization (with n replaced by rho, which changes no exponent) with per-layer learning
rates; a global c is the special case of equal c_l.  A bias is a weight on a constant input: it
shares its layer's multiplier and exponents (std b_std at the reference width).

Named scalings (SGD):

- `standard`  a = 0, b = (0, 1/2, ...), c = 1 (the 1/width learning rate),
- `ntk`       a = (0, 1/2, ...), b = 0, c = 0,
- `mean_field` (one hidden layer) a = (0, 1), b = 0, c = -1,
- `mup`       a = (-1/2, 0, ..., 0, 1/2), b = 1/2, c = 0 (``optimizer="adam"``: the Adam
  exponents in the multiplier-free form, b = (0, 1/2, ..., 1/2, 1), c = (0, 1, ..., 1)),
- `plane(q_sigma, q_tilde)`: the one-hidden-layer plane of the first seed, f = sum_r a_r
  phi(w_r . x) with std(a) = sigma* rho^{q_sigma}, std(w) fixed, eta_w = eta* rho^{q_tilde},
  eta_a = eta* rho^{q_tilde + 2 q_sigma}; i.e. a = 0, b = (0, -q_sigma),
  c = (-q_tilde, -q_tilde - 2 q_sigma).  Exponents enter with a plus sign: our convention.

The symmetry (a_l + t, b_l - t, c_l - 2t) leaves SGD trajectories unchanged (`shifted`), which
is how any one-hidden-layer scaling is placed in the plane (`plane_coordinates`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Scaling"]


def _exponents(name: str, values, n: int | None = None) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        if n is None:
            raise ValueError(f"{name} must be a sequence, one exponent per layer")
        values = [values] * n
    out = tuple(float(v) for v in values)
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, one per layer, got {values!r}")
    if n is not None and len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries but the scaling has {n} layers")
    return out


@dataclass(frozen=True)
class Scaling:
    """Per-layer width exponents (see the module docstring); layer 1 reads the inputs."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    ref_width: int = 128
    name: str = "custom"
    optimizer: str = "sgd"  # what the exponents c are meant for (SGD or Adam)

    def __post_init__(self) -> None:
        a = _exponents("a", self.a)
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", _exponents("b", self.b, len(a)))
        object.__setattr__(self, "c", _exponents("c", self.c, len(a)))
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not isinstance(self.ref_width, int) or self.ref_width < 1:
            raise ValueError(f"ref_width must be a positive integer, got {self.ref_width!r}")

    # ---------------------------------------------------------------------------- constructors
    @classmethod
    def abc(cls, a, b, c, ref_width: int = 128, name: str = "custom") -> Scaling:
        """From exponent sequences; ``c`` may be one number (a global learning-rate exponent)."""
        a = _exponents("a", a)
        return cls(a, _exponents("b", b, len(a)), _exponents("c", c, len(a)), ref_width, name)

    @classmethod
    def standard(cls, hidden_layers: int = 1, ref_width: int = 128) -> Scaling:
        n = _layers(hidden_layers)
        return cls((0.0,) * n, (0.0,) + (0.5,) * (n - 1), (1.0,) * n, ref_width, "standard")

    @classmethod
    def ntk(cls, hidden_layers: int = 1, ref_width: int = 128) -> Scaling:
        n = _layers(hidden_layers)
        return cls((0.0,) + (0.5,) * (n - 1), (0.0,) * n, (0.0,) * n, ref_width, "NTK")

    @classmethod
    def mean_field(cls, hidden_layers: int = 1, ref_width: int = 128) -> Scaling:
        if hidden_layers != 1:
            raise ValueError(
                "the mean-field scaling is defined here for one hidden layer; for deeper "
                "networks use Scaling.mup(hidden_layers), its feature-learning generalization"
            )
        return cls((0.0, 1.0), (0.0, 0.0), (-1.0, -1.0), ref_width, "MF")

    @classmethod
    def mup(cls, hidden_layers: int = 1, ref_width: int = 128, optimizer: str = "sgd") -> Scaling:
        n = _layers(hidden_layers)
        if optimizer == "sgd":
            a = (-0.5,) + (0.0,) * (n - 2) + (0.5,)
            return cls(a, (0.5,) * n, (0.0,) * n, ref_width, "muP")
        if optimizer == "adam":
            b = (0.0,) + (0.5,) * (n - 2) + (1.0,)
            c = (0.0,) + (1.0,) * (n - 1)
            return cls((0.0,) * n, b, c, ref_width, "muP-adam", optimizer="adam")
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")

    @classmethod
    def plane(cls, q_sigma: float, q_tilde: float, ref_width: int = 128) -> Scaling:
        """The one-hidden-layer (q_sigma, q_tilde) plane (module docstring)."""
        qs, qt = float(q_sigma), float(q_tilde)
        name = f"plane({qs:g}, {qt:g})"
        return cls((0.0, 0.0), (0.0, -qs), (-qt, -qt - 2 * qs), ref_width, name)

    # ------------------------------------------------------------------------------- factors
    @property
    def n_layers(self) -> int:
        return len(self.a)

    def rho(self, width: float) -> float:
        return width / self.ref_width

    def multiplier(self, layer: int, width: float) -> float:
        r""":math:`\rho^{-a_l}` for layer ``layer`` (0-based)."""
        return self.rho(width) ** -self.a[layer]

    def init_scale(self, layer: int, width: float) -> float:
        r""":math:`\rho^{-b_l}`: the initial std relative to the reference width's."""
        return self.rho(width) ** -self.b[layer]

    def lr_scale(self, layer: int, width: float) -> float:
        r""":math:`\rho^{-c_l}`: the learning rate relative to the reference width's."""
        return self.rho(width) ** -self.c[layer]

    # ------------------------------------------------------------------------------ symmetry
    def shifted(self, t: float | Sequence[float]) -> Scaling:
        """(a_l + t_l, b_l - t_l, c_l - 2 t_l): the same SGD trajectories, another bookkeeping."""
        ts = _exponents("t", t, self.n_layers)
        return Scaling(
            tuple(x + s for x, s in zip(self.a, ts, strict=True)),
            tuple(x - s for x, s in zip(self.b, ts, strict=True)),
            tuple(x - 2 * s for x, s in zip(self.c, ts, strict=True)),
            self.ref_width,
            f"{self.name} shifted",
            self.optimizer,
        )

    def plane_coordinates(self) -> tuple[float, float] | None:
        """(q_sigma, q_tilde) if this is a one-hidden-layer scaling of the plane, else None."""
        if self.n_layers != 2:
            return None
        flat = self.shifted([-x for x in self.a])  # a = 0: everything in init and rates
        if abs(flat.b[0]) > 1e-12:
            return None
        q_sigma, q_tilde = -flat.b[1] + 0.0, -flat.c[0] + 0.0  # + 0.0: no negative zeros
        if abs(flat.c[1] + q_tilde + 2 * q_sigma) > 1e-12:
            return None
        return q_sigma, q_tilde

    @property
    def q_sigma(self) -> float | None:
        coords = self.plane_coordinates()
        return None if coords is None else coords[0]

    @property
    def q_tilde(self) -> float | None:
        coords = self.plane_coordinates()
        return None if coords is None else coords[1]

    def __str__(self) -> str:
        return f"{self.name}: a={self.a}, b={self.b}, c={self.c} (ref width {self.ref_width})"


def _layers(hidden_layers: int) -> int:
    if not isinstance(hidden_layers, int) or hidden_layers < 1:
        raise ValueError(f"hidden_layers must be a positive integer, got {hidden_layers!r}")
    return hidden_layers + 1
