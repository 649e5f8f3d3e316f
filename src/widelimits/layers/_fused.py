"""Fused activation layer maps: one cache-sized pass per layer instead of one pass per operation.

An activation layer maps (K, Theta) to (T(K), Tdot(K) * Theta), entry by entry.  Written as
tensor expressions (`Activation.dual`), each of the dozen or so operations of a closed form reads
and writes the whole tile, and each fresh temporary of a tile's size costs page faults as well:
at depth 10 the eager recursion of the fully connected kernel took twice the time of the Gram
product it starts from.

`layer_map` computes the same maps over blocks of ``BLOCK_ENTRIES`` entries, small enough
for all of a closed form's temporaries to stay in the core's cache, and writes T and
Tdot * Theta straight into the two outputs: the tile is read once (K and Theta) and written once
(T and Theta') per layer, whatever the number of operations.  Activations may give a fused
closed form (`Activation.dual_into`, e.g. `ABReLU`'s reuses the correlation and angle for T and
Tdot and works in place); the default evaluates ``dual`` on each block.

The eager path (``dual`` on whole tensors) stays the reference: tests compare both to 1e-12 in
float64.  The fused path runs only when nothing needs gradients (it works in place); set the
environment variable ``WIDELIMITS_FUSED=0`` before importing widelimits, or call
``set_fused(False)`` (or use ``with fused(False):``), to use the eager path everywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Callable

import torch
from torch import Tensor

from .._switches import Switch
from . import _reuse

__all__ = ["BLOCK_ENTRIES", "fused", "fused_enabled", "layer_map", "set_fused"]


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


BLOCK_ENTRIES = 2**15 if _cpu_cores() <= 2 else 2**19
"""Entries of each operand block.  On one or two cores, 2^15 (128 KiB in float32, 256 KiB in
float64): a closed form's half dozen live temporaries then stay in a 2 MiB L2 cache beside the
inputs and outputs, and the blocks are large enough for torch's fixed cost per operation (a few
microseconds) not to matter; measured on a 512 x 512 ReLU tile, 2^15 to 2^16 entries are best in
both dtypes.  On more cores, 2^19: each operation holds the GIL for its few microseconds of
dispatch, and with many tile workers those waits, not the cache, bound the speed.  On a 16-core
machine (depth-10 FC kernel, 4000 x 3072, float32), 2^15-entry blocks took 1.47 s on 16 workers
and 0.92 s on 4, 2^19-entry blocks 0.59 s and 0.46 s (one worker: 1.30 s and 1.59 s).  The block
size is fixed per machine, not per call: elements at a block's end may take a different
vectorised code path, so a size that followed the thread count would change the last bits of a
result with it."""

FUSED = Switch("WIDELIMITS_FUSED", "the eager activation maps")


def fused_enabled() -> bool:
    """Whether activations use the fused layer maps (when no gradient is needed)."""
    return FUSED.on


def set_fused(enabled: bool) -> None:
    """Turn the fused layer maps on or off for the whole process (the eager path is the
    reference; both give the same values up to rounding)."""
    FUSED.set(enabled)


def fused(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Context manager: the fused layer maps on (``True``) or off (``False``) inside it."""
    return FUSED(enabled)


def can_fuse(*tensors: Tensor | None) -> bool:
    """True when the fused path applies: enabled, and no tensor needs a gradient."""
    if not FUSED.on:
        return False
    if not torch.is_grad_enabled():
        return True
    return not any(t is not None and t.requires_grad for t in tensors)


