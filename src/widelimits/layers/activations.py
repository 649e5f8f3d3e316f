r"""Elementwise activations with closed-form dual maps.

For pre-activations :math:`(u, v) \sim \mathcal N(0, [[k_{11}, k_{12}], [k_{12}, k_{22}]])` an
activation :math:`\phi` has the dual maps

.. math::

    T(k_{11}, k_{22}, k_{12}) &= \mathbb E[\phi(u)\, \phi(v)]
        \qquad \text{(the next NNGP, before the following Dense)} \\
    \dot T(k_{11}, k_{22}, k_{12}) &= \mathbb E[\phi'(u)\, \phi'(v)]
        \qquad \text{(multiplies the NTK: } \Theta' = \dot T\, \Theta)

A new activation is one subclass with ``fn`` (the finite side) and ``dual`` (the infinite side).
More closed forms (GELU, Sin, Cos, RBF, Exp, Gaussian, Sign, RectifiedMonomial) are in
`widelimits.layers.closed_forms`.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor, nn

from .._numerics import angle, correlation, sine
from ..kernel import Kernel
from ._chain import Step
from ._concat import Concatenated
from ._fused import can_fuse, layer_map
from ._jit import ERF, RELU, map_block, map_outer
from .base import BuildContext, Layer

__all__ = ["Activation", "ABReLU", "ReLU", "LeakyReLU", "Abs", "Erf", "Identity"]


class Activation(Layer):
    r"""Base class: an elementwise nonlinearity with dual maps ``T`` and ``Tdot``.

    For pre-activations :math:`(u, v) \sim \mathcal N(0, [[k_{11}, k_{12}], [k_{12}, k_{22}]])`:

    .. math::

        T(k_{11}, k_{22}, k_{12}) &= \mathbb E[\phi(u)\, \phi(v)], \\
        \dot T(k_{11}, k_{22}, k_{12}) &= \mathbb E[\phi'(u)\, \phi'(v)],

    and the layer maps the state as :math:`K' = T`, :math:`\Theta' = \dot T\, \Theta`.
    """

    requires_gaussian: bool = True

    def fn(self, x: Tensor) -> Tensor:
        """The activation applied elementwise in the finite network."""
        raise NotImplementedError

    def dual(self, k11: Tensor, k22: Tensor, k12: Tensor, need_dot: bool) -> tuple[Tensor, Tensor]:
        """Return ``(T, Tdot)``; ``Tdot`` may be ``None`` when ``need_dot`` is False.

        Elementwise on broadcastable tensors of any shape (flat, per-pixel or pixel-pair
        layouts); differentiable.  This is the reference (eager) form of the maps.
        """
        raise NotImplementedError

    def compiled_op(self) -> tuple | None:
        """This activation as one step of the compiled loop (`widelimits.layers._jit`): a row
        of numbers, or ``None`` (the default) when it has no compiled form."""
        return None

    def chain_op(self, k, size):
        # a step of `widelimits.layers._chain`'s compiled runs, on Gaussian inputs only (else
        # kernel_fn raises its own error)
        op = self.compiled_op()
        if op is None or (self.requires_gaussian and not k.is_gaussian):
            return None
        return Step(op, {"is_gaussian": False})

    def map_tile(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        t_out: Tensor,
        ntk: Tensor | None,
        ntk_out: Tensor | None,
    ) -> bool:
        """`dual_into` on a whole tile in compiled passes where the activation has a compiled
        form and the tile's entries are outer products of the variances (`_jit.map_outer`);
        returns False (nothing written) otherwise: then `layer_map` goes block by block."""
        op = self.compiled_op()
        return op is not None and map_outer(op, k11, k22, k12, t_out, ntk, ntk_out)

    def dual_into(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        t_out: Tensor,
        ntk: Tensor | None,
        ntk_out: Tensor | None,
    ) -> None:
        r"""Write :math:`T` into ``t_out`` and, if ``ntk_out`` is given, :math:`\dot T` ``* ntk``.

        One block of `layer_map`'s fused pass (no gradients; the inputs broadcast to
        ``t_out``, and the outputs may be the inputs' memory): the compiled form
        (`_jit.map_block`) where there is one, else `torch_into`.
        """
        op = self.compiled_op()
        if op is None or not map_block(op, k11, k22, k12, t_out, ntk, ntk_out):
            self.torch_into(k11, k22, k12, t_out, ntk, ntk_out)

    def torch_into(self, k11, k22, k12, t_out, ntk, ntk_out) -> None:
        """`dual_into` with torch operations: `dual`, then copies; subclasses may fuse it."""
        t, tdot = self.dual(k11, k22, k12, ntk_out is not None)
        t_out.copy_(t)
        if ntk_out is not None:
            torch.mul(tdot, ntk, out=ntk_out)

    def layer_map(
        self, k11: Tensor, k22: Tensor, k12: Tensor, ntk: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        r""":math:`(T, \dot T\, \Theta)` for broadcastable inputs, any layout (``ntk`` may be None).

        The fused pass of `widelimits.layers._fused` when no gradient is needed (and it is
        not switched off), else `dual` on whole tensors; both agree up to rounding.
        """
        if can_fuse(k11, k22, k12, ntk):
            return layer_map(self, k11, k22, k12, ntk)
        t, tdot = self.dual(k11, k22, k12, ntk is not None)
        return t, (None if ntk is None else tdot * ntk)

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError(f"{type(self).__name__} got several branches; merge them first")
        if isinstance(k, Concatenated):  # each branch's features separately (see FanInConcat)
            return k.map_branches(self.kernel_fn)
        if self.requires_gaussian and not k.is_gaussian:
            raise ValueError(
                f"{type(self).__name__} needs Gaussian pre-activations, but its input is not "
                "Gaussian in the infinite-width limit (an activation right after another "
                "activation, after FanInProd, or on the raw inputs): put a Dense layer before it"
            )
        k11, k22 = k.variances()
        t, ntk = self.layer_map(k11, k22, k.nngp, k.ntk)
        if k.batch_diagonal:  # nngp is cov1
            cov1 = cov2 = t
        else:
            # The examples' own covariances (P^2 per example in the pixel-pair layout: as much
            # work as a row of the tile) go through the same (fused) map as the tile.
            cov1 = self.layer_map(*k.self_variances(k.cov1), k.cov1, None)[0]
            cov2 = (
                cov1
                if k.cov2 is k.cov1
                else self.layer_map(*k.self_variances(k.cov2), k.cov2, None)[0]
            )
        return k.replace(nngp=t, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False)

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, int]:
        return ActivationModule(self), in_features


class ActivationModule(nn.Module):
    """The finite side of an `Activation`: applies ``activation.fn`` elementwise."""

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation.fn(x)

    def extra_repr(self) -> str:
        return repr(self.activation)


class ABReLU(Activation):
    r""":math:`\phi(x) = a \min(x, 0) + b \max(x, 0)`.

    With :math:`\theta = \arccos(k_{12} / \sqrt{k_{11} k_{22}})`:

    .. math::

        \dot T &= \frac{a^2 + b^2}{2} - \frac{(a - b)^2\, \theta}{2 \pi}, \\
        T &= \frac{(a - b)^2}{2 \pi} \sqrt{k_{11} k_{22} - k_{12}^2} + \dot T\, k_{12}
    """

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = _real("a", a), _real("b", b)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.clamp(x, max=0) + self.b * torch.clamp(x, min=0)

    def dual(self, k11, k22, k12, need_dot):
        rho, prod = correlation(k11, k22, k12)
        sin = sine(rho)
        c = (self.a - self.b) ** 2 / (2 * math.pi)
        tdot = torch.rsub(angle(rho, sin), (self.a**2 + self.b**2) / 2, alpha=c)  # one pass
        t = torch.addcmul(tdot * k12, prod, sin, value=c)
        return t, tdot

    def compiled_op(self):
        c, d = (self.a - self.b) ** 2 / (2 * math.pi), (self.a**2 + self.b**2) / 2
        return (RELU, c, d, 0.0, 0.0, 0.0)

    def torch_into(self, k11, k22, k12, t_out, ntk, ntk_out):
        # `dual` on one cache-sized block, in place: the correlation, sine and angle are
        # computed once for T and Tdot, and arccos (no gradient needed) is cheaper than atan2.
        # (Temporaries in reused per-thread buffers instead of fresh ones measured no faster.)
        prod = torch.mul(k11, k22).clamp_(min=0).sqrt_()
        rho = torch.clamp(prod, min=torch.finfo(prod.dtype).tiny)
        rho = torch.div(k12, rho, out=rho if rho.shape == k12.shape else None).clamp_(-1.0, 1.0)
        sin = torch.rsub(rho, 1.0).mul_(rho + 1.0).sqrt_()  # >= 0 for |rho| <= 1
        c = (self.a - self.b) ** 2 / (2 * math.pi)
        tdot = torch.rsub(torch.acos(rho), (self.a**2 + self.b**2) / 2, alpha=c)
        torch.mul(tdot, k12, out=t_out).addcmul_(prod, sin, value=c)
        if ntk_out is not None:
            torch.mul(tdot, ntk, out=ntk_out)


class ReLU(ABReLU):
    r""":math:`\phi(x) = \max(x, 0)`: the arc-cosine kernel of degree 1 (`ABReLU`, a=0, b=1)."""

    def __init__(self) -> None:
        super().__init__(0.0, 1.0)

    def __repr__(self) -> str:
        return "ReLU()"


class LeakyReLU(ABReLU):
    r""":math:`\phi(x) = \max(x, \alpha x)`, :math:`0 \le \alpha \le 1` (`ABReLU`, a=alpha, b=1)."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__(_real("alpha", alpha), 1.0)
        self.alpha = self.a

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Abs(ABReLU):
    r""":math:`\phi(x) = |x|` (`ABReLU` with a=-1, b=1)."""

    def __init__(self) -> None:
        super().__init__(-1.0, 1.0)

    def __repr__(self) -> str:
        return "Abs()"


