r"""Predictions of infinitely wide networks: MSE training dynamics, ensembles, GP inference.

Conventions follow neural-tangents: the loss :math:`\lVert f - y \rVert^2 / (2 |y|)` with
:math:`|y|` = ``y.size``, the effective rate :math:`\eta' = \eta / |y|` (:math:`\eta` =
``learning_rate``), and the relative diagonal regularization
:math:`K + \lambda\, \overline{\operatorname{diag} K}\, I` (:math:`\lambda` = ``diag_reg``,
:math:`\overline{\operatorname{diag} K}` the mean of the diagonal).
"""

from ._checks import UnstableDynamicsWarning
from .gp import gp_inference
from .mse import Gaussian, gradient_descent_mse, gradient_descent_mse_ensemble, max_learning_rate
from .ode import gradient_descent
from .solvers import (
    CGInfo,
    add_diagonal_regularizer,
    cg_solve,
    check_kernel,
    cholesky_factor,
    cholesky_solve,
    solve,
)

__all__ = [
    "CGInfo",
    "Gaussian",
    "UnstableDynamicsWarning",
    "add_diagonal_regularizer",
    "cg_solve",
    "solve",
    "check_kernel",
    "cholesky_factor",
    "cholesky_solve",
    "gp_inference",
    "gradient_descent",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "max_learning_rate",
]
