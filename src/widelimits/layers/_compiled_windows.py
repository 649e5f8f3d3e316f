r"""Same-offset window sums in one compiled pass per axis pair (optional: needs numba).

A convolution moves both pixels of a pair by the same filter offset, so one step of
`widelimits.layers._spatial`'s separable window sums is, with the tensor viewed as
``(A, P, B, Q, C)`` around the summed p-axis and q-axis (both of size n),

.. math::

    out[a, i, b, j, c] = base[a, i, b, j, c]
        + \alpha \sum_{o} t[a, i + o, b, j + o, c],

the sum over the filter offsets o for which both ``i + o`` and ``j + o`` are inside the image
(zero padding).  The torch path (`_spatial._axis_sum`) does one strided add over the whole
tensor per offset; `axis_sum` here does all the offsets of a row of ``out`` while it is in the
L1 cache (`_jit_windows.pair_sum`), vectorised along the contiguous ``(j, c)`` row, so the
tensor is read once and written once per axis pair.  The adds are those of the torch path, in
its order (``base`` first, then the offset that reads every output, then the others), so both
agree to rounding.

It applies to the pixel-pair (full) layout of CPU float32/float64 tensors (strided views are
copied first), with stride 1 and zero padding ("same", "valid" or explicit) for convolutions and
any window and stride for a 2-D pooling, outside autograd, with ``out`` not sharing memory with
``t`` (except a 2-D convolution written over its input).  In every other case (circular
padding, strides in a convolution, the per-pixel layout's one-axis sums, whose tensors are small
enough for the torch path's adds to stay in the cache, a broadcast ``base``, no numba,
``WIDELIMITS_NUMBA=0`` or `widelimits.layers._jit.set_compiled` ``(False)``) the functions
return None and the caller uses the torch path.  Outside autograd, which path a sum takes
depends on the layout and the geometry, not on the tensor's memory layout, so a kernel's
covariances and its variances are rounded alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import _jit

__all__ = ["axis_sum", "separable_sum", "windows"]


def windows():
    """The module of compiled window loops (`_jit_windows`), or None without numba (see
    `_jit.load`)."""
    return _jit.load_locked("_jit_windows")


def _plain(x: Tensor, dtype: torch.dtype, contiguous: bool = True) -> bool:
    return x.dtype == dtype and x.device.type == "cpu" and (x.is_contiguous() or not contiguous)


def _shares_memory(x: Tensor, y: Tensor) -> bool:
    a0, b0 = x.data_ptr(), y.data_ptr()
    a1, b1 = a0 + x.numel() * x.element_size(), b0 + y.numel() * y.element_size()
    return a0 < b1 and b0 < a1


def _ordered(n: int, size: int, taps: Sequence[tuple[int, int]]) -> tuple[np.ndarray, bool]:
    """The offsets of ``taps`` in the torch path's order, the first one that reads every output
    first (if one does: then True).  Empty if one of them counts more than once (circular
    padding only) or there are none."""
    offsets = [d for d, _ in taps]
    if any(count != 1 for _, count in taps):
        offsets = []
    covering = next((d for d in offsets if d >= 0 and size - 1 + d <= n - 1), None)
    if covering is not None:
        offsets.remove(covering)
        offsets.insert(0, covering)
    return np.array(offsets, dtype=np.int64), covering is not None


def _checked(
    t: Tensor, shape: list[int], base: Tensor | None, out: Tensor | None, in_place: bool = False
):
    """``(loops, t, base, out, base mode)`` when the compiled path applies to a sum of ``t``
    into ``shape`` (``out`` allocated if None), None otherwise.  ``t`` and ``base`` come back
    contiguous: a strided view (a permuted kernel) is copied rather than sent to the torch
    path, whose adds round differently, so that a kernel's covariances and variances always
    take the same path (an example paired with itself must keep a correlation of exactly 1).
    ``in_place``: ``out`` may be ``t`` itself (then the base mode is never `IN_OUT`), and a
    copy of ``t`` is written over rather than a fresh ``out`` allocated."""
    dtype = t.dtype
    same = out is not None and out.data_ptr() == t.data_ptr() and out.shape == t.shape
    if (
        not _jit.compiled_enabled()
        or dtype not in (torch.float32, torch.float64)
        or not _plain(t, dtype, contiguous=False)
        or t.numel() == 0
        or math.prod(shape) == 0
        or (torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (t, base)))
        or (base is not None and (list(base.shape) != shape or not _plain(base, dtype, False)))
        or (out is not None and (list(out.shape) != shape or not _plain(out, dtype)))
        or (out is not None and _shares_memory(out, t) and not (in_place and same))
        or (out is not None and base is not None and _shares_memory(out, base)
            and out.data_ptr() != base.data_ptr())  # row by row: only the same entries
        or (loops := windows()) is None
    ):  # fmt: skip
        return None
    copied = not t.is_contiguous()
    t = t.contiguous()
    base = None if base is None else base.contiguous()
    if out is None:  # a copy of t is nobody else's: written over in place when that works
        out = t if copied and in_place and list(t.shape) == shape else t.new_empty(shape)
    if base is None:
        return loops, t, base, out, loops.NONE
    if base.data_ptr() == out.data_ptr() and not same:
        return loops, t, base, out, loops.IN_OUT
    return loops, t, base, out, loops.SEPARATE


def _scalars(dtype: torch.dtype, *values: float) -> list[np.floating]:
    kind = np.float32 if dtype == torch.float32 else np.float64
    return [kind(v) for v in values]


def _views(t: Tensor, out: Tensor, base: Tensor | None, t_shape, out_shape):
    t_np = t.detach().numpy().reshape(t_shape)
    out_np = out.detach().numpy().reshape(out_shape)
    base_np = out_np if base is None else base.detach().numpy().reshape(out_shape)
    return t_np, out_np, base_np


def axis_sum(
    t: Tensor,
    axes: Sequence[int],
    stride: int,
    size: int,
    taps: Sequence[tuple[int, int]],
    scale: float,
    base: Tensor | None,
    out: Tensor | None,
) -> Tensor | None:
    """``base + scale * sum_o t[..., i + o, ..., j + o, ...]`` over the offsets ``taps`` (from
    `_spatial.effective_taps`, zero padding) on the axis pair ``axes``, into ``out``
    (allocated if None) with output size ``size`` on those axes.  Returns None, having written
    nothing, where the compiled path does not apply (a ``stride`` other than 1, and see the
    module docstring)."""
    axes = tuple(ax % t.ndim for ax in axes)
    shape = list(t.shape)
    for ax in axes:
        shape[ax] = size
    offsets, covering = _ordered(t.shape[axes[0]], size, taps)
    if (
        stride != 1
        or len(axes) != 2
        or axes[0] >= axes[1]
        or t.shape[axes[0]] != t.shape[axes[1]]
        or len(offsets) == 0
        or (checked := _checked(t, shape, base, out)) is None
    ):
        return None
    loops, t, base, out, mode = checked
    p, q = axes
    lead, n, middle = math.prod(t.shape[:p]), t.shape[p], math.prod(t.shape[p + 1 : q])
    rest = math.prod(t.shape[q + 1 :])
    alpha, zero = _scalars(t.dtype, scale, 0.0)
    if size == n and rest == 1:  # the last axis pair, output of the input's size
        shape3 = (lead, n, middle * n)
        t_np, out_np, base_np = _views(t, out, base, shape3, shape3)
        loops.plane_sum(t_np, out_np, base_np, offsets, alpha, zero, mode, covering)
    else:
        t_shape, out_shape = (lead, n, middle, n * rest), (lead, size, middle, size * rest)
        t_np, out_np, base_np = _views(t, out, base, t_shape, out_shape)
        loops.pair_sum(t_np, out_np, base_np, offsets, alpha, zero, mode, covering)
    return out


def separable_sum(
    t: Tensor,
    steps: Sequence[tuple[tuple[int, ...], int, int, Sequence[tuple[int, int]]]],
    scale: float,
    base: Tensor | None,
    out: Tensor | None,
    shift: float = 0.0,
) -> Tensor | None:
    """The steps ``[(axes, stride, size, taps), ...]`` of a 2-D pixel-pair window sum in one
    pass, plus ``shift`` after the sum: a convolution's two (axes ``(-4, -2)`` then ``(-3,
    -1)``, stride 1, outputs of the input's size; `_jit_windows.pair2_sum`) or a pooling's
    four (axes -4, -2, -3, -1, one window and stride per pixel axis, no ``base``;
    `_jit_windows.pool2_sum`).  None, having written nothing, otherwise.  ``out`` may be ``t``
    itself for a convolution (written over plane by plane once no output reads that plane)."""
    nd = t.ndim
    axes = [tuple(ax % nd for ax in step[0]) for step in steps]
    if nd < 4 or t.shape[-4:-2] != t.shape[-2:]:
        return None
    if axes == [(nd - 4, nd - 2), (nd - 3, nd - 1)]:
        return _conv2(t, steps, scale, base, out, shift)
    if axes == [(nd - 4,), (nd - 2,), (nd - 3,), (nd - 1,)] and base is None and shift == 0.0:
        return _pool2(t, steps, scale, out)
    return None


def _conv2(t: Tensor, steps, scale: float, base, out, shift: float) -> Tensor | None:
    (_, stride1, size1, taps1), (_, stride2, size2, taps2) = steps
    n1, n2 = t.shape[-4], t.shape[-3]
    offsets1, covering1 = _ordered(n1, size1, taps1)
    offsets2, covering2 = _ordered(n2, size2, taps2)
    if (
        (stride1, stride2, size1, size2) != (1, 1, n1, n2)
        or not (len(offsets1) and len(offsets2) and covering1 and covering2)
        or (checked := _checked(t, list(t.shape), base, out, in_place=True)) is None
    ):
        return None
    loops, t, base, out, mode = checked
    shape4 = (math.prod(t.shape[:-4]), n1, n2, n1 * n2)
    t_np, out_np, base_np = _views(t, out, base, shape4, shape4)
    alpha, zero, one, add = _scalars(t.dtype, scale, 0.0, 1.0, shift)
    in_place = out.data_ptr() == t.data_ptr()
    loops.pair2_sum(
        t_np, out_np, base_np, offsets1, offsets2, alpha, zero, one, mode, in_place, add,
        shift != 0.0,
    )  # fmt: skip
    return out


def _pool2(t: Tensor, steps, scale: float, out) -> Tensor | None:
    (_, stride1, size1, taps1), q1, (_, stride2, size2, taps2), q2 = steps
    shape = [*t.shape[:-4], size1, size2, size1, size2]
    if (
        (q1[1:], q2[1:]) != ((stride1, size1, taps1), (stride2, size2, taps2))  # p as q
        or any(count != 1 for _, count in (*taps1, *taps2))
        or (checked := _checked(t, shape, None, out)) is None
    ):
        return None
    loops, t, _, out, _ = checked
    n1, n2, lead = t.shape[-4], t.shape[-3], math.prod(t.shape[:-4])
    t_np, out_np, _ = _views(t, out, None, (lead, n1, n2, n1 * n2), (lead, *shape[-4:-2], -1))
    alpha, zero, one = _scalars(t.dtype, scale, 0.0, 1.0)
    offsets1, offsets2 = (np.array([d for d, _ in x], dtype=np.int64) for x in (taps1, taps2))
    loops.pool2_sum(t_np, out_np, offsets1, stride1, offsets2, stride2, alpha, zero, one)
    return out
