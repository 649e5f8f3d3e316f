"""Convolutions over ``(N, C, *S)`` inputs: NCL sequences, NCHW images, NCDHW volumes, ..."""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse
import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from ..kernel import Kernel
from . import _jit, _reuse
from ._chain import PixelMap, Step
from ._spatial import (
    Padding,
    Scratch,
    SpatialPad,
    as_tuple,
    axis_paddings,
    check_fits,
    check_output_fits,
    check_padding,
    check_sizes,
    conv_window_sum,
    describe_padding,
    pads,
)
from .base import BuildContext, SpatialFeatures
from .dense import WeightLayer

__all__ = ["Conv"]


class Conv(WeightLayer):
    r"""Convolution over ``(N, C, *S)`` inputs, any number of spatial axes, NTK parametrization.

    .. math::

        z_p = \frac{\sigma_w}{\sqrt{C k}} \sum_{a, c} W_{a c}\, x_{c, s p + a} + \sigma_b b

    with :math:`k` taps (the filter size), :math:`s` the stride and
    :math:`W, b \sim \mathcal N(0, 1)`.  The kernel map works
    for any d (1-D sequences, 2-D images, 3-D volumes, ...); the finite side is built for d = 1,
    2, 3 (``torch.nn.Conv1d/2d/3d``).

    Args:
        out: output channels; ``None`` for a hidden layer whose channel count is the infinite
            dimension (``build`` gives it the ``width`` it is asked for).
        kernel_size: filter size, an int (the same along every spatial axis) or one per axis.
        stride: an int or one per axis.
        padding: ``"same"`` (zeros; output size :math:`\lceil n / s \rceil`, the smaller half
            of the padding before), ``"valid"`` (none), ``"circular"`` (as "same", wrapping
            around), an int p (p zeros on both sides of every axis, as PyTorch's
            ``padding=p``), or one entry per axis, each an int or a pair ``(before, after)`` of
            zero counts.
        W_std, b_std, parametrization, trainable, s: as in `Dense` (``s``: the width factors of
            the standard parametrization, with the channels as the width).

    Kernel map.  With :math:`[A K]_{pq} = \operatorname{mean}_a K_{s p + a,\, s q + a}` — the
    average over filter offsets a of the input covariance between the *same* offset from both
    pixels (different offsets meet independent weights) — and padded pixels of covariance zero:

    .. math::

        K' &= \sigma_w^2 A(K) + \sigma_b^2 \\
        \Theta' &= K' + \sigma_w^2 A(\Theta) \qquad \text{(ntk)} \\
        \Theta' &= C k\, A(K) + \sigma_w^2 A(\Theta) + [1 \text{ if bias}] \qquad \text{(standard)}

    On the per-pixel layout :math:`A` only reads the pixel diagonal, so a network of convolutions
    ending in Flatten never needs pixel pairs.  The finite side is a `SpatialPad` followed by a
    ``torch.nn.Conv1d`` / ``Conv2d`` with the multipliers of the parametrization.
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
        s: tuple[int, int] = (1, 1),
    ) -> None:
        if not isinstance(trainable, bool):
            raise ValueError(f"trainable must be True or False, got {trainable!r}")
        super().__init__(out, W_std, b_std, parametrization, trainable, s)
        # Checked again against the inputs' number of spatial axes when used.
        self.kernel_size = check_sizes("kernel_size", kernel_size)
        self.stride = check_sizes("stride", stride)
        self.padding = check_padding(padding)

    def _geometry(self, d: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Padding, ...]]:
        name = type(self).__name__
        if d < 1:
            raise ValueError(
                f"{name} needs spatial inputs, (N, C, L) sequences or (N, C, H, W) images, but "
                "got flat features; keep the spatial axes, or use Dense for flat inputs"
            )
        return (
            as_tuple("kernel_size", self.kernel_size, d),
            as_tuple("stride", self.stride, d),
            axis_paddings(self.padding, d),
        )

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            return self.affine_kernel(k)  # raises the branch error
        d = k.spatial_ndim
        window, stride, paddings = self._geometry(d)
        full = k.layout == "full"
        taps = math.prod(window)
        size = [
            pads(n, w, s, p)[2]
            for n, w, s, p in zip(k.cov1.shape[1 : 1 + d], window, stride, paddings, strict=True)
        ]
        name = f"{type(self).__name__}(padding={describe_padding(self.padding)})"
        check_output_fits(name, k.nngp, d, full, size)
        if self.parametrization != "ntk" or any(
            isinstance(v, Tensor) for v in (self.W_std, self.b_std)
        ):  # the general affine map (tensor-valued scales, standard-parametrization NTK)

            def window_sum(t: Tensor) -> Tensor:
                return conv_window_sum(t, d, full, window, stride, paddings)

            return self.affine_kernel(k, window_sum, taps=taps)
        return self._fused_kernel(k, d, full, window, stride, paddings, taps)

    def chain_op(self, k: Kernel, size: tuple[int, ...]) -> Step | None:
        """On the per-pixel layout, the window sum as a map of the pixels (`window_map`)
        for `widelimits.layers._chain`'s compiled runs, where `_fused_kernel` applies (NTK
        parametrization, float scales); None otherwise, or when the layer must raise its own
        error."""
        plain = type(self).kernel_fn is Conv.kernel_fn  # not a subclass's own map
        if not plain or k.layout != "diagonal" or self.parametrization != "ntk":
            return None
        if any(isinstance(v, Tensor) for v in (self.W_std, self.b_std)):
            return None
        try:
            window, stride, paddings = self._geometry(len(size))
            geometry = zip(size, window, stride, paddings, strict=True)
            out = [pads(n, w, s, p)[2] for n, w, s, p in geometry]
        except ValueError:
            return None
        if min(out, default=0) < 1 or math.prod(out) > 4 * math.prod(size):
            return None  # kernel_fn checks the output's size and raises where it must
        pixels = window_map(size, window, stride, paddings)
        w2 = float(self.W_std) ** 2 / math.prod(window)
        b2 = 0.0 if self.b_std is None else float(self.b_std) ** 2
        op = (_jit.WINDOW, w2, b2, float(self.has_parameters), 0.0, 0.0)
        changes = {"is_gaussian": True, "width": self.finite_width}
        return Step(op, changes, pixels)

    def _fused_kernel(
        self, k: Kernel, d: int, full: bool, window, stride, paddings, taps: int
    ) -> Kernel:
        """`affine_kernel` in one pass per tensor: the multiply by sigma_w^2 / taps rides on the
        window sum's adds and the NTK's ``K' +`` on its last step; intermediates share one
        scratch buffer (NTK parametrization, float scales)."""
        w2 = float(self.W_std) ** 2 / taps
        b2 = 0.0 if self.b_std is None else float(self.b_std) ** 2
        scratch = _reuse.scratch("window sums", Scratch)

        size = tuple(k.cov1.shape[1 : 1 + d])
        keeps_size = size == tuple(
            pads(n, w, s, p)[2] for n, w, s, p in zip(size, window, stride, paddings, strict=True)
        )

        def into(t: Tensor) -> Tensor | None:
            # Write over t when this layer owns it, the output has t's shape (stride 1, "same")
            # and the sum has two steps or more (only the first one reads t).
            return t if d >= 2 and keeps_size and _reuse.take(self, t) else None

        def affine(t: Tensor, reuse: bool = True) -> Tensor:  # sigma_w^2 A(t) + sigma_b^2
            return conv_window_sum(
                t, d, full, window, stride, paddings, w2, None, scratch,
                out=into(t) if reuse else None, shift=b2,
            )  # fmt: skip

        # The largest tensor first: scratch is sized once.  When ntk is nngp (the NTK right after
        # the first trainable layer) only the NTK's sum may write over their memory.
        nngp = affine(k.nngp, k.ntk is not k.nngp)
        cov1 = nngp if k.cov1 is k.nngp else affine(k.cov1)
        cov2 = cov1 if k.cov2 is k.cov1 else affine(k.cov2)
        theta = k.ntk
        base = nngp if self.has_parameters else None
        if theta is not None and theta.ndim == 0:  # the zero NTK before any trainable layer
            theta = theta if base is None else base
        elif theta is not None:  # K' + sigma_w^2 A(Theta), or sigma_w^2 A(Theta) if frozen
            theta = conv_window_sum(
                theta, d, full, window, stride, paddings, w2, base, scratch, out=into(theta)
            )
        return k.replace(
            nngp=nngp, ntk=theta, cov1=cov1, cov2=cov2, is_gaussian=True, width=self.finite_width
        )

    def new_module(
        self, module_class, channels: int, out: int, window, stride, ctx: BuildContext,
        transposed: bool = False,
    ) -> nn.Module:
        """A torch convolution of ``module_class`` with this layer's initialisation and
        multipliers (weights ``(out, channels, *window)``, or ``(channels, out, *window)`` for
        torch's transposed convolutions)."""
        sc = self.weight_scales(channels * math.prod(window), ctx)
        # skip_init: no default initialisation, which would draw from torch's global generator.
        conv = skip_init(
            module_class,
            channels, out, window, stride=stride, bias=self.b_std is not None, dtype=ctx.dtype,
        )  # fmt: skip
        shape = (channels, out) if transposed else (out, channels)
        conv.weight = nn.Parameter(ctx.randn(*shape, *window) * sc["w_init"])
        if conv.bias is not None:
            conv.bias = nn.Parameter(ctx.randn(out) * sc["b_init"])
        set_scales(conv, sc)
        return conv

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        name = type(self).__name__
        if isinstance(in_features, tuple):
            raise TypeError(f"{name} got several branches; merge them first with a FanIn layer")
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                f"{name} needs spatial inputs: build the network with in_features=(C, H, W) or "
                "(C, L), the shape of one example"
            )
        d = len(in_features.size)
        window, stride, paddings = self._geometry(d)
        module_class = conv_module_class(d, name)
        out = self.finite_out(ctx)
        channels = in_features.channels
        geometry = list(zip(in_features.size, window, stride, paddings, strict=True))
        size = tuple(pads(n, w, s, p)[2] for n, w, s, p in geometry)
        itemsize = torch.empty((), dtype=ctx.dtype).element_size()
        check_fits(
            f"{name}(kernel_size={self.kernel_size!r})",
            f"the weights of {out} x {channels} channels x {math.prod(window)} taps",
            out * channels * math.prod(window), itemsize,
            "use a smaller kernel_size, fewer channels or a smaller width (the infinite-width "
            "kernel needs none of this memory: its taps past the image size are merged)",
        )  # fmt: skip
        padded = channels * math.prod(n + sum(pads(n, w, s, p)[:2]) for n, w, s, p in geometry)
        check_fits(
            f"{name}(kernel_size={self.kernel_size!r})", "one padded input example", padded,
            itemsize, "use a smaller kernel_size",
        )  # fmt: skip
        conv = self.new_module(module_class, channels, out, window, stride, ctx)
        conv.requires_grad_(self.has_parameters)
        if all(p == "valid" or p == (0, 0) for p in paddings):
            return conv, SpatialFeatures(out, size)
        padding = self.padding if isinstance(self.padding, str) else paddings
        return nn.Sequential(SpatialPad(window, stride, padding), conv), SpatialFeatures(out, size)


