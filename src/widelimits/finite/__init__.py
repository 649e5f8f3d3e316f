"""Finite-width measurements: how far a real network is from its infinite-width limit.

- `empirical_ntk`, `empirical_nngp`, `empirical_kernel`: kernels of any ``torch.nn.Module``
  (three NTK implementations, chosen automatically; see `widelimits.finite.ntk`).
- `monte_carlo_kernel`: averages over random finite networks, with standard errors.
- `distance_to_limit`: a model's empirical kernels at 1x, 2x, 4x, ... its widths against its
  analytic limit (`widelimits.from_module`), with the fitted width exponent and a plot.
- `linearize`, `taylor_expand`: the network's first (or higher) order Taylor model in its
  parameters, as trainable modules.
"""

from .limit_distance import LimitDistance, distance_to_limit, widen
from .linearize import TaylorExpanded, linearize, taylor_expand
from .monte_carlo import MonteCarloKernel, monte_carlo_kernel, monte_carlo_kernels, relative_error
from .ntk import EmpiricalKernel, empirical_kernel, empirical_nngp, empirical_ntk

__all__ = [
    "empirical_ntk",
    "empirical_nngp",
    "empirical_kernel",
    "EmpiricalKernel",
    "monte_carlo_kernel",
    "monte_carlo_kernels",
    "MonteCarloKernel",
    "relative_error",
    "linearize",
    "taylor_expand",
    "TaylorExpanded",
    "distance_to_limit",
    "LimitDistance",
    "widen",
]
