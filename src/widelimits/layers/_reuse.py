"""The ownership rule: a layer may write its outputs over its inputs when nothing else holds them.

Every fresh tensor of a tile's size costs page faults, about as much as one pass over it: a
Myrtle tile holds 64 MiB tensors (16 pairs x 32^4 pixel pairs, float32), and a layer that
writes its outputs into fresh ones spends a quarter of its time faulting pages in.  Reusing the
input's memory for the output removes that cost, but only where it is safe, so it is decided in
one place, with one rule:

- `chain` (what `Serial` and `Repeat` run) is the only code that knows a state is held by
  nobody else: the state layer i returns goes to layer i + 1 and is dropped.  Before calling
  layer i + 1 it *grants* that layer the storages of the state's ``nngp``, ``ntk``, ``cov1`` and
  ``cov2``, except storages that the chain's own input also uses (its caller still holds them:
  a layer may pass tensors through unchanged, or return views of them), storages that appear
  more than once in the state or its branches (a `FanOut` hands the same state to several
  branches; ``cov1`` may be ``nngp``), and every storage when autograd records (in-place writes
  would break the backward pass).  One object as both ``cov1`` and ``cov2`` (a symmetric
  kernel), or as both ``nngp`` and ``ntk`` (the NTK right after the first trainable layer),
  counts once: the layers that take tensors handle those two cases by identity.
- The granted layer — that layer object, not the layers it calls itself — may `take` a
  granted tensor once: it then owns it and may write over it (after it has read what it needs).
  A tensor is taken only if it is contiguous and spans its whole storage (so no other view can
  see part of it).  A layer calling other layers (`Parallel`, a custom layer) passes nothing
  on, so its sub-layers allocate as before: grants never flow where the chain cannot see.
  (`Serial` and `Repeat` do pass their grant on to their first layer: their chain is the
  layer.)  The rule assumes what layers already do: a layer keeps no reference to the tensors
  of the states it returns.

Grants are per thread (tiles run on several threads) and live only during the granted layer's
call.  The values never depend on reuse (the same operations in the same order, written to other
memory): ``WIDELIMITS_REUSE=0`` in the environment, `set_reuse` or ``with reuse(False):`` turn it
off, and the tests compare both to the bit.

`scratch` gives the intermediates of separable window sums one set of buffers per thread for the
whole outermost chain (a tile's computation), instead of fresh ones per layer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .._switches import Switch

__all__ = [
    "chain", "reuse", "reuse_enabled", "scratch", "set_reuse", "take", "taken_count",
]  # fmt: skip

REUSE = Switch("WIDELIMITS_REUSE", "fresh output tensors in every layer")


def reuse_enabled() -> bool:
    """Whether layers may write their outputs over inputs that nothing else holds."""
    return REUSE.on


def set_reuse(enabled: bool) -> None:
    """Turn buffer reuse on or off for the whole process (results do not change)."""
    REUSE.set(enabled)


def reuse(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Context manager: buffer reuse on (``True``) or off (``False``) inside it."""
    return REUSE(enabled)


class _Thread(threading.local):
    def __init__(self) -> None:
        self.layer: object | None = None  # the layer holding the current grant
        self.granted: set[int] = set()  # storage addresses it may take
        self.depth = 0  # nested chains running on this thread
        self.pooled: dict[str, object] = {}  # per-thread objects of the outermost chain
        self.taken = 0  # tensors taken on this thread (a count for tests and benchmarks)


_local = _Thread()


def taken_count() -> int:
    """How many tensors layers have taken over on this thread so far (tests, benchmarks)."""
    return _local.taken


def _storage(t: Tensor) -> int:
    """The address of ``t``'s memory; 0 for tensors without one of their own (meta tensors,
    torch.func wrappers, ...), which are never granted."""
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, TypeError):
        return 0


def _tensors(state) -> Iterator[Tensor]:
    """Every tensor a state (or a tuple of branch states) refers to, with repeats: its fields,
    tensors in tuple fields, and the tensors of states held in fields (branch states)."""
    from ..kernel import Kernel

    if isinstance(state, tuple):
        for s in state:
            yield from _tensors(s)
        return
    if not isinstance(state, Kernel):
        return
    for value in vars(state).values():
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, Tensor):
                yield v
            elif isinstance(v, Kernel | tuple):
                yield from _tensors(v)


