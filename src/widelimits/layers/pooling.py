"""Pooling and flattening: from spatial features to fewer pixels or to flat features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernel import Kernel, pixel_diagonal
from ._concat import per_branch
from ._spatial import (
    Scratch,
    SpatialPad,
    as_tuple,
    check_fits,
    check_padding,
    check_sizes,
    pads,
    pool_sum,
)
from .base import BuildContext, Layer, SpatialFeatures
from .masking import masked_global_pool

__all__ = ["AvgPool", "SumPool", "GlobalAvgPool", "Flatten"]


def _spatial_state(k, name: str) -> Kernel:
    if not isinstance(k, Kernel):
        raise TypeError(f"{name} got several branches; merge them first")
    if k.layout == "none":
        raise ValueError(
            f"{name} needs spatial inputs, (N, C, L) sequences or (N, C, H, W) images, but got "
            "flat features"
        )
    return k


def _spatial_features(in_features, name: str) -> SpatialFeatures:
    if not isinstance(in_features, SpatialFeatures):
        raise ValueError(
            f"{name} needs spatial inputs: build the network with in_features=(C, H, W) or "
            "(C, L), the shape of one example"
        )
    return in_features


class AvgPool(Layer):
    r"""Average pooling over windows of the spatial axes.

    Args:
        window: window size, an int (the same along every spatial axis) or one per axis.
        stride: an int or one per axis; ``None`` for the window size (non-overlapping windows).
        padding: ``"valid"`` (default), ``"same"`` or ``"circular"`` (see `Conv`); padded zeros
            count in the average.

    The output at p is the mean of the inputs in window p, so every pair of input pixels
    (a in window p, b in window q) contributes (w: the window size):

    .. math::

        K'_{pq} = \frac{1}{w^2} \sum_{a \in \operatorname{win}(p),\, b \in \operatorname{win}(q)}
        K_{ab}

    and the same for :math:`\Theta`.  This reads pixel pairs, so networks that pool use the full
    layout.  Outputs stay Gaussian.  The finite side is ``torch.nn.AvgPool1d`` / ``AvgPool2d``.
    """

    mixes_pixels = True
    _average = True

    def __init__(
        self,
        window: int | tuple[int, ...] = 2,
        stride: int | tuple[int, ...] | None = None,
        padding: str = "valid",
    ) -> None:
        self.window = check_sizes("window", window)
        self.stride = self.window if stride is None else check_sizes("stride", stride)
        self.padding = check_padding(padding)

    def _geometry(self, d: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return as_tuple("window", self.window, d), as_tuple("stride", self.stride, d)

    def kernel_fn(self, k: Kernel) -> Kernel:
        return per_branch(_spatial_state(k, type(self).__name__), self._pool_kernel)

    def _pool_kernel(self, k: Kernel) -> Kernel:
        if k.layout != "full":
            raise ValueError(f"{type(self).__name__} needs the full pixel-pair layout")
        d = k.spatial_ndim
        window, stride = self._geometry(d)
        norm = float(math.prod(window)) ** 2 if self._average else 1.0  # no int64 overflow

        scratch = Scratch()  # shared by the intermediates of nngp, ntk, cov1 and cov2

        def pool(t: Tensor) -> Tensor:
            return pool_sum(t, d, window, stride, self.padding, 1.0 / norm, scratch)

        return k.map_all(pool, ntk=True)

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        features = _spatial_features(in_features, type(self).__name__)
        d = len(features.size)
        window, stride = self._geometry(d)
        geometry = list(zip(features.size, window, stride, strict=True))
        size = tuple(pads(n, w, s, self.padding)[2] for n, w, s in geometry)
        padded = math.prod(n + sum(pads(n, w, s, self.padding)[:2]) for n, w, s in geometry)
        check_fits(
            f"{type(self).__name__}(window={self.window!r})",
            "one padded input example and its windows",
            features.channels * max(padded, math.prod(size) * math.prod(window)),
            torch.empty((), dtype=ctx.dtype).element_size(),
            "use a smaller window (the infinite-width kernel merges the taps past the image)",
        )
        pool = PoolModule(window, stride, 1.0 if self._average else float(math.prod(window)))
        module = (
            pool
            if self.padding == "valid"
            else nn.Sequential(SpatialPad(window, stride, self.padding), pool)
        )
        return module, SpatialFeatures(features.channels, size)


class SumPool(AvgPool):
    r"""Sum pooling: `AvgPool` times the window size w.

    :math:`K'_{pq} = \sum_{a \in \operatorname{win}(p),\, b \in \operatorname{win}(q)} K_{ab}`, and
    the same for :math:`\Theta`.
    """

    _average = False


class PoolModule(nn.Module):
    """``scale`` times the average over windows (inputs already padded)."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], scale: float) -> None:
        super().__init__()
        self.window, self.stride, self.scale = window, stride, scale

    def forward(self, x: Tensor) -> Tensor:
        pool = F.avg_pool1d if len(self.window) == 1 else F.avg_pool2d
        y = pool(x, self.window, self.stride)
        return y if self.scale == 1.0 else y * self.scale

    def extra_repr(self) -> str:
        return f"window={self.window}, stride={self.stride}, scale={self.scale:g}"


