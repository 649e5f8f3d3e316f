"""Calling a module with substituted parameter values, leaving the module exactly as it was.

``torch.func.functional_call`` swaps tensors by *name*.  A module registered twice (the same
``nn.Linear`` applied at two places of an ``nn.Sequential``, or under two attribute names) has
two names for one slot; with ``tie_weights=True`` the second swap saves the first swap's
replacement as "the original" and restores that, so the module comes back holding plain
tensors instead of its ``nn.Parameter`` s (and ``requires_grad=False`` where detached values
were passed).  Every later call then differentiates nothing through that layer.

Here a substitution is keyed by the *identity* of the tensor it replaces, and every slot
(a ``_parameters`` or ``_buffers`` entry of a distinct module) holding that tensor is swapped
exactly once and restored from what it held before.  Tied weights (one parameter in two
modules) and shared modules (one module at two places) are both covered, and the parameter is
counted once, as autograd counts it.

Swapping slots mutates the module for the duration of a call, so two threads cannot call one
module this way at once (nor can anyone else call it meanwhile).  A `FunctionalModel` made with
``copies=True`` therefore never calls the caller's module: each call borrows a *copy* of its
module tree (`module_copy`: new module objects, the same parameter and buffer tensors), one per
thread using it at a time, kept for reuse.  Forward hooks registered on the borrowed copy see
only that call.  A module that cannot be copied is called in place, one call at a time.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Iterator, Mapping

from torch import Tensor, nn

__all__ = ["Borrowed", "FunctionalModel", "detached_values", "module_copy", "substituted"]


@contextlib.contextmanager
def substituted(model: nn.Module, values: Mapping[int, Tensor]) -> Iterator[None]:
    """Within the block, every slot holding a tensor t with ``id(t)`` in ``values`` holds
    ``values[id(t)]`` instead; afterwards each slot holds its original object again."""
    saved = []
    for module in model.modules():  # distinct modules: each slot is visited once
        for store in (module._parameters, module._buffers):
            for name, t in store.items():
                if t is not None and id(t) in values:
                    saved.append((store, name, t))
    try:
        for store, name, t in saved:
            store[name] = values[id(t)]
        yield
    finally:
        for store, name, t in saved:
            store[name] = t


def module_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree holding the *same* tensors: parameters, buffers and
    tensor attributes are shared, every module object (with its slot and hook dictionaries) is
    new, so slots can be swapped and hooks registered on the copy alone."""
    keep: dict[int, object] = {}
    for module in model.modules():
        for t in [*module._parameters.values(), *module._buffers.values(), *vars(module).values()]:
            if isinstance(t, Tensor):
                keep[id(t)] = t
    return copy.deepcopy(model, keep)


_in_place_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _in_place_lock(model: nn.Module) -> threading.RLock:
    with _registry_lock:
        lock = _in_place_locks.get(model)
        if lock is None:
            lock = _in_place_locks[model] = threading.RLock()
        return lock


class Borrowed:
    """A module tree lent for one call: ``module`` and the counterpart of each submodule."""

    def __init__(self, original: nn.Module, module: nn.Module):
        self.module = module
        self._of = (
            None if module is original
            else dict(zip(map(id, original.modules()), module.modules(), strict=True))
        )  # fmt: skip

    def of(self, submodule: nn.Module) -> nn.Module:
        """The borrowed counterpart of a submodule of the original model."""
        return submodule if self._of is None else self._of[id(submodule)]


class FunctionalModel:
    """``model`` as a function of its parameter and buffer values, given by name.

    Names are those of ``named_parameters`` / ``named_buffers`` (any of the names of a shared
    tensor works).  Unnamed tensors keep the model's own values.  The input is copied before
    each call, so a model that modifies its input in place (``x.mul_(2)``) never touches the
    caller's tensor: the cost is one copy of the batch per forward pass.

    With ``copies=True`` calls run on borrowed copies of the module tree (module docstring):
    safe from several threads at once, and the caller's module is never touched.  Otherwise
    the model itself is swapped in place, one call at a time.
    """

    def __init__(self, model: nn.Module, copies: bool = False):
        self.model = model
        named = dict(model.named_parameters(remove_duplicate=False))
        named.update(model.named_buffers(remove_duplicate=False))
        self._named = named
        self._lock = threading.Lock()
        self._free: list[nn.Module] = []
        self._copies = copies

    def tensors(self) -> dict[str, Tensor]:
        """Every name of every parameter and buffer (shared ones under each of their names)."""
        return dict(self._named)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Borrowed]:
        """A module tree for this thread's exclusive use during the block (`Borrowed`)."""
        module = None
        if self._copies:
            with self._lock:
                module = self._free.pop() if self._free else None
            if module is None:
                try:
                    module = module_copy(self.model)
                except Exception:  # noqa: BLE001 - e.g. a non-leaf tensor attribute
                    self._copies = False  # not copyable: in place, one call at a time
        if module is None:
            with _in_place_lock(self.model):
                yield Borrowed(self.model, self.model)
            return
        try:
            yield Borrowed(self.model, module)
        finally:
            with self._lock:
                self._free.append(module)

    def call(self, module: nn.Module, values: Mapping[str, Tensor], x: Tensor):
        """``module`` (the model or a borrowed copy) called on ``x`` with ``values``."""
        unknown = [k for k in values if k not in self._named]
        if unknown:
            raise KeyError(f"the model has no parameter or buffer named {unknown[:4]}")
        by_id = {id(self._named[k]): v for k, v in values.items()}
        with substituted(module, by_id):
            return module(x.clone())

    def __call__(self, values: Mapping[str, Tensor], x: Tensor):
        with self.borrow() as lent:
            return self.call(lent.module, values, x)


def detached_values(model: nn.Module, chosen: dict[str, Tensor]) -> tuple[dict, dict]:
    """Values to call the model with: the ``chosen`` parameters and the others detached
    (no autograd link to the caller's parameters, so their ``.grad`` is never touched), and
    copies of the buffers (a forward pass that updates a buffer changes the copy only)."""
    params = {k: v.detach() for k, v in chosen.items()}
    ids = {id(v) for v in chosen.values()}
    frozen = {k: v.detach() for k, v in model.named_parameters() if id(v) not in ids}
    frozen.update({k: b.clone() for k, b in model.named_buffers()})
    return params, frozen
