"""Layers: each class holds its finite module and its infinite-width kernel map."""

from .activations import (
    GELU,
    RBF,
    ABReLU,
    Abs,
    Activation,
    Cos,
    Erf,
    Exp,
    Gaussian,
    Hermite,
    Identity,
    LeakyReLU,
    Monomial,
    Polynomial,
    RectifiedMonomial,
    ReLU,
    Sign,
    Sin,
)
from .base import BuildContext, Layer
from .combinators import FanInConcat, FanInProd, FanInSum, FanOut, Parallel, Residual, Serial
from .dense import Dense
from .elementwise import Elementwise
from .normalization import Dropout, LayerNorm

__all__ = [
    "ABReLU", "Abs", "Activation", "BuildContext", "Cos", "Dense", "Dropout", "Elementwise", "Erf",
    "Exp", "FanInConcat", "FanInProd", "FanInSum", "FanOut", "GELU", "Gaussian", "Hermite",
    "Identity", "Layer", "LayerNorm", "LeakyReLU", "Monomial", "Parallel", "Polynomial", "RBF",
    "ReLU", "RectifiedMonomial", "Residual", "Serial", "Sign", "Sin",
]  # fmt: skip
