"""Activations: closed-form dual maps against independent brute-force integrals, identities,
neural-tangents reference values, gradients, and the `Elementwise` quadrature fallback.

The brute-force integrals here share no code with the library:

- smooth activations: 2-D Gauss-Hermite quadrature of degree 160 in numpy, on the
  *eigen*-decomposition of the covariance (the library's quadrature uses a Cholesky factor).  For
  the entire functions tested (polynomials, exp, sin, erf, x Phi(x), exp(b x^2)) at variances
  <= 2 this is exact to rounding: `test_brute_force_gauss_hermite_converged` checks that degree
  160 and 220 agree to 1e-14 (relative to the scale below).
- non-smooth, positively homogeneous activations (relu-like, sign, rectified monomials): polar
  coordinates.  For phi(t x) = t^n phi(x), E[phi(u) phi(v)] = 2^n n! / (2 pi) * integral over
  the angle of phi(a . e(alpha)) phi(b . e(alpha)); between the (known) angles where a . e or
  b . e changes sign the integrand is a trigonometric polynomial, so Gauss-Legendre on each
  piece is exact to rounding (checked by `test_brute_force_polar_converged`).

Errors are measured relative to sqrt(T(k11, k11, k11) T(k22, k22, k22)) (the Cauchy-Schwarz
bound on |T|), so that values near 0 (odd functions at rho = 0) do not inflate them.  Both
integrators are accurate to ~1e-15 on that scale (the convergence tests bound them by 1e-14),
and the closed forms agree with them to at most 6e-15; the tolerance 1e-12 leaves room for
rounding in the closed forms (e.g. Hermite(6), whose coefficients reach 1e3) on other platforms.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.polynomial import hermite_e
from scipy.special import erf as np_erf
from scipy.special import ndtr
from torch.autograd import gradcheck, gradgradcheck

import widelimits as wl

REFERENCE = Path(__file__).parent / "data" / "neural_tangents_0.6.5.npz"

F64 = torch.float64
TOL = 1e-12

# (k11, k22, k12): generic, correlation near +-1 and exactly +-1, zero correlation.
POINTS = [
    (1.0, 1.0, 0.3),
    (0.5, 2.0, -0.7),
    (1.3, 0.7, 0.9999 * math.sqrt(1.3 * 0.7)),
    (0.8, 1.7, -0.999999 * math.sqrt(0.8 * 1.7)),
    (2.0, 0.4, 0.0),
    (1.3, 1.3, 1.3),  # rho = +1 exactly
    (0.5, 2.0, -1.0),  # rho = -1 exactly
    (0.5, 2.0, 1.0),  # rho = +1 exactly, unequal variances
]


# ------------------------------------------------------------------------------------------
# Independent brute-force integrators (numpy only).


@functools.cache
def _gauss_hermite_rule(degree):
    x, w = hermite_e.hermegauss(degree)
    w = w / math.sqrt(2 * math.pi)
    z1, z2 = np.meshgrid(x, x, indexing="ij")
    return z1, z2, np.outer(w, w)


def gauss_hermite_2d(f, g, k11, k22, k12, degree=160):
    """E[f(u) g(v)] by tensor Gauss-Hermite quadrature on the eigenvectors of the covariance."""
    z1, z2, w2 = _gauss_hermite_rule(degree)
    lam, q = np.linalg.eigh(np.array([[k11, k12], [k12, k22]]))
    root = q * np.sqrt(np.clip(lam, 0, None))  # covariance = root @ root.T
    u = root[0, 0] * z1 + root[0, 1] * z2
    v = root[1, 0] * z1 + root[1, 1] * z2
    return float((w2 * f(u) * g(v)).sum())


@functools.cache
def _gauss_legendre_rule(degree):
    return np.polynomial.legendre.leggauss(degree)


def polar(f, n, k11, k22, k12, degree=60):
    """E[f(u) f(v)] for f positively homogeneous of degree n, by polar coordinates."""
    rho = min(1.0, max(-1.0, k12 / math.sqrt(k11 * k22)))
    a = np.array([math.sqrt(k11), 0.0])
    b = math.sqrt(k22) * np.array([rho, math.sqrt(max(0.0, 1 - rho * rho))])
    breaks = [0.0, 2 * math.pi]
    for vec in (a, b):  # vec . (cos t, sin t) = 0
        t0 = math.atan2(-vec[0], vec[1]) % math.pi
        breaks += [t0, t0 + math.pi]
    breaks = np.unique(np.clip(breaks, 0, 2 * math.pi))
    x, w = _gauss_legendre_rule(degree)
    total = 0.0
    for lo, hi in zip(breaks[:-1], breaks[1:], strict=True):
        t = (hi - lo) / 2 * x + (hi + lo) / 2
        c, s = np.cos(t), np.sin(t)
        total += (hi - lo) / 2 * float((w * f(a[0] * c + a[1] * s) * f(b[0] * c + b[1] * s)).sum())
    return total / (2 * math.pi) * 2**n * math.factorial(n)


def np_pdf(x):
    return np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def hermite_np(n):
    c = np.zeros(n + 1)
    c[n] = 1.0
    norm = math.sqrt(math.factorial(n))
    return (
        lambda x: hermite_e.hermeval(x, c) / norm,
        lambda x: hermite_e.hermeval(x, hermite_e.hermeder(c)) / norm,
    )


def _powers(n):
    return (lambda x: x**n), (lambda x: n * x ** (n - 1) if n else 0 * x)


# name -> (activation, phi, phi') for the Gauss-Hermite brute force.
SMOOTH = {
    "GELU": (wl.GELU(), lambda x: x * ndtr(x), lambda x: ndtr(x) + x * np_pdf(x)),
    "Sin": (
        wl.Sin(1.3, 0.7, 0.4),
        lambda x: 1.3 * np.sin(0.7 * x + 0.4),
        lambda x: 1.3 * 0.7 * np.cos(0.7 * x + 0.4),
    ),
    "Sin-default": (wl.Sin(), np.sin, np.cos),
    "Cos": (
        wl.Cos(0.8, 1.5, -0.3),
        lambda x: 0.8 * np.cos(1.5 * x - 0.3),
        lambda x: -0.8 * 1.5 * np.sin(1.5 * x - 0.3),
    ),
    "RBF": (
        wl.RBF(0.7),
        lambda x: math.sqrt(2) * np.sin(math.sqrt(1.4) * x + math.pi / 4),
        lambda x: math.sqrt(2) * math.sqrt(1.4) * np.cos(math.sqrt(1.4) * x + math.pi / 4),
    ),
    "Exp": (wl.Exp(0.7, 0.6), lambda x: 0.7 * np.exp(0.6 * x), lambda x: 0.42 * np.exp(0.6 * x)),
    "Gaussian": (
        wl.Gaussian(1.2, -0.8),
        lambda x: 1.2 * np.exp(-0.8 * x * x),
        lambda x: -1.92 * x * np.exp(-0.8 * x * x),
    ),
    "Gaussian-b>0": (
        wl.Gaussian(1.2, 0.1),
        lambda x: 1.2 * np.exp(0.1 * x * x),
        lambda x: 0.24 * x * np.exp(0.1 * x * x),
    ),
    "Erf": (
        wl.Erf(1.1, 0.8, 0.2),
        lambda x: 1.1 * np_erf(0.8 * x) + 0.2,
        lambda x: 1.1 * 0.8 * 2 / math.sqrt(math.pi) * np.exp(-0.64 * x * x),
    ),
    "Identity": (wl.Identity(), lambda x: x, lambda x: 0 * x + 1),
    "Polynomial": (
        wl.Polynomial([0.5, -1.0, 0.3, 0.2]),
        lambda x: 0.5 - x + 0.3 * x**2 + 0.2 * x**3,
        lambda x: -1 + 0.6 * x + 0.6 * x**2,
    ),
    **{f"Monomial({n})": (wl.Monomial(n), *_powers(n)) for n in range(6)},
    **{f"Hermite({n})": (wl.Hermite(n), *hermite_np(n)) for n in range(7)},
}


def _rect(n):
    f = (lambda x: np.maximum(x, 0) ** n) if n else (lambda x: (x >= 0) * 1.0)
    df = (lambda x: n * np.maximum(x, 0) ** (n - 1) if n > 1 else (x > 0) * 1.0) if n else None
    return f, df


# name -> (activation, phi, degree of phi, phi', degree of phi'); phi' None means 0 a.e.
NONSMOOTH = {
    "ReLU": (wl.ReLU(), lambda x: np.maximum(x, 0), 1, lambda x: (x > 0) * 1.0, 0),
    "LeakyReLU": (
        wl.LeakyReLU(0.2),
        lambda x: np.where(x > 0, x, 0.2 * x),
        1,
        lambda x: np.where(x > 0, 1.0, 0.2),
        0,
    ),
    "Abs": (wl.Abs(), np.abs, 1, np.sign, 0),
    "ABReLU": (
        wl.ABReLU(-0.4, 1.3),
        lambda x: -0.4 * np.minimum(x, 0) + 1.3 * np.maximum(x, 0),
        1,
        lambda x: np.where(x > 0, 1.3, -0.4),
        0,
    ),
    "Sign": (wl.Sign(), np.sign, 0, None, 0),
    **{
        f"RectifiedMonomial({n})": (wl.RectifiedMonomial(n), _rect(n)[0], n, _rect(n)[1], n - 1)
        for n in range(5)
    },
}


def dual64(act, k11, k22, k12):
    t, tdot = act.dual(*(torch.tensor(v, dtype=F64) for v in (k11, k22, k12)), True)
    return float(t), float(tdot)


def check_point(name, act, k, t_ref, tdot_ref, t_scale, tdot_scale):
    t, tdot = dual64(act, *k)
    assert abs(t - t_ref) <= TOL * t_scale, f"{name} T at {k}: {t} vs brute force {t_ref}"
    assert abs(tdot - tdot_ref) <= TOL * max(tdot_scale, 1e-300), (
        f"{name} Tdot at {k}: {tdot} vs brute force {tdot_ref}"
    )


# ------------------------------------------------------------------------------------------
# Closed forms against brute force.


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_closed_form_matches_brute_force(name):
    act, f, df = SMOOTH[name]
    for k11, k22, k12 in POINTS:
        scale = math.sqrt(
            gauss_hermite_2d(f, f, k11, k11, k11) * gauss_hermite_2d(f, f, k22, k22, k22)
        )
        dscale = math.sqrt(
            gauss_hermite_2d(df, df, k11, k11, k11) * gauss_hermite_2d(df, df, k22, k22, k22)
        )
        t_ref = gauss_hermite_2d(f, f, k11, k22, k12)
        tdot_ref = gauss_hermite_2d(df, df, k11, k22, k12)
        check_point(name, act, (k11, k22, k12), t_ref, tdot_ref, scale, dscale or 1.0)


@pytest.mark.parametrize("name", sorted(NONSMOOTH))
def test_nonsmooth_closed_form_matches_polar_integral(name):
    act, f, n, df, nd = NONSMOOTH[name]
    zero = lambda x: 0.0 * x  # noqa: E731
    df = df or zero
    nd = max(nd, 0)
    for k11, k22, k12 in POINTS:
        scale = math.sqrt(polar(f, n, k11, k11, k11) * polar(f, n, k22, k22, k22))
        dscale = math.sqrt(polar(df, nd, k11, k11, k11) * polar(df, nd, k22, k22, k22))
        t_ref = polar(f, n, k11, k22, k12)
        tdot_ref = polar(df, nd, k11, k22, k12)
        check_point(name, act, (k11, k22, k12), t_ref, tdot_ref, scale, dscale or 1.0)


@pytest.mark.parametrize("name", sorted(SMOOTH) + sorted(NONSMOOTH))
def test_finite_fn_is_the_integrated_function(name):
    """The finite side (act.fn) is the phi the brute force integrates."""
    act, f = (SMOOTH[name][:2]) if name in SMOOTH else (NONSMOOTH[name][:2])
    x = np.linspace(-3, 3, 61) + 0.013  # avoid the kinks at 0
    got = act.fn(torch.tensor(x, dtype=F64)).numpy()
    np.testing.assert_allclose(got, f(x), rtol=1e-13, atol=1e-13)


def test_brute_force_gauss_hermite_converged():
    for name, (_, f, df) in SMOOTH.items():
        for k in POINTS:
            for g in (f, df):
                scale = math.sqrt(
                    abs(
                        gauss_hermite_2d(g, g, k[0], k[0], k[0])
                        * gauss_hermite_2d(g, g, k[1], k[1], k[1])
                    )
                )
                lo, hi = gauss_hermite_2d(g, g, *k), gauss_hermite_2d(g, g, *k, degree=220)
                assert abs(lo - hi) <= 1e-14 * max(scale, 1.0), (name, k)


def test_brute_force_polar_converged():
    # Known values: E[relu(u) relu(v)] at rho = 0 is E[relu(u)] E[relu(v)] = sqrt(k11 k22) / (2 pi);
    # E[sign u sign v] = 2/pi arcsin(rho); and doubling the Gauss-Legendre degree changes nothing.
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    assert abs(polar(relu, 1, 2.0, 0.5, 0.0) - 1 / (2 * math.pi)) < 1e-15
    assert (
        abs(polar(np.sign, 0, 1.0, 2.0, 0.5) - 2 / math.pi * math.asin(0.5 / math.sqrt(2))) < 1e-15
    )
    for name, (_, f, n, _, _) in NONSMOOTH.items():
        for k in POINTS:
            lo, hi = polar(f, n, *k), polar(f, n, *k, degree=120)
            assert abs(lo - hi) < 1e-14 * max(1.0, abs(hi)), (name, k)


# ------------------------------------------------------------------------------------------
# Identities between activations.


def _grid():
    k11 = torch.tensor([1.0, 0.5, 1.3, 2.0, 1.3, 0.5], dtype=F64)
    k22 = torch.tensor([1.0, 2.0, 0.7, 0.4, 1.3, 2.0], dtype=F64)
    rho = torch.tensor([0.3, -0.7, 0.999, 0.0, 1.0, -1.0], dtype=F64)
    return k11, k22, rho * torch.sqrt(k11 * k22)


def assert_same_dual(a, b, rtol=1e-14, atol=1e-14, k=None):
    k = _grid() if k is None else k
    ta, da = a.dual(*k, True)
    tb, db = b.dual(*k, True)
    torch.testing.assert_close(ta, tb, rtol=rtol, atol=atol)
    torch.testing.assert_close(da, db, rtol=rtol, atol=atol)


def test_leaky_relu_zero_is_relu():
    assert_same_dual(wl.LeakyReLU(0.0), wl.ReLU())


def test_abrelu_minus_one_one_is_abs():
    assert_same_dual(wl.ABReLU(-1, 1), wl.Abs())


def test_rectified_monomial_one_is_relu():
    assert_same_dual(wl.RectifiedMonomial(1), wl.ReLU())


@pytest.mark.parametrize("a, b, c", [(1.0, 1.0, 0.0), (0.8, 1.5, -0.3), (2.0, 0.3, 1.1)])
def test_cos_is_shifted_sin(a, b, c):
    assert_same_dual(wl.Cos(a, b, c), wl.Sin(a, b, c + math.pi / 2))
    x = torch.linspace(-3, 3, 13, dtype=F64)
    torch.testing.assert_close(wl.Cos(a, b, c).fn(x), wl.Sin(a, b, c + math.pi / 2).fn(x))


def test_rbf_is_a_sin():
    g = 0.7
    assert_same_dual(wl.RBF(g), wl.Sin(math.sqrt(2), math.sqrt(2 * g), math.pi / 4))


@pytest.mark.parametrize("n", range(9))
def test_hermite_orthonormal(n):
    """At unit variances T = rho^n (orthonormality) and Tdot = n rho^(n-1)."""
    rho = torch.tensor([-1.0, -0.9, -0.3, 0.0, 0.4, 0.8, 1.0], dtype=F64)
    one = torch.ones_like(rho)
    for h in (wl.Hermite(n), wl.Hermite(n, assume_unit_variance=True)):
        t, tdot = h.dual(one, one, rho, True)
        torch.testing.assert_close(t, rho**n, rtol=1e-13, atol=1e-13)
        expected = n * rho ** (n - 1) if n else torch.zeros_like(rho)
        torch.testing.assert_close(tdot, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n", range(8))
def test_polynomial_reproduces_monomial(n):
    assert_same_dual(wl.Polynomial([0.0] * n + [1.0]), wl.Monomial(n), rtol=1e-13)


@pytest.mark.parametrize("n", range(8))
def test_polynomial_reproduces_hermite(n):
    """Two different expansions: monomial basis (Polynomial) and (k - 1) basis (Hermite)."""
    coefs = hermite_e.herme2poly([0.0] * n + [1.0]) / math.sqrt(math.factorial(n))
    assert_same_dual(wl.Polynomial(coefs), wl.Hermite(n), rtol=1e-12, atol=1e-12)


def test_polynomial_is_linear_in_monomials_for_even_plus_odd():
    """An even and an odd polynomial are uncorrelated: T of the sum is the sum of the T's."""
    even, odd = [0.3, 0.0, -1.2, 0.0, 0.5], [0.0, 0.7, 0.0, 0.4]
    total = [e + o for e, o in zip(even + [0.0], odd + [0.0, 0.0], strict=False)]
    k = _grid()
    t = wl.Polynomial(total).dual(*k, False)[0]
    parts = wl.Polynomial(even).dual(*k, False)[0] + wl.Polynomial(odd).dual(*k, False)[0]
    torch.testing.assert_close(t, parts, rtol=1e-13, atol=1e-13)


