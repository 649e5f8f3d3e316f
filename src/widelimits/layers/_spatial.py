"""Window sums over the spatial axes of kernel tensors, shared by convolutions and pooling.

Kernel tensors carry pixels on their trailing axes: ``(..., *S)`` in the diagonal layout and
``(..., *S, *S)`` (pixel p, then pixel q) in the full layout (see `widelimits.Kernel`).
Padding follows the usual rules, per spatial axis of size n, window w and stride s:

- ``"valid"``: no padding, ``(n - w) // s + 1`` outputs;
- ``"same"``: ``ceil(n / s)`` outputs, ``max((out - 1) s + w - n, 0)`` zeros split with the smaller
  half before (the convention of TensorFlow, JAX and neural-tangents);
- ``"circular"``: as ``"same"`` but wrapping around (periodic images), as many times as the
  window needs when it is larger than the image (torch's ``F.pad`` wraps at most once);
- explicit zeros ``(before, after)``: ``(n + before + after - w) // s + 1`` outputs (PyTorch's
  integer ``padding=p`` is ``(p, p)``).

Layers take ``padding`` as one of the three names, an int p (``(p, p)`` on every axis), or one
entry per spatial axis, each an int p or a pair ``(before, after)`` (`check_padding`);
`axis_paddings` turns that into one ``"same"`` / ``"valid"`` / ``"circular"`` / ``(before,
after)`` per axis, the form `pads` and the window sums take.

A window larger than the (padded) image reads some inputs several times (circular) or reads
only zeros at some offsets ("same"): `effective_taps` groups the offsets that read the same
inputs and drops those that read only padding, so the kernel work is bounded by the image size
whatever the window (e.g. ``kernel_size=10**9``), and exact.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._compiled_windows import axis_sum, separable_sum

PADDINGS = ("same", "valid", "circular")

MAX_SIZE = 2**31 - 1
"""Largest window, stride or spatial size along one axis (torch indexes with 32-bit ints)."""


def _size(value, low: int = 1) -> int | None:
    """``value`` as an int from ``low`` to `MAX_SIZE`, or None (bools are not sizes)."""
    if isinstance(value, bool):
        return None
    try:
        v = operator.index(value)
    except TypeError:
        return None
    return v if low <= v <= MAX_SIZE else None


def check_sizes(name: str, value) -> int | tuple[int, ...]:
    """A window or stride argument at construction: a positive int or one per spatial axis."""
    if _size(value) is not None:
        return operator.index(value)
    if isinstance(value, list | tuple) and len(value) >= 1:
        values = tuple(_size(v) for v in value)
        if all(v is not None for v in values):
            return values
    raise ValueError(
        f"{name}={value!r} is not a window size: give a positive integer (at most {MAX_SIZE}) "
        "or a tuple of one per spatial axis"
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


Padding = str | tuple[int, int]
"""The padding of one spatial axis: ``"same"``, ``"valid"``, ``"circular"`` or explicit zeros
``(before, after)``."""


def _amount(value) -> int | None:
    """``value`` as a non-negative int no larger than `MAX_SIZE`, or None."""
    return _size(value, low=0)


def _explicit(value) -> tuple[int, int] | None:
    """One axis' explicit padding, an int p or a pair (before, after), as a pair (or None)."""
    if _amount(value) is not None:
        return (operator.index(value),) * 2
    if isinstance(value, list | tuple) and len(value) == 2:
        pair = tuple(_amount(v) for v in value)
        if None not in pair:
            return pair
    return None


def check_output_fits(name: str, t: Tensor, d: int, full: bool, size: Sequence[int]) -> None:
    """Refuse (before allocating) a kernel map whose output tensor cannot fit in memory.

    ``t`` is the layer's input kernel tensor (``(..., *S)`` or ``(..., *S, *S)``), ``size`` the
    output's spatial shape: large explicit paddings or up-sampling can grow it past memory.
    """
    lead = math.prod(t.shape[: t.ndim - (2 * d if full else d)])
    pixels = math.prod(size) ** (2 if full else 1)
    if lead * pixels * t.element_size() < 2**26:  # small: skip asking for the free memory
        return
    what = f"the output kernel of {lead} pairs x {pixels} pixel entries"
    fix = "use less padding, a smaller stride or smaller inputs"
    check_fits(name, what, lead * pixels, t.element_size(), fix)


