"""Pooling and flattening: from spatial features to fewer pixels or to flat features."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernel import Kernel, pixel_diagonal
from . import _jit, _reuse
from ._chain import PixelMap, Step
from ._concat import per_branch
from ._spatial import (
    Padding,
    Scratch,
    SpatialPad,
    as_tuple,
    axis_paddings,
    check_fits,
    check_padding,
    check_sizes,
    pads,
    pool_window_sum,
)
from .base import BuildContext, Layer, SpatialFeatures
from .masking import masked_global_pool

__all__ = ["AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "Flatten"]


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


def edge_counts(size: int, window: int, stride: int, padding: Padding) -> Tensor:
    """How many inputs (not padding) each output's window covers along one axis, float64.

    ``count[i] = #{a < window : 0 <= stride i + a - before < size}``; all equal to the window
    for ``"valid"`` and ``"circular"`` (wrapped pixels are inputs).
    """
    before, _, out = pads(size, window, stride, padding)
    start = stride * torch.arange(out, dtype=torch.float64) - before
    if isinstance(padding, str) and padding != "same":
        return torch.full((out,), float(window), dtype=torch.float64)
    return (torch.clamp(start + window, max=size) - torch.clamp(start, min=0)).clamp(min=0)


class AvgPool(Layer):
    r"""Average pooling over windows of the spatial axes.

    Args:
        window: window size, an int (the same along every spatial axis) or one per axis.
        stride: an int or one per axis; ``None`` for the window size (non-overlapping windows).
        padding: ``"valid"`` (default), ``"same"``, ``"circular"``, an int or one int or pair
            ``(before, after)`` per axis (zeros, see `Conv`); padded zeros count in the average
            unless ``normalize_edges``.
        normalize_edges: average over the window's input pixels only, not its padded zeros
            (neural-tangents' ``normalize_edges=True``, PyTorch's ``count_include_pad=False``):
            windows at the edges of a zero-padded image are divided by the number c_p of input
            pixels they cover.  No effect with ``"valid"`` or ``"circular"`` padding.

    The output at p is the mean of the inputs in window p, so every pair of input pixels
    (a in window p, b in window q) contributes

    .. math::

        K'_{pq} = \frac{1}{c_p c_q} \sum_{a \in w(p),\, b \in w(q)} K_{ab},

    with :math:`c_p` the window size w (or, with ``normalize_edges``, the number of input pixels
    in window p), and the same for :math:`\Theta`.  This reads pixel pairs, so networks that
    pool use the full layout.  Outputs stay Gaussian.  The finite side is
    ``torch.nn.functional.avg_pool1d`` / ``2d`` / ``3d`` (1, 2 or 3 spatial axes; the kernel map
    takes any number).
    """

    mixes_pixels = True
    _average = True

    def __init__(
        self,
        window: int | tuple[int, ...] = 2,
        stride: int | tuple[int, ...] | None = None,
        padding: str | int | tuple = "valid",
        normalize_edges: bool = False,
    ) -> None:
        self.window = check_sizes("window", window)
        self.stride = self.window if stride is None else check_sizes("stride", stride)
        self.padding = check_padding(padding)
        if not isinstance(normalize_edges, bool):
            raise TypeError(
                f"{type(self).__name__}(normalize_edges=...) must be True or False, got "
                f"{normalize_edges!r}"
            )
        if normalize_edges and not self._average:
            raise ValueError(
                "SumPool(normalize_edges=True): a sum has no average to normalize; use "
                "AvgPool(normalize_edges=True)"
            )
        self.normalize_edges = normalize_edges

    def _geometry(self, d: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Padding, ...]]:
        return (
            as_tuple("window", self.window, d),
            as_tuple("stride", self.stride, d),
            axis_paddings(self.padding, d),
        )

    def _divisors(self, size, window, stride, paddings) -> list[Tensor] | None:
        """Per axis, the window's count of input pixels at each output (None: all full)."""
        if not self.normalize_edges:
            return None
        counts = [edge_counts(*g) for g in zip(size, window, stride, paddings, strict=True)]
        if all(bool((c == w).all()) for c, w in zip(counts, window, strict=True)):
            return None
        return counts

    def kernel_fn(self, k: Kernel) -> Kernel:
        return per_branch(_spatial_state(k, type(self).__name__), self._pool_kernel)

    def _pool_kernel(self, k: Kernel) -> Kernel:
        if k.layout != "full":
            raise ValueError(f"{type(self).__name__} needs the full pixel-pair layout")
        d = k.spatial_ndim
        window, stride, paddings = self._geometry(d)
        size = tuple(k.cov1.shape[1 : 1 + d])
        divisors = self._divisors(size, window, stride, paddings)
        norm = float(math.prod(window)) ** 2 if self._average else 1.0  # no int64 overflow
        if divisors is not None:
            norm = 1.0

        # shared by the intermediates of nngp, ntk, cov1 and cov2 (and the layers of a chain)
        scratch = _reuse.scratch("window sums", Scratch)

        def pool(t: Tensor) -> Tensor:
            t = pool_window_sum(t, d, window, stride, paddings, 1.0 / norm, scratch)
            if divisors is None:
                return t
            for r, c in enumerate(divisors):  # 1 / (c_p c_q), axis by axis
                c = c.to(t)
                for ax in (t.ndim - 2 * d + r, t.ndim - d + r):
                    shape = [1] * t.ndim
                    shape[ax] = c.numel()
                    t = t / c.reshape(shape)
            return t

        return k.map_all(pool, ntk=True)

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        features = _spatial_features(in_features, type(self).__name__)
        d = len(features.size)
        window, stride, paddings = self._geometry(d)
        if not 1 <= d <= 3:
            raise ValueError(
                f"{type(self).__name__} builds finite networks for 1, 2 or 3 spatial axes (torch "
                f"has avg_pool1d/2d/3d), but in_features has {d}; the infinite-width kernel "
                "(net.kernel) works for any number of spatial axes"
            )
        geometry = list(zip(features.size, window, stride, paddings, strict=True))
        size = tuple(pads(n, w, s, p)[2] for n, w, s, p in geometry)
        padded = math.prod(n + sum(pads(n, w, s, p)[:2]) for n, w, s, p in geometry)
        check_fits(
            f"{type(self).__name__}(window={self.window!r})",
            "one padded input example and its windows",
            features.channels * max(padded, math.prod(size) * math.prod(window)),
            torch.empty((), dtype=ctx.dtype).element_size(),
            "use a smaller window (the infinite-width kernel merges the taps past the image)",
        )
        pool = PoolModule(window, stride, 1.0 if self._average else float(math.prod(window)))
        divisors = self._divisors(features.size, window, stride, paddings)
        if divisors is not None:  # sums divided by the count of input pixels in each window
            counts = divisors[0]
            for c in divisors[1:]:
                counts = counts[..., None] * c
            pool.divisor = (counts / math.prod(window)).to(ctx.dtype)
        if all(p == "valid" or p == (0, 0) for p in paddings):
            return pool, SpatialFeatures(features.channels, size)
        padding = self.padding if isinstance(self.padding, str) else paddings
        module = nn.Sequential(SpatialPad(window, stride, padding), pool)
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
        # per output pixel, the window's count of input pixels over the window size (edges)
        self.register_buffer("divisor", None)

    def forward(self, x: Tensor) -> Tensor:
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(self.window) - 1]
        y = pool(x, self.window, self.stride)
        if self.divisor is not None:
            y = y / self.divisor
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
        return per_branch(_spatial_state(k, type(self).__name__), self._pool_kernel)

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


