"""The numba loops of `_jit` (imported only when numba is installed; see `_jit`'s docstring).

Every constant comes in the array ``k`` in the loop's dtype (`_jit._CONSTANTS`: the ten
coefficients of P and Q, then 1/2, 1, 2, pi, pi/2, 0): a float64 literal in float32 arithmetic would
promote it to float64.  ``error_model="numpy"`` makes a division by zero give inf or nan instead
of raising, which is what lets LLVM vectorise the loops (Python's semantics put a branch on every
division).  No fast-math, so an entry's result does not depend on where it sits in a block.
"""

from __future__ import annotations

import numba
import numpy as np

_OPTIONS = {"nogil": True, "error_model": "numpy", "cache": True}
LOOPS = ("outer", "flat", "chain")
"""The compiled entry points (each cached on disk by numba)."""
_CHUNK = 512  # entries per row chunk of `chain`: its two buffers stay in the L1 cache


@numba.njit(inline="always", error_model="numpy")
def _acos(x, k):
    # fdlibm's arccos with both branches computed and one selected, so that every lane of a
    # vector takes the same path: arcsin(s) = s + s z P(z) / Q(z) for s = |x| <= 1/2 (z = s^2),
    # arccos|x| = 2 arcsin(sqrt((1 - |x|) / 2)) above; arccos x = pi - arccos|x| for x < 0
    half, one, two, pi, pio2 = k[10], k[11], k[12], k[13], k[14]
    a = abs(x)
    big = a > half
    zb = (one - a) * half
    sb = np.sqrt(zb)
    z = zb if big else a * a
    s = sb if big else a
    p = z * (k[0] + z * (k[1] + z * (k[2] + z * (k[3] + z * (k[4] + z * k[5])))))
    q = one + z * (k[6] + z * (k[7] + z * (k[8] + z * k[9])))
    asn = s + s * (p / q)
    r = two * asn if big else pio2 - asn
    return pi - r if x < 0 else r


@numba.njit(inline="always", error_model="numpy")
def _entry(k12, kk, c, d, k, tiny):
    # (T, Tdot) of one entry from its covariance and kk = k11 k22 >= 0, with the torch form's
    # rounding up to the arc cosine: rho = k12 / max(sqrt(kk), tiny), so that an example
    # paired with itself has rho = 1 exactly (arccos is infinitely steep there); comparisons
    # rather than min/max, so that a nan stays a nan
    one = k[11]
    prod = np.sqrt(kk)
    rho = k12 / (prod if prod > tiny else tiny)
    rho = -one if rho < -one else (one if rho > one else rho)
    sin = np.sqrt((one - rho) * (one + rho))
    tdot = d - c * _acos(rho, k)
    return tdot * k12 + c * prod * sin, tdot


# The two loops below compute into small buffers of their own and copy those out: the outputs
# may be the inputs' memory (`_reuse`), and where arrays it reads and writes might overlap LLVM
# checks at run time and falls back to scalar code when they do (measured 6x slower in place).


@numba.njit(**_OPTIONS)
def outer(v1, v2, k12, ntk, t_out, ntk_out, c, d, k, tiny, has_ntk):
    """A (R, C) block whose k11 is ``v1`` (R,) down the rows and k22 ``v2`` (C,) along the
    columns (the flat tile, one pair of examples' pixel pairs), with no broadcast product
    materialised.  The outputs may be the inputs' memory."""
    zero = k[15]
    tb, nb = np.empty(k12.shape[1], k12.dtype), np.empty(k12.shape[1], k12.dtype)
    for r in range(k12.shape[0]):
        a = v1[r]
        if has_ntk:
            for j in range(k12.shape[1]):
                t, tdot = _entry(k12[r, j], max(a * v2[j], zero), c, d, k, tiny)
                tb[j] = t
                nb[j] = tdot * ntk[r, j]
            ntk_out[r, :] = nb
        else:
            for j in range(k12.shape[1]):
                tb[j] = _entry(k12[r, j], max(a * v2[j], zero), c, d, k, tiny)[0]
        t_out[r, :] = tb


