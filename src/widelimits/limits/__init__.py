"""The map of infinite-width limits: how hyperparameters scale with width, which limit a scaling
reaches, and finite models under a scaling.

- `Scaling`: per-layer abc exponents (standard, NTK, mean field, muP, the one-hidden-layer
  (q_sigma, q_tilde) plane, any exponents), consulted by ``net.build(..., parametrization=)``.
- `optimizer`, `apply_scaling`: per-layer learning rates; plain torch MLPs under a scaling.
- `InitCorrected`: the initialization-corrected mean-field model.
- `classify`: which of the plane's 13 regions a scaling is in and its limit's properties (at a
  fixed number of steps and at a fixed training loss, with a line on what separates it from the
  neighbouring regions), and the Tensor-Programs verdict and width exponents for
  abc-parametrizations; `plot_plane` draws the map.
- `run_dynamics`: exact few-step training of a plain MLP under a scaling, recording the
  relative changes of weights, features and tangent kernel that the map predicts.
"""

from .classify import NAMED_POINTS, REGIONS, Classification, classify
from .dynamics import run_dynamics
from .plot import plot_plane
from .scaling import Scaling
from .training import InitCorrected, apply_scaling, optimizer

__all__ = [
    "Scaling",
    "classify",
    "Classification",
    "NAMED_POINTS",
    "REGIONS",
    "plot_plane",
    "optimizer",
    "apply_scaling",
    "InitCorrected",
    "run_dynamics",
]
