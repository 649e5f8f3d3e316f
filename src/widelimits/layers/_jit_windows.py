"""The numba loops of `_compiled_windows` (imported only when numba is installed).

Same conventions as `_jit_loops`: ``nogil`` (tiles run on several Python threads),
``error_model="numpy"`` and no fast-math (an entry's result does not depend on where it sits, so
neither the chunking nor the thread count changes a bit), and scalars passed in the arrays'
dtype (a float64 scalar would promote float32 arithmetic).  No loop reads memory it writes,
except an entry of ``base`` read just before the same entry of ``out`` is written: so LLVM's
run-time overlap checks pass and every loop runs vectorised.
"""

from __future__ import annotations

import numba
import numpy as np

_OPTIONS = {"nogil": True, "error_model": "numpy", "cache": True}
LOOPS = ("pair_sum", "plane_sum", "pair2_sum", "pool2_sum")
"""The compiled entry points (each cached on disk by numba)."""


NONE, SEPARATE, IN_OUT = 0, 1, 2
"""``base`` modes: no base, a base of its own, the base already in ``out`` (the same memory)."""


@numba.njit(inline="always", error_model="numpy")
def _first(dst, base, src, alpha, zero, mode, covering):
    # the row's first write: base + alpha src for the offset that reads the whole row (the
    # torch path's torch.add(base, piece, alpha=...)), else base or zeros before the adds
    if covering:
        if mode == SEPARATE:
            for f in range(dst.shape[0]):
                dst[f] = base[f] + alpha * src[f]
        elif mode == IN_OUT:
            for f in range(dst.shape[0]):
                dst[f] += alpha * src[f]
        else:
            for f in range(dst.shape[0]):
                dst[f] = alpha * src[f]
    elif mode == SEPARATE:
        for f in range(dst.shape[0]):
            dst[f] = base[f]
    elif mode == NONE:
        for f in range(dst.shape[0]):
            dst[f] = zero


# The loops write straight into ``out``, which never shares memory with ``t`` (the caller makes
# sure; `pair2_sum` in place goes through a ring of planes) and is ``base`` only in mode IN_OUT,
# where no loop reads ``base``: LLVM's run-time overlap checks pass and every loop runs
# vectorised (`_jit_loops` explains the scalar fallback).  Inner loops index slices from 0: an
# index that might be negative gets a wrap-around select per entry, which stops vectorisation.


@numba.njit(inline="always", error_model="numpy")
def _pair_rows(src, dst, base, i, taps, alpha, zero, mode, covering, cols):
    # output rows (i, b) for every b of `pair_sum`: src (n, B, n C), dst and base (B, m C)
    n, width = src.shape[0], dst.shape[1]
    m = width // cols
    first = taps[0] * cols
    for b in range(dst.shape[0]):
        row = dst[b]
        if covering:
            _first(row, base[b], src[i + taps[0], b, first : first + width], alpha, zero, mode,
                   True)  # fmt: skip
        else:
            _first(row, base[b], row, alpha, zero, mode, False)
        for k in range(1 if covering else 0, taps.shape[0]):
            o = taps[k]
            if i + o < 0 or i + o >= n:
                continue
            lo, hi, off = max(0, -o) * cols, min(m, n - o) * cols, o * cols
            d = row[lo:hi]
            s = src[i + o, b, lo + off : hi + off]
            for f in range(hi - lo):
                d[f] += alpha * s[f]


@numba.njit(inline="always", error_model="numpy")
def _plane(src, dst, base, inside, taps, alpha, zero, mode, covering, shift, has_shift):
    # every output row of `plane_sum` for one index a: src, dst and base (n, B n); then
    # + shift (after the sum, while the row is in the L1 cache) if has_shift
    n, plane = src.shape[0], src.shape[1]
    for i in range(n):
        row = dst[i]
        if covering:  # the offset 0 (the output has the input's size)
            _first(row, base[i], src[i], alpha, zero, mode, True)
        else:
            _first(row, base[i], row, alpha, zero, mode, False)
        for k in range(1 if covering else 0, taps.shape[0]):
            o = taps[k]
            if i + o < 0 or i + o >= n:
                continue
            lo, hi = max(0, -o), min(plane, plane - o)
            d, keep = row[lo:hi], inside[k, lo:hi]
            s = src[i + o, lo + o : hi + o]
            for f in range(hi - lo):
                d[f] = d[f] + alpha * s[f] if keep[f] else d[f]
        if has_shift:
            for f in range(plane):
                row[f] += shift