class GlobalSumPool(GlobalAvgPool):
    r"""Sum over all pixels: ``(N, C, *S) -> (N, C)``, `GlobalAvgPool` times the pixel count P.

    .. math::

        K'(x, x') = \sum_{p, q} K_{pq}(x, x') = P^2 \, \mathrm{mean}_{p, q} K_{pq}(x, x'),

    and the same for :math:`\Theta`.  The output variance grows like :math:`P^2` (P with
    uncorrelated pixels): neural-tangents' ``GlobalSumPool``.
    """

    def _pool_kernel(self, k: Kernel) -> Kernel:
        if k.layout != "full":
            raise ValueError("GlobalSumPool needs the full pixel-pair layout")
        if k.mask1 is not None:  # padded positions (mask_constant): the sum of the others
            return masked_global_pool(k, average=False)
        d = k.spatial_ndim

        def pool(t: Tensor) -> Tensor:
            return t.sum(dim=tuple(range(t.ndim - 2 * d, t.ndim)))

        return k.map_all(pool, ntk=True).replace(layout="none")

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, int]:
        return GlobalSumPoolModule(), _spatial_features(in_features, "GlobalSumPool").channels


class GlobalSumPoolModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=tuple(range(2, x.ndim)))


@functools.lru_cache(maxsize=16)
def _mean_map(pixels: int) -> PixelMap:
    """The sum over ``pixels`` pixels, as a map of the pixels to one."""
    return PixelMap(np.array([0, pixels]), np.arange(pixels), np.ones(pixels), ())


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

    def chain_op(self, k: Kernel, size: tuple[int, ...]) -> Step | None:
        """On the per-pixel layout, the mean over pixels as a map of the pixels for
        `widelimits.layers._chain`'s compiled runs (the run goes on flat); None otherwise."""
        if k.layout != "diagonal" or not size:
            return None
        pixels = math.prod(size)
        op = (_jit.WINDOW, 1.0 / pixels, 0.0, 0.0, 0.0, 0.0)
        width = None if k.width is None else k.width * pixels
        changes = {"layout": "none", "width": width, "is_gaussian": k.is_gaussian and pixels == 1}
        return Step(op, changes, _mean_map(pixels))

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