def check_padding(padding) -> str | tuple:
    """A ``padding`` argument at construction: a name, an int, or one entry per spatial axis.

    Returns the name, ``((p, p),)`` for an int p (any number of axes: see `axis_paddings`), or
    a tuple of ``(before, after)`` pairs, one per axis.
    """
    if isinstance(padding, str) and padding in PADDINGS:
        return padding
    if _amount(padding) is not None:
        return (_explicit(padding),)
    if isinstance(padding, list | tuple) and len(padding) >= 1:
        pairs = tuple(_explicit(v) for v in padding)
        if None not in pairs:
            return pairs
    raise ValueError(
        f"padding must be one of {PADDINGS}, a non-negative int (zeros on both sides of every "
        "spatial axis), or one entry per spatial axis, each an int or a pair (before, after); "
        f"got {padding!r}"
    )


def axis_paddings(padding: str | tuple, d: int) -> tuple[Padding, ...]:
    """The padding of each of ``d`` spatial axes, from a `check_padding` result."""
    if isinstance(padding, str):
        return (padding,) * d
    if len(padding) == 1 and d != 1:
        return padding * d
    if len(padding) != d:
        raise ValueError(
            f"padding={padding!r} does not fit inputs with {d} spatial axes: give a name, an int, "
            f"or {d} entries (an int or a pair (before, after) each)"
        )
    return tuple(padding)


def describe_padding(padding: str | tuple):
    """``padding`` as the user would write it back (for repr and error messages)."""
    if isinstance(padding, str):
        return repr(padding)
    if len(padding) == 1 and padding[0][0] == padding[0][1]:
        return str(padding[0][0])
    return repr(tuple(p if p[0] != p[1] else p[0] for p in padding))


def pads(size: int, window: int, stride: int, padding: Padding) -> tuple[int, int, int]:
    """``(before, after, out)``: padding on each side and output size along one axis."""
    if not isinstance(padding, str):
        before, after = padding
        if size + before + after < window:
            raise ValueError(
                f"a window of {window} does not fit a spatial size of {size} padded with "
                f"{before} + {after} zeros: pad more or use a smaller window"
            )
        return before, after, (size + before + after - window) // stride + 1
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


