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
    Identity,
    LeakyReLU,
    RectifiedMonomial,
    ReLU,
    Sign,
    Sin,
)
from .base import BuildContext, Layer, SpatialFeatures
from .combinators import FanInConcat, FanInProd, FanInSum, FanOut, Parallel, Residual, Serial
from .conv import Conv
from .conv_local import ConvLocal
from .conv_transpose import ConvTranspose
from .dense import Dense
from .elementwise import Elementwise
from .myrtle import Myrtle
from .normalization import Dropout, LayerNorm
from .polynomial import Hermite, Monomial, Polynomial
from .pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool, SumPool
from .resize import ImageResize
from .scale import Scale

__all__ = [
    "ABReLU", "Abs", "Activation", "AvgPool", "BuildContext", "Conv", "Cos", "Dense", "Dropout",
    "Elementwise", "Erf", "Exp", "FanInConcat", "FanInProd", "FanInSum", "FanOut", "Flatten",
    "Gaussian", "GELU", "GlobalAvgPool", "Hermite", "Identity", "Layer", "LayerNorm",
    "LeakyReLU", "Monomial", "Myrtle", "Parallel", "Polynomial", "RBF", "RectifiedMonomial",
    "ReLU", "Residual", "Scale", "Serial", "Sign", "Sin", "SpatialFeatures", "SumPool",
    "ConvLocal", "ConvTranspose", "GlobalSumPool", "ImageResize",
]  # fmt: skip
