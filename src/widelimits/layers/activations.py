r"""Elementwise activations with closed-form dual maps.

For pre-activations :math:`(u, v) \sim \mathcal N(0, [[k_{11}, k_{12}], [k_{12}, k_{22}]])` an
activation :math:`\phi` has the dual maps

.. math::

    T(k_{11}, k_{22}, k_{12}) &= \mathbb E[\phi(u)\, \phi(v)]
        \qquad \text{(the next NNGP, before the following Dense)} \\
    \dot T(k_{11}, k_{22}, k_{12}) &= \mathbb E[\phi'(u)\, \phi'(v)]
        \qquad \text{(multiplies the NTK: } \Theta' = \dot T\, \Theta)

A new activation is one subclass with ``fn`` (the finite side) and ``dual`` (the infinite side).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor, nn

from .._numerics import angle, correlation, sine
from ..kernel import Kernel
from ._chain import ACTIVATION
from ._concat import Concatenated
from ._fused import can_fuse, layer_map
from ._jit import abrelu_into, abrelu_outer
from .base import BuildContext, Layer

__all__ = [
    "Activation", "ABReLU", "ReLU", "LeakyReLU", "Abs", "Erf", "Identity", "GELU", "Sin", "Cos",
    "Sign", "Exp", "Gaussian", "RBF", "RectifiedMonomial",
]  # fmt: skip


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
        ``t_out``).  The default evaluates `dual`; subclasses may fuse the closed form.
        """
        t, tdot = self.dual(k11, k22, k12, ntk_out is not None)
        t_out.copy_(t)
        if ntk_out is not None:
            torch.mul(tdot, ntk, out=ntk_out)

    def map_tile(
        self,
        k11: Tensor,
        k22: Tensor,
        k12: Tensor,
        t_out: Tensor,
        ntk: Tensor | None,
        ntk_out: Tensor | None,
    ) -> bool:
        """`dual_into` on a whole tile (any layout) in compiled passes, if the activation has
        them (`widelimits.layers._jit`); returns False (nothing written) when it does not apply:
        then `layer_map` goes block by block."""
        return False

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

    def _cd(self) -> tuple[float, float]:
        return (self.a - self.b) ** 2 / (2 * math.pi), (self.a**2 + self.b**2) / 2

    def chain_op(self, k):
        # a step of `widelimits.layers._chain`'s compiled runs, on Gaussian inputs only (else
        # kernel_fn raises its own error)
        return ((ACTIVATION, *self._cd(), 0.0), {"is_gaussian": False}) if k.is_gaussian else None

    def map_tile(self, k11, k22, k12, t_out, ntk, ntk_out):
        return abrelu_outer(k11, k22, k12, t_out, ntk, ntk_out, *self._cd())

    def dual_into(self, k11, k22, k12, t_out, ntk, ntk_out):
        if abrelu_into(k11, k22, k12, t_out, ntk, ntk_out, *self._cd()):
            return  # one compiled pass (numba installed and plain CPU blocks)
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


# --------------------------------------------------------------------------------------------
# Smooth closed forms.