@functools.lru_cache(maxsize=64)
def window_map(size: tuple[int, ...], window, stride, paddings) -> PixelMap:
    """The per-pixel window sum of a convolution as a map of the pixels: how often each input
    pixel enters each output pixel's sum (0 or 1, more when a circular padding wraps a small
    image onto itself).  The sum is separable (an offset moves each axis on its own), so the
    map is the Kronecker product of one map per axis, each computed by `conv_window_sum` on
    the unit vectors of that axis: it is that sum whatever the padding."""
    weights, out = scipy.sparse.csr_matrix(np.ones((1, 1))), []
    for n, w, s, p in zip(size, window, stride, paddings, strict=True):
        unit = torch.eye(n, dtype=torch.float64)
        axis = conv_window_sum(unit, 1, False, (w,), (s,), (p,)).numpy()  # (n, n_out)
        weights = scipy.sparse.kron(weights, scipy.sparse.csr_matrix(axis), format="csr")
        out.append(axis.shape[1])
    by_output = weights.T.tocsr()  # row q: the input pixels of output pixel q
    by_output.sort_indices()
    return PixelMap(by_output.indptr, by_output.indices, by_output.data, tuple(out))


def conv_module_class(d: int, name: str, classes: tuple | None = None) -> type[nn.Module]:
    """The finite convolution module for ``d`` spatial axes (1, 2 or 3: what torch has), from
    ``classes`` (1-D, 2-D, 3-D; default: `ConvModule1d` / ``2d`` / ``3d``)."""
    classes = classes or (ConvModule1d, ConvModule2d, ConvModule3d)
    if not 1 <= d <= 3:
        raise ValueError(
            f"{name} builds finite networks for 1, 2 or 3 spatial axes (torch has Conv1d/2d/3d), "
            f"but in_features has {d}; the infinite-width kernel (net.kernel) works for any "
            "number of spatial axes"
        )
    return classes[d - 1]