@numba.njit(inline="always", error_model="numpy")
def _inside(taps, n, plane):
    # inside[k, f]: whether j + taps[k] stays in [0, n), for the flat index f = b n + j
    inside = np.empty((taps.shape[0], plane), np.bool_)
    for k in range(taps.shape[0]):
        for f in range(plane):
            j = f % n + taps[k]
            inside[k, f] = 0 <= j < n
    return inside


@numba.njit(**_OPTIONS)
def pair_sum(t, out, base, taps, alpha, zero, mode, covering):
    r"""One window sum over an axis pair, zero padding, stride 1, in one pass.

    ``t`` is ``(A, n, B, n C)`` and ``out`` ``(A, m, B, m C)``: the summed p-axis second, the
    q-axis and everything after it flattened last, so that the offset o moves the last axis by
    ``o C``.  Per row ``(a, i, b)`` and flat column ``f = j C + c``,

    .. math::

        out[a, i, b, f] = base[a, i, b, f] + \sum_{o} \alpha\, t[a, i + o, b, f + o\,C]

    over the offsets ``taps`` (in that order, the order of the torch path's adds) whose rows
    ``i + o`` and columns ``j + o`` stay inside ``[0, n)`` (the others read padding: zeros).
    ``covering``: the first offset reads every output.  ``mode``: how ``base`` (shaped like
    ``out``) comes (`NONE`, `SEPARATE`, `IN_OUT`); ``alpha`` and ``zero`` are in the arrays'
    dtype.  The rows go in memory order, so the hardware prefetcher follows the reads and the
    writes; the input rows a row reads were read a plane earlier, and are still in the L2 cache.
    """
    cols = out.shape[3] // out.shape[1]  # C
    for a in range(t.shape[0]):
        for i in range(out.shape[1]):
            _pair_rows(t[a], out[a, i], base[a, i], i, taps, alpha, zero, mode, covering, cols)


@numba.njit(**_OPTIONS)
def plane_sum(t, out, base, taps, alpha, zero, mode, covering):
    r"""`pair_sum` for the last axis pair of a sum whose output keeps the input's size (C = 1):
    short rows, so a whole plane at a time.  ``t``, ``out`` and ``base`` are ``(A, n, B n)``;
    the offset o moves the flat index ``b n + j`` by o, and the entries whose ``j + o`` leaves
    ``[0, n)`` (which would read the next row) keep their value instead:

    .. math::

        out[a, i, b n + j] = base[a, i, b n + j]
            + \sum_{o:\ 0 \le j + o < n} \alpha\, t[a, i + o, b n + j + o].
    """
    inside = _inside(taps, t.shape[1], t.shape[2])
    for a in range(t.shape[0]):
        _plane(t[a], out[a], base[a], inside, taps, alpha, zero, mode, covering, zero, False)


@numba.njit(**_OPTIONS)
def pair2_sum(t, out, base, taps1, taps2, alpha, zero, one, mode, in_place, shift, has_shift):
    r"""The two steps of a 2-D pixel-pair window sum whose output keeps the input's size, one
    plane at a time: ``t``, ``out`` and ``base`` are ``(A, n1, n2, n1 n2)`` (pixel p = (i1,
    i2), then q = (j1, j2) flattened), and each list of offsets starts with 0 (which reads every
    output).  For each ``(a, i1)`` the first step (`pair_sum` over (i1, j1), offsets ``taps1``,
    times ``alpha``) fills a cache-resident plane U, and the second (`plane_sum` over (i2, j2),
    offsets ``taps2``) adds U's rows onto ``base``:

    .. math::

        out[a, i_1, i_2, j_1 j_2] = base + \sum_{o_2} \sum_{o_1} \alpha\,
            t[a, i_1 + o_1, i_2 + o_2, (j_1 + o_1)(j_2 + o_2)],

    the same adds in the same order as the two steps one after the other (so the same values
    to the bit), reading ``t`` and writing ``out`` once instead of twice each; then ``+ shift``
    if ``has_shift`` (the torch path's add after the sum).

    ``in_place``: ``out`` is ``t``.  Output plane i1 reads the input planes ``i1 + o1``, so it
    waits in a ring of planes until the last output that reads input plane i1 (``i1 - min
    o1``) is done, and is copied out then.  ``mode`` is not `IN_OUT` then (``base``, which may
    be ``t``, is read before its plane is overwritten).
    """
    n1, n2, plane = t.shape[1], t.shape[2], t.shape[3]
    u = np.empty((n2, plane), t.dtype)
    inside = _inside(taps2, n2, plane)
    back = -min(taps1.min(), 0) if in_place else 0
    ring = np.empty((back + 1 if in_place else 1, n2 if in_place else 1, plane), t.dtype)
    for a in range(t.shape[0]):
        src, dst = t[a], out[a]
        for i in range(n1):
            _pair_rows(src, u, u, i, taps1, alpha, zero, NONE, True, n2)
            if not in_place:
                _plane(u, dst[i], base[a, i], inside, taps2, one, zero, mode, True, shift,
                       has_shift)  # fmt: skip
                continue
            _plane(u, ring[i % (back + 1)], base[a, i], inside, taps2, one, zero, mode, True,
                   shift, has_shift)  # fmt: skip
            if i >= back:  # no output after i reads input plane i - back
                _copy(dst[i - back], ring[(i - back) % (back + 1)])
        if in_place:
            for i in range(max(n1 - back, 0), n1):
                _copy(dst[i], ring[i % (back + 1)])


