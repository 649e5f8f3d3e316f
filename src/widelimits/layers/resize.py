r"""Image resizing (up- and down-sampling) as a fixed linear map of the pixels, axis by axis."""

from __future__ import annotations

import operator

import torch
from torch import Tensor, nn

from ..kernel import Kernel
from ._concat import per_branch
from ._spatial import check_fits, check_output_fits
from .base import BuildContext, Layer, SpatialFeatures

__all__ = ["ImageResize"]

METHODS = ("linear", "nearest")


def resize_matrix(size: int, out: int, method: str, antialias: bool = True) -> Tensor:
    r"""The ``(out, size)`` float64 matrix R of one axis: output i is :math:`\sum_j R_{ij} x_j`.

    Pixel centres sit at half-integers (``jax.image.resize``'s convention, neural-tangents'
    ``ImageResize``).  ``"nearest"``: output i copies input :math:`\lfloor (i + 1/2)\, n /
    m \rfloor` (n inputs, m outputs).  ``"linear"``: output i samples the input at
    :math:`f_i = (i + 1/2)\, n / m - 1/2` with the triangle :math:`\max(0, 1 - |f_i - j| / c)`,
    ``c = max(n / m, 1)`` when ``antialias`` (a wider low-pass filter when down-sampling) and
    1 otherwise, each row normalized to sum to 1 (the edges lean on the pixels that exist).
    """
    if method == "nearest":
        source = torch.div((2 * torch.arange(out) + 1) * size, 2 * out, rounding_mode="floor")
        return torch.nn.functional.one_hot(source, size).to(torch.float64)
    inv = size / out
    width = max(inv, 1.0) if antialias else 1.0
    sample = (torch.arange(out, dtype=torch.float64) + 0.5) * inv - 0.5
    x = (sample[:, None] - torch.arange(size, dtype=torch.float64)[None, :]).abs() / width
    weights = (1 - x).clamp(min=0)
    total = weights.sum(1, keepdim=True)
    weights = torch.where(total.abs() > 1000 * torch.finfo(torch.float32).eps,
                          weights / torch.where(total != 0, total, 1), 0.0)  # fmt: skip
    inside = (sample >= -0.5) & (sample <= size - 0.5)
    return weights * inside[:, None]


def apply_matrix(t: Tensor, axis: int, matrix: Tensor) -> Tensor:
    """``t`` with ``matrix`` (out, n) applied along ``axis`` (of size n)."""
    moved = t.movedim(axis, -1)
    return (moved @ matrix.to(moved).T).movedim(-1, axis)


