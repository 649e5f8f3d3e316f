r"""Locally connected layers: convolutions whose filters are not shared across positions."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from ..kernel import Kernel, pixel_diagonal
from ._spatial import SpatialPad, check_fits, pads
from .base import BuildContext, SpatialFeatures
from .conv import Conv, set_scales

__all__ = ["ConvLocal"]


def embed_diagonal(t: Tensor, d: int) -> Tensor:
    """``(..., *S)`` per-pixel values as the pixel-pair tensor ``(..., *S, *S)`` that holds them
    on its pixel diagonal and zeros elsewhere (the inverse of `pixel_diagonal`)."""
    spatial = t.shape[t.ndim - d :]
    lead = t.shape[: t.ndim - d]
    flat = t.reshape(*lead, math.prod(spatial))
    return torch.diag_embed(flat).reshape(*lead, *spatial, *spatial)


class ConvLocal(Conv):
    r"""Locally connected layer (untied weights): a `Conv` with its own filter at each output.

    .. math::

        z_p = \frac{\sigma_w}{\sqrt{C k}} \sum_{a, c} W^{(p)}_{a c}\, x_{c, s p + a}
              + \sigma_b b^{(p)},

    with independent ``W^{(p)}, b^{(p)} ~ N(0, 1)`` for every output position p.

    Args:
        out, kernel_size, stride, padding, W_std, b_std, parametrization, trainable: as in
            `Conv` (``padding`` also takes ints and pairs).

    Kernel map.  Outputs at different positions meet independent weights, so they are
    uncorrelated; at one position the map is `Conv`'s (the mean over filter offsets of the
    input's same-offset covariances):

    .. math::

        K'_{pq} = \delta_{pq} \Big( \frac{\sigma_w^2}{k} \sum_a K_{s p + a,\, s p + a}
                  + \sigma_b^2 \Big),

    and :math:`\Theta` alike (its pixel diagonal mapped as `Conv` maps it, zero elsewhere).  Only
    the input's pixel diagonal is read; on the per-pixel layout (networks ending in Flatten) the
    kernel equals `Conv`'s.  The finite side gathers the windows (one strided slice per filter
    offset, any number of spatial axes) and applies one weight tensor per output position.
    """

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel) or k.layout != "full":
            return super().kernel_fn(k)
        d = k.spatial_ndim
        self._geometry(d)  # the flat-input error

        def diagonal(t: Tensor | None) -> Tensor | None:
            return t if t is None or t.ndim == 0 else pixel_diagonal(t, d)

        cov1 = diagonal(k.cov1)
        per_pixel = k.replace(
            nngp=diagonal(k.nngp), ntk=diagonal(k.ntk), cov1=cov1,
            cov2=cov1 if k.cov2 is k.cov1 else diagonal(k.cov2), layout="diagonal",
        )  # fmt: skip
        out = super().kernel_fn(per_pixel)
        return out.map_all(lambda t: embed_diagonal(t, d), ntk=True).replace(layout="full")

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        if isinstance(in_features, tuple):
            raise TypeError("ConvLocal got several branches; merge them first with a FanIn layer")
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                "ConvLocal needs spatial inputs: build the network with in_features=(C, H, W) or "
                "(C, L), the shape of one example"
            )
        window, stride, paddings = self._geometry(len(in_features.size))
        out = self.out if self.out is not None else ctx.next_width()
        channels = in_features.channels
        geometry = list(zip(in_features.size, window, stride, paddings, strict=True))
        size = tuple(pads(n, w, s, p)[2] for n, w, s, p in geometry)
        positions, taps = math.prod(size), math.prod(window)
        check_fits(
            f"ConvLocal(kernel_size={self.kernel_size!r})",
            f"the weights of {out} x {channels} channels x {taps} taps at {positions} positions",
            out * positions * channels * taps, torch.empty((), dtype=ctx.dtype).element_size(),
            "use a smaller kernel_size, fewer channels, a smaller width or smaller images",
        )  # fmt: skip
        sc = self.weight_scales(channels * taps, ctx)
        weight = ctx.randn(out, positions, channels, taps) * sc["w_init"]
        bias = None if self.b_std is None else ctx.randn(out, *size) * sc["b_init"]
        module = ConvLocalModule(weight, bias, window, stride, size)
        set_scales(module, sc)
        module.requires_grad_(self.has_parameters)
        if all(p == "valid" or p == (0, 0) for p in paddings):
            return module, SpatialFeatures(out, size)
        padding = self.padding if isinstance(self.padding, str) else paddings
        pad = SpatialPad(window, stride, padding)
        return nn.Sequential(pad, module), SpatialFeatures(out, size)


class ConvLocalModule(nn.Module):
    """The finite locally connected layer: ``z[o, p] = c sum_{c', a} W[o, p, c', a] x[c', s p +
    a] + d b[o, p]`` on inputs already padded (weights ``(out, positions, in, taps)``)."""

    weight_multiplier: float = 1.0
    bias_multiplier: float = 1.0
    lr_scale: float = 1.0
    parametrization: str = "ntk"

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        window: tuple[int, ...],
        stride: tuple[int, ...],
        size: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.window, self.stride, self.size = window, stride, size

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        # one strided slice per filter offset a: (N, C, taps, *out), cheap to differentiate
        pieces = []
        for offset in itertools.product(*(range(w) for w in self.window)):
            index = [slice(None), slice(None)]
            for a, s, m in zip(offset, self.stride, self.size, strict=True):
                index.append(slice(a, a + s * (m - 1) + 1, s))
            pieces.append(x[tuple(index)].reshape(n, c, -1))
        patches = torch.stack(pieces, -1)  # (N, C, positions, taps)
        w = self.weight if self.weight_multiplier == 1.0 else self.weight * self.weight_multiplier
        y = torch.einsum("ncpk,opck->nop", patches, w).reshape(n, -1, *self.size)
        if self.bias is not None:
            y = y + (self.bias if self.bias_multiplier == 1.0 else self.bias * self.bias_multiplier)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[2]} -> {self.weight.shape[0]}, window={self.window}, "
            f"stride={self.stride}, positions={self.size}, weight_multiplier="
            f"{self.weight_multiplier:.4g}, bias_multiplier={self.bias_multiplier:.4g}"
        )