@numba.njit(**_OPTIONS)
def flat(kk, k12, ntk, t_out, ntk_out, c, d, k, tiny, has_ntk):
    """Any layout: 1-D arrays of one length, ``kk`` = k11 k22 entry by entry (>= 0).  The
    outputs may be the inputs' memory."""
    width = min(k12.shape[0], _CHUNK)
    tb, nb = np.empty(width, k12.dtype), np.empty(width, k12.dtype)
    for c0 in range(0, k12.shape[0], width):
        cols = min(width, k12.shape[0] - c0)
        if has_ntk:
            for j in range(cols):
                t, tdot = _entry(k12[c0 + j], kk[c0 + j], c, d, k, tiny)
                tb[j] = t
                nb[j] = tdot * ntk[c0 + j]
            ntk_out[c0 : c0 + cols] = nb[:cols]
        else:
            for j in range(cols):
                tb[j] = _entry(k12[c0 + j], kk[c0 + j], c, d, k, tiny)[0]
        t_out[c0 : c0 + cols] = tb[:cols]


OUTER, PAIRS, SELF = 0, 1, 2
"""The modes of `chain`: a flat (R, C) tile, a packed diagonal tile, the examples themselves."""


@numba.njit(**_OPTIONS)
def chain(k12, ntk, t_out, ntk_out, ops, v1, v2, idx1, idx2, var_out, k, tiny, ntk_kind, mode):
    """A run of Dense and ReLU-family layers (`_chain`), in chunks of a row: a chunk's
    covariances and NTK stay in two L1-sized buffers through every layer, so the tile is read
    and written once for the whole run instead of once per layer.

    ``ops`` (L, 4) holds one row per layer, ``(kind, x, y, n)``:

    - kind 0-3, a Dense with ``x, y = w2, b2``: K' = w2 K + b2 and Theta' = w2 Theta, plus K'
      (kind 1, NTK parametrization), plus n K (kind 2, standard), plus n K + 1 (kind 3,
      standard with a bias); kind 0 is a frozen layer;
    - kind 4, an activation with ``x, y = c, d`` (see `_entry`); ``a`` counts the activations
      before it.

    The activations' variances by ``mode``: OUTER, ``k12`` is an (R, C) tile whose k11 are
    ``v1[a, r]`` and k22 ``v2[a, j]``; PAIRS, ``k12`` is one row of packed pairs (`Kernel`'s
    ``pairs``), k11 ``v1[a, idx1[j]]`` and k22 ``v2[a, idx2[j]]``; SELF, ``k12`` is one row of
    the examples' own variances, each its own k11 and k22, written to ``var_out[a, j]`` for the
    tiles.  ``ntk_kind``: 0 no NTK, 1 ``ntk`` is like ``k12``, 2 the NTK starts at zero.
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
                kind, x, y, n = int(ops[layer, 0]), ops[layer, 1], ops[layer, 2], ops[layer, 3]
                if kind == 4:
                    # k11 k22 of each entry, clamped at 0 as the torch form does
                    if mode == OUTER:
                        for j in range(cols):
                            kk[j] = max(v1[a, r] * v2[a, c0 + j], zero)
                    elif mode == PAIRS:
                        for j in range(cols):
                            kk[j] = max(v1[a, idx1[c0 + j]] * v2[a, idx2[c0 + j]], zero)
                    else:
                        for j in range(cols):
                            var_out[a, c0 + j] = kb[j]
                            kk[j] = kb[j] * kb[j]
                    for j in range(cols):
                        t, tdot = _entry(kb[j], kk[j], x, y, k, tiny)
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
    """Compile (or load from numba's cache) every loop for float32 and float64 on tiny arrays,
    once, before any tile thread calls one."""
    for dtype in (np.float32, np.float64):
        k = np.array([0.5] * 16, dtype)  # stands in for the constants; values do not matter
        one, v, m = dtype(1), np.ones(2, dtype), np.ones((2, 2), dtype)
        idx = np.zeros(1, np.int64)
        outer(v, v, m, m, m.copy(), m.copy(), one, one, k, one, True)
        flat(v, v, v, v.copy(), v.copy(), one, one, k, one, True)
        chain(m, m, m.copy(), m.copy(), np.zeros((1, 4), dtype), m, m, idx, idx, m.copy(), k, one,
              1, OUTER)  # fmt: skip
