r"""Polynomial activations: exact Gaussian moments through Hermite expansions.

For a polynomial :math:`\phi` the dual maps :math:`T = \mathbb E[\phi(u) \phi(v)]` and
:math:`\dot T = \mathbb E[\phi'(u) \phi'(v)]` are polynomials in :math:`(k_{11}, k_{22}, k_{12})`
(Isserlis' theorem / Mehler's formula): exact in float64 up to rounding, with finite gradients
everywhere.  Their integer coefficients grow factorially, so each
class has a largest degree whose coefficients fit in float64 (checked at construction).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .activations import Activation, _broadcast_zero, _degree, _real

__all__ = ["Polynomial", "Monomial", "Hermite"]

# Largest degrees whose kernel coefficients (integers) fit in float64, found by computing them
# exactly (tests/test_activations.py checks that each limit is tight).
MAX_MONOMIAL_DEGREE = 151  # max_m (n!)^2 / ((m!)^2 4^m (n - 2m)!) < 1.8e308
MAX_HERMITE_DEGREE = 170  # n! < 1.8e308
MAX_POLYNOMIAL_DEGREE = 295  # n max binom(n - 1, 2m) (2m - 1)!! < 1.8e308 (for phi')


def _short(values: tuple) -> str:
    """A short text of a long tuple, for error messages."""
    return (
        repr(values)
        if len(values) <= 6
        else f"({values[0]}, ..., {values[-1]}) (length {len(values)})"
    )


def _double_factorial(n: int) -> int:
    """n!! with (-1)!! = 0!! = 1."""
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def _horner(coefs: list[float], x: Tensor) -> Tensor:
    """sum_m coefs[m] x^m."""
    coefs = [float(c) for c in coefs]  # Python ints past 2**63 would not fit torch's int64
    out = torch.zeros_like(x) + coefs[-1]
    for c in reversed(coefs[:-1]):
        out = out * x + c
    return out


def _hermite_series(
    table: list[list[float]], shift: float, scale: float, k11: Tensor, k22: Tensor, k12: Tensor
) -> Tensor:
    r"""``scale * sum_p p! B_p(k11) B_p(k22) k12^p``, ``B_p(k) = sum_m table[p][m] (k - shift)^m``.

    This is E[phi(u) phi(v)] for a polynomial phi written in the Hermite basis of the standardised
    inputs: if phi(sqrt(k) z) = sum_p k^{p/2} B_p(k) He_p(z) (up to sqrt(scale)), Mehler's
    orthogonality E[He_p(z1) He_q(z2)] = delta_pq p! rho^p gives the sum, and
    (k11 k22)^{p/2} rho^p = k12^p.  The result is a polynomial in (k11, k22, k12): exact, smooth
    and free of square roots, so gradients are finite everywhere, including rho = +-1.
    """
    zero = _broadcast_zero(k11, k22, k12)
    out = zero * k12  # zero, but in the autograd graph of k12 even for a constant phi
    power = zero + 1.0  # p! k12^p, built up factor by factor: p! alone overflows past p = 170
    for p in range(len(table)):
        if p > 0:
            power = power * (p * k12)
        if any(c != 0 for c in table[p]):
            term = _horner(table[p], k11 - shift) * _horner(table[p], k22 - shift)
            out = out + power * term
    return scale * out + zero


def _monomial_table(coef: list[float]) -> list[list[float]]:
    r"""Table for `_hermite_series` (shift 0) of phi(x) = sum_i coef[i] x^i.

    From x^i = sum_m i! / (m! 2^m (i - 2m)!) He_{i-2m}(x) (Isserlis / the Hermite expansion of a
    monomial), x = sqrt(k) z gives, for p = i - 2m, B_p(k) = sum_m coef[p + 2m] c(p, m) k^m with
    the integer c(p, m) = (p + 2m)! / (p! m! 2^m) = binom(p + 2m, 2m) (2m - 1)!!.
    """
    n = len(coef)
    return [
        [coef[p + 2 * m] * (math.comb(p + 2 * m, 2 * m) * _double_factorial(2 * m - 1))
         for m in range((n - 1 - p) // 2 + 1)]
        for p in range(n)
    ]  # fmt: skip


class Polynomial(Activation):
    r""":math:`\phi(x) = c_0 + c_1 x + \dots + c_n x^n`, with :math:`c_i` = ``coef[i]``.

    Expanding each :math:`x^i = \sum_m \frac{i!}{m!\, 2^m\, (i - 2m)!} \mathrm{He}_{i-2m}(x)` in
    Hermite polynomials of the standardised input (Isserlis' theorem in another guise) and using
    Mehler's orthogonality
    :math:`\mathbb E[\mathrm{He}_p(z_1) \mathrm{He}_q(z_2)] = \delta_{pq}\, p!\, \rho^p`:

    .. math::

        T &= \sum_p p!\, B_p(k_{11})\, B_p(k_{22})\, k_{12}^p, \\
        B_p(k) &= \sum_m c_{p + 2m} \frac{(p + 2m)!}{p!\, m!\, 2^m} k^m,

    and :math:`\dot T` is the same sum for :math:`\phi'` (coefficients :math:`(i + 1)\, c_{i+1}`).
    The kernel is a polynomial in :math:`(k_{11}, k_{22}, k_{12})`: exact in float64 up to
    rounding, with finite gradients everywhere.

    Args:
        coef: the coefficients, lowest degree first (a sequence of finite reals; empty for the
            zero function, whose kernels are zero), at most 296 of them (degree 295).
    """

    def __init__(self, coef) -> None:
        if isinstance(coef, Tensor):
            coef = coef.detach().cpu().tolist()
        try:
            if isinstance(coef, str | bytes):
                raise TypeError
            values = list(coef)
        except TypeError:
            raise ValueError(f"coef must be a sequence of numbers, got {coef!r}") from None
        if len(values) > MAX_POLYNOMIAL_DEGREE + 1:
            raise ValueError(
                f"coef has {len(values)} coefficients (degree {len(values) - 1}): the closed-form "
                f"kernel needs coefficients beyond float64's range past degree "
                f"{MAX_POLYNOMIAL_DEGREE}; use at most {MAX_POLYNOMIAL_DEGREE + 1} coefficients"
            )
        self.coef = tuple(_real(f"coef[{i}]", c) for i, c in enumerate(values))
        self._table = _monomial_table(list(self.coef))
        deriv = [i * c for i, c in enumerate(self.coef)][1:]
        self._dtable = _monomial_table(deriv) if deriv else None
        for table in (self._table, self._dtable or []):
            if not all(math.isfinite(c) for row in table for c in row):
                raise ValueError(
                    f"coef {_short(self.coef)} gives kernel coefficients beyond float64's range "
                    "(they grow like (2m - 1)!! times the coefficient of degree 2m): use smaller "
                    "coefficients or a lower degree"
                )

    def fn(self, x: Tensor) -> Tensor:
        if not self.coef:  # the zero function
            return torch.zeros_like(x)
        return _horner(list(self.coef), x)

    def dual(self, k11, k22, k12, need_dot):
        t = _hermite_series(self._table, 0.0, 1.0, k11, k22, k12)
        if not need_dot:
            return t, None
        if self._dtable is None:
            return t, torch.zeros_like(t)
        return t, _hermite_series(self._dtable, 0.0, 1.0, k11, k22, k12)


class Monomial(Activation):
    r""":math:`\phi(x) = x^n`.

    From :math:`x^n = \sum_m \frac{n!}{m!\, 2^m\, (n - 2m)!} \mathrm{He}_{n-2m}(x)` and Mehler's
    orthogonality (see `Polynomial`), with :math:`T_{n-1}` the T of degree n - 1:

    .. math::

        T &= \sum_{m \le n/2} \frac{(n!)^2}{(m!)^2\, 4^m\, (n - 2m)!} (k_{11} k_{22})^m
            k_{12}^{n - 2m}, \\
        \dot T &= n^2\, T_{n-1}

    e.g. :math:`T = k_{12}` (n = 1), :math:`2 k_{12}^2 + k_{11} k_{22}` (n = 2),
    :math:`6 k_{12}^3 + 9 k_{11} k_{22} k_{12}` (n = 3).

    Args:
        degree: the power n, a non-negative integer (:math:`x^0 = 1`).
    """

    def __init__(self, degree: int) -> None:
        self.degree = _degree(degree, MAX_MONOMIAL_DEGREE, "Monomial")

    def fn(self, x: Tensor) -> Tensor:
        return x**self.degree

    @staticmethod
    def _t(n: int, k11: Tensor, k22: Tensor, k12: Tensor) -> Tensor:
        prod = k11 * k22
        out = _broadcast_zero(k11, k22, k12)
        for m in range(n // 2 + 1):
            c = math.factorial(n) ** 2 // (
                math.factorial(m) ** 2 * 4**m * math.factorial(n - 2 * m)
            )
            out = out + float(c) * prod**m * k12 ** (n - 2 * m)
        return out

    def dual(self, k11, k22, k12, need_dot):
        n = self.degree
        t = self._t(n, k11, k22, k12)
        if not need_dot:
            return t, None
        return t, (torch.zeros_like(t) if n == 0 else n**2 * self._t(n - 1, k11, k22, k12))


class Hermite(Activation):
    r""":math:`\phi(x) = \mathrm{He}_n(x) / \sqrt{n!}`: the probabilists' Hermite polynomial,
    normalised so that :math:`\mathbb E[\phi(z)^2] = 1` for :math:`z \sim \mathcal N(0, 1)`.

    The scaling identity
    :math:`\mathrm{He}_n(s z) = \sum_m \frac{n!}{m!\, (n-2m)!\, 2^m} s^{n-2m} (s^2 - 1)^m
    \mathrm{He}_{n-2m}(z)` and Mehler's orthogonality give, with :math:`p = n - 2m` and
    :math:`T_{n-1}` the T of degree n - 1 (:math:`\mathrm{He}_n' = n \mathrm{He}_{n-1}`):

    .. math::

        T &= \sum_{m \le n/2} \frac{n!}{p!\, (m!)^2\, 4^m} \left((k_{11} - 1)(k_{22} - 1)\right)^m
            k_{12}^p, \\
        \dot T &= n\, T_{n-1}

    For unit variances (:math:`k_{11} = k_{22} = 1`) this is :math:`T = \rho^n`: the Hermite
    polynomials are orthonormal.

    Args:
        degree: n, a non-negative integer.
        assume_unit_variance: use :math:`T = k_{12}^n`, :math:`\dot T = n k_{12}^{n-1}`, the
            formula of neural-tangents' ``Hermite``, which assumes :math:`k_{11} = k_{22} = 1`
            (e.g. after `LayerNorm`) and is wrong
            otherwise.  Only for reproducing neural-tangents; the default is exact for every
            variance (and agrees with it when the variances are 1).
    """

    def __init__(self, degree: int, assume_unit_variance: bool = False) -> None:
        self.degree = _degree(degree, MAX_HERMITE_DEGREE, "Hermite")
        if not isinstance(assume_unit_variance, bool):
            raise ValueError(
                f"assume_unit_variance must be True or False, got {assume_unit_variance!r}"
            )
        self.assume_unit_variance = assume_unit_variance

    def fn(self, x: Tensor) -> Tensor:
        n = self.degree
        coefs = [0.0] * (n + 1)  # He_n(x) = sum_m (-1)^m n! / (m! (n - 2m)! 2^m) x^(n - 2m)
        for m in range(n // 2 + 1):
            coefs[n - 2 * m] = (
                (-1) ** m
                * math.factorial(n)
                // (math.factorial(m) * math.factorial(n - 2 * m) * 2**m)
            )
        return _horner(coefs, x) / math.sqrt(math.factorial(n))

    @staticmethod
    def _t(n: int, k11: Tensor, k22: Tensor, k12: Tensor) -> Tensor:
        table = [[] for _ in range(n + 1)]
        root = math.sqrt(float(math.factorial(n)))
        for p in range(n + 1):
            m, odd = divmod(n - p, 2)
            row = [0.0] * (m + 1)
            if not odd:  # B_p(k) = n! / (p! m! 2^m) (k - 1)^m / sqrt(n!): the 1 / n! overall,
                # split between the two factors so that nothing overflows
                exact = math.factorial(n) // (math.factorial(p) * math.factorial(m) * 2**m)
                row[m] = float(exact) / root
            table[p] = row
        return _hermite_series(table, 1.0, 1.0, k11, k22, k12)

    def dual(self, k11, k22, k12, need_dot):
        n = self.degree
        if self.assume_unit_variance:
            zero = _broadcast_zero(k11, k22, k12)
            t = k12**n + zero
            tdot = (zero if n == 0 else n * k12 ** (n - 1) + zero) if need_dot else None
            return t, tdot
        t = self._t(n, k11, k22, k12)
        if not need_dot:
            return t, None
        return t, (torch.zeros_like(t) if n == 0 else n * self._t(n - 1, k11, k22, k12))