def test_hermite_exact_differs_from_unit_variance_formula_off_unit_variance():
    k = (torch.tensor(0.5, dtype=F64), torch.tensor(2.0, dtype=F64), torch.tensor(0.4, dtype=F64))
    exact = wl.Hermite(3).dual(*k, False)[0]
    assumed = wl.Hermite(3, assume_unit_variance=True).dual(*k, False)[0]
    assert abs(float(exact - assumed)) > 0.1


def test_gaussian_diverges_to_inf_for_large_variance_when_b_positive():
    # I - 2b Sigma is positive definite iff 2b (k11 + k22) < 1 here (rho = 1).
    t, tdot = wl.Gaussian(1.0, 0.5).dual(*(torch.tensor([0.2, 2.0], dtype=F64),) * 3, True)
    assert math.isfinite(t[0]) and math.isinf(t[1]) and math.isinf(tdot[1])


# ------------------------------------------------------------------------------------------
# Parameter validation.


@pytest.mark.parametrize(
    "make",
    [
        lambda: wl.Monomial(-1),
        lambda: wl.Monomial(2.5),
        lambda: wl.Monomial(True),
        lambda: wl.Monomial("2"),
        lambda: wl.RectifiedMonomial(-2),
        lambda: wl.Hermite(-1),
        lambda: wl.Polynomial([1.0, float("nan")]),
        lambda: wl.Polynomial(3.0),
        lambda: wl.Polynomial("123"),
        lambda: wl.Sin(a="1.5"),
        lambda: wl.RBF(-1.0),
        lambda: wl.Sin(a=float("inf")),
        lambda: wl.Exp(b="x"),
        lambda: wl.GELU(approximate=True),
        lambda: wl.Elementwise(),
        lambda: wl.Elementwise(torch.tanh, degree=0),
        lambda: wl.Elementwise(torch.tanh, degree=1000),
        lambda: wl.Elementwise(torch.tanh, ntk_fn=lambda a, b, c: c),
        lambda: wl.Elementwise(torch.tanh, chunk_size=0),
    ],
)
def test_invalid_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_degree_accepts_numpy_and_integral_floats():
    assert wl.Monomial(np.int64(3)).degree == 3
    assert wl.Hermite(2.0).degree == 2
    assert wl.RectifiedMonomial(0).degree == 0


