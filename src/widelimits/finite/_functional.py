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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from torch import Tensor, nn

__all__ = ["FunctionalModel", "detached_values", "substituted"]


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


class FunctionalModel:
    """``model`` as a function of its parameter and buffer values, given by name.

    Names are those of ``named_parameters`` / ``named_buffers`` (any of the names of a shared
    tensor works).  Unnamed tensors keep the model's own values.  The input is copied before
    each call, so a model that modifies its input in place (``x.mul_(2)``) never touches the
    caller's tensor: the cost is one copy of the batch per forward pass.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def tensors(self) -> dict[str, Tensor]:
        """Every name of every parameter and buffer (shared ones under each of their names)."""
        named = dict(self.model.named_parameters(remove_duplicate=False))
        named.update(self.model.named_buffers(remove_duplicate=False))
        return named

    def __call__(self, values: Mapping[str, Tensor], x: Tensor):
        named = self.tensors()
        unknown = [k for k in values if k not in named]
        if unknown:
            raise KeyError(f"the model has no parameter or buffer named {unknown[:4]}")
        by_id = {id(named[k]): v for k, v in values.items()}
        with substituted(self.model, by_id):
            return self.model(x.clone())


def detached_values(model: nn.Module, chosen: dict[str, Tensor]) -> tuple[dict, dict]:
    """Values to call the model with: the ``chosen`` parameters and the others detached
    (no autograd link to the caller's parameters, so their ``.grad`` is never touched), and
    copies of the buffers (a forward pass that updates a buffer changes the copy only)."""
    params = {k: v.detach() for k, v in chosen.items()}
    ids = {id(v) for v in chosen.values()}
    frozen = {k: v.detach() for k, v in model.named_parameters() if id(v) not in ids}
    frozen.update({k: b.clone() for k, b in model.named_buffers()})
    return params, frozen
