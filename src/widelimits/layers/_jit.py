r"""Compiled layer maps (optional: needs numba): the ReLU family and Erf in one pass per tile.

An activation's closed form written as torch operations is a dozen passes over each cache-sized
block of `layer_map`, each paying torch's fixed cost of a few microseconds.  Here an activation
with a compiled form (`Activation.compiled_op`: `ABReLU` and its subclasses ReLU, LeakyReLU and
Abs, and `Erf`) is one compiled loop (`_jit_loops.chain`, a run of one layer), vectorised by
LLVM.  For `ABReLU`, per entry, with :math:`\rho = k_{12} / \sqrt{k_{11} k_{22}}` clamped to
:math:`[-1, 1]`,

.. math::

    \dot T = d - c \arccos\rho, \qquad
    T = \dot T\, k_{12} + c \sqrt{k_{11} k_{22}} \sqrt{(1 - \rho)(1 + \rho)}, \qquad
    \Theta' = \dot T\, \Theta,

with :math:`c = (a - b)^2 / (2\pi)` and :math:`d = (a^2 + b^2) / 2`; for `Erf` its closed form
with :math:`\arcsin`.  Every intermediate is rounded as in the torch form (:math:`\rho` is a
division by :math:`\sqrt{k_{11} k_{22}}`, not a product with reciprocals), so an example paired
with itself keeps :math:`\rho = 1` exactly: :math:`\arccos` is infinitely steep there, and one
ulp off would move :math:`\dot T` by 1e-8.  :math:`\arccos` and :math:`\arcsin` are fdlibm's
rational approximation (:math:`\arcsin s = s + s\, z P(z) / Q(z)`, :math:`z = s^2`, for
:math:`|s| \le 1/2`, and :math:`\arcsin x = \pi/2 - 2 \arcsin\sqrt{(1 - x)/2}` above) written
without branches, so that every lane of a vector takes the same path; accurate to two ulp in
float64 and float32.  No fast-math: each entry's result is the same wherever it sits in a block,
so the block size and the thread count do not change a bit.  `widelimits.layers._chain` runs
whole runs of Dense and such activations through the same loop.

`map_outer` takes whole tiles whose entries are outer products of the two examples' variances
(the flat tile; the pixel-pair layout, one pair of examples at a time); `map_block` takes one
block of `layer_map`, any layout.  When numba is not installed (it is the optional extra
``widelimits[fast]``), or the arrays are not plain contiguous CPU float32/float64 arrays, they
return False and the caller uses the torch closed form; both agree to rounding (tests compare
them to 1e-12 in float64).  Set the environment variable ``WIDELIMITS_NUMBA=0`` before importing
widelimits, or call ``set_compiled(False)``, to use the torch closed forms always.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import threading
import warnings

import numpy as np
import torch
from torch import Tensor

from .._switches import Switch

__all__ = [
    "compiled_enabled", "constants", "loops", "map_block", "map_outer", "set_compiled", "RELU",
    "ERF", "WINDOW",
]  # fmt: skip

# The modes and activation kinds of `_jit_loops.chain`, defined here (that module needs numba,
# and imports them from here).
OUTER, TRIANGLE, SELF, EACH = 0, 1, 2, 3
"""`_jit_loops.chain`'s modes: a tile of rows against columns, the packed pairs of a diagonal
tile, the examples themselves, one variance pair per entry."""
RELU, ERF, WINDOW = 4, 5, 6
"""The ``kind`` of an `ABReLU`, an `Erf` and a pixel map (a convolution's window sum, Flatten's
mean) step (0-3 are Dense's NTK rules)."""
CHUNK = 512
"""Entries of a chunk of `_jit_loops.chain`: its buffers stay in the L1 cache."""
MIN_SLICE = 2**14
"""Entries of a slice below which `map_outer` leaves a tile with several slices to `map_block`'s
blocks: each slice costs tens of microseconds of Python (8x8 images have 4096 pixel pairs)."""

# fdlibm's rational approximation of (arcsin(s) - s) / s^3 = P(z) / Q(z), z = s^2 <= 1/4
_P = (
    1.66666666666666657415e-01, -3.25565818622400915405e-01, 2.01212532134862925881e-01,
    -4.00555345006794114027e-02, 7.91534994289814532176e-04, 3.47933107596021167570e-05,
)  # fmt: skip
_Q = (-2.40339491173441421878e00, 2.02094576023350569471e00, -6.88283971605453293030e-01,
      7.70381505559019352791e-02)  # fmt: skip
# The constants of the loops, in the loop's dtype: mixing a float64 literal into float32
# arithmetic would promote it to float64 (half the vector lanes).
_CONSTANTS = (*_P, *_Q, 0.5, 1.0, 2.0, math.pi, math.pi / 2, 0.0)

COMPILED = Switch("WIDELIMITS_NUMBA", "the torch closed forms instead of compiled ones")


def compiled_enabled() -> bool:
    """Whether the compiled maps are used when numba is importable."""
    return COMPILED.on


def set_compiled(enabled: bool) -> None:
    """Use the compiled maps (``True``, the default when numba is installed) or always the torch
    closed forms (``False``); both give the same values up to rounding."""
    COMPILED.set(enabled)


_loading = threading.RLock()


@functools.cache
def load(name: str):
    """The module of compiled loops ``name`` (`_jit_loops`, `_jit_windows`) with its loops
    compiled for both dtypes or loaded from numba's on-disk cache (its ``warm_up``); None
    without numba.  numba reads its cache before compiling, so a damaged cache file raises
    there: then the loops are compiled again without the cache, with a warning."""
    try:
        module = importlib.import_module(f"{__package__}.{name}")
    except ImportError:
        return None
    try:
        module.warm_up()
    except Exception as error:
        import numba

        warnings.warn(
            f"numba could not load the compiled loops of widelimits.layers.{name} from its "
            f"cache ({error!r}); compiling them again without the cache in this process "
            f"(delete numba's cache files of widelimits/layers/{name}.py to rebuild it)",
            RuntimeWarning,
            stacklevel=5,
        )
        for loop in module.LOOPS:
            jitted = numba.njit(nogil=True, error_model="numpy")(getattr(module, loop).py_func)
            setattr(module, loop, jitted)
        module.warm_up()
    return module


def load_locked(name: str):
    """`load` under the loading lock (tile threads may ask at once)."""
    with _loading:
        return load(name)


def loops():
    """The module of compiled loops (`_jit_loops`), or None without numba.  The first call
    compiles the loop for both dtypes, or loads it from numba's on-disk cache (about two
    seconds with numba's own import; compiling from scratch takes about ten, once per
    machine); a damaged cache is bypassed with a warning."""
    return load_locked("_jit_loops")


@functools.cache
def constants(dtype) -> tuple[np.ndarray, np.floating]:
    """The loops' constants (`_CONSTANTS`) and the smallest normal number, in ``dtype`` (float32
    or float64, a torch or numpy dtype)."""
    np_dtype = np.float32 if dtype in (torch.float32, np.float32) else np.float64
    return np.array(_CONSTANTS, dtype=np_dtype), np_dtype(np.finfo(np_dtype).tiny)


def _plain(t: Tensor | None, dtype: torch.dtype) -> bool:
    return t is None or (t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous())


def _outer_split(shape: tuple[int, ...], s11, s22) -> tuple[int, int] | None:
    """``(m, s)`` when the entries of ``shape`` are, for each index of the leading axes ``:m``,
    an outer product of the k11 axes ``m:s`` and the k22 axes ``s:`` (k11 constant along
    ``s:``, k22 along ``m:s``): the flat tile (m = 0) and the pixel-pair layout (m = 2, the
    pixels p of x1 against q of x2).  None otherwise (the per-pixel layout, packed pairs)."""
    n = len(shape)
    a = (1,) * (n - len(s11)) + tuple(s11)
    b = (1,) * (n - len(s22)) + tuple(s22)
    s = n
    while s > 0 and a[s - 1] == 1 and b[s - 1] == shape[s - 1]:
        s -= 1
    m = s
    while m > 0 and b[m - 1] == 1 and a[m - 1] == shape[m - 1]:
        m -= 1
    return (m, s) if 0 < s < n and m < s else None


def _terms(op: tuple, v: Tensor) -> Tensor:
    """An activation's variance term of k11 (see `_jit_loops._variance_term`), as torch
    computes it in the activation's own closed form."""
    return v if op[0] == RELU else 1 + op[2] * v


def _call(op, k12, ntk, t_out, ntk_out, v1, v2, mode) -> None:
    """One compiled pass of the single layer ``op`` over ``k12`` (rows of entries)."""
    consts, tiny = constants(t_out.dtype)
    ops = np.array([op], dtype=consts.dtype)
    idx = np.zeros(1, np.int64)
    has_ntk = ntk_out is not None
    v1, v2 = v1.reshape(1, 1, -1), v2.reshape(1, 1, -1)  # one activation, one pixel
    arrays = [None if x is None else x.reshape(-1) for x in (k12, ntk, t_out, ntk_out)]
    k12, ntk, t_out, ntk_out = arrays
    loops().chain(
        k12, ntk if has_ntk else k12, t_out, ntk_out if has_ntk else t_out, ops, v1, v2, v1,
        consts, tiny, 1 if has_ntk else 0, mode, len(v1[0, 0]) if mode == OUTER else 1, idx, idx,
        consts, 1, CHUNK, 0, len(v1[0, 0]),
    )  # fmt: skip


def _applies(k12: Tensor, t_out: Tensor, ntk: Tensor | None, ntk_out: Tensor | None) -> bool:
    dtype, shape = t_out.dtype, t_out.shape
    return (
        COMPILED.on
        and dtype in (torch.float32, torch.float64)
        and k12.shape == shape
        and (ntk is None or ntk.shape == shape)
        and all(_plain(x, dtype) for x in (k12, t_out, ntk, ntk_out))
        and loops() is not None
    )


def map_outer(
    op: tuple, k11: Tensor, k22: Tensor, k12: Tensor, t_out: Tensor, ntk: Tensor | None,
    ntk_out: Tensor | None, max_slices: int = 4096,
) -> bool:  # fmt: skip
    """The layer map of the activation step ``op`` (`Activation.compiled_op`) over a whole
    tile whose entries are outer products of the two examples' variances (`_outer_split`: the
    flat tile and the pixel-pair layout), one compiled pass per slice of the leading axes,
    nothing materialised.  Writes ``t_out`` and (if given) ``ntk_out``, which may be the
    inputs' memory; returns False, having written nothing, when it does not apply."""
    shape = tuple(t_out.shape)
    split = _outer_split(shape, k11.shape, k22.shape)
    if split is None or k11.dtype != t_out.dtype or k22.dtype != t_out.dtype:
        return False
    m, s = split
    lead, rows, cols = shape[:m], math.prod(shape[m:s]), math.prod(shape[s:])
    small = math.prod(lead) > 1 and rows * cols < MIN_SLICE  # Python's cost per slice
    if math.prod(lead) > max_slices or small or not _applies(k12, t_out, ntk, ntk_out):
        return False
    n = k12.ndim
    a = _terms(op, k11.reshape((1,) * (n - k11.ndim) + tuple(k11.shape)))
    b = _terms(op, k22.reshape((1,) * (n - k22.ndim) + tuple(k22.shape)))
    arrays = [None if x is None else x.numpy() for x in (k12, ntk, t_out, ntk_out)]
    for index in itertools.product(*(range(x) for x in lead)):
        v1 = a[tuple(0 if a.shape[i] == 1 else x for i, x in enumerate(index))]
        v2 = b[tuple(0 if b.shape[i] == 1 else x for i, x in enumerate(index))]
        v1 = v1.expand(shape[m:s] + (1,) * (n - s)).reshape(1, rows).contiguous().numpy()
        v2 = v2.expand((1,) * (s - m) + shape[s:]).reshape(1, cols).contiguous().numpy()
        views = [None if x is None else x[index].reshape(rows, cols) for x in arrays]
        _call(op, *views, v1, v2, OUTER)
    return True


def map_block(
    op: tuple, k11: Tensor, k22: Tensor, k12: Tensor, t_out: Tensor, ntk: Tensor | None,
    ntk_out: Tensor | None,
) -> bool:  # fmt: skip
    """`map_outer` on one block of `layer_map` (any layout) where it applies, else one
    compiled pass with each entry's variance terms materialised for the block.  Returns False,
    having written nothing, when the compiled maps do not apply."""
    if map_outer(op, k11, k22, k12, t_out, ntk, ntk_out, max_slices=1):
        return True
    if not _applies(k12, t_out, ntk, ntk_out) or k11.dtype != t_out.dtype:
        return False
    shape = t_out.shape

    def terms(v: Tensor):
        return _terms(op, v).expand(shape).contiguous().numpy().reshape(1, -1)

    arrays = [None if x is None else x.numpy().reshape(1, -1) for x in (k12, ntk, t_out, ntk_out)]
    _call(op, *arrays, terms(k11), terms(k22), EACH)
    return True
