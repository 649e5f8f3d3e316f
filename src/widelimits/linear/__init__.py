"""Deep linear networks: finite widths, their deterministic infinite-width limit, measurements.

See the module docstrings of :mod:`.network` (finite
networks, main and NTK scalings, gradient flow/descent), :mod:`.paths` (the rooted-path basis),
:mod:`.limit` (the infinite-width limit with automatic truncation) and :mod:`.measure`.
"""

from .limit import LimitResult, column_basis, infinite_width_limit, limit_network
from .measure import (
    WidthErrors,
    first_layer_law,
    fit_power,
    limit_tangent_kernel,
    min_norm_convergence,
    min_norm_solution,
    row_space_residual,
    tangent_kernel,
    weight_changes,
    width_errors,
)
from .network import (
    LinearNetwork,
    Trajectory,
    check_data,
    gradient_descent,
    gradient_flow,
    init_network,
)
from .paths import Path, PathBasis, path_basis

__all__ = [
    "WidthErrors",
    "first_layer_law",
    "fit_power",
    "limit_tangent_kernel",
    "min_norm_convergence",
    "min_norm_solution",
    "row_space_residual",
    "tangent_kernel",
    "weight_changes",
    "width_errors",
    "LimitResult",
    "LinearNetwork",
    "Path",
    "PathBasis",
    "Trajectory",
    "check_data",
    "column_basis",
    "gradient_descent",
    "gradient_flow",
    "infinite_width_limit",
    "init_network",
    "limit_network",
    "path_basis",
]