def set_scales(module: nn.Module, sc: dict) -> None:
    """Store a parametrization's multipliers (`WeightLayer.weight_scales`) on a finite module."""
    module.weight_multiplier, module.bias_multiplier = float(sc["w_mult"]), float(sc["b_mult"])
    module.lr_scale, module.parametrization = float(sc["lr_scale"]), sc["name"]


class _Scaled:
    """Forward pass ``c W * x + d b`` of a torch convolution (padding done beforehand)."""

    weight_multiplier: float = 1.0
    bias_multiplier: float = 1.0
    lr_scale: float = 1.0
    parametrization: str = "ntk"

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight_multiplier == 1.0 else self.weight * self.weight_multiplier
        b = self.bias
        if b is not None and self.bias_multiplier != 1.0:
            b = b * self.bias_multiplier
        return self._conv_forward(x, w, b)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, weight_multiplier={self.weight_multiplier:.4g}, "
            f"bias_multiplier={self.bias_multiplier:.4g}, lr_scale={self.lr_scale:.4g}"
        )


class ConvModule1d(_Scaled, nn.Conv1d):
    """``torch.nn.Conv1d`` with the forward multipliers of a parametrization."""


class ConvModule2d(_Scaled, nn.Conv2d):
    """``torch.nn.Conv2d`` with the forward multipliers of a parametrization."""


class ConvModule3d(_Scaled, nn.Conv3d):
    """``torch.nn.Conv3d`` with the forward multipliers of a parametrization."""
