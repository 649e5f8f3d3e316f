"""Layers: each class holds its finite module and its infinite-width kernel map."""

from .activations import ABReLU, Abs, Activation, Erf, Identity, LeakyReLU, ReLU
from .aggregate import Aggregate
from .attention import GlobalSelfAttention
from .base import BuildContext, Layer, SpatialFeatures
from .closed_forms import GELU, RBF, Cos, Exp, Gaussian, RectifiedMonomial, Sign, Sin
from .combinators import (
    FanInConcat,
    FanInProd,
    FanInSum,
    FanOut,
    Parallel,
    Repeat,
    Residual,
    Serial,
)
from .conv import Conv
from .conv_local import ConvLocal
from .conv_transpose import ConvTranspose
from .dense import Dense
from .elementwise import Elementwise
from .gaussian_family import ExpNormalized, Gabor
from .indexing import DotGeneral, Index
from .myrtle import Myrtle
from .normalization import Dropout, LayerNorm
from .polynomial import Hermite, Monomial, Polynomial
from .pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool, SumPool
from .resize import ImageResize
from .scale import Scale
from .transformer import TransformerBlock

__all__ = [
    "ABReLU", "Abs", "Activation", "AvgPool", "BuildContext", "Conv", "Cos", "Dense", "Dropout",
    "Elementwise", "Erf", "Exp", "ExpNormalized", "FanInConcat", "FanInProd", "FanInSum",
    "FanOut", "Flatten", "Gabor",
    "Gaussian", "GELU", "GlobalAvgPool", "GlobalSelfAttention", "Hermite", "Identity", "Layer",
    "LayerNorm",
    "LeakyReLU", "Monomial", "Myrtle", "Parallel", "Polynomial", "RBF", "RectifiedMonomial",
    "ReLU", "Residual", "Scale", "Serial", "Sign", "Sin", "SpatialFeatures", "SumPool",
    "TransformerBlock",
    "Aggregate", "DotGeneral", "Index", "Repeat",
    "ConvLocal", "ConvTranspose", "GlobalSumPool", "ImageResize",
]  # fmt: skip
# ``Slice`` (an index builder for `Index`, not a layer) is exported by the package root only.