def test_elementwise_rejects_non_elementwise_fn():
    act = wl.Elementwise(lambda x: x.sum(), degree=4)
    with pytest.raises(ValueError, match="same shape"):
        act.dual(*(torch.ones(3, dtype=F64),) * 3, False)


def test_elementwise_without_fn_has_no_finite_network():
    act = wl.Elementwise(nngp_fn=lambda a, b, c: c)
    net = wl.Serial(wl.Dense(), act, wl.Dense(1))
    module = net.build(3, 4, seed=0)
    with pytest.raises(NotImplementedError, match="no finite network"):
        module(torch.randn(2, 3))


# ------------------------------------------------------------------------------------------
# neural-tangents 0.6.5 reference values.


def _fc(act, W_std=1.0, b_std=None, parametrization="ntk"):
    def dense(out):
        return wl.Dense(out, W_std, b_std, parametrization)

    return wl.Serial(dense(512), act, dense(512), act, dense(1))


def _fc1(act):
    return wl.Serial(wl.Dense(512, W_std=1.0, b_std=0.1), act, wl.Dense(1))


# key prefix -> (network, whether the second input is x2_fc); see tests/data/README.md.
REFERENCE_NETS = {
    "fc_relu": (lambda: _fc(wl.ReLU()), False),
    "fc_relu_x1x2": (lambda: _fc(wl.ReLU()), True),
    "fc_relu_bias": (lambda: _fc(wl.ReLU(), 1.5, 0.05), False),
    "fc_relu_standard": (lambda: _fc(wl.ReLU(), 1.5, 0.05, "standard"), False),
    "fc_erf": (lambda: _fc(wl.Erf()), False),
    "fc1_gelu": (lambda: _fc1(wl.GELU()), False),
    "fc1_sin": (lambda: _fc1(wl.Sin(a=1, b=1, c=0)), False),
    "fc1_abs": (lambda: _fc1(wl.Abs()), False),
    "fc1_leaky_relu_0.1": (lambda: _fc1(wl.LeakyReLU(0.1)), False),
    "fc1_sign": (lambda: _fc1(wl.Sign()), False),
    "fc1_rbf": (lambda: _fc1(wl.RBF(gamma=1)), False),
    "fc1_exp": (lambda: _fc1(wl.Exp(a=1, b=1)), False),
    "fc1_monomial_2": (lambda: _fc1(wl.Monomial(2)), False),
    # neural-tangents' Hermite assumes unit input variance (T = k12^n); see `Hermite`.
    "fc1_hermite_3": (lambda: _fc1(wl.Hermite(3, assume_unit_variance=True)), False),
}


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(REFERENCE))