class Erf(Activation):
    r""":math:`\phi(x) = a \operatorname{erf}(b x) + c`.

    With :math:`q_i = 1 + 2 b^2 k_{ii}`:

    .. math::

        T &= \frac{2 a^2}{\pi} \arcsin \frac{2 b^2 k_{12}}{\sqrt{q_1 q_2}} + c^2, \\
        \dot T &= \frac{4 a^2 b^2}{\pi \sqrt{q_1 q_2 - 4 b^4 k_{12}^2}}
    """

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0) -> None:
        self.a, self.b, self.c = _real("a", a), _real("b", b), _real("c", c)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.erf(self.b * x) + self.c

    def compiled_op(self):
        # the constants as `dual` rounds them (see `_jit_loops._erf_entry`)
        a2, b2 = self.a**2, self.b**2
        return (ERF, a2 * (2 / math.pi), 2 * b2, self.c**2, a2 * b2 * (4 / math.pi), 4 * b2**2)

    def dual(self, k11, k22, k12, need_dot):
        b2 = self.b**2
        q = (1 + 2 * b2 * k11) * (1 + 2 * b2 * k22)
        t = self.a**2 * (2 / math.pi) * torch.arcsin(2 * b2 * k12 / torch.sqrt(q)) + self.c**2
        if not need_dot:
            return t, None
        tdot = self.a**2 * b2 * (4 / math.pi) / torch.sqrt(q - 4 * b2**2 * k12**2)
        return t, tdot


