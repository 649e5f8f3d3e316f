"""Elementwise activations with closed-form dual maps.

For pre-activations (u, v) ~ N(0, [[k11, k12], [k12, k22]]) an activation phi has the dual maps

    T(k11, k22, k12)    = E[phi(u) phi(v)]      (next NNGP, before the following Dense)
    Tdot(k11, k22, k12) = E[phi'(u) phi'(v)]    (multiplies the NTK: Theta' = Tdot * Theta)

A new activation is one subclass with ``fn`` (the finite side) and ``dual`` (the infinite side).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._numerics import angle, correlation, safe_sqrt
from ..kernel import Kernel
from .base import BuildContext, Layer

__all__ = ["Activation", "ABReLU", "ReLU", "LeakyReLU", "Abs", "Erf", "Identity"]


class Activation(Layer):
    """Base class: an elementwise nonlinearity with dual maps ``T`` and ``Tdot``."""

    requires_gaussian: bool = True

    def fn(self, x: Tensor) -> Tensor:
        """The activation applied elementwise in the finite network."""
        raise NotImplementedError

    def dual(self, k11: Tensor, k22: Tensor, k12: Tensor, need_dot: bool) -> tuple[Tensor, Tensor]:
        """Return ``(T, Tdot)``; ``Tdot`` may be ``None`` when ``need_dot`` is False."""
        raise NotImplementedError

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError(f"{type(self).__name__} got several branches; merge them first")
        if self.requires_gaussian and not k.is_gaussian:
            raise ValueError(
                f"{type(self).__name__} needs Gaussian pre-activations, but its input is not "
                "Gaussian in the infinite-width limit (an activation right after another "
                "activation, after FanInProd, or on the raw inputs): put a Dense layer before it"
            )
        if k.batch_diagonal:
            t, tdot = self.dual(k.cov1, k.cov1, k.cov1, k.ntk is not None)
            return k.replace(
                nngp=t, cov1=t, cov2=t, ntk=None if k.ntk is None else tdot * k.ntk,
                is_gaussian=False,
            )  # fmt: skip
        k11, k22 = k.variances()
        t, tdot = self.dual(k11, k22, k.nngp, k.ntk is not None)
        cov1 = self.dual(k.cov1, k.cov1, k.cov1, False)[0]
        cov2 = cov1 if k.cov2 is k.cov1 else self.dual(k.cov2, k.cov2, k.cov2, False)[0]
        ntk = None if k.ntk is None else tdot * k.ntk
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
    r"""phi(x) = a min(x, 0) + b max(x, 0).

    With theta = arccos(k12 / sqrt(k11 k22))::

        T    = (a - b)^2 / (2 pi) sqrt(k11 k22 - k12^2) + [(a^2 + b^2)/2 - (a - b)^2 theta / (2 pi)] k12
        Tdot = (a^2 + b^2)/2 - (a - b)^2 theta / (2 pi)
    """

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = float(a), float(b)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.clamp(x, max=0) + self.b * torch.clamp(x, min=0)

    def dual(self, k11, k22, k12, need_dot):
        rho, prod = correlation(k11, k22, k12)
        theta = angle(rho)
        c = (self.a - self.b) ** 2 / (2 * math.pi)
        tdot = (self.a**2 + self.b**2) / 2 - c * theta
        t = c * prod * safe_sqrt((1 - rho) * (1 + rho)) + tdot * k12
        return t, tdot


class ReLU(ABReLU):
    """phi(x) = max(x, 0): the arc-cosine kernel of degree 1 (`ABReLU` with a=0, b=1)."""

    def __init__(self) -> None:
        super().__init__(0.0, 1.0)

    def __repr__(self) -> str:
        return "ReLU()"


class LeakyReLU(ABReLU):
    """phi(x) = max(x, alpha x) for 0 <= alpha <= 1 (`ABReLU` with a=alpha, b=1)."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__(alpha, 1.0)
        self.alpha = float(alpha)

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Abs(ABReLU):
    """phi(x) = |x| (`ABReLU` with a=-1, b=1)."""

    def __init__(self) -> None:
        super().__init__(-1.0, 1.0)

    def __repr__(self) -> str:
        return "Abs()"


class Erf(Activation):
    r"""phi(x) = a erf(b x) + c.

    With q_i = 1 + 2 b^2 k_ii::

        T    = a^2 (2 / pi) arcsin(2 b^2 k12 / sqrt(q_1 q_2)) + c^2
        Tdot = a^2 b^2 (4 / pi) / sqrt(q_1 q_2 - 4 b^4 k12^2)
    """

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0) -> None:
        self.a, self.b, self.c = float(a), float(b), float(c)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.erf(self.b * x) + self.c

    def dual(self, k11, k22, k12, need_dot):
        b2 = self.b**2
        q = (1 + 2 * b2 * k11) * (1 + 2 * b2 * k22)
        t = self.a**2 * (2 / math.pi) * torch.arcsin(2 * b2 * k12 / torch.sqrt(q)) + self.c**2
        if not need_dot:
            return t, None
        tdot = self.a**2 * b2 * (4 / math.pi) / torch.sqrt(q - 4 * b2**2 * k12**2)
        return t, tdot


class Identity(Activation):
    """phi(x) = x: T = k12, Tdot = 1.  Keeps Gaussianity (no requirement on its input)."""

    requires_gaussian = False

    def fn(self, x: Tensor) -> Tensor:
        return x

    def dual(self, k11, k22, k12, need_dot):
        return k12, torch.ones_like(k12) if need_dot else None

    def kernel_fn(self, k):
        return k

    def __repr__(self) -> str:
        return "Identity()"