def test_reference_keys_all_covered(reference):
    keys = {k for k in reference if k.startswith(("fc_", "fc1_"))}
    expected = {f"{name}_{g}" for name in REFERENCE_NETS for g in ("nngp", "ntk")}
    assert keys == expected


@pytest.mark.parametrize("name", sorted(REFERENCE_NETS))
def test_reference_kernels(reference, name):
    make, cross = REFERENCE_NETS[name]
    x1 = torch.tensor(reference["x1_fc"])
    x2 = torch.tensor(reference["x2_fc"]) if cross else None
    k = make().kernel(x1, x2)
    for get in ("nngp", "ntk"):
        expected = reference[f"{name}_{get}"]
        got = getattr(k, get).numpy()
        assert got.dtype == np.float64
        err = np.abs(got - expected).max() / np.abs(expected).max()
        assert err < 1e-9, f"{name}_{get}: relative error {err:.2e}"


# ------------------------------------------------------------------------------------------
# Networks: the diagonal path, batch-diagonal kernels and the finite modules.

ALL_ACTIVATIONS = {
    **{n: v[0] for n, v in SMOOTH.items()},
    **{n: v[0] for n, v in NONSMOOTH.items()},
}


@pytest.mark.parametrize("name", sorted(ALL_ACTIVATIONS))
def test_in_network_diagonal_and_build(name):
    act = ALL_ACTIVATIONS[name]
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.7
    net = wl.Serial(wl.Dense(W_std=0.9, b_std=0.1), act, wl.Dense(1, b_std=0.1))
    k = net.kernel(x)
    diag = net.kernel(x, diagonal=True)
    torch.testing.assert_close(diag.nngp, k.nngp.diagonal(), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(diag.ntk, k.ntk.diagonal(), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(k.nngp, k.nngp.T)
    out = net.build(6, 32, seed=0, dtype=F64)(x)
    assert out.shape == (5, 1) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------
# Gradients.


def _generic_inputs():
    k11 = torch.tensor([1.1, 0.7, 2.0, 0.5], dtype=F64)
    k22 = torch.tensor([0.8, 1.5, 0.3, 0.9], dtype=F64)
    rho = torch.tensor([0.3, -0.6, 0.8, -0.1], dtype=F64)
    k12 = rho * torch.sqrt(k11 * k22)
    return tuple(t.clone().requires_grad_(True) for t in (k11, k22, k12))


@pytest.mark.parametrize("name", sorted(ALL_ACTIVATIONS))
def test_gradcheck(name):
    act = ALL_ACTIVATIONS[name]
    inputs = _generic_inputs()
    assert gradcheck(lambda a, b, c: act.dual(a, b, c, False)[0], inputs)
    assert gradcheck(lambda a, b, c: act.dual(a, b, c, True)[1], inputs)


@pytest.mark.parametrize("name", sorted(ALL_ACTIVATIONS))
def test_gradients_finite_at_correlation_one(name):
    act = ALL_ACTIVATIONS[name]
    k11 = torch.tensor([1.3, 1.3, 0.5, 0.5], dtype=F64, requires_grad=True)
    k22 = torch.tensor([1.3, 1.3, 2.0, 2.0], dtype=F64, requires_grad=True)
    k12 = torch.tensor([1.3, -1.3, 1.0, -1.0], dtype=F64, requires_grad=True)
    t, tdot = act.dual(k11, k22, k12, True)
    assert torch.isfinite(t).all() and torch.isfinite(tdot).all()
    grads = torch.autograd.grad((t + tdot).sum(), (k11, k22, k12), allow_unused=True)
    for g in grads:
        assert g is None or torch.isfinite(g).all(), name


# ------------------------------------------------------------------------------------------
# Elementwise: quadrature and user closed forms.


def _small_variance_grid():
    k11 = torch.tensor([1.0, 0.5, 0.9, 0.2, 1.0, 0.5, 0.7], dtype=F64)
    k22 = torch.tensor([1.0, 1.0, 0.3, 0.8, 1.0, 1.0, 0.7], dtype=F64)
    rho = torch.tensor([0.3, -0.7, 0.9999, 0.0, 1.0, -1.0, 0.5], dtype=F64)
    return k11, k22, rho * torch.sqrt(k11 * k22)


def test_elementwise_erf_matches_closed_form():
    # Default degree 64 at variances <= 1: measured T 3e-13, Tdot 9e-12 (see the docstring).
    assert_same_dual(
        wl.Elementwise(torch.erf), wl.Erf(), rtol=0, atol=1e-10, k=_small_variance_grid()
    )


def test_elementwise_gelu_matches_closed_form():
    gelu = wl.Elementwise(torch.nn.functional.gelu)
    assert_same_dual(gelu, wl.GELU(), rtol=0, atol=1e-13, k=_small_variance_grid())


def test_elementwise_relu_approximates_relu():
    # relu is not smooth: quadrature converges only algebraically (about 4e-3 for T, 5e-2 for
    # Tdot in the worst case, at correlation +-1).
    k = _small_variance_grid()
    t, tdot = wl.Elementwise(torch.relu).dual(*k, True)
    t0, tdot0 = wl.ReLU().dual(*k, True)
    scale = torch.sqrt(k[0] * k[1]) / 2
    assert ((t - t0).abs() / scale).max() < 5e-3
    assert (tdot - tdot0).abs().max() < 3e-2


def test_elementwise_tanh_converges():
    k = _small_variance_grid()
    ref = wl.Elementwise(torch.tanh, degree=200).dual(*k, True)
    got = wl.Elementwise(torch.tanh).dual(*k, True)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-8)
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=1e-6)