class GELU(Activation):
    r""":math:`\phi(x) = x\, \Phi(x)`, the exact GELU (:math:`\Phi`: the standard normal CDF).

    With :math:`s_i = 1 + k_{ii}`, :math:`D = s_1 s_2 - k_{12}^2` (always :math:`> 0`) and
    :math:`\beta = \operatorname{arctan2}(k_{12}, \sqrt D) = \arcsin(k_{12} / \sqrt{s_1 s_2})`:

    .. math::

        T &= \frac{k_{12}}{4} + \frac{k_{12}\, \beta}{2 \pi}
             + \frac{k_{11} k_{22} D + k_{12}^2}{2 \pi\, s_1 s_2 \sqrt D} \\
        \dot T &= \frac14 + \frac{\beta}{2 \pi}
             + \frac{k_{12}}{2 \pi \sqrt D}
               \left[\frac1D + \frac{2 + k_{11} + k_{22}}{s_1 s_2}\right]

    Derived by writing :math:`\Phi(u) = P(w_1 \le u)` with an independent
    :math:`w_1 \sim \mathcal N(0, 1)`, so that
    :math:`T = \mathbb E[u v\, 1\{u - w_1 \ge 0\}\, 1\{v - w_2 \ge 0\}]`, and Gaussian integration
    by parts (Stein's lemma); :math:`\dot T = \partial T / \partial k_{12}` (Price's theorem).
    The same kernel as neural-tangents' ``Gelu``.

    Args:
        approximate: only ``False`` (the exact GELU) has a closed form; for the tanh
            approximation use ``Elementwise(lambda x: F.gelu(x, approximate="tanh"))``
            (neural-tangents' ``Gelu(approximate=True)`` returns the exact GELU's kernel).
    """

    def __init__(self, approximate: bool = False) -> None:
        if not isinstance(approximate, bool):
            raise ValueError(f"approximate must be True or False, got {approximate!r}")
        if approximate:
            raise ValueError(
                "GELU(approximate=True) has no closed-form kernel; use "
                "Elementwise(lambda x: torch.nn.functional.gelu(x, approximate='tanh')) for a "
                "quadrature kernel of the tanh approximation"
            )
        self.approximate = False

    def fn(self, x: Tensor) -> Tensor:
        return torch.nn.functional.gelu(x)

    def dual(self, k11, k22, k12, need_dot):
        s = (1 + k11) * (1 + k22)
        d = s - k12**2
        sd = torch.sqrt(d)
        beta = torch.atan2(k12, sd)
        t = k12 / 4 + k12 * beta / (2 * math.pi) + (k11 * k22 * d + k12**2) / (2 * math.pi * s * sd)
        if not need_dot:
            return t, None
        tdot = 0.25 + beta / (2 * math.pi)
        tdot = tdot + k12 / (2 * math.pi * sd) * (1 / d + (2 + k11 + k22) / s)
        return t, tdot

    def __repr__(self) -> str:
        return "GELU()"


class Sin(Activation):
    r""":math:`\phi(x) = a \sin(b x + c)`.

    From :math:`\sin x \sin y = [\cos(x - y) - \cos(x + y)] / 2` and
    :math:`\mathbb E[\cos(w + c)] = \cos(c)\, e^{-\operatorname{Var}(w) / 2}`, with
    :math:`E_\mp = \exp(-b^2 (k_{11} + k_{22} \mp 2 k_{12}) / 2)`:

    .. math::

        T &= \frac{a^2}{2} [E_- - \cos(2c)\, E_+], \\
        \dot T &= \frac{a^2 b^2}{2} [E_- + \cos(2c)\, E_+]

    Args:
        a: output scale.
        b: input scale.
        c: input phase shift.
    """

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0) -> None:
        self.a, self.b, self.c = _real("a", a), _real("b", b), _real("c", c)
        self._cos2c = math.cos(2 * self.c)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.sin(self.b * x + self.c)

    def dual(self, k11, k22, k12, need_dot):
        half_b2 = self.b**2 / 2
        minus = torch.exp(-half_b2 * (k11 + k22 - 2 * k12))
        plus = self._cos2c * torch.exp(-half_b2 * (k11 + k22 + 2 * k12))
        t = self.a**2 / 2 * (minus - plus)
        return t, (self.a**2 * half_b2 * (minus + plus) if need_dot else None)


class Cos(Sin):
    r""":math:`\phi(x) = a \cos(b x + c) = a \sin(b x + c + \pi/2)`: `Sin` with :math:`-\cos 2c`.

    With :math:`E_\mp = \exp(-b^2 (k_{11} + k_{22} \mp 2 k_{12}) / 2)`:

    .. math::

        T &= \frac{a^2}{2} [E_- + \cos(2c)\, E_+], \\
        \dot T &= \frac{a^2 b^2}{2} [E_- - \cos(2c)\, E_+]

    Args:
        a: output scale.
        b: input scale.
        c: input phase shift.
    """

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0) -> None:
        super().__init__(a, b, c)
        self._cos2c = -math.cos(2 * self.c)  # cos(2 (c + pi/2)) = -cos(2c), without rounding

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.cos(self.b * x + self.c)


