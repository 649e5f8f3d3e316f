r"""Transposed convolutions (up-sampling): the adjoint of a strided convolution's geometry.

A transposed convolution of stride s spreads input pixel p over the outputs ``s p + a``; it is a
stride-1 convolution of the input *dilated* by s (``s - 1`` zeros between consecutive pixels),
padded on each side.  Per spatial axis of size n, window k and stride s, the dilated input of
size ``(n - 1) s + 1`` is padded with ``(before, after)`` zeros:

- ``"same"``: ``n s`` outputs; ``k + s - 2`` zeros, ``before = k - 1`` if ``s > k - 1`` else
  ``ceil((k + s - 2) / 2)`` (the convention of ``jax.lax.conv_transpose`` and neural-tangents);
- ``"valid"``: ``n s + max(k - s, 0)`` outputs, ``before = k - 1``;
- ``"circular"``: the ``"valid"`` output wrapped around a circle of ``n s`` pixels, offset by
  half of its excess (periodic images, as neural-tangents);
- an int p or a pair ``(p0, p1)``: PyTorch's ``ConvTranspose`` padding, the full output
  (``(n - 1) s + k`` pixels) with p0 pixels cropped before and p1 after (at most ``k - 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..kernel import Kernel
from ._spatial import (
    Padding,
    _recording,
    check_fits,
    check_output_fits,
    check_padding,
    conv_window_sum,
)
from .base import BuildContext, SpatialFeatures
from .conv import Conv, _Scaled, conv_module_class

__all__ = ["ConvTranspose"]


def dilate(t: Tensor, axes: Sequence[int], stride: int) -> Tensor:
    """Insert ``stride - 1`` zeros between consecutive entries along each of ``axes``.

    An axis of size n becomes ``(n - 1) stride + 1`` long, entry i moving to ``stride i``: the
    input of a transposed convolution, which is a stride-1 convolution of the dilated input.
    """
    if stride == 1:
        return t
    shape = list(t.shape)
    index: list[slice] = [slice(None)] * t.ndim
    for ax in axes:
        shape[ax] = (t.shape[ax] - 1) * stride + 1
        index[ax] = slice(None, None, stride)
    if _recording(t):
        return _dilate_graph(t, axes, stride)
    out = t.new_zeros(shape)
    out[tuple(index)] = t
    return out


def _dilate_graph(t: Tensor, axes: Sequence[int], stride: int) -> Tensor:
    """`dilate` through autograd: interleave zeros by stacking and reshaping, axis by axis."""
    for ax in axes:
        n = t.shape[ax]
        zeros = t.new_zeros((*t.shape[: ax + 1], stride - 1, *t.shape[ax + 1 :]))
        t = torch.cat([t.unsqueeze(ax + 1), zeros], ax + 1)
        t = t.flatten(ax, ax + 1).narrow(ax, 0, (n - 1) * stride + 1)
    return t


def fold(t: Tensor, axis: int, size: int, offset: int) -> Tensor:
    """Wrap one axis around a circle of ``size``: ``out[i] = sum_{j = i + offset (mod size)}
    t[j]`` (the periodic output of a circular transposed convolution)."""
    n = t.shape[axis]
    idx = (torch.arange(n, device=t.device) - offset) % size
    shape = list(t.shape)
    shape[axis] = size
    return t.new_zeros(shape).index_add(axis, idx, t)


def transpose_geometry(size: int, window: int, stride: int, padding: Padding) -> dict:
    """One axis of a transposed convolution, in the stride-1 form on the dilated input.

    Returns ``before`` / ``after`` (zeros around the dilated input, the window-sum padding),
    ``out`` (output size before any wrap), ``crop`` (pixels of torch's full transposed output
    dropped before and after; negative: zeros added) and ``wrap`` (``(size, offset)`` of the
    circular fold, or None).
    """
    k, s = window, stride
    if padding == "same":
        total = k + s - 2
        before = k - 1 if s > k - 1 else -(-total // 2)
        after = total - before
    elif padding in ("valid", "circular"):
        before, after = k - 1, s - 1 + max(k - s, 0)
    else:
        p0, p1 = padding
        if max(p0, p1) > k - 1 or (size - 1) * s + k - p0 - p1 < 1:
            raise ValueError(
                f"padding={padding!r} crops {p0} + {p1} pixels from a transposed convolution "
                f"output of {(size - 1) * s + k} with kernel_size={k}: PyTorch's ConvTranspose "
                f"padding crops at most kernel_size - 1 = {k - 1} per side and leaves at least "
                "one pixel; use a smaller padding"
            )
        before, after = k - 1 - p0, k - 1 - p1
    out = (size - 1) * s + 1 + before + after - k + 1
    full = (size - 1) * s + k
    crop = (k - 1 - before, full - (k - 1 - before) - out)
    wrap = None
    if padding == "circular":
        m = size * s
        wrap = (m, (out - m) // 2)
    return dict(before=before, after=after, out=out, crop=crop, wrap=wrap)


class ConvTranspose(Conv):
    r"""Transposed convolution over ``(N, C, *S)`` inputs, NTK parametrization.

    .. math::

        z_P = \frac{\sigma_w}{\sqrt{C k}} \sum_{a, c} W_{a c}\, \tilde x_{c, P + a} + \sigma_b b,

    with :math:`\tilde x` the input dilated by the stride and padded (the module docstring gives
    the geometry of each padding), :math:`k` taps and :math:`W, b \sim \mathcal N(0, 1)`.  The
    fan-in is ``C k`` as in `Conv` (neural-tangents' convention), although only about ``k / s``
    taps of each output meet an input pixel: the output variance is about
    :math:`\sigma_w^2 / s` per axis times the input's.

    Args:
        out, kernel_size, stride, W_std, b_std, parametrization, trainable: as in `Conv`.
        padding: ``"same"`` (default), ``"valid"``, ``"circular"``, or PyTorch's
            ``ConvTranspose`` padding (an int, or one int or pair per axis: pixels cropped from
            the full output).

    Kernel map.  With :math:`\tilde K` the input kernel dilated and padded with zeros along
    every pixel axis (both pixels of a pair in the full layout),

    .. math::

        K'_{PQ} = \frac{\sigma_w^2}{k} \sum_a \tilde K_{P + a,\, Q + a} + \sigma_b^2,

    and :math:`\Theta` as for `Conv`; the circular padding then sums the pixels of each output
    that wrap onto the same place, in P and in Q independently (so it needs the pixel-pair
    layout).  A stride-1 transposed convolution is a convolution with the filter flipped: the
    same kernel as `Conv` with the padding's halves swapped.  The finite side is
    ``torch.nn.ConvTranspose1d`` / ``2d`` / ``3d`` (no padding) with the parametrization's
    multipliers, followed by the crop (and wrap) of the padding.
    """

    def __init__(
        self,
        out: int | None = None,
        kernel_size: int | tuple[int, ...] = 3,
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple = "same",
        W_std: float | Tensor = 1.0,
        b_std: float | Tensor | None = None,
        parametrization: str = "ntk",
        trainable: bool = True,
    ) -> None:
        super().__init__(out, kernel_size, stride, "same", W_std, b_std, parametrization,
                         trainable)  # fmt: skip
        self.padding = check_padding(padding)

    @property
    def mixes_pixels(self) -> bool:  # type: ignore[override]
        """A circular wrap sums outputs at different places: that needs the pixel pairs."""
        return self.padding == "circular"

    def _axes(self, size: tuple[int, ...]) -> tuple[tuple, tuple, list[dict]]:
        window, stride, paddings = self._geometry(len(size))
        axes = [
            transpose_geometry(n, w, s, p)
            for n, w, s, p in zip(size, window, stride, paddings, strict=True)
        ]
        return window, stride, axes

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            return self.affine_kernel(k)  # raises the branch error
        d = k.spatial_ndim
        self._geometry(d)  # the flat-input error
        full = k.layout == "full"
        if self.padding == "circular" and not full:
            raise ValueError("ConvTranspose(padding='circular') needs the full pixel-pair layout")
        size = tuple(k.cov1.shape[1 : 1 + d])
        window, stride, axes = self._axes(size)
        explicit = tuple((g["before"], g["after"]) for g in axes)
        dilated = [
            (n - 1) * s + 1 + g["before"] + g["after"]
            for n, s, g in zip(size, stride, axes, strict=True)
        ]
        check_output_fits(f"ConvTranspose(stride={self.stride!r})", k.nngp, d, full, dilated)
        ones = (1,) * d

        def window_sum(t: Tensor) -> Tensor:
            for r in range(d):
                pixel_axes = (t.ndim - 2 * d + r, t.ndim - d + r) if full else (t.ndim - d + r,)
                t = dilate(t, pixel_axes, stride[r])
            t = conv_window_sum(t, d, full, window, ones, explicit)
            for r, g in enumerate(axes):
                if g["wrap"] is not None:
                    for ax in (t.ndim - 2 * d + r, t.ndim - d + r):
                        t = fold(t, ax, *g["wrap"])
            return t

        return self.affine_kernel(k, window_sum, taps=math.prod(window))

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        if isinstance(in_features, tuple):
            raise TypeError("ConvTranspose got several branches; merge them first with a FanIn")
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                "ConvTranspose needs spatial inputs: build the network with in_features=(C, H, "
                "W) or (C, L), the shape of one example"
            )
        d = len(in_features.size)
        window, stride, axes = self._axes(in_features.size)
        module_class = conv_module_class(d, "ConvTranspose", TRANSPOSE_MODULES)
        out = self.out if self.out is not None else ctx.next_width()
        channels = in_features.channels
        check_fits(
            f"ConvTranspose(kernel_size={self.kernel_size!r})",
            f"the weights of {out} x {channels} channels x {math.prod(window)} taps",
            out * channels * math.prod(window), torch.empty((), dtype=ctx.dtype).element_size(),
            "use a smaller kernel_size, fewer channels or a smaller width",
        )  # fmt: skip
        conv = self.new_module(module_class, channels, out, window, stride, ctx, transposed=True)
        conv.crop = tuple(g["crop"] for g in axes)
        wraps = [g["wrap"] for g in axes]
        conv.wrap = None if wraps[0] is None else tuple(wraps)
        conv.requires_grad_(self.has_parameters)
        size = tuple(g["out"] if g["wrap"] is None else g["wrap"][0] for g in axes)
        return conv, SpatialFeatures(out, size)


class _ScaledTranspose(_Scaled):
    """Forward pass of a transposed convolution: the full output of torch's transposed
    convolution (no padding), then ``crop`` (before, after) per axis (a negative amount pads
    with zeros), an optional circular ``wrap`` to ``size`` per axis, then the bias."""

    crop: tuple[tuple[int, int], ...] = ()
    wrap: tuple[tuple[int, int], ...] | None = None

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight_multiplier == 1.0 else self.weight * self.weight_multiplier
        y = self._conv_forward_full(x, w)
        amounts = [-a for pair in reversed(self.crop) for a in pair]
        if any(amounts):
            y = torch.nn.functional.pad(y, amounts)
        if self.wrap is not None:
            for r, (size, offset) in enumerate(self.wrap):
                y = fold(y, 2 + r, size, offset)
        if self.bias is not None:
            b = self.bias if self.bias_multiplier == 1.0 else self.bias * self.bias_multiplier
            y = y + b.reshape(-1, *([1] * (y.ndim - 2)))
        return y

    def _conv_forward_full(self, x: Tensor, w: Tensor) -> Tensor:
        f = (
            torch.nn.functional.conv_transpose1d,
            torch.nn.functional.conv_transpose2d,
            torch.nn.functional.conv_transpose3d,
        )[x.ndim - 3]
        return f(x, w, None, self.stride)


class ConvTransposeModule1d(_ScaledTranspose, nn.ConvTranspose1d):
    """``torch.nn.ConvTranspose1d`` with the multipliers of a parametrization and a crop."""


class ConvTransposeModule2d(_ScaledTranspose, nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` with the multipliers of a parametrization and a crop."""


class ConvTransposeModule3d(_ScaledTranspose, nn.ConvTranspose3d):
    """``torch.nn.ConvTranspose3d`` with the multipliers of a parametrization and a crop."""


TRANSPOSE_MODULES = (ConvTransposeModule1d, ConvTransposeModule2d, ConvTransposeModule3d)
