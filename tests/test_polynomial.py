"""Polynomial activations past the easy degrees: the zero polynomial, degrees whose integer
coefficients exceed int64 (they used to overflow), and the largest supported degrees, checked
against exact moments (rational arithmetic), Hermite orthonormality and the exact coefficients.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction

import pytest
import torch

import widelimits as wl
import widelimits.layers.polynomial as polys
from widelimits.finite import empirical_ntk

F64 = torch.float64


@pytest.mark.parametrize("coef", [[], [0.0], [0.0, 0.0, 0.0]])
def test_zero_polynomial(coef):
    """phi = 0: T = Tdot = 0; after a readout with bias the NNGP and NTK are both b_std^2 (only
    the bias moves the output), as the empirical NTK of a built network says."""
    act = wl.Polynomial(coef)
    k = torch.tensor([0.5, 2.0], dtype=F64)
    t, tdot = act.dual(k, k.flip(0), torch.tensor([0.3, -0.9], dtype=F64), True)
    assert torch.equal(t, torch.zeros(2, dtype=F64)) and torch.equal(
        tdot, torch.zeros(2, dtype=F64)
    )
    net = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), act, wl.Dense(1, W_std=1.1, b_std=0.5))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    kern = net.kernel(x)
    model = net.build(3, 16, seed=0, dtype=F64)
    assert torch.equal(model(x), torch.full((4, 1), float(model[2].bias.detach()) * 0.5, dtype=F64))
    torch.testing.assert_close(kern.ntk, empirical_ntk(model, x), rtol=1e-14, atol=0)
    torch.testing.assert_close(kern.nngp, torch.full((4, 4), 0.25, dtype=F64))


@pytest.mark.parametrize("n", [21, 30, 80, 151])
def test_high_degree_monomials_on_the_diagonal(n):
    """E[u^2n] = (2n - 1)!! k^n and E[(n u^(n-1))^2] = n^2 (2n - 3)!! k^(n-1) at rho = 1:
    past degree 20 the integer coefficients exceed int64 (they used to overflow)."""
    k = torch.tensor([0.01, 0.1, 0.3], dtype=F64)
    t, tdot = wl.Monomial(n).dual(k, k, k, True)

    def exact(c: int, p: int) -> torch.Tensor:  # c k^p in exact rational arithmetic
        return torch.tensor([float(c * Fraction(float(v)) ** p) for v in k], dtype=F64)

    dfact = [math.prod(range(m, 0, -2)) for m in (2 * n - 1, 2 * n - 3)]
    torch.testing.assert_close(t, exact(dfact[0], n), rtol=1e-12, atol=0)
    torch.testing.assert_close(tdot, exact(n**2 * dfact[1], n - 1), rtol=1e-12, atol=0)
    poly = wl.Polynomial([0.0] * n + [1.0]).dual(k, k, 0.5 * k, True)
    mono = wl.Monomial(n).dual(k, k, 0.5 * k, True)
    for a, b in zip(poly, mono, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=0)


def test_hermite_of_the_largest_degree_is_orthonormal():
    rho = torch.tensor([-1.0, -0.3, 0.0, 0.9, 1.0], dtype=F64)
    one = torch.ones_like(rho)
    t, tdot = wl.Hermite(170).dual(one, one, rho, True)
    torch.testing.assert_close(t, rho**170, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(tdot, 170 * rho**169, rtol=1e-9, atol=1e-9)


def _max_coefficient(kind: str, n: int) -> int:
    """The largest integer coefficient the closed form of degree n needs (exact integers)."""
    f, dfact = math.factorial, lambda m: math.prod(range(m, 0, -2))
    if kind == "Monomial":
        return max(f(n) ** 2 // (f(m) ** 2 * 4**m * f(n - 2 * m)) for m in range(n // 2 + 1))
    if kind == "Hermite":
        return f(n)
    table = max(math.comb(n, 2 * m) * dfact(2 * m - 1) for m in range(n // 2 + 1))
    deriv = n * max(math.comb(n - 1, 2 * m) * dfact(2 * m - 1) for m in range((n - 1) // 2 + 1))
    return max(table, deriv)


@pytest.mark.parametrize(
    "kind, limit",
    [("Monomial", polys.MAX_MONOMIAL_DEGREE), ("Hermite", polys.MAX_HERMITE_DEGREE),
     ("Polynomial", polys.MAX_POLYNOMIAL_DEGREE)],
)  # fmt: skip
def test_degree_limits_are_tight(kind, limit):
    fits = _max_coefficient(kind, limit) < sys.float_info.max
    assert fits and _max_coefficient(kind, limit + 1) > sys.float_info.max
    make = (
        (lambda n: wl.Polynomial([0.0] * n + [1.0])) if kind == "Polynomial" else getattr(wl, kind)
    )
    make(limit)
    with pytest.raises(ValueError, match=rf"{limit}") as err:
        make(limit + 1)
    assert "degree" in str(err.value)
    if limit < 200:  # issue 13's Monomial(200): a clear error, no OverflowError
        with pytest.raises(ValueError, match=rf"degree 200 is too large for {kind} .*<= {limit}"):
            make(200)
