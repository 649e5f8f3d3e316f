"""Window sums over the spatial axes of kernel tensors, shared by convolutions and pooling.

Kernel tensors carry pixels on their trailing axes: ``(..., *S)`` in the diagonal layout and
``(..., *S, *S)`` (pixel p, then pixel q) in the full layout (see `widelimits.Kernel`).
Padding follows the usual rules, per spatial axis of size n, window w and stride s:

- ``"valid"``: no padding, ``(n - w) // s + 1`` outputs;
- ``"same"``: ``ceil(n / s)`` outputs, ``max((out - 1) s + w - n, 0)`` zeros split with the smaller
  half before (the convention of TensorFlow, JAX and neural-tangents);
- ``"circular"``: as ``"same"`` but wrapping around (periodic images).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PADDINGS = ("same", "valid", "circular")


def as_tuple(name: str, value, d: int) -> tuple[int, ...]:
    """An int or a length-``d`` sequence of positive ints as a ``d``-tuple."""
    values = (value,) * d if isinstance(value, int) else tuple(value)
    if len(values) != d or not all(isinstance(v, int) and v >= 1 for v in values):
        raise ValueError(
            f"{name}={value!r} does not fit inputs with {d} spatial axes: give a positive int or "
            f"{d} positive ints"
        )
    return values


def check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def pads(size: int, window: int, stride: int, padding: str) -> tuple[int, int, int]:
    """``(before, after, out)``: padding on each side and output size along one axis."""
    if padding == "valid":
        if size < window:
            raise ValueError(
                f"a window of {window} does not fit a spatial size of {size} with "
                "padding='valid': use padding='same' or a smaller window"
            )
        return 0, 0, (size - window) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    if padding == "circular" and total > size:
        raise ValueError(f"circular padding of {total} exceeds the spatial size {size}")
    return total // 2, total - total // 2, out


def _pad(t: Tensor, axis: int, before: int, after: int, circular: bool) -> Tensor:
    if before == after == 0:
        return t
    n = t.shape[axis]
    if circular:
        return torch.cat([t.narrow(axis, n - before, before), t, t.narrow(axis, 0, after)], axis)
    shape = list(t.shape)
    shape[axis] = n + before + after
    out = t.new_zeros(shape)
    out.narrow(axis, before, n).copy_(t)
    return out


def window_sum(t: Tensor, axes: Sequence[int], window: int, stride: int, padding: str) -> Tensor:
    """``out[..., i, ...] = sum_a t_padded[..., s i + a, ...]``, the same offset a on all ``axes``.

    Several axes sharing one offset is what a convolution does to a pixel-pair kernel: both
    pixels of a pair see the same filter tap.  The axes must have equal sizes.
    """
    before, after, out = pads(t.shape[axes[0]], window, stride, padding)
    for ax in axes:
        t = _pad(t, ax, before, after, padding == "circular")
    total = None
    for a in range(window):
        index = [slice(None)] * t.ndim
        for ax in axes:
            index[ax] = slice(a, a + stride * (out - 1) + 1, stride)
        piece = t[tuple(index)]
        total = piece.clone() if total is None else total.add_(piece)
    return total


def conv_sum(t: Tensor, d: int, full: bool, window, stride, padding: str) -> Tensor:
    """sum over filter offsets a of K_{p+a, q+a} (pixel diagonal only if not full)."""
    for r in range(d):
        axes = (t.ndim - 2 * d + r, t.ndim - d + r) if full else (t.ndim - d + r,)
        if stride[r] == 1 and padding == "same":
            t = _shifted_sum(t, axes, window[r])
        else:
            t = window_sum(t, axes, window[r], stride[r], padding)
    return t


def _shifted_sum(t: Tensor, axes: Sequence[int], window: int) -> Tensor:
    """`window_sum` for stride 1 and zero "same" padding, without building the padded tensor."""
    total = t.clone()
    for dst, src in _shifts(t.ndim, tuple(axes), window, t.shape[axes[0]]):
        total[dst] += t[src]
    return total


@functools.cache
def _shifts(ndim: int, axes: tuple[int, ...], window: int, n: int) -> list[tuple[tuple, tuple]]:
    """Index pairs (destination, source) of the off-centre taps of `_shifted_sum`."""
    before = (window - 1) // 2
    pairs = []
    for a in range(window):
        shift = a - before  # out[i] += t[i + shift] where both exist
        if shift == 0 or abs(shift) >= n:
            continue
        dst, src = [slice(None)] * ndim, [slice(None)] * ndim
        for ax in axes:
            dst[ax] = slice(max(0, -shift), n - max(0, shift))
            src[ax] = slice(max(0, shift), n - max(0, -shift))
        pairs.append((tuple(dst), tuple(src)))
    return pairs


def pool_sum(t: Tensor, d: int, window, stride, padding: str) -> Tensor:
    """sum over windows at p and at q independently, K'_{pq} = sum_{a, b} K_{sp+a, sq+b} (full)."""
    for r in range(d):
        for ax in (t.ndim - 2 * d + r, t.ndim - d + r):
            t = window_sum(t, (ax,), window[r], stride[r], padding)
    return t


class SpatialPad(nn.Module):
    """Pads the spatial axes of (N, C, *S) inputs by the ``"same"`` / ``"circular"`` rule."""

    def __init__(self, window: Sequence[int], stride: Sequence[int], padding: str) -> None:
        super().__init__()
        self.window, self.stride, self.padding = tuple(window), tuple(stride), padding

    def forward(self, x: Tensor) -> Tensor:
        amounts: list[int] = []
        geometry = zip(x.shape[2:], self.window, self.stride, strict=True)
        for n, w, s in reversed(list(geometry)):
            before, after, _ = pads(n, w, s, self.padding)
            amounts += [before, after]
        if not any(amounts):
            return x
        mode = "circular" if self.padding == "circular" else "constant"
        return F.pad(x, amounts, mode=mode)

    def extra_repr(self) -> str:
        return f"window={self.window}, stride={self.stride}, padding={self.padding!r}"
