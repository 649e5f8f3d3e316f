"""Elementwise activations with closed-form dual maps.

For pre-activations (u, v) ~ N(0, [[k11, k12], [k12, k22]]) an activation phi has the dual maps

    T(k11, k22, k12)    = E[phi(u) phi(v)]      (next NNGP, before the following Dense)
    Tdot(k11, k22, k12) = E[phi'(u) phi'(v)]    (multiplies the NTK: Theta' = Tdot * Theta)

A new activation is one subclass with ``fn`` (the finite side) and ``dual`` (the infinite side).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor, nn

from .._numerics import angle, correlation, sine
from ..kernel import Kernel
from ._concat import Concatenated
from ._fused import can_fuse, layer_map
from .base import BuildContext, Layer

__all__ = [
    "Activation", "ABReLU", "ReLU", "LeakyReLU", "Abs", "Erf", "Identity", "GELU", "Sin", "Cos",
    "Sign", "Exp", "Gaussian", "RBF", "RectifiedMonomial",
]  # fmt: skip


class Activation(Layer):
    """Base class: an elementwise nonlinearity with dual maps ``T`` and ``Tdot``."""

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
        """Write T into ``t_out`` and, if ``ntk_out`` is given, Tdot * ``ntk`` into it.

        One block of `layer_map`'s fused pass (no gradients; the inputs broadcast to
        ``t_out``).  The default evaluates `dual`; subclasses may fuse the closed form.
        """
        t, tdot = self.dual(k11, k22, k12, ntk_out is not None)
        t_out.copy_(t)
        if ntk_out is not None:
            torch.mul(tdot, ntk, out=ntk_out)

    def layer_map(
        self, k11: Tensor, k22: Tensor, k12: Tensor, ntk: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """``(T, Tdot * ntk)`` for broadcastable inputs of any layout (``ntk`` may be None).

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
    r"""phi(x) = a min(x, 0) + b max(x, 0).

    With theta = arccos(k12 / sqrt(k11 k22))::

        Tdot = (a^2 + b^2)/2 - (a - b)^2 theta / (2 pi)
        T    = (a - b)^2 / (2 pi) sqrt(k11 k22 - k12^2) + Tdot k12
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

    def dual_into(self, k11, k22, k12, t_out, ntk, ntk_out):
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
    """phi(x) = max(x, 0): the arc-cosine kernel of degree 1 (`ABReLU` with a=0, b=1)."""

    def __init__(self) -> None:
        super().__init__(0.0, 1.0)

    def __repr__(self) -> str:
        return "ReLU()"


class LeakyReLU(ABReLU):
    """phi(x) = max(x, alpha x) for 0 <= alpha <= 1 (`ABReLU` with a=alpha, b=1)."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__(_real("alpha", alpha), 1.0)
        self.alpha = self.a

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Abs(ABReLU):
    """``phi(x) = |x|`` (`ABReLU` with a=-1, b=1)."""

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
    r"""phi(x) = x Phi(x), the exact Gaussian error linear unit (Phi: the standard normal CDF).

    With s_i = 1 + k_ii, D = s_1 s_2 - k12^2 (> 0 always) and beta = arctan2(k12, sqrt(D))
    = arcsin(k12 / sqrt(s_1 s_2))::

        T    = k12 / 4 + k12 beta / (2 pi) + (k11 k22 D + k12^2) / (2 pi s_1 s_2 sqrt(D))
        Tdot = 1/4 + beta / (2 pi) + k12 / (2 pi sqrt(D)) [1 / D + (2 + k11 + k22) / (s_1 s_2)]

    Derived by writing Phi(u) = P(w_1 <= u) with an independent w_1 ~ N(0, 1), so that
    T = E[u v 1{u - w_1 >= 0} 1{v - w_2 >= 0}], and Gaussian integration by parts (Stein's
    lemma); Tdot = dT/dk12 (Price's theorem).  The same kernel as neural-tangents' ``Gelu``.

    Args:
        approximate: only ``False`` (the exact GELU) has a closed form; for the tanh
            approximation use ``Elementwise(lambda x: F.gelu(x, approximate="tanh"))``.
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
    r"""phi(x) = a sin(b x + c).

    From sin(x) sin(y) = [cos(x - y) - cos(x + y)] / 2 and E[cos(w + c)] = cos(c) exp(-Var(w)/2),
    with ``E_- = exp(-b^2 (k11 + k22 - 2 k12) / 2)`` and
    ``E_+ = exp(-b^2 (k11 + k22 + 2 k12) / 2)``::

        T    = a^2 / 2 [E_- - cos(2c) E_+]
        Tdot = a^2 b^2 / 2 [E_- + cos(2c) E_+]

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
    r"""phi(x) = a cos(b x + c) = a sin(b x + c + pi/2): `Sin` with cos(2c) replaced by -cos(2c).

    With ``E_- = exp(-b^2 (k11 + k22 - 2 k12) / 2)`` and
    ``E_+ = exp(-b^2 (k11 + k22 + 2 k12) / 2)``::

        T    = a^2 / 2 [E_- + cos(2c) E_+]
        Tdot = a^2 b^2 / 2 [E_- - cos(2c) E_+]

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
    r"""phi(x) = sqrt(2) sin(sqrt(2 gamma) x + pi/4): its NNGP is the RBF kernel of the inputs.

    `Sin` with a = sqrt(2), b = sqrt(2 gamma), c = pi/4 (so cos(2c) = 0)::

        T    = exp(-gamma (k11 + k22 - 2 k12))      (= exp(-gamma ||x - x'||^2 / d) after Dense)
        Tdot = 2 gamma T

    Args:
        gamma: inverse squared length scale, gamma = 1 / (2 l^2); must be >= 0.
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
    r"""phi(x) = a exp(b x).

    u + v is Gaussian with variance k11 + k22 + 2 k12, and E[exp(w)] = exp(Var(w) / 2)::

        T    = a^2 exp(b^2 (k11 + k22 + 2 k12) / 2)
        Tdot = b^2 T

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
    r"""phi(x) = a exp(b x^2).

    With M = det(I - 2 b Sigma) = (1 - 2b k11)(1 - 2b k22) - 4 b^2 k12^2, completing the square in
    the Gaussian integral gives E[exp(b u^2 + b v^2)] = 1 / sqrt(M) and
    E[u v exp(b u^2 + b v^2)] = k12 / M^{3/2}, hence (phi'(x) = 2ab x exp(b x^2))::

        T    = a^2 / sqrt(M)
        Tdot = 4 a^2 b^2 k12 / M^{3/2}

    For b <= 0 this is always finite.  For b > 0 the expectations exist only while I - 2b Sigma
    is positive definite; elsewhere the result is ``inf``.

    Args:
        a: output scale.
        b: coefficient of x^2 in the exponent (negative for a bump).
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
    r"""phi(x) = sign(x) (0 at 0).

    E[sign(u) sign(v)] = 1 - 2 P(sign u != sign v) = 1 - 2 theta / pi, theta = arccos(rho)::

        T    = 1 - 2 theta / pi  (= (2 / pi) arcsin(rho))
        Tdot = 0

    Tdot uses the derivative of sign almost everywhere (0), which is what autograd gives the finite
    network (``torch.sign`` has zero gradient), so its empirical NTK has no contribution through
    this layer either; neural-tangents makes the same choice.  (The distributional derivative
    2 delta(x) would give 2 / (pi sqrt(k11 k22 - k12^2)), infinite on the diagonal.)
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
    r"""phi(x) = max(x, 0)^n (for n = 0 the step 1{x >= 0}): the arc-cosine kernel of degree n.

    With theta = arccos(k12 / sqrt(k11 k22)) and det = k11 k22 - k12^2,
    T_n = (k11 k22)^{n/2} J_n(theta) / (2 pi) (Cho & Saul, 2009).  Instead of their n-fold
    derivative formula this uses the three-term recursion on K_n = (k11 k22)^{n/2} J_n::

        K_0 = pi - theta
        K_1 = sqrt(det) + (pi - theta) k12
        K_{j+1} = (2j + 1) k12 K_j + j^2 det K_{j-1}
        T    = K_n / (2 pi)
        Tdot = n^2 T_{n-1}       (T_{n-1}: T of degree n - 1; Tdot = 0 for n = 0, the step's
                                  derivative almost everywhere)

    The recursion follows from J_{j+1} = (2j + 1) cos(theta) J_j - sin(theta) J_j' (one more
    application of Cho & Saul's operator) and Price's theorem dJ_j/d(cos theta) = j^2 J_{j-1}.
    n = 1 is `ReLU`.

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