class Identity(Activation):
    r""":math:`\phi(x) = x`: :math:`T = k_{12}`, :math:`\dot T = 1`.  Keeps Gaussianity."""

    requires_gaussian = False

    def fn(self, x: Tensor) -> Tensor:
        return x

    def dual(self, k11, k22, k12, need_dot):
        return k12, torch.ones_like(k12) if need_dot else None

    def kernel_fn(self, k):
        return k

    def __repr__(self) -> str:
        return "Identity()"


# --------------------------------------------------------------------------------------------
# Helpers for the closed forms below.


def _real(name: str, value) -> float:
    """``value`` as a finite float, or a clear ValueError."""
    try:
        if isinstance(value, str | bytes | bool):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


MAX_RECTIFIED_DEGREE = 1000  # the recursion takes n steps (its values overflow far earlier)


COEFFICIENTS_OVERFLOW = "its closed-form kernel needs coefficients beyond float64's range"


def _degree(value, limit: int, name: str, why: str = COEFFICIENTS_OVERFLOW) -> int:
    """``value`` as an int in [0, limit] (Python or numpy integers, or integral floats)."""
    n = None
    if not isinstance(value, bool):
        try:
            n = operator.index(value)
        except TypeError:
            if isinstance(value, float) and value.is_integer():
                n = int(value)
    if n is None or n < 0:
        raise ValueError(f"degree must be a non-negative integer, got {value!r}")
    if n > limit:
        raise ValueError(f"degree {n} is too large for {name} ({why}): use degree <= {limit}")
    return n


def _broadcast_zero(k11: Tensor, k22: Tensor, k12: Tensor) -> Tensor:
    """Zeros of the broadcast shape (and promoted dtype) of the three inputs."""
    return torch.zeros_like(k11 + k22 + k12)
