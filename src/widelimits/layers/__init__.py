"""Layers: each class holds its finite module and its infinite-width kernel map."""

from .activations import ABReLU, Abs, Activation, Erf, Identity, LeakyReLU, ReLU
from .base import BuildContext, Layer
from .combinators import FanInConcat, FanInProd, FanInSum, FanOut, Parallel, Residual, Serial
from .dense import Dense
from .normalization import Dropout, LayerNorm

__all__ = [
    "ABReLU", "Abs", "Activation", "BuildContext", "Dense", "Dropout", "Erf", "FanInConcat",
    "FanInProd", "FanInSum", "FanOut", "Identity", "Layer", "LayerNorm", "LeakyReLU",
    "Parallel", "ReLU", "Residual", "Serial",
]  # fmt: skip