def _blocks(shape: tuple[int, ...], per_block: int) -> list[tuple]:
    """Index tuples (ints, then one slice) that cut ``shape`` into blocks of <= per_block entries:
    whole trailing axes, a slice of the next one, each index of the leading ones."""
    if not shape:
        return [()]
    inner = 1
    axis = len(shape) - 1
    while axis > 0 and inner * shape[axis] <= per_block:
        inner *= shape[axis]
        axis -= 1
    # axes after `axis` are whole (inner entries); cut `axis` into steps; loop over axes before
    step = max(1, per_block // inner)
    if step >= shape[axis] and axis == 0:
        return [()]
    outer = itertools.product(*(range(n) for n in shape[:axis]))
    cuts = [slice(i, min(i + step, shape[axis])) for i in range(0, shape[axis], step)]
    return [(*o, c) for o in outer for c in cuts]


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast shape of ``shapes`` (`torch.broadcast_shapes`, without its overhead)."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for s in shapes:
        for axis, n in enumerate(s, ndim - len(s)):
            if n != 1:
                if out[axis] not in (1, n):
                    raise ValueError(f"shapes {shapes} do not broadcast")
                out[axis] = n
    return tuple(out)


def _taker(t: Tensor | None, ndim: int) -> Callable[[tuple], Tensor | None]:
    """A function from a block index to the block of ``t`` broadcast against a tensor with
    ``ndim`` axes (the reshape and the broadcast axes worked out once, not per block)."""
    if t is None or t.ndim == 0:
        return lambda index: t
    if t.ndim < ndim:
        t = t.reshape((1,) * (ndim - t.ndim) + tuple(t.shape))
    ones = [n == 1 for n in t.shape]
    if not any(ones):
        return t.__getitem__

    def take(index: tuple) -> Tensor:
        return t[
            tuple(
                (0 if isinstance(i, int) else slice(None)) if one else i
                for i, one in zip(index, ones, strict=False)
            )
        ]

    return take


def _overlaps(a: Tensor, *others: Tensor | None) -> bool:
    """Whether ``a`` shares its storage with any of ``others`` (or may: tensors without memory
    of their own count as sharing)."""
    address = _reuse._storage(a)
    return any(o is not None and _reuse._storage(o) == address for o in others)


def _output(
    activation, t: Tensor | None, shape, dtype, reads: tuple, device
) -> tuple[Tensor, tuple]:
    """The tensor to write an output of ``shape`` into: ``t`` itself when the layer owns it
    (`_reuse.take`) and it fits, else a fresh one.  ``reads``: the other operands; small ones
    that share ``t``'s memory (e.g. a self-covariance's pixel diagonal) are copied first."""
    if t is not None and t.ndim and tuple(t.shape) == shape and t.dtype == dtype:
        if _reuse.take(activation, t):
            reads = tuple(
                r.clone() if r is not None and r.ndim and _overlaps(t, r) else r for r in reads
            )
            return t, reads
    return torch.empty(shape, dtype=dtype, device=device), reads


def layer_map(
    activation, k11: Tensor, k22: Tensor, k12: Tensor, ntk: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """``(T, Tdot * ntk)`` of ``activation`` for variances and covariances of any broadcastable
    shapes (flat, per-pixel or pixel-pair layouts), block by block (see the module docstring).

    ``ntk`` may be ``None`` (then the second output is ``None``) or 0-dimensional (the zero NTK
    before any trainable layer).  The values equal ``activation.dual`` up to rounding.

    When ``activation`` owns ``k12`` or ``ntk`` (`widelimits.layers._reuse`: they were granted
    to it, nothing else holds them), T is written over ``k12`` and Tdot * ntk over ``ntk``
    instead of into fresh tensors: ``dual_into`` is then called with ``t_out`` being the block
    of ``k12`` and ``ntk_out`` the block of ``ntk`` (the same memory; when ``ntk`` is ``k12``,
    ``ntk_out`` is the block of both), so it must read each entry of its inputs before writing
    that entry of its outputs.
    """
    operands = (k11, k22, k12) if ntk is None else (k11, k22, k12, ntk)
    shape = _broadcast(*(x.shape for x in operands))
    dtype = k12.dtype
    if any(x.dtype != dtype for x in operands):
        for x in operands:
            dtype = torch.promote_types(dtype, x.dtype)
        k11, k22, k12 = (x.to(dtype) for x in (k11, k22, k12))
    device = k12.device
    if ntk is not None and ntk.ndim and _overlaps(k12, ntk):
        # ntk is k12 (the NTK right after the first trainable layer): Tdot * ntk may go over
        # it, T into a fresh tensor; other sharings (views) get two fresh outputs.
        t = torch.empty(shape, dtype=dtype, device=device)
        theta = torch.empty_like(t)
        if ntk is k12:
            theta, (k11, k22) = _output(activation, ntk, shape, dtype, (k11, k22), device)
    else:
        t, (k11, k22) = _output(activation, k12, shape, dtype, (k11, k22), device)
        theta = None
        if ntk is not None:
            theta, (k11, k22) = _output(activation, ntk, shape, dtype, (k11, k22), device)
    if t.numel() == 0:
        return t, theta
    if activation.map_tile(k11, k22, k12, t, ntk, theta):
        return t, theta  # a compiled map: one pass over the tile, no blocks needed
    per_block = BLOCK_ENTRIES
    if t.device.type != "cpu":  # no small caches to fit in: one block
        per_block = math.prod(shape)
    nd = len(shape)
    take11, take22, take12, take_ntk = (_taker(x, nd) for x in (k11, k22, k12, ntk))
    for index in _blocks(tuple(shape), per_block):
        activation.dual_into(
            take11(index),
            take22(index),
            take12(index),
            t[index],
            None if theta is None else take_ntk(index),
            None if theta is None else theta[index],
        )
    return t, theta
