"""The numba loop of the input layer's pixel-pair covariances (imported only with numba).

For images with a few channels, :math:`K^0_{pq}(x, x') = \\sum_c x_{cp} x'_{cq} / C` over every
pixel pair is a product with an inner dimension of C = 1 to 16: a batched matrix product spends
its time on packing and on writing, and its result is not symmetric to the last bit, so an
example's own covariance had to be averaged with its transpose (a strided pass as costly as the
product).  Here each entry sums its channels in one fixed order, so that :math:`K_{pq}` and
:math:`K_{qp}` of one example are the same products added in the same order: symmetric exactly,
in one vectorised pass that writes each entry once.  Conventions as in `_jit_loops`.
"""

from __future__ import annotations

import numba
import numpy as np

_OPTIONS = {"nogil": True, "error_model": "numpy", "cache": True}
LOOPS = ("pixel_gram", "pixel_pairs")
"""The compiled entry points (each cached on disk by numba)."""


@numba.njit(**_OPTIONS)
def pixel_gram(a, b, out, diagonal):
    """``out[n, m, p, q] = sum_c a[n, c, p] b[m, c, q]`` (channels in ascending order) for
    ``a`` (N, C, P), ``b`` (M, C, P) and ``out`` (N, M, P, P); with ``diagonal`` only m = n,
    into ``out`` (N, 1, P, P)."""
    channels, pixels = a.shape[1], a.shape[2]
    for n in range(a.shape[0]):
        for slot in range(1 if diagonal else b.shape[0]):
            m = n if diagonal else slot
            for p in range(pixels):
                row = out[n, slot, p]
                x = a[n, 0, p]
                for q in range(pixels):
                    row[q] = x * b[m, 0, q]
                for c in range(1, channels):
                    x = a[n, c, p]
                    for q in range(pixels):
                        row[q] += x * b[m, c, q]


@numba.njit(**_OPTIONS)
def pixel_pairs(a, b, out, triangle):
    """``out[t, p] = sum_c a[i, c, p] b[j, c, p]`` (channels in ascending order: the same bits
    for a pair in any tile) for ``a`` (N, C, P) and ``b`` (M, C, P), the per-pixel covariances:
    pair t = i M + j of every (i, j), or with ``triangle`` (``b`` is ``a``) the pairs i <= j in
    row-major order (a diagonal tile's packed pairs, `Kernel`'s ``pairs``), into ``out``
    (pairs, P)."""
    channels, pixels = a.shape[1], a.shape[2]
    t = 0
    for i in range(a.shape[0]):
        for j in range(i if triangle else 0, b.shape[0]):
            row, x, y = out[t], a[i, 0], b[j, 0]
            for p in range(pixels):
                row[p] = x[p] * y[p]
            for c in range(1, channels):
                x, y = a[i, c], b[j, c]
                for p in range(pixels):
                    row[p] += x[p] * y[p]
            t += 1


def warm_up() -> None:
    """Compile (or load from numba's cache) the loops for float32 and float64, once."""
    for dtype in (np.float32, np.float64):
        a = np.ones((1, 2, 3), dtype)
        pixel_gram(a, a, np.empty((1, 1, 3, 3), dtype), False)
        pixel_pairs(a, a, np.empty((1, 3), dtype), True)