class RBF(Activation):
    r""":math:`\phi(x) = \sqrt 2 \sin(\sqrt{2 \gamma}\, x + \pi/4)`: its NNGP is the RBF kernel.

    `Sin` with :math:`a = \sqrt 2`, :math:`b = \sqrt{2 \gamma}`, :math:`c = \pi/4` (so
    :math:`\cos 2c = 0`):

    .. math::

        T = e^{-\gamma (k_{11} + k_{22} - 2 k_{12})}, \qquad \dot T = 2 \gamma\, T,

    that is :math:`T = e^{-\gamma \lVert x - x' \rVert^2 / d}` right after a Dense layer.

    Args:
        gamma: inverse squared length scale, :math:`\gamma = 1 / (2 l^2)`; must be >= 0.
    """

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = _real("gamma", gamma)
        if self.gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {self.gamma}")

    def fn(self, x: Tensor) -> Tensor:
        return math.sqrt(2) * torch.sin(math.sqrt(2 * self.gamma) * x + math.pi / 4)

    def dual(self, k11, k22, k12, need_dot):
        t = torch.exp(-self.gamma * (k11 + k22 - 2 * k12))
        return t, (2 * self.gamma * t if need_dot else None)


class Exp(Activation):
    r""":math:`\phi(x) = a\, e^{b x}`.

    :math:`u + v` is Gaussian with variance :math:`k_{11} + k_{22} + 2 k_{12}`, and
    :math:`\mathbb E[e^w] = e^{\operatorname{Var}(w) / 2}`:

    .. math::

        T &= a^2 \exp\left(b^2 (k_{11} + k_{22} + 2 k_{12}) / 2\right), \\ \dot T &= b^2\, T

    Args:
        a: output scale.
        b: input scale.
    """

    def __init__(self, a: float = 1.0, b: float = 1.0) -> None:
        self.a, self.b = _real("a", a), _real("b", b)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x)

    def dual(self, k11, k22, k12, need_dot):
        t = self.a**2 * torch.exp(self.b**2 / 2 * (k11 + k22 + 2 * k12))
        return t, (self.b**2 * t if need_dot else None)


class Gaussian(Activation):
    r""":math:`\phi(x) = a\, e^{b x^2}`.

    With :math:`M = \det(I - 2 b \Sigma) = (1 - 2b k_{11})(1 - 2b k_{22}) - 4 b^2 k_{12}^2`,
    completing the square in the Gaussian integral gives
    :math:`\mathbb E[e^{b u^2 + b v^2}] = 1 / \sqrt M` and
    :math:`\mathbb E[u v\, e^{b u^2 + b v^2}] = k_{12} / M^{3/2}`, hence
    (:math:`\phi'(x) = 2ab\, x\, e^{b x^2}`):

    .. math::

        T = \frac{a^2}{\sqrt M}, \qquad \dot T = \frac{4 a^2 b^2 k_{12}}{M^{3/2}}

    For :math:`b \le 0` this is always finite.  For :math:`b > 0` the expectations exist only
    while :math:`I - 2b \Sigma` is positive definite; elsewhere the result is ``inf``.

    Args:
        a: output scale.
        b: coefficient of :math:`x^2` in the exponent (negative for a bump).
    """

    def __init__(self, a: float = 1.0, b: float = -1.0) -> None:
        self.a, self.b = _real("a", a), _real("b", b)

    def fn(self, x: Tensor) -> Tensor:
        return self.a * torch.exp(self.b * x**2)

    def dual(self, k11, k22, k12, need_dot):
        b = self.b
        d1, d2 = 1 - 2 * b * k11, 1 - 2 * b * k22
        m = d1 * d2 - 4 * b**2 * k12**2
        if b > 0:
            valid = (d1 > 0) & (m > 0)
            m = torch.where(valid, m, 1.0)
        root = torch.sqrt(m)
        t = self.a**2 / root
        tdot = 4 * self.a**2 * b**2 * k12 / (m * root) if need_dot else None
        if b > 0:
            inf = torch.tensor(math.inf, dtype=t.dtype, device=t.device)
            t = torch.where(valid, t, inf)
            tdot = None if tdot is None else torch.where(valid, tdot, inf)
        return t, tdot


# --------------------------------------------------------------------------------------------
# Non-smooth closed forms.


