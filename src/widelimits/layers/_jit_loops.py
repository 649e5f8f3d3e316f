"""The numba loop of `_jit` and `_chain` (imported only when numba is installed).

One loop, `chain`, takes the entries of a tile through a run of layers; a single activation's
layer map is a run of one.  Every constant comes in the array ``k`` in the loop's dtype
(`_jit._CONSTANTS`: the ten coefficients of P and Q, then 1/2, 1, 2, pi, pi/2, 0): a float64
literal in float32 arithmetic would promote it to float64.  ``error_model="numpy"`` makes a
division by zero give inf or nan instead of raising, which is what lets LLVM vectorise the loops
(Python's semantics put a branch on every division).  No fast-math, so an entry's result does not
depend on where it sits in a block.
"""

from __future__ import annotations

import numba
import numpy as np

from ._jit import EACH, OUTER, RELU, TRIANGLE, WINDOW  # the modes and kinds (one definition)

_OPTIONS = {"nogil": True, "error_model": "numpy", "cache": True}
LOOPS = ("chain",)
"""The compiled entry points (each cached on disk by numba)."""



@numba.njit(inline="always", error_model="numpy")
def _arcsin_parts(x, k):
    # fdlibm's arcsin of |x| with both branches computed and one selected, so that every lane
    # of a vector takes the same path: arcsin(s) = s + s z P(z) / Q(z) for s = |x| <= 1/2
    # (z = s^2), and above arcsin|x| = pi/2 - 2 arcsin(s), arccos|x| = 2 arcsin(s) with
    # s = sqrt((1 - |x|) / 2).  Returns (|x| > 1/2, arcsin(s)).
    half, one = k[10], k[11]
    a = abs(x)
    big = a > half
    zb = (one - a) * half
    sb = np.sqrt(zb)
    z = zb if big else a * a
    s = sb if big else a
    p = z * (k[0] + z * (k[1] + z * (k[2] + z * (k[3] + z * (k[4] + z * k[5])))))
    q = one + z * (k[6] + z * (k[7] + z * (k[8] + z * k[9])))
    return big, s + s * (p / q)


@numba.njit(inline="always", error_model="numpy")
def _acos(x, k):
    two, pi, pio2 = k[12], k[13], k[14]
    big, asn = _arcsin_parts(x, k)
    r = two * asn if big else pio2 - asn
    return pi - r if x < 0 else r


@numba.njit(inline="always", error_model="numpy")
def _asin(x, k):
    two, pio2 = k[12], k[14]
    big, asn = _arcsin_parts(x, k)
    r = pio2 - two * asn if big else asn
    return -r if x < 0 else r


@numba.njit(inline="always", error_model="numpy")
def _relu_entry(k12, kk, c, d, k, tiny):
    # `ABReLU`: (T, Tdot) of one entry from its covariance and kk = k11 k22 >= 0, with the
    # torch form's rounding up to the arc cosine: rho = k12 / max(sqrt(kk), tiny), so that an
    # example paired with itself has rho = 1 exactly (arccos is infinitely steep there);
    # comparisons rather than min/max, so that a nan stays a nan
    one = k[11]
    prod = np.sqrt(kk)
    rho = k12 / (prod if prod > tiny else tiny)
    rho = -one if rho < -one else (one if rho > one else rho)
    sin = np.sqrt((one - rho) * (one + rho))
    tdot = d - c * _acos(rho, k)
    return tdot * k12 + c * prod * sin, tdot


@numba.njit(inline="always", error_model="numpy")
def _erf_entry(k12, q, op, k):
    # `Erf`: q = (1 + 2 b^2 k11)(1 + 2 b^2 k22); op = (5, 2 a^2 / pi, 2 b^2, c^2,
    # 4 a^2 b^2 / pi, 4 b^4), the torch form's rounding
    t = op[1] * _asin(op[2] * k12 / np.sqrt(q), k) + op[3]
    return t, op[4] / np.sqrt(q - op[5] * (k12 * k12))


@numba.njit(inline="always", error_model="numpy")
def _variance_term(kind, op, v, k):
    # what an activation's k11 k22 product is made of: k11 itself (ReLU family), or
    # 1 + 2 b^2 k11 (Erf)
    return v if kind == RELU else k[11] + op[2] * v