class GlobalAvgPool(Layer):
    r"""Average over all pixels: ``(N, C, *S) -> (N, C)``.

    :math:`K'(x, x') = \operatorname{mean}_{p, q} K_{pq}(x, x')` over every pair of pixels, and
    the same for :math:`\Theta`.
    The output stays Gaussian (each channel is an average of jointly Gaussian pixels).
    With padded positions (``net.kernel(..., mask_constant=c)``) the mean runs over the unpadded
    positions of each example only (`widelimits.layers.masking`).
    """

    mixes_pixels = True

    def kernel_fn(self, k: Kernel) -> Kernel:
        return per_branch(_spatial_state(k, "GlobalAvgPool"), self._pool_kernel)

    def _pool_kernel(self, k: Kernel) -> Kernel:
        if k.layout != "full":
            raise ValueError("GlobalAvgPool needs the full pixel-pair layout")
        if k.mask1 is not None:  # padded positions (mask_constant): the mean of the others
            return masked_global_pool(k)
        d = k.spatial_ndim

        def pool(t: Tensor) -> Tensor:
            return t.mean(dim=tuple(range(t.ndim - 2 * d, t.ndim)))

        return k.map_all(pool, ntk=True).replace(layout="none")

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, int]:
        return GlobalAvgPoolModule(), _spatial_features(in_features, "GlobalAvgPool").channels


class GlobalAvgPoolModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=tuple(range(2, x.ndim)))


class Flatten(Layer):
    r"""``(N, C, *S) -> (N, C * P)`` features (P pixels); flat inputs pass unchanged.

    A following Dense layer divides by its fan-in C P, so the kernel it sees is the average over
    pixels of the per-pixel kernel: :math:`K'(x, x') = \operatorname{mean}_p K_{pp}(x, x')`.  Only
    the pixel diagonal is read, which is why a network of convolutions ending in Flatten uses the
    cheap per-pixel layout.  The flattened features are Gaussian but with a different variance per
    pixel, so an activation may not follow directly (unless there is one pixel): put a Dense layer
    first.
    """

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("Flatten got several branches; merge them first")
        return per_branch(k, self._flatten_kernel)

    def _flatten_kernel(self, k: Kernel) -> Kernel:
        if k.layout == "none":
            return k
        d = k.spatial_ndim
        pixels = math.prod(k.cov1.shape[1 : 1 + d])
        full = k.layout == "full"

        def flat(t: Tensor) -> Tensor:
            t = pixel_diagonal(t, d) if full else t
            return t.mean(dim=tuple(range(t.ndim - d, t.ndim)))

        width = None if k.width is None else k.width * pixels
        return k.map_all(flat, ntk=True).replace(
            layout="none", width=width, is_gaussian=k.is_gaussian and pixels == 1
        )

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, int]:
        if isinstance(in_features, tuple):
            raise TypeError("Flatten got several branches; merge them first")
        if isinstance(in_features, SpatialFeatures):
            return nn.Flatten(), in_features.total
        return nn.Identity(), in_features