class Sign(Activation):
    r""":math:`\phi(x) = \operatorname{sign}(x)` (0 at 0).

    :math:`\mathbb E[\operatorname{sign} u \operatorname{sign} v]
    = 1 - 2 P(\operatorname{sign} u \ne \operatorname{sign} v)`, with
    :math:`\theta = \arccos \rho`:

    .. math::

        T = 1 - \frac{2 \theta}{\pi} = \frac{2}{\pi} \arcsin \rho, \qquad \dot T = 0

    :math:`\dot T` uses the derivative of sign almost everywhere (0), which is what autograd gives
    the finite network (``torch.sign`` has zero gradient), so its empirical NTK has no
    contribution through this layer either; neural-tangents makes the same choice.  (The
    distributional derivative :math:`2 \delta(x)` would give
    :math:`2 / (\pi \sqrt{k_{11} k_{22} - k_{12}^2})`, infinite on the diagonal.)

    Every pixel pair of an example with itself gets this map too, so pooling after `Sign` is
    exact (neural-tangents sets those pairs to 1, which is wrong off the pixel diagonal).
    """

    def fn(self, x: Tensor) -> Tensor:
        return torch.sign(x)

    def dual(self, k11, k22, k12, need_dot):
        rho, _ = correlation(k11, k22, k12)
        t = 1 - (2 / math.pi) * angle(rho)
        return t, (torch.zeros_like(t) if need_dot else None)

    def __repr__(self) -> str:
        return "Sign()"


class RectifiedMonomial(Activation):
    r""":math:`\phi(x) = \max(x, 0)^n` (the step :math:`1\{x \ge 0\}` for n = 0): arc-cosine kernel.

    With :math:`\theta = \arccos(k_{12} / \sqrt{k_{11} k_{22}})` and
    :math:`\Delta = k_{11} k_{22} - k_{12}^2`, the arc-cosine kernel of degree n is
    :math:`T_n = (k_{11} k_{22})^{n/2} J_n(\theta) / (2 \pi)` (Cho & Saul, 2009).  Instead of their
    n-fold derivative formula this uses the three-term recursion on
    :math:`K_n = (k_{11} k_{22})^{n/2} J_n`:

    .. math::

        K_0 &= \pi - \theta, \\
        K_1 &= \sqrt\Delta + (\pi - \theta)\, k_{12}, \\
        K_{j+1} &= (2j + 1)\, k_{12} K_j + j^2 \Delta\, K_{j-1}, \\
        T &= \frac{K_n}{2 \pi}, \qquad \dot T = n^2\, T_{n-1}

    (:math:`T_{n-1}`: T of degree n - 1; :math:`\dot T = 0` for n = 0, the step's derivative
    almost everywhere).  The recursion follows from
    :math:`J_{j+1} = (2j + 1) \cos\theta\, J_j - \sin\theta\, J_j'` (one more application of Cho &
    Saul's operator) and Price's theorem :math:`dJ_j / d(\cos\theta) = j^2 J_{j-1}`.
    n = 1 is `ReLU`.  Free of divisions by :math:`\sin\theta`, it is exact on self-pairs
    (:math:`\rho = 1`), where neural-tangents' ``RectifiedMonomial`` returns NaN, and near them,
    where its NTK loses digits.

    Args:
        degree: the power n, a non-negative integer.
    """

    def __init__(self, degree: int) -> None:
        self.degree = _degree(
            degree, MAX_RECTIFIED_DEGREE, "RectifiedMonomial", "its recursion takes n steps"
        )

    def fn(self, x: Tensor) -> Tensor:
        if self.degree == 0:
            return (x >= 0).to(x.dtype)
        return torch.clamp(x, min=0) ** self.degree

    def _t(self, n: int, rho: Tensor, prod: Tensor, k12: Tensor, zero: Tensor) -> Tensor:
        pi_minus_theta = math.pi - angle(rho)
        k_prev, k_cur = None, pi_minus_theta + zero
        if n >= 1:
            det = prod**2 * ((1 - rho) * (1 + rho))
            k_prev, k_cur = k_cur, prod * sine(rho) + pi_minus_theta * k12
            for j in range(1, n):
                k_prev, k_cur = k_cur, (2 * j + 1) * k12 * k_cur + j**2 * det * k_prev
        return k_cur / (2 * math.pi)

    def dual(self, k11, k22, k12, need_dot):
        rho, prod = correlation(k11, k22, k12)
        zero = _broadcast_zero(k11, k22, k12)
        n = self.degree
        t = self._t(n, rho, prod, k12, zero)
        if not need_dot:
            return t, None
        tdot = zero if n == 0 else n**2 * self._t(n - 1, rho, prod, k12, zero)
        return t, tdot
