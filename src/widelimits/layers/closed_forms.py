r"""More activations with closed-form dual maps: GELU, Sin, Cos, RBF, Exp, Gaussian, Sign and
RectifiedMonomial (the maps :math:`T` and :math:`\dot T` of `widelimits.layers.activations`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._numerics import angle, correlation, sine
from .activations import MAX_RECTIFIED_DEGREE, Activation, _broadcast_zero, _degree, _real

__all__ = ["GELU", "Sin", "Cos", "Sign", "Exp", "Gaussian", "RBF", "RectifiedMonomial"]

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