def _runs(n: int, stride: int, out: int, d: int, circular: bool) -> list[tuple[int, int, int]]:
    """Runs ``(i0, i1, src)``: outputs i in [i0, i1) read the inputs ``src + stride (i - i0)``.

    Output i reads the input at ``stride * i + d``.  With zero padding the outputs whose input
    falls in the padding are left out (one run, maybe empty); with circular padding the positions
    wrap modulo n, which splits the outputs into runs that each stay inside [0, n).
    """
    if not circular:
        i0, i1 = max(0, -(d // stride)), min(out, (n - 1 - d) // stride + 1)
        return [(i0, i1, stride * i0 + d)] if i0 < i1 else []
    runs, i = [], 0
    while i < out:
        src = (stride * i + d) % n
        i1 = min(out, i + (n - 1 - src) // stride + 1)
        runs.append((i, i1, src))
        i = i1
    return runs


@functools.lru_cache(maxsize=256)
def _plan(
    ndim: int, axes: tuple[int, ...], n: int, window: int, stride: int, padding: str
) -> tuple[int, bool, list[tuple[tuple, tuple, int]]]:
    """``(out, covering, [(dst, src, count), ...])`` for `_axis_sum`: ``out[dst] += count *
    t[src]`` per term.  ``covering``: the first term reads every output (it initialises out)."""
    size, taps = effective_taps(n, window, stride, padding)
    runs = [(_runs(n, stride, size, d, padding == "circular"), c) for d, c in taps]
    first = next((k for k, (r, _) in enumerate(runs) if r and r[0][:2] == (0, size)), None)
    if first is not None:  # one run over every output: that tap goes first
        runs.insert(0, runs.pop(first))
    terms = []
    for tap_runs, count in runs:
        for combo in itertools.product(tap_runs, repeat=len(axes)):
            dst, src = [slice(None)] * ndim, [slice(None)] * ndim
            for ax, (i0, i1, s0) in zip(axes, combo, strict=True):
                dst[ax] = slice(i0, i1)
                src[ax] = slice(s0, s0 + stride * (i1 - i0 - 1) + 1, stride)
            terms.append((tuple(dst), tuple(src), count))
    return size, first is not None, terms


def _axis_sum(
    t: Tensor,
    axes: Sequence[int],
    window: int,
    stride: int,
    padding: str,
    scale: float = 1.0,
    base: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``base + scale * window_sum(t, axes, ...)`` written into ``out`` (allocated if None).

    The sum runs over the effective taps (`effective_taps`): one in-place strided add per tap
    (per run of a wrapped circular tap, per axis of ``axes``), no padded copy.  The first tap
    that reads every output initialises ``out`` (with ``base`` added), so a 3-tap window costs
    one write and two adds.  Not differentiable (``out=`` and in-place adds): callers use
    `window_sum` when autograd is recording.
    """
    if len(axes) == 2 and (plan := _compiled_plan(t, [(axes, window, stride, padding)])):
        if (done := axis_sum(t, *plan[0], scale, base, out)) is not None:
            return done  # one compiled pass
    size, covering, terms = _plan(t.ndim, tuple(axes), t.shape[axes[0]], window, stride, padding)
    shape = list(t.shape)
    for ax in axes:
        shape[ax] = size
    if out is None:
        out = t.new_empty(shape)
    if not covering:
        out.zero_() if base is None else out.copy_(base)
    for k, (dst, src, count) in enumerate(terms):
        piece, alpha = t[src], scale * count
        if k == 0 and covering:
            if base is not None:
                torch.add(base, piece, alpha=alpha, out=out)
            elif alpha == 1:
                out.copy_(piece)
            else:
                torch.mul(piece, alpha, out=out)
        else:
            out[dst].add_(piece, alpha=alpha)
    return out


class Scratch:
    """Flat buffers reused by the intermediates of one layer's separable window sums.

    Every fresh tile-sized tensor costs page faults (a pass over the tensor's memory, about as
    much as the sum itself): a layer creates one `Scratch`, passes it to each of its sums (the
    largest first), and drops it when done.
    """

    def __init__(self) -> None:
        self._buffers: dict[int, Tensor] = {}

    def get(self, slot: int, shape: Sequence[int], like: Tensor) -> Tensor:
        """A tensor of ``shape`` (dtype and device of ``like``) in buffer ``slot``."""
        numel = math.prod(shape)
        buf = self._buffers.get(slot)
        fits = buf is not None and buf.dtype == like.dtype and buf.device == like.device
        if not fits or buf.numel() < numel:
            buf = self._buffers[slot] = like.new_empty(numel)
        return buf[:numel].view(shape)


def _recording(*tensors) -> bool:
    """Whether autograd records operations on ``tensors`` (then no out= or in-place writes)."""
    return torch.is_grad_enabled() and any(
        isinstance(x, Tensor) and x.requires_grad for x in tensors
    )


CHUNK_BYTES = 2**24
"""Bytes of input per chunk of the leading (pairs) axis in `_separable`: a chunk's intermediates
stay in the cache between the steps.  A 3x3 window sum over 16 x 32^4 float32 pixel pairs, one
thread: 4.1 ms per pair in one piece, 3.0-3.3 ms in chunks of 4 to 32 MiB (best: 16 MiB)."""


def _output_shape(t: Tensor, steps) -> list[int]:
    """The shape of ``t`` after the window sums ``steps`` (see `_separable`)."""
    shape = list(t.shape)
    for axes, window, stride, padding in steps:
        for ax in axes:
            shape[ax] = pads(shape[ax], window, stride, padding)[2]
    return shape


def _separable(
    t: Tensor, steps, scale: float, base: Tensor | None, scratch: Scratch | None,
    out: Tensor | None = None, shift: float = 0.0,
) -> Tensor:  # fmt: skip
    """Apply the window sums ``steps`` = [(axes, window, stride, padding), ...] one after the
    other: ``base + scale * (sum over the windows of every step)``, then ``+ shift``.

    Each step sums over its own axes, so the steps commute and compose into the product window
    (e.g. a 3x3 window as 3 + 3 taps).  ``scale`` goes into the first step and ``base`` into the
    last; intermediates live in ``scratch`` (two alternating slots).  ``out``: where the last
    step writes, a fresh tensor if None; it may be ``t`` itself when there are two steps or
    more (only the first step reads ``t``).  Large tensors go in chunks of their first axis
    (`CHUNK_BYTES`) when no step sums over it.
    """
    if out is not None:
        same = t.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()
        if _recording(t, base, out) or (len(steps) < 2 and same):
            raise ValueError(
                "out= needs no autograd recording, and two window steps or more when it is t "
                "itself (the first step reads t, the last writes out); leave out=None"
            )
        if list(out.shape) != _output_shape(t, steps):
            raise ValueError(
                f"out= has shape {tuple(out.shape)}, the sum {tuple(_output_shape(t, steps))}"
            )
    if _recording(t, base):
        for axes, window, stride, padding in steps:
            t = window_sum(t, axes, window, stride, padding)
        t = t if scale == 1.0 else scale * t
        t = t if base is None else base + t
        return t + shift if shift else t
    scratch = Scratch() if scratch is None else scratch
    summed = {ax for axes, *_ in steps for ax in axes}
    per_index = t[0].numel() * t.element_size() if t.ndim and t.shape[0] else 0
    if 0 not in summed and per_index and t.nbytes > CHUNK_BYTES and len(steps) > 1:
        if out is None:
            out = t.new_empty(_output_shape(t, steps))
        step = max(1, CHUNK_BYTES // per_index)
        chunked = base is not None and base.ndim == t.ndim and base.shape[0] == t.shape[0]
        for i in range(0, t.shape[0], step):
            j = min(i + step, t.shape[0])
            b = base[i:j] if chunked else base
            _steps(t[i:j], steps, scale, b, scratch, out[i:j], shift)
        return out
    return _steps(t, steps, scale, base, scratch, out, shift)


def _compiled_plan(t: Tensor, steps) -> list | None:
    """``[(axes, stride, output size, taps)]`` of the window sums ``steps`` for
    `_compiled_windows`, or None with circular padding (the compiled sums do not cover it)."""
    if any(p == "circular" for *_, p in steps):
        return None
    return [(axes, s, *effective_taps(t.shape[axes[0]], w, s, p)) for axes, w, s, p in steps]


def _steps(t: Tensor, steps, scale: float, base, scratch: Scratch, out, shift: float) -> Tensor:
    """`_separable`'s steps in one piece (both in one compiled pass where that applies)."""
    plan = _compiled_plan(t, steps)
    if plan is not None and (done := separable_sum(t, plan, scale, base, out, shift)) is not None:
        return done
    for k, (axes, window, stride, padding) in enumerate(steps):
        last = k == len(steps) - 1
        buffer = out if last else scratch.get(k % 2, _output_shape(t, steps[k : k + 1]), t)
        t = _axis_sum(
            t, axes, window, stride, padding,
            scale=scale if k == 0 else 1.0, base=base if last else None, out=buffer,
        )  # fmt: skip
    return t.add_(shift) if shift else t


def conv_sum(
    t: Tensor,
    d: int,
    full: bool,
    window,
    stride,
    padding: str,
    scale: float = 1.0,
    base: Tensor | None = None,
    scratch: Scratch | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``base + scale * sum_a K_{s p + a, s q + a}`` over filter offsets a (the pixel diagonal
    K_{s p + a} only if not ``full``), with padded pixels reading zero or wrapping around.

    Separable: the offset a = (a_1, ..., a_d) moves pixel axis r of p and of q by a_r and no
    other axis, so the sum over a is the sum over a_1 on the axis pair (p_1, q_1), then over a_2
    on (p_2, q_2), ...: 3 + 3 strided adds for a 3x3 filter instead of 9 (see `_separable`,
    also for ``out``).
    """
    return conv_window_sum(t, d, full, window, stride, (padding,) * d, scale, base, scratch, out)


def pool_sum(
    t: Tensor, d: int, window, stride, padding: str, scale: float = 1.0,
    scratch: Scratch | None = None,
) -> Tensor:  # fmt: skip
    """``scale sum_{a, b} K_{s p + a, s q + b}`` (full layout): windows at p and at q
    independently, one window sum per pixel axis (see `_separable`)."""
    steps = []
    for r in range(d):
        for ax in (t.ndim - 2 * d + r, t.ndim - d + r):
            steps.append(((ax,), window[r], stride[r], padding))
    return _separable(t, steps, scale, None, scratch)


def _repeat2(sizes) -> list[int]:
    """[n0, n0, n1, n1, ...]: the size each entry of F.pad's amounts pads."""
    return [n for n in sizes for _ in range(2)]


class SpatialPad(nn.Module):
    """Pads the spatial axes of (N, C, *S) inputs: zeros, circularly, or explicit zeros.

    ``padding`` is one name for every axis or one `Padding` per axis (see `axis_paddings`).
    """

    def __init__(
        self, window: Sequence[int], stride: Sequence[int], padding: str | Sequence[Padding]
    ) -> None:
        super().__init__()
        self.window, self.stride = tuple(window), tuple(stride)
        self.padding = padding if isinstance(padding, str) else tuple(padding)

    def _axis_paddings(self) -> tuple[Padding, ...]:
        return axis_paddings(self.padding, len(self.window))

    def forward(self, x: Tensor) -> Tensor:
        amounts: list[int] = []
        geometry = zip(x.shape[2:], self.window, self.stride, self._axis_paddings(), strict=True)
        for n, w, s, p in reversed(list(geometry)):
            before, after, _ = pads(n, w, s, p)
            amounts += [before, after]
        if not any(amounts):
            return x
        if self.padding != "circular":
            return F.pad(x, amounts, mode="constant")
        if x.ndim <= 5 and all(
            a <= n for a, n in zip(amounts, _repeat2(x.shape[:1:-1]), strict=True)
        ):
            return F.pad(x, amounts, mode="circular")
        # F.pad wraps at most once (and up to 3 axes): wrap by indexing, as often as needed
        for r, n in enumerate(x.shape[2:]):
            before, after, _ = pads(n, self.window[r], self.stride[r], "circular")
            idx = torch.arange(-before, n + after, device=x.device) % n
            x = x.index_select(2 + r, idx)
        return x

    def extra_repr(self) -> str:
        return f"window={self.window}, stride={self.stride}, padding={self.padding!r}"


# -- window sums with one padding per axis ------------------------------------------------------


def conv_window_sum(
    t: Tensor, d: int, full: bool, window: Sequence[int], stride: Sequence[int],
    paddings: Sequence[Padding], scale: float = 1.0, base: Tensor | None = None,
    scratch: Scratch | None = None, out: Tensor | None = None, shift: float = 0.0,
) -> Tensor:  # fmt: skip
    """`conv_sum` with one padding per spatial axis (``paddings``, see `axis_paddings`), plus
    ``shift`` after the sum (a bias variance, added while each entry is in the cache)."""
    steps = []
    for r in range(d):
        axes = (t.ndim - 2 * d + r, t.ndim - d + r) if full else (t.ndim - d + r,)
        steps.append((axes, window[r], stride[r], paddings[r]))
    return _separable(t, steps, scale, base, scratch, out, shift)


def pool_window_sum(
    t: Tensor,
    d: int,
    window: Sequence[int],
    stride: Sequence[int],
    paddings: Sequence[Padding],
    scale: float = 1.0,
    scratch: Scratch | None = None,
) -> Tensor:
    """`pool_sum` with one padding per spatial axis (``paddings``, see `axis_paddings`)."""
    if all(p == paddings[0] for p in paddings) and isinstance(paddings[0], str):
        return pool_sum(t, d, window, stride, paddings[0], scale, scratch)
    steps = []
    for r in range(d):
        for ax in (t.ndim - 2 * d + r, t.ndim - d + r):
            steps.append(((ax,), window[r], stride[r], paddings[r]))
    return _separable(t, steps, scale, None, scratch)
