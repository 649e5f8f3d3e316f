r"""Compiled layer maps of the ReLU family, one pass per block (optional: needs numba).

`ABReLU`'s closed form (ReLU, LeakyReLU, Abs) written as torch operations is a dozen passes over
each cache-sized block of `layer_map`, each paying torch's fixed cost of a few microseconds, and
``acos`` alone is one of them.  Here the whole map is one compiled loop per block, vectorised by
LLVM: per entry, with :math:`\rho = k_{12} / \sqrt{k_{11} k_{22}}` clamped to :math:`[-1, 1]`,

.. math::

    \dot T = d - c \arccos\rho, \qquad
    T = \dot T\, k_{12} + c \sqrt{k_{11} k_{22}} \sqrt{(1 - \rho)(1 + \rho)}, \qquad
    \Theta' = \dot T\, \Theta,

with :math:`c = (a - b)^2 / (2\pi)` and :math:`d = (a^2 + b^2) / 2`.  :math:`\rho` is rounded as
in the torch form (a division by :math:`\sqrt{k_{11} k_{22}}`, not a product with reciprocals), so
an example paired with itself keeps :math:`\rho = 1` exactly: :math:`\arccos` is infinitely steep
there, and one ulp off would move :math:`\dot T` by 1e-8.  `widelimits.layers._chain` runs the
same map inside compiled runs of layers.  The arc cosine is a
branch-free rational approximation (the classical one of fdlibm: :math:`\arcsin s = s + s\, z
P(z) / Q(z)` with :math:`z = s^2` for :math:`|s| \le 1/2`, and
:math:`\arccos x = 2 \arcsin\sqrt{(1 - x)/2}` above), accurate to one ulp in float64 and float32,
so that every lane of a vector takes the same path.  No fast-math: each entry's result is the
same wherever it sits in a block, so the block size and the thread count do not change a bit.

When numba is not installed (it is the optional extra ``widelimits[fast]``), or the blocks are not
plain contiguous CPU float32/float64 arrays, `abrelu_into` returns False and the caller uses the
torch closed form; both agree to rounding (tests compare them to 1e-12 in float64).  Set the
environment variable ``WIDELIMITS_NUMBA=0`` before importing widelimits, or call
``set_compiled(False)``, to use the torch closed form always.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from ._fused import parse_switch

__all__ = ["abrelu_into", "compiled_enabled", "constants", "loops", "set_compiled"]

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

_ENABLED = parse_switch("WIDELIMITS_NUMBA", "the torch closed forms instead of compiled ones")


def compiled_enabled() -> bool:
    """Whether the compiled maps are used when numba is importable."""
    return _ENABLED


def set_compiled(enabled: bool) -> None:
    """Use the compiled maps (``True``, the default when numba is installed) or always the torch
    closed form (``False``); both give the same values up to rounding."""
    global _ENABLED
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    _ENABLED = enabled


@functools.cache
def loops():
    """The module of compiled loops (`_jit_loops`), or None without numba.  numba compiles each
    loop once per dtype on first use and caches it on disk (a later process loads it in
    milliseconds)."""
    try:
        from . import _jit_loops
    except ImportError:
        return None
    return _jit_loops


@functools.cache
def constants(dtype: torch.dtype) -> tuple[np.ndarray, np.floating]:
    """The loops' constants (`_CONSTANTS`) and the smallest normal number, in ``dtype``."""
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    return np.array(_CONSTANTS, dtype=np_dtype), np_dtype(torch.finfo(dtype).tiny)


def _plain(t: Tensor | None, dtype: torch.dtype) -> bool:
    return t is None or (t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous())


def abrelu_into(
    k11: Tensor, k22: Tensor, k12: Tensor, t_out: Tensor, ntk: Tensor | None,
    ntk_out: Tensor | None, c: float, d: float,
) -> bool:  # fmt: skip
    """`ABReLU`'s layer map (see the module docstring) written into ``t_out`` and (if given)
    ``ntk_out``, for any layout: one block of `layer_map`, or a whole flat (R, C) tile with
    k11 of shape (R, 1) and k22 of shape (1, C).  Returns False, having written nothing, when it
    does not apply (then the caller computes it with torch)."""
    dtype = t_out.dtype
    shape = t_out.shape
    if (
        not _ENABLED
        or dtype not in (torch.float32, torch.float64)
        or k12.shape != shape
        or (ntk is not None and ntk.shape != shape)
        or not all(_plain(x, dtype) for x in (k12, t_out, ntk, ntk_out))
        or (compiled := loops()) is None
    ):
        return False
    consts, tiny = constants(dtype)
    c, d = consts.dtype.type(c), consts.dtype.type(d)
    has_ntk = ntk_out is not None
    t_np = t_out.numpy()
    ntk_np, ntk_out_np = (ntk.numpy(), ntk_out.numpy()) if has_ntk else (t_np, t_np)
    if len(shape) == 2 and k11.shape == (shape[0], 1) and k22.shape == (1, shape[1]):
        if k11.dtype == dtype and k22.dtype == dtype:
            v1, v2, k12_np = k11.reshape(-1).numpy(), k22.reshape(-1).numpy(), k12.numpy()
            compiled.outer(v1, v2, k12_np, ntk_np, t_np, ntk_out_np, c, d, consts, tiny, has_ntk)
            return True
    kk = torch.mul(k11, k22).clamp_(min=0).expand(shape).to(dtype).contiguous().numpy()
    compiled.flat(
        kk.reshape(-1), k12.numpy().reshape(-1), ntk_np.reshape(-1), t_np.reshape(-1),
        ntk_out_np.reshape(-1), c, d, consts, tiny, has_ntk,
    )  # fmt: skip
    return True