@numba.njit(inline="always", error_model="numpy")
def _copy(dst, src):
    for r in range(src.shape[0]):
        d, s = dst[r], src[r]
        for f in range(s.shape[0]):
            d[f] = s[f]


@numba.njit(inline="always", error_model="numpy")
def _strided(src, dst, taps, stride, first, alpha, zero):
    # dst[p, i] = sum over the taps d with 0 <= r < n, r = stride (first + i) + d, of
    # alpha src[p, r]: a window sum with a stride along the middle axis of (P, n, Q) arrays
    n = src.shape[1]
    for p in range(dst.shape[0]):
        for i in range(dst.shape[1]):
            row = dst[p, i]
            for f in range(row.shape[0]):
                row[f] = zero
            for k in range(taps.shape[0]):
                r = stride * (first + i) + taps[k]
                if r < 0 or r >= n:
                    continue
                s = src[p, r]
                for f in range(row.shape[0]):
                    row[f] += alpha * s[f]


@numba.njit(**_OPTIONS)
def pool2_sum(t, out, taps1, stride1, taps2, stride2, alpha, zero, one):
    r"""A 2-D pooling window sum of the full pixel-pair layout in one pass: ``t`` is ``(A, n1,
    n2, n1 n2)``, ``out`` ``(A, m1, m2, m1 m2)``, and output index I on an axis of size n
    (stride s) reads the inputs ``s I + d`` for the offsets d of its ``taps`` inside ``[0,
    n)`` (zero padding).  Per output plane ``(a, I1)`` the four axes are summed one after the
    other in cache-resident buffers (i1, then i2, j1, j2), ``alpha`` times the first:

    .. math::

        out[a, I_1, I_2, J_1 J_2] = \alpha \sum_{d_1, d_2, e_1, e_2}
            t[a, s_1 I_1 + d_1, s_2 I_2 + d_2, (s_1 J_1 + e_1)(s_2 J_2 + e_2)],

    so ``t`` is read once and only ``out`` written (the torch path writes and reads back an
    intermediate per axis).
    """
    n1, n2 = t.shape[1], t.shape[2]
    m1, m2 = out.shape[1], out.shape[2]
    u1 = np.empty((1, 1, n2 * n1 * n2), t.dtype)
    u2 = np.empty((1, m2, n1 * n2), t.dtype)
    u3 = np.empty((m2, m1, n2), t.dtype)
    for a in range(t.shape[0]):
        src = t[a].reshape((1, n1, n2 * n1 * n2))
        for i in range(m1):
            _strided(src, u1, taps1, stride1, i, alpha, zero)
            _strided(u1.reshape((1, n2, n1 * n2)), u2, taps2, stride2, 0, one, zero)
            _strided(u2.reshape((m2, n1, n2)), u3, taps1, stride1, 0, one, zero)
            _strided(u3.reshape((m2 * m1, n2, 1)), out[a, i].reshape((m2 * m1, m2, 1)), taps2,
                     stride2, 0, one, zero)  # fmt: skip


def warm_up() -> None:
    """Compile (or load from numba's cache) every loop for float32 and float64 on tiny arrays,
    once, before any tile thread calls one."""
    for dtype in (np.float32, np.float64):
        one, zero = dtype(1), dtype(0)
        taps = np.zeros(1, np.int64)
        t3, t4 = np.ones((1, 2, 4), dtype), np.ones((1, 2, 2, 4), dtype)
        plane_sum(t3, t3.copy(), t3.copy(), taps, one, zero, SEPARATE, True)
        pair_sum(t4, t4.copy(), t4.copy(), taps, one, zero, SEPARATE, True)
        pair2_sum(t4, t4.copy(), t4.copy(), taps, taps, one, zero, one, SEPARATE, False, zero,
                  False)  # fmt: skip
        pool2_sum(t4, t4.copy(), taps, 1, taps, 1, one, zero, one)
