"""widelimits: neural networks in the infinite-width limit, in PyTorch.

Write an architecture once from layers; get its closed-form NNGP and NTK kernels
(``net.kernel(x1, x2)``) and the finite ``torch.nn.Module`` that converges to them
(``net.build(in_features, width)``).
"""

from importlib.metadata import PackageNotFoundError, version

from . import (  # _openmp first: it may set GOMP_SPINCOUNT before torch loads
    _openmp,  # noqa: F401
    finite,
    limits,
    linear,
    predict,
)
from ._inputs import LayoutWarning
from .from_module import from_module
from .kernel import Kernel
from .layers import (
    GELU,
    RBF,
    ABReLU,
    Abs,
    Activation,
    Aggregate,
    AvgPool,
    Conv,
    ConvLocal,
    ConvTranspose,
    Cos,
    Dense,
    DotGeneral,
    Dropout,
    Elementwise,
    Erf,
    Exp,
    ExpNormalized,
    FanInConcat,
    FanInProd,
    FanInSum,
    FanOut,
    Flatten,
    Gabor,
    Gaussian,
    GlobalAvgPool,
    GlobalSelfAttention,
    GlobalSumPool,
    Hermite,
    Identity,
    ImageResize,
    Index,
    Layer,
    LayerNorm,
    LeakyReLU,
    Monomial,
    Myrtle,
    Parallel,
    Polynomial,
    RectifiedMonomial,
    ReLU,
    Repeat,
    Residual,
    Scale,
    Serial,
    Sign,
    Sin,
    SumPool,
    TransformerBlock,
)
from .layers.indexing import Slice
from .limits import InitCorrected, Scaling, optimizer

try:
    __version__ = version("widelimits")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "ABReLU", "Abs", "Activation", "AvgPool", "Conv", "Cos", "Dense", "Dropout", "Elementwise",
    "Erf", "Exp", "ExpNormalized", "FanInConcat", "FanInProd", "FanInSum", "FanOut", "Flatten",
    "Gabor", "GELU", "Gaussian",
    "GlobalAvgPool", "GlobalSelfAttention", "Hermite", "Identity", "Kernel", "Layer", "LayerNorm",
    "LayoutWarning",
    "LeakyReLU", "Monomial", "Myrtle", "Parallel", "Polynomial", "RBF", "ReLU", "RectifiedMonomial",
    "Residual", "Scale", "Serial",
    "Sign", "Sin", "SumPool", "TransformerBlock", "__version__",
    "Aggregate", "DotGeneral", "Index", "Repeat", "Slice",
    "finite", "predict", "limits", "linear", "Scaling", "optimizer", "InitCorrected", "from_module",
    "ConvLocal", "ConvTranspose", "GlobalSumPool", "ImageResize",
]  # fmt: skip


def __getattr__(name: str):
    # `widelimits.sklearn` needs scikit-learn (the `demo` extra): imported on first use only.
    if name == "sklearn":
        import importlib

        return importlib.import_module(".sklearn", __name__)
    raise AttributeError(f"module 'widelimits' has no attribute {name!r}")
