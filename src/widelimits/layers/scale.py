"""`Scale`: multiplication by a constant, the layer of ``c * x`` and of BatchNorm at init."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..kernel import Kernel
from ._concat import per_branch
from .base import BuildContext, Layer

__all__ = ["Scale"]


class Scale(Layer):
    r"""Multiplication by a constant ``c``: :math:`K' = c^2 K`, :math:`\Theta' = c^2\, \Theta`.

    Keeps Gaussianity (and acts branch by branch on a concatenation).  The finite side
    multiplies its input by ``c``.  `from_module` uses it for ``c * x``, ``x / c`` and
    BatchNorm in eval mode at its initial statistics.
    """

    def __init__(self, c: float) -> None:
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c):
            raise ValueError(f"Scale(c=...) must be a finite real number, got {c!r}")
        self.c = float(c)

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("Scale got several branches; merge them first")
        c2 = self.c**2
        return per_branch(k, lambda b: b.map_all(lambda t: c2 * t, ntk=True))

    def build_module(self, in_features, ctx: BuildContext):
        return ScaleModule(self.c), in_features

    def __repr__(self) -> str:
        return f"Scale({self.c:g})"


class ScaleModule(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        return x * self.c

    def extra_repr(self) -> str:
        return f"c={self.c:g}"