def test_elementwise_chunking_and_broadcasting():
    k11 = torch.tensor([[0.5], [1.0], [1.5]], dtype=F64)
    k22 = torch.tensor([[0.7, 1.2, 0.9, 0.4]], dtype=F64)
    k12 = 0.4 * torch.sqrt(k11 * k22)
    full = wl.Elementwise(torch.tanh, degree=20).dual(k11, k22, k12, True)
    chunked = wl.Elementwise(torch.tanh, degree=20, chunk_size=5).dual(k11, k22, k12, True)
    assert full[0].shape == (3, 4)
    torch.testing.assert_close(chunked[0], full[0], rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(chunked[1], full[1], rtol=1e-15, atol=1e-15)
    one = wl.Elementwise(torch.tanh, degree=20).dual(k11[1, 0], k22[0, 2], k12[1, 2], True)
    torch.testing.assert_close(one[0], full[0][1, 2])


def test_elementwise_is_symmetric():
    """The quadrature integrates the smaller variance first: T(a, b, c) == T(b, a, c) exactly."""
    a = torch.tensor([0.5, 7.0, 3.0, 1.0], dtype=F64)
    b = torch.tensor([7.0, 6.5, 0.2, 1.0], dtype=F64)
    c = torch.tensor([0.3, -0.9, 0.99, 1.0], dtype=F64) * torch.sqrt(a * b)
    act = wl.Elementwise(torch.tanh, degree=24)
    t1, d1 = act.dual(a, b, c, True)
    t2, d2 = act.dual(b, a, c, True)
    assert torch.equal(t1, t2) and torch.equal(d1, d2)


def test_elementwise_zero_variance_is_exact():
    """With k11 = 0, u = 0 and T = phi(0) E[phi(v)] whatever k12 says."""
    k11, k22, k12 = (torch.tensor(v, dtype=F64) for v in (0.0, 1.3, 0.0))
    t, tdot = wl.Elementwise(torch.sigmoid).dual(k11, k22, k12, True)
    sig = wl.Elementwise(torch.sigmoid).dual(k22 * 0 + 1e-300, k22, k12, True)
    assert torch.isfinite(t) and abs(float(t) - 0.5 * 0.5) < 1e-14
    assert abs(float(tdot) - float(sig[1])) < 1e-12


def test_elementwise_constant_fn():
    t, tdot = wl.Elementwise(lambda x: torch.full_like(x, 2.0), degree=8).dual(
        *_small_variance_grid(), True
    )
    torch.testing.assert_close(t, torch.full_like(t, 4.0))
    torch.testing.assert_close(tdot, torch.zeros_like(tdot))


def test_elementwise_float32():
    k = tuple(t.float() for t in _small_variance_grid())
    t, tdot = wl.Elementwise(torch.erf).dual(*k, True)
    assert t.dtype == torch.float32 and tdot.dtype == torch.float32
    t0, tdot0 = wl.Erf().dual(*_small_variance_grid(), True)
    torch.testing.assert_close(t.double(), t0, rtol=0, atol=1e-5)
    torch.testing.assert_close(tdot.double(), tdot0, rtol=0, atol=1e-5)


def test_elementwise_nngp_fn_tdot_by_autograd_is_relu_tdot():
    relu = wl.ReLU()
    act = wl.Elementwise(torch.relu, nngp_fn=lambda a, b, c: relu.dual(a, b, c, False)[0])
    assert_same_dual(act, relu)
    assert_same_dual(act, relu, k=_small_variance_grid())


def test_elementwise_nngp_fn_and_ntk_fn():
    erf = wl.Erf()
    act = wl.Elementwise(
        torch.erf,
        nngp_fn=lambda a, b, c: erf.dual(a, b, c, False)[0],
        ntk_fn=lambda a, b, c: erf.dual(a, b, c, True)[1],
    )
    assert_same_dual(act, erf)
    # Autograd Tdot of the erf closed form agrees as well.
    auto = wl.Elementwise(torch.erf, nngp_fn=lambda a, b, c: erf.dual(a, b, c, False)[0])
    assert_same_dual(auto, erf)


def test_elementwise_in_network_matches_closed_form():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(3), dtype=F64) * 0.8
    ref = wl.Serial(wl.Dense(b_std=0.1), wl.Erf(), wl.Dense(), wl.Erf(), wl.Dense(1)).kernel(x)
    quad = wl.Elementwise(torch.erf)
    got = wl.Serial(wl.Dense(b_std=0.1), quad, wl.Dense(), quad, wl.Dense(1)).kernel(x)
    torch.testing.assert_close(got.nngp, ref.nngp, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.ntk, ref.ntk, rtol=0, atol=1e-10)
    assert not got.nngp.requires_grad


