"""Predictions of infinitely wide networks: MSE training dynamics, ensembles, GP inference.

Conventions follow neural-tangents: loss ||f - y||^2 / (2 * y.size), eta' = learning_rate /
y.size, and relative diagonal regularization K + diag_reg * mean(diag K) * I.
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