def _grantable(state, held: set[int]) -> set[int]:
    """Storages of ``state``'s kernel tensors that nothing but ``state`` holds (see the module
    docstring); empty when autograd records or ``state`` is not a plain state or tuple."""
    from ..kernel import Kernel

    states = state if isinstance(state, tuple) else (state,)
    if not all(type(s) is Kernel for s in states):  # subclasses carry more: grant nothing
        return set()
    tensors = list(_tensors(state))
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return set()
    # Per storage, how many fields of the states use it; the same state twice in a tuple
    # (FanOut) counts twice.  The same object as cov1 and cov2 (a symmetric kernel), or as nngp
    # and ntk (the NTK right after the first trainable layer), counts once: the layers that
    # take tensors handle those two cases by identity.  Any other sharing counts twice.
    seen: dict[int, int] = {0: 2}  # no memory of its own: never granted
    for s in states:
        fields = [s.nngp] + ([] if s.ntk is s.nngp else [s.ntk])
        fields += [s.cov1] + ([] if s.cov2 is s.cov1 else [s.cov2])
        ids = {id(t) for t in fields}
        others = {id(t): t for t in _tensors(s) if id(t) not in ids}
        for t in fields + list(others.values()):
            if t is not None and t.numel():
                seen[_storage(t)] = seen.get(_storage(t), 0) + 1
    out = set()
    for s in states:
        for t in (s.nngp, s.ntk, s.cov1, s.cov2):
            if t is not None and t.numel() and seen[_storage(t)] == 1:
                out.add(_storage(t))
    return out - held


def chain(
    layers: Sequence, k, owner=None, check: Callable | None = None, give: bool = False,
    runs: Callable | None = None,
):  # fmt: skip
    """Apply ``layers`` one after another to the state ``k``, each granted the tensors of the
    state the previous one returned (see the module docstring).

    ``owner``: the layer running the chain (`Serial`, `Repeat`); the tensors granted to it
    pass on to its first layer.  ``check(k, out)``: called on the first layer's input and
    output (e.g. `Repeat`'s shape check).  ``give``: the caller hands ``k`` over (it will not
    read it again, e.g. a tile's input state): its tensors are granted to the first layer too.
    ``runs(layers[i:], k)``: ``(state, count)`` when the next ``count`` layers run as one step
    (`widelimits.layers._chain`, which takes nothing over), or None.
    """
    enabled = REUSE.on and bool(layers)
    if enabled:
        inherited = set(_local.granted) if owner is not None and _local.layer is owner else set()
        if give:
            inherited |= _grantable(k, set())
        held = {_storage(t) for t in _tensors(k) if t.numel()} - inherited
        _local.depth += 1
        previous = (_local.layer, _local.granted)
    try:
        i = 0
        while i < len(layers):
            run = None if runs is None else runs(layers[i:], k)
            if run is not None:
                out, used = run
            else:
                if enabled:
                    _local.layer = layers[i]
                    _local.granted = inherited if i == 0 else _grantable(k, held)
                out, used = layers[i].kernel_fn(k), 1
            if check is not None and i == 0:
                check(k, out)
            k, i = out, i + used
    finally:
        if enabled:
            _local.layer, _local.granted = previous
            _local.depth -= 1
            if _local.depth == 0:
                _local.pooled.clear()
    return k


def take(layer, t: Tensor | None) -> bool:
    """Whether ``layer`` may write over ``t``: ``t`` was granted to it (see `chain`), is
    contiguous and spans its whole storage.  The grant is used up: ask once per tensor."""
    if t is None or _local.layer is not layer or not _local.granted or not t.numel():
        return False
    address = _storage(t)
    if not address or address not in _local.granted:
        return False
    _local.granted.discard(address)
    whole = t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.itemsize
    if not (whole and t.is_contiguous()):
        return False
    _local.taken += 1
    return True


def scratch(name: str, factory: Callable[[], object]) -> object:
    """The per-thread object ``name`` (made by ``factory``) shared by the layers of the
    outermost running chain, dropped when it returns; a fresh one outside any chain."""
    if _local.depth == 0 or not REUSE.on:
        return factory()
    obj = _local.pooled.get(name)
    if obj is None:
        obj = _local.pooled[name] = factory()
    return obj
