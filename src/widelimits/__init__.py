"""widelimits: neural networks in the infinite-width limit, in PyTorch.

Write an architecture once from layers; get its closed-form NNGP and NTK kernels
(``net.kernel(x1, x2)``) and the finite ``torch.nn.Module`` that converges to them
(``net.build(in_features, width)``).
"""

from importlib.metadata import PackageNotFoundError, version

from .kernel import Kernel
from .layers import (
    ABReLU,
    Abs,
    Activation,
    Dense,
    Dropout,
    Erf,
    FanInConcat,
    FanInProd,
    FanInSum,
    FanOut,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    Parallel,
    ReLU,
    Residual,
    Serial,
)

try:
    __version__ = version("widelimits")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "ABReLU", "Abs", "Activation", "Dense", "Dropout", "Erf", "FanInConcat", "FanInProd",
    "FanInSum", "FanOut", "Identity", "Kernel", "Layer", "LayerNorm", "LeakyReLU", "Parallel",
    "ReLU", "Residual", "Serial", "__version__",
]  # fmt: skip
