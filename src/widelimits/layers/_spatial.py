"""Window sums over the spatial axes of kernel tensors, shared by convolutions and pooling.

Kernel tensors carry pixels on their trailing axes: ``(..., *S)`` in the diagonal layout and
``(..., *S, *S)`` (pixel p, then pixel q) in the full layout (see `widelimits.Kernel`).
Padding follows the usual rules, per spatial axis of size n, window w and stride s:

- ``"valid"``: no padding, ``(n - w) // s + 1`` outputs;
- ``"same"``: ``ceil(n / s)`` outputs, ``max((out - 1) s + w - n, 0)`` zeros split with the smaller
  half before (the convention of TensorFlow, JAX and neural-tangents);
- ``"circular"``: as ``"same"`` but wrapping around (periodic images), as many times as the
  window needs when it is larger than the image (torch's ``F.pad`` wraps at most once).

A window larger than the (padded) image reads some inputs several times (circular) or reads
only zeros at some offsets ("same"): `effective_taps` groups the offsets that read the same
inputs and drops those that read only padding, so the kernel work is bounded by the image size
whatever the window (e.g. ``kernel_size=10**9``), and exact.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PADDINGS = ("same", "valid", "circular")

MAX_SIZE = 2**31 - 1
"""Largest window, stride or spatial size along one axis (torch indexes with 32-bit ints)."""


def _size(value) -> int | None:
    """``value`` as a positive int no larger than `MAX_SIZE`, or None (bools are not sizes)."""
    if isinstance(value, bool):
        return None
    try:
        v = operator.index(value)
    except TypeError:
        return None
    return v if 1 <= v <= MAX_SIZE else None


def check_sizes(name: str, value) -> int | tuple[int, ...]:
    """A window or stride argument at construction: a positive int or 1 or 2 of them."""
    if _size(value) is not None:
        return operator.index(value)
    if isinstance(value, list | tuple) and 1 <= len(value) <= 2:
        values = tuple(_size(v) for v in value)
        if all(v is not None for v in values):
            return values
    raise ValueError(
        f"{name}={value!r} is not a window size: give a positive integer (at most {MAX_SIZE}) "
        "or a tuple of one per spatial axis (1 or 2 of them)"
    )


def as_tuple(name: str, value, d: int) -> tuple[int, ...]:
    """An int or a length-``d`` sequence of positive ints as a ``d``-tuple."""
    values = (value,) * d if _size(value) is not None else tuple(value)
    if len(values) != d or not all(_size(v) is not None for v in values):
        raise ValueError(
            f"{name}={value!r} does not fit inputs with {d} spatial axes: give a positive int or "
            f"{d} positive ints"
        )
    return tuple(operator.index(v) for v in values)


def check_fits(name: str, what: str, elements: int, itemsize: int, fix: str) -> None:
    """Refuse (before allocating) a finite module whose tensors cannot fit in memory.

    ``elements`` counts what one build (weights) or one example (a padded input) needs; the
    limit is the memory available now, so a size that passes can still be slow, but one that
    fails would never have run.
    """
    from .._compute import available_memory

    needed = elements * itemsize
    available = available_memory(torch.device("cpu"))
    if needed > available:
        raise ValueError(
            f"{name}: {what} would need {needed / 2**30:.3g} GiB ({elements} numbers), more than "
            f"the {available / 2**30:.3g} GiB of memory available; {fix}"
        )


def check_padding(padding: str) -> str:
    if not isinstance(padding, str) or padding not in PADDINGS:
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
    return total // 2, total - total // 2, out


def effective_taps(
    size: int, window: int, stride: int, padding: str
) -> tuple[int, list[tuple[int, int]]]:
    """``(out, [(d, c), ...])``: output i sums ``c`` times the input at ``stride * i + d``.

    Filter offset a reads the unpadded position ``stride * i + a - before``.  With zero padding
    the offsets that fall in the padding for every output are dropped (they add zeros); with
    circular padding the offsets equal modulo ``size`` read the same inputs and are merged, with
    their count.  Positions outside [0, size) left in the list are zeros ("same") or wrap
    around (circular).  At most ``min(window, 2 size)`` taps remain.
    """
    before, _, out = pads(size, window, stride, padding)
    lo, hi = -before, window - 1 - before
    if padding == "circular" and window > size:
        # number of d in [lo, hi] with d = r (mod size)
        counts = [(hi - r) // size - (lo - 1 - r) // size for r in range(size)]
        return out, [(r, c) for r, c in enumerate(counts) if c]
    if padding != "circular":
        lo, hi = max(lo, -stride * (out - 1)), min(hi, size - 1)
    return out, [(d, 1) for d in range(lo, hi + 1)]


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
    n = t.shape[axes[0]]
    before, after, out = pads(n, window, stride, padding)
    out, taps = effective_taps(n, window, stride, padding)
    if len(taps) < window:  # a window larger than the image: only the taps that matter
        return _gather_sum(t, axes, n, stride, out, taps, padding == "circular")
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


def _gather_sum(
    t: Tensor, axes: Sequence[int], n: int, stride: int, out: int, taps, circular: bool
) -> Tensor:
    """`window_sum` from the effective taps (see `effective_taps`), by indexing."""
    total = None
    base = stride * torch.arange(out, device=t.device)
    for d, count in taps:
        idx = base + d
        valid = None
        if circular:
            idx = idx % n
        elif d < 0 or stride * (out - 1) + d >= n:
            valid = (idx >= 0) & (idx < n)
            idx = idx.clamp(0, n - 1)
        piece = t
        for ax in axes:
            piece = piece.index_select(ax, idx)
            if valid is not None:
                shape = [1] * t.ndim
                shape[ax] = out
                piece = piece * valid.reshape(shape).to(t.dtype)
        if count != 1:
            piece = piece * count
        total = piece if total is None else total.add_(piece)
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
    # out[i] += t[i + shift] where both exist: shifts of n or more never meet the image
    for shift in range(max(-before, 1 - n), min(window - 1 - before, n - 1) + 1):
        if shift == 0:
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


def _repeat2(sizes) -> list[int]:
    """[n0, n0, n1, n1, ...]: the size each entry of F.pad's amounts pads."""
    return [n for n in sizes for _ in range(2)]


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
        if self.padding != "circular":
            return F.pad(x, amounts, mode="constant")
        if all(a <= n for a, n in zip(amounts, _repeat2(x.shape[:1:-1]), strict=True)):
            return F.pad(x, amounts, mode="circular")
        # F.pad wraps at most once: wrap by indexing, as often as the window needs
        for r, n in enumerate(x.shape[2:]):
            before, after, _ = pads(n, self.window[r], self.stride[r], self.padding)
            idx = torch.arange(-before, n + after, device=x.device) % n
            x = x.index_select(2 + r, idx)
        return x

    def extra_repr(self) -> str:
        return f"window={self.window}, stride={self.stride}, padding={self.padding!r}"