class ImageResize(Layer):
    r"""Resize the spatial axes: linear interpolation or nearest neighbour, per axis.

    Args:
        size: the output size of each spatial axis (an int for every axis, or one per axis);
            ``-1`` keeps an axis as it is.
        method: ``"linear"`` (bi-/tri-linear, half-pixel centres) or ``"nearest"``.
        antialias: with ``"linear"``, widen the triangle filter when down-sampling (a low-pass
            filter, as ``jax.image.resize`` and neural-tangents' ``ImageResize``).

    Each axis r is a fixed linear map :math:`R_r` of the pixels (`resize_matrix`), so the
    output is Gaussian when the input is, with

    .. math::

        K'_{PQ} = \sum_{p, q} R_{Pp} R_{Qq} K_{pq}, \qquad K' = R K R^\top \text{ per axis},

    and the same for :math:`\Theta` (no parameters).  Linear interpolation mixes pixels (pixel-pair
    layout); nearest neighbour only copies them, so it also works per pixel.  The finite side
    applies the same matrices (equal to ``torch.nn.functional.interpolate`` with
    ``align_corners=False`` when up-sampling).  neural-tangents 0.6.5's ``ImageResize`` resizes
    the wrong axes after an odd number of weight-shared convolutions (its kernels then keep the
    spatial axes in reversed order): H by W's target size and W by H's.  widelimits resizes
    each axis by its own size.
    """

    def __init__(self, size: int | tuple[int, ...], method: str = "linear",
                 antialias: bool = True) -> None:  # fmt: skip
        values = size if isinstance(size, tuple | list) else (size,)
        if not values or not all(_is_size(v) for v in values):
            raise ValueError(
                f"ImageResize(size={size!r}): give a positive int (the output size of every "
                "spatial axis), -1 (keep the axis) or a tuple of one per spatial axis"
            )
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"ImageResize(method=...) must be one of {METHODS}, got {method!r}")
        if not isinstance(antialias, bool):
            raise TypeError(f"ImageResize(antialias=...) must be True or False, got {antialias!r}")
        self.size = tuple(operator.index(v) for v in values) if isinstance(size, tuple | list) \
            else operator.index(size)  # fmt: skip
        self.method, self.antialias = method, antialias

    @property
    def mixes_pixels(self) -> bool:  # type: ignore[override]
        return self.method != "nearest"

    def _sizes(self, d: int) -> tuple[int, ...]:
        sizes = self.size if isinstance(self.size, tuple) else (self.size,) * d
        if len(sizes) != d:
            raise ValueError(
                f"ImageResize(size={self.size!r}) does not fit inputs with {d} spatial axes: "
                f"give an int or {d} of them"
            )
        return sizes

    def _matrices(self, shape: tuple[int, ...]) -> list[Tensor | None]:
        sizes = self._sizes(len(shape))
        elements = sum(n * m for n, m in zip(shape, sizes, strict=True) if m != -1)
        check_fits(f"ImageResize(size={self.size!r})", "the resizing matrices", elements, 8,
                   "resize to a smaller size")  # fmt: skip
        return [
            None if m == -1 or (m == n and self.method == "nearest")
            else resize_matrix(n, m, self.method, self.antialias)
            for n, m in zip(shape, sizes, strict=True)
        ]  # fmt: skip

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("ImageResize got several branches; merge them first")
        if k.layout == "none":
            raise ValueError(
                "ImageResize needs spatial inputs, (N, C, L) sequences or (N, C, H, W) images, "
                "but got flat features"
            )
        return per_branch(k, self._resize_kernel)

    def _resize_kernel(self, k: Kernel) -> Kernel:
        d = k.spatial_ndim
        full = k.layout == "full"
        shape = tuple(k.cov1.shape[1 : 1 + d])
        sizes = self._sizes(d)
        check_output_fits(
            f"ImageResize(size={self.size!r})",
            k.nngp,
            d,
            full,
            [n if m == -1 else m for n, m in zip(shape, sizes, strict=True)],
        )
        matrices = self._matrices(shape)
        if not full and self.mixes_pixels and any(m is not None for m in matrices):
            raise ValueError("ImageResize(method='linear') needs the full pixel-pair layout")

        def resize(t: Tensor) -> Tensor:
            for r, matrix in enumerate(matrices):
                if matrix is None:
                    continue
                axes = (t.ndim - 2 * d + r, t.ndim - d + r) if full else (t.ndim - d + r,)
                for ax in axes:
                    t = apply_matrix(t, ax, matrix)
            return t

        return k.map_all(resize, ntk=True)

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                "ImageResize needs spatial inputs: build the network with in_features=(C, H, W) "
                "or (C, L), the shape of one example"
            )
        matrices = self._matrices(in_features.size)
        size = tuple(n if m is None else m.shape[0]
                     for n, m in zip(in_features.size, matrices, strict=True))  # fmt: skip
        module = ImageResizeModule([None if m is None else m.to(ctx.dtype) for m in matrices])
        return module, SpatialFeatures(in_features.channels, size)


def _is_size(v) -> bool:
    if isinstance(v, bool):
        return False
    try:
        v = operator.index(v)
    except TypeError:
        return False
    return v == -1 or 1 <= v <= 2**31 - 1


class ImageResizeModule(nn.Module):
    """The finite side of `ImageResize`: fixed matrices applied to the spatial axes."""

    def __init__(self, matrices: list[Tensor | None]) -> None:
        super().__init__()
        self.axes = [r for r, m in enumerate(matrices) if m is not None]
        for r in self.axes:
            self.register_buffer(f"matrix{r}", matrices[r])

    def forward(self, x: Tensor) -> Tensor:
        for r in self.axes:
            x = apply_matrix(x, 2 + r, getattr(self, f"matrix{r}"))
        return x
