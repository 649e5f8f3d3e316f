r"""Taylor models of a network in its parameters: linearization and higher orders.

With :math:`\theta_0` the parameters at construction and :math:`\Delta = \theta - \theta_0`,

.. math::

    f_\text{lin}(x; \theta) &= f(x; \theta_0) + J(x; \theta_0)\, \Delta, \\
    f_k(x; \theta) &= \sum_{j=0}^{k} \frac{1}{j!} D^j f(x; \theta_0)[\Delta, \dots, \Delta].

:math:`J \Delta` is one Jacobian-vector product (``torch.func.jvp``), never a stored Jacobian;
order j nests j of them.  Trained by gradient descent on MSE, :math:`f_\text{lin}` follows exactly
the kernel dynamics of the empirical NTK at :math:`\theta_0`, which is why it tracks a wide
network's training.
"""

from __future__ import annotations

import copy
import math

from torch import Tensor, nn
from torch.func import jvp

from ._functional import FunctionalModel
from .checks import ParamSelection, check_model, select_parameters, watched_call

__all__ = ["TaylorExpanded", "linearize", "taylor_expand"]


class TaylorExpanded(nn.Module):
    r"""The degree-``degree`` Taylor model of ``model`` around its current parameters.

    With :math:`\theta_0` the parameters at construction and :math:`\Delta = \theta - \theta_0`,
    the model of degree k is

    .. math::

        f_k(x; \theta) = \sum_{j=0}^{k} \frac{1}{j!} D^j f(x; \theta_0)[\Delta, \dots, \Delta],

    computed with nested Jacobian-vector products (never a stored Jacobian).

    ``model`` is copied (``copy.deepcopy``), never changed; a parameter shared by several
    layers, or a layer used twice, is one parameter of the Taylor model, as in autograd.

    Its trainable parameters (``self.theta``, keyed by the model's parameter names with ``.``
    written as ``:``) start at :math:`\theta_0`; a frozen copy of the model keeps :math:`\theta_0`
    and the buffers as buffers, so ``.to(device)`` and ``state_dict`` work as for any module.
    Only the selected ``params`` move; the others stay at their initial values.
    """

    def __init__(self, model: nn.Module, degree: int = 1, params: ParamSelection = None):
        super().__init__()
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree!r}")
        check_model(model)
        names = list(select_parameters(model, params))
        self.degree = degree
        self._checked = False  # whether a forward pass has run (the first one is watched)
        self.base = copy.deepcopy(model)  # the caller's model is never touched
        # theta_0 becomes buffers (nothing here trains it), one tensor per distinct parameter
        # in every slot that held it: tied weights and shared modules stay shared.
        frozen: dict[int, Tensor] = {}
        for module in self.base.modules():
            for name, p in list(module._parameters.items()):
                del module._parameters[name]
                if p is not None and id(p) not in frozen:
                    frozen[id(p)] = p.detach().clone()
                module.register_buffer(name, None if p is None else frozen[id(p)])
        state = dict(self.base.named_buffers())
        self.names = names
        # Every name (slot) of each selected parameter: ``.to()`` copies buffers slot by slot,
        # so a tie between two modules is kept by substituting all the slots, not by identity.
        slots: dict[int, list[str]] = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            slots.setdefault(id(p), []).append(n)
        named = dict(model.named_parameters())
        self.slots = {n: slots[id(named[n])] for n in names}
        self.theta = nn.ParameterDict(
            {n.replace(".", ":"): nn.Parameter(state[n].clone()) for n in names}
        )

    def forward(self, x: Tensor) -> Tensor:
        fm = FunctionalModel(self.base)
        state = dict(self.base.named_buffers())
        theta0 = {n: state[n] for n in self.names}
        delta = {n: self.theta[n.replace(".", ":")] - theta0[n] for n in self.names}

        def f(p: dict, watched: bool = False) -> Tensor:
            values = {slot: v for n, v in p.items() for slot in self.slots[n]}
            # fm copies x: a model changing its input in place is harmless.  The first call is
            # watched: a shape error inside the model names the argument x.
            out = watched_call(fm, values, x, "x") if watched else fm(values, x)
            if not isinstance(out, Tensor):
                raise TypeError(f"the model must return a tensor, got {type(out).__name__}")
            if not out.is_floating_point():
                raise TypeError(f"the model returned {out.dtype} outputs: no derivatives")
            return out

        total, term, fn = f(theta0, watched=not self._checked), None, f
        self._checked = True
        for j in range(1, self.degree + 1):
            fn = _directional(fn, delta)
            term = fn(theta0)
            total = total + term / math.factorial(j)
        return total


def _directional(fn, delta: dict):
    """p -> D fn(p)[delta], by a Jacobian-vector product."""

    def derivative(p: dict) -> Tensor:
        try:
            return jvp(fn, (p,), (delta,))[1]
        except NotImplementedError as err:
            raise NotImplementedError(
                f"the model uses an operation without forward-mode autodiff ({err}); in "
                "eval mode some fused kernels (e.g. the transformer fast path) lack it: try "
                "model.train() with dropout set to 0"
            ) from err

    return derivative


def linearize(model: nn.Module, params: ParamSelection = None) -> TaylorExpanded:
    r""":math:`f(x; \theta_0) + J(x; \theta_0)\, (\theta - \theta_0)` as a trainable module."""
    return TaylorExpanded(model, 1, params)


def taylor_expand(model: nn.Module, degree: int, params: ParamSelection = None) -> TaylorExpanded:
    """The degree-``degree`` Taylor model of ``model`` in its parameters, trainable."""
    return TaylorExpanded(model, degree, params)