def test_elementwise_quadrature_gradcheck():
    act = wl.Elementwise(torch.tanh, degree=10, chunk_size=3)
    inputs = _generic_inputs()
    assert gradcheck(lambda a, b, c: act.dual(a, b, c, True), inputs)
    assert gradgradcheck(lambda a, b, c: act.dual(a, b, c, True), inputs)


def test_elementwise_closed_form_gradcheck():
    relu = wl.ReLU()
    act = wl.Elementwise(torch.relu, nngp_fn=lambda a, b, c: relu.dual(a, b, c, False)[0])
    assert gradcheck(lambda a, b, c: act.dual(a, b, c, True), _generic_inputs())


def test_elementwise_gradients_finite_at_correlation_one():
    for act in (
        wl.Elementwise(torch.tanh, degree=12),
        wl.Elementwise(torch.nn.functional.silu, degree=12),
    ):
        k11 = torch.tensor([1.3, 1.3, 0.5], dtype=F64, requires_grad=True)
        k22 = torch.tensor([1.3, 1.3, 2.0], dtype=F64, requires_grad=True)
        k12 = torch.tensor([1.3, -1.3, -1.0], dtype=F64, requires_grad=True)
        t, tdot = act.dual(k11, k22, k12, True)
        grads = torch.autograd.grad((t + tdot).sum(), (k11, k22, k12))
        assert all(torch.isfinite(g).all() for g in grads)


def test_elementwise_gradient_through_network_hyperparameter():
    """d K / d W_std through the quadrature equals that through the closed form (erf)."""
    # Small inputs keep the variances below 1, where the quadrature is accurate to ~1e-12.
    x = 0.5 * torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=F64)

    def kernel(act, w):
        return wl.Serial(wl.Dense(W_std=w, b_std=0.1), act, wl.Dense(1)).kernel(x).ntk.sum()

    w1 = torch.tensor(1.2, dtype=F64, requires_grad=True)
    w2 = torch.tensor(1.2, dtype=F64, requires_grad=True)
    (g_quad,) = torch.autograd.grad(kernel(wl.Elementwise(torch.erf), w1), w1)
    (g_closed,) = torch.autograd.grad(kernel(wl.Erf(), w2), w2)
    assert abs(float(g_quad - g_closed)) < 1e-8 * abs(float(g_closed))