@numba.njit(**_OPTIONS)
def chain(
    k12, ntk, t_out, ntk_out, ops, v1, v2, var_out, k, tiny, ntk_kind, mode, rows, wptr, widx,
    wcount, pixels, width, first_row, end_row,
):  # fmt: skip
    """A run of layers (`_chain`), a chunk of ``width`` pairs of examples at a time: a chunk's
    covariances and NTK stay in small buffers through every layer, so the tile is read and
    written once for the whole run instead of once per layer.  The loop computes in buffers of
    its own and copies them out, so the outputs may be the inputs' memory (`_reuse`): where
    arrays a loop reads and writes might overlap, LLVM checks at run time and falls back to
    scalar code when they do (measured 6x slower in place).

    The arrays are flat: ``k12``, ``ntk`` hold ``pixels`` entries per pair of examples (1 for
    flat tiles; the per-pixel layout's pixels), pair after pair.  In the buffers a chunk's
    entries are pixel-major, ``[p * width + j]``, so that every step is a vectorised loop over
    the chunk's pairs.  ``ops`` (L, 6) holds one row per layer, ``(kind, x, y, n, p, o)``:

    - kind 0-3, a Dense with ``x, y = w2, b2``: K' = w2 K + b2 and Theta' = w2 Theta, plus K'
      (kind 1, NTK parametrization), plus n K (kind 2, standard), plus n K + 1 (kind 3,
      standard with a bias); kind 0 is a frozen layer;
    - kind RELU, an `ABReLU` with ``x, y = c, d`` (see `_relu_entry`); kind ERF, an `Erf`
      (see `_erf_entry`).  ``a`` counts the activations before the layer;
    - kind WINDOW, a linear map of the pixels (a convolution's window sum, Flatten's mean):
      K'[q] = x sum_e wcount[e] K[widx[e]] + y over e from wptr[o + q] to wptr[o + q + 1], for
      the ``p`` output pixels q; Theta' likewise, plus K' when ``n`` is 1 (a trainable layer).

    The pairs, and the activations' variance terms (`_variance_term` of k11 and k22), by
    ``mode``: OUTER, ``rows`` examples r against the columns c, terms ``v1[a, p, r]`` and
    ``v2[a, p, c]``; TRIANGLE, the same for the pairs r <= c of ``rows`` examples in
    row-major order (`Kernel`'s packed ``pairs``); EACH, pair t has terms ``v1[a, p, t]`` and
    ``v2[a, p, t]``; SELF, the examples' own variances, each its own k11 and k22, whose terms
    are written to ``var_out[a, p, t]`` for the tiles.  ``ntk_kind``: 0 no NTK, 1 ``ntk`` is
    like ``k12``, 2 the NTK starts at zero.  Only the rows ``first_row:end_row`` are done (all
    of them: 0, ``rows``), so that threads can share a tile.
    """
    zero, one = k[15], k[11]
    p0 = pixels
    pairs = k12.shape[0] // p0
    if pairs == 0:
        return
    segments, n = (rows, pairs // rows) if mode == OUTER else (1, pairs)
    if mode == TRIANGLE:
        segments, n = rows, rows
    most = p0
    for layer in range(ops.shape[0]):
        if int(ops[layer, 0]) == WINDOW:
            most = max(most, int(ops[layer, 4]))
    w = min(width, n)
    kb = np.empty(w * most, k12.dtype)
    tb = np.empty(w * most, k12.dtype)
    kk = np.empty(w * most, k12.dtype)
    k2 = np.empty(w * most, k12.dtype)
    t2 = np.empty(w * most, k12.dtype)
    for r in range(first_row, min(end_row, segments)):
        # the pair index of (r, c) is base + c
        base = r * n if mode == OUTER else 0
        if mode == TRIANGLE:
            base = r * n - r * (r - 1) // 2 - r
        for c0 in range(r if mode == TRIANGLE else 0, n, w):
            cols = min(w, n - c0)
            t0 = base + c0
            for p in range(p0):  # pixel-major: entry (pair j, pixel p) at p * w + j
                kp, tp = kb[p * w : p * w + cols], tb[p * w : p * w + cols]
                kr = k12[t0 * p0 + p : (t0 + cols) * p0 : p0]
                if ntk_kind == 1:
                    tr = ntk[t0 * p0 + p : (t0 + cols) * p0 : p0]
                    for j in range(cols):
                        kp[j] = kr[j]
                        tp[j] = tr[j]
                else:
                    for j in range(cols):
                        kp[j] = kr[j]
                        tp[j] = zero
            a = 0
            size = p0
            for layer in range(ops.shape[0]):
                op = ops[layer]
                kind, x, y, m = int(op[0]), op[1], op[2], op[3]
                if kind >= RELU and kind != WINDOW:
                    for p in range(size):
                        # views of pixel p's entries: indexing them from 0 leaves no negative
                        # index to wrap around, which would keep LLVM from vectorising
                        kp, tp = kb[p * w : p * w + cols], tb[p * w : p * w + cols]
                        kkp = kk[p * w : p * w + cols]
                        # the product of the two variance terms, clamped at 0 as the torch
                        # form does
                        if mode == OUTER or mode == TRIANGLE:
                            u1 = v1[a, p, r]
                            u2 = v2[a, p, c0 : c0 + cols]
                            for j in range(cols):
                                kkp[j] = max(u1 * u2[j], zero)
                        elif mode == EACH:
                            u1 = v1[a, p, t0 : t0 + cols]
                            u2 = v2[a, p, t0 : t0 + cols]
                            for j in range(cols):
                                kkp[j] = max(u1[j] * u2[j], zero)
                        else:
                            vo = var_out[a, p, t0 : t0 + cols]
                            for j in range(cols):
                                u = _variance_term(kind, op, kp[j], k)
                                vo[j] = u
                                kkp[j] = u * u
                        if kind == RELU:
                            for j in range(cols):
                                t, tdot = _relu_entry(kp[j], kkp[j], x, y, k, tiny)
                                kp[j] = t
                                tp[j] = tdot * tp[j]
                        else:
                            for j in range(cols):
                                t, tdot = _erf_entry(kp[j], kkp[j], op, k)
                                kp[j] = t
                                tp[j] = tdot * tp[j]
                    a += 1
                elif kind == WINDOW:
                    out, first = int(op[4]), int(op[5])
                    for q in range(out):
                        kq, tq = k2[q * w : q * w + cols], t2[q * w : q * w + cols]
                        kq[:] = zero
                        tq[:] = zero
                        for e in range(wptr[first + q], wptr[first + q + 1]):
                            i, c = widx[e] * w, wcount[e]
                            ki, ti = kb[i : i + cols], tb[i : i + cols]
                            for j in range(cols):
                                kq[j] += c * ki[j]
                                tq[j] += c * ti[j]
                        if m == one:
                            for j in range(cols):
                                kq[j] = x * kq[j] + y
                                tq[j] = kq[j] + x * tq[j]
                        else:
                            for j in range(cols):
                                kq[j] = x * kq[j] + y
                                tq[j] = x * tq[j]
                    kb, k2 = k2, kb
                    tb, t2 = t2, tb
                    size = out
                else:
                    plus = one if kind == 3 else zero
                    for p in range(size):
                        kp, tp = kb[p * w : p * w + cols], tb[p * w : p * w + cols]
                        if kind == 0:
                            for j in range(cols):
                                kp[j] = x * kp[j] + y
                                tp[j] = x * tp[j]
                        elif kind == 1:
                            for j in range(cols):
                                kp[j] = x * kp[j] + y
                                tp[j] = kp[j] + x * tp[j]
                        else:
                            for j in range(cols):
                                tp[j] = m * kp[j] + x * tp[j] + plus
                                kp[j] = x * kp[j] + y
            for p in range(size):
                kp, tp = kb[p * w : p * w + cols], tb[p * w : p * w + cols]
                ko = t_out[t0 * size + p : (t0 + cols) * size : size]
                for j in range(cols):
                    ko[j] = kp[j]
                if ntk_kind != 0:
                    to = ntk_out[t0 * size + p : (t0 + cols) * size : size]
                    for j in range(cols):
                        to[j] = tp[j]


def warm_up() -> None:
    """Compile (or load from numba's cache) the loop for float32 and float64 on tiny arrays,
    once, before any tile thread calls it."""
    for dtype in (np.float32, np.float64):
        k = np.array([0.5] * 16, dtype)  # stands in for the constants; values do not matter
        one, m = dtype(1), np.ones(4, dtype)
        idx = np.zeros(1, np.int64)
        v = np.ones((1, 1, 2), dtype)
        chain(m, m, m.copy(), m.copy(), np.zeros((1, 6), dtype), v, v, v.copy(), k, one, 1, OUTER,
              2, idx, idx, np.ones(1, dtype), 1, 2, 0, 2)  # fmt: skip
