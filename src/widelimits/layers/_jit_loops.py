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

from ._jit import EACH, OUTER, PAIRS, RELU  # the modes and kinds (one definition)

_OPTIONS = {"nogil": True, "error_model": "numpy", "cache": True}
LOOPS = ("chain",)
"""The compiled entry points (each cached on disk by numba)."""
_CHUNK = 512  # entries per row chunk: the loop's buffers stay in the L1 cache



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
def chain(k12, ntk, t_out, ntk_out, ops, v1, v2, idx1, idx2, var_out, k, tiny, ntk_kind, mode):
    """A run of layers (`_chain`), in chunks of a row: a chunk's covariances and NTK stay in
    small buffers through every layer, so the tile is read and written once for the whole run
    instead of once per layer.  The loop computes in buffers of its own and copies them out,
    so the outputs may be the inputs' memory (`_reuse`): where arrays a loop reads and writes
    might overlap, LLVM checks at run time and falls back to scalar code when they do (measured
    6x slower in place).

    ``ops`` (L, 6) holds one row per layer, ``(kind, x, y, n, ...)``:

    - kind 0-3, a Dense with ``x, y = w2, b2``: K' = w2 K + b2 and Theta' = w2 Theta, plus K'
      (kind 1, NTK parametrization), plus n K (kind 2, standard), plus n K + 1 (kind 3,
      standard with a bias); kind 0 is a frozen layer;
    - kind RELU, an `ABReLU` with ``x, y = c, d`` (see `_relu_entry`); kind ERF, an `Erf`
      (see `_erf_entry`).  ``a`` counts the activations before the layer.

    The activations' variance terms (`_variance_term` of k11 and k22) by ``mode``: OUTER,
    ``k12`` is an (R, C) tile whose terms are ``v1[a, r]`` and ``v2[a, j]``; PAIRS, ``k12``
    is one row of packed pairs (`Kernel`'s ``pairs``), terms ``v1[a, idx1[j]]`` and
    ``v2[a, idx2[j]]``; EACH, one row with terms ``v1[a, j]`` and ``v2[a, j]``; SELF, one row of
    the examples' own variances, each its own k11 and k22, whose terms are written to
    ``var_out[a, j]`` for the tiles.  ``ntk_kind``: 0 no NTK, 1 ``ntk`` is like ``k12``, 2 the
    NTK starts at zero.
    """
    zero, one = k[15], k[11]
    width = min(k12.shape[1], _CHUNK)
    kb = np.empty(width, k12.dtype)
    tb = np.empty(width, k12.dtype)
    kk = np.empty(width, k12.dtype)
    for r in range(k12.shape[0]):
        for c0 in range(0, k12.shape[1], width):
            cols = min(width, k12.shape[1] - c0)
            for j in range(cols):
                kb[j] = k12[r, c0 + j]
                tb[j] = ntk[r, c0 + j] if ntk_kind == 1 else zero
            a = 0
            for layer in range(ops.shape[0]):
                op = ops[layer]
                kind, x, y, n = int(op[0]), op[1], op[2], op[3]
                if kind >= RELU:
                    # the product of the two variance terms, clamped at 0 as the torch form does
                    if mode == OUTER:
                        for j in range(cols):
                            kk[j] = max(v1[a, r] * v2[a, c0 + j], zero)
                    elif mode == PAIRS:
                        for j in range(cols):
                            kk[j] = max(v1[a, idx1[c0 + j]] * v2[a, idx2[c0 + j]], zero)
                    elif mode == EACH:
                        for j in range(cols):
                            kk[j] = max(v1[a, c0 + j] * v2[a, c0 + j], zero)
                    else:
                        for j in range(cols):
                            u = _variance_term(kind, op, kb[j], k)
                            var_out[a, c0 + j] = u
                            kk[j] = u * u
                    if kind == RELU:
                        for j in range(cols):
                            t, tdot = _relu_entry(kb[j], kk[j], x, y, k, tiny)
                            kb[j] = t
                            tb[j] = tdot * tb[j]
                    else:
                        for j in range(cols):
                            t, tdot = _erf_entry(kb[j], kk[j], op, k)
                            kb[j] = t
                            tb[j] = tdot * tb[j]
                    a += 1
                elif kind == 0:
                    for j in range(cols):
                        kb[j] = x * kb[j] + y
                        tb[j] = x * tb[j]
                elif kind == 1:
                    for j in range(cols):
                        kb[j] = x * kb[j] + y
                        tb[j] = kb[j] + x * tb[j]
                else:
                    plus = one if kind == 3 else zero
                    for j in range(cols):
                        tb[j] = n * kb[j] + x * tb[j] + plus
                        kb[j] = x * kb[j] + y
            for j in range(cols):
                t_out[r, c0 + j] = kb[j]
            if ntk_kind != 0:
                for j in range(cols):
                    ntk_out[r, c0 + j] = tb[j]


def warm_up() -> None:
    """Compile (or load from numba's cache) the loop for float32 and float64 on tiny arrays,
    once, before any tile thread calls it."""
    for dtype in (np.float32, np.float64):
        k = np.array([0.5] * 16, dtype)  # stands in for the constants; values do not matter
        one, m = dtype(1), np.ones((2, 2), dtype)
        idx = np.zeros(1, np.int64)
        chain(m, m, m.copy(), m.copy(), np.zeros((1, 6), dtype), m, m, idx, idx, m.copy(), k, one,
              1, OUTER)  # fmt: skip
