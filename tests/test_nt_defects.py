"""Where neural-tangents 0.6.5 is wrong, widelimits is exact: each test checks widelimits against
an independent source (Monte Carlo over finite networks, high-precision closed forms, brute-force
quadrature) and shows that neural-tangents' stored value (``tests/data/nt_acts.npz``) fails the
same check, so the test would catch the defect.  docs/coming-from-neural-tangents.md quotes the
numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import widelimits as wl
from widelimits.finite import monte_carlo_kernel
from widelimits.testing import assert_matches_monte_carlo, count_finite_width_layers

DATA = np.load(Path(__file__).parent / "data" / "nt_acts.npz")
F64 = torch.float64


def _gauss_hermite_2d(fn, k11: float, k22: float, k12: float, degree: int = 200) -> float:
    """E[fn(u) fn(v)], (u, v) ~ N(0, [[k11, k12], [k12, k22]]), numpy tensor Gauss-Hermite."""
    z, w = np.polynomial.hermite_e.hermegauss(degree)
    w = w / math.sqrt(2 * math.pi)
    rho = k12 / math.sqrt(k11 * k22)
    u = math.sqrt(k11) * z[:, None]
    v = math.sqrt(k22) * (rho * z[:, None] + math.sqrt(max(0.0, 1 - rho * rho)) * z[None, :])
    return float(np.sum(w[:, None] * w[None, :] * fn(u) * fn(v)))


def _input_kernel(a: np.ndarray, b: np.ndarray, w_std: float, b_std: float) -> np.ndarray:
    return w_std**2 * a @ b.T / a.shape[1] + b_std**2


def test_sign_then_pooling_matches_monte_carlo_where_neural_tangents_does_not():
    # NT sets every pixel pair of an example's self-covariance to 1 after Sign; after pooling the
    # ReLU normalises by those wrong variances.
    x1 = torch.tensor(DATA["x_img"]).permute(0, 3, 1, 2)
    x2 = torch.tensor(DATA["x_img2"]).permute(0, 3, 1, 2)
    net = wl.Serial(
        wl.Conv(W_std=1.5, b_std=0.1), wl.Sign(), wl.GlobalAvgPool(),
        wl.Dense(W_std=1.0, b_std=0.1), wl.ReLU(), wl.Dense(1),
    )  # fmt: skip
    width = 256
    k = net.kernel(x1, x2, get="nngp")
    mc = monte_carlo_kernel(net, x1, x2, n_samples=24, width=width, seed=0, get=("nngp",),
                            dtype=F64)  # fmt: skip
    variances = tuple(net.kernel(x, get="nngp", diagonal=True) for x in (x1, x2))
    layers = count_finite_width_layers(net)
    check = dict(width=width, finite_width_layers=layers, variances=variances)
    assert_matches_monte_carlo(k, mc.nngp, mc.nngp_stderr, mc.n_samples, **check)
    nt = torch.tensor(DATA["defect_sign_pool_nngp"])
    with pytest.raises(AssertionError):
        assert_matches_monte_carlo(nt, mc.nngp, mc.nngp_stderr, mc.n_samples, **check)
    assert float((nt / k).min()) > 5  # NT's kernel is about ten times too large here


def _arccos_kernel(n: int, k11, k22, k12):
    """Cho & Saul's closed forms J_0..J_3, in mpmath (40 digits)."""
    th = mpmath.acos(min(k12 / mpmath.sqrt(k11 * k22), 1))
    s, c, p = mpmath.sin(th), mpmath.cos(th), mpmath.pi - th
    j = [
        p, s + p * c, 3 * s * c + p * (1 + 2 * c**2),
        4 * s**3 + 15 * s * c**2 + p * (9 * s**2 * c + 15 * c**3),
    ][n]  # fmt: skip
    return (k11 * k22) ** (mpmath.mpf(n) / 2) * j / (2 * mpmath.pi)


def _rectified_reference(n: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NNGP and NTK of Dense(W_std=1, b_std=0.1), RectifiedMonomial(n), Dense(1), in mpmath."""
    with mpmath.workdps(40):
        nngp, ntk = np.zeros((len(a), len(b))), np.zeros((len(a), len(b)))
        for i, u in enumerate(a):
            for j, v in enumerate(b):
                u_, v_ = [mpmath.mpf(float(t)) for t in u], [mpmath.mpf(float(t)) for t in v]
                k = [sum(p * q for p, q in zip(x, y, strict=True)) / 8 + mpmath.mpf("0.01")
                     for x, y in ((u_, u_), (v_, v_), (u_, v_))]  # fmt: skip
                t = _arccos_kernel(n, *k)
                tdot = 0 if n == 0 else n**2 * _arccos_kernel(n - 1, *k)
                nngp[i, j], ntk[i, j] = float(t), float(t + tdot * k[2])
    return nngp, ntk


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_rectified_monomial_is_exact_on_self_pairs_and_near_correlation_one(n):
    x1, near = DATA["x1"], DATA["x1_near"]  # near: x1 + 1e-6 noise, correlations 1 - O(1e-12)
    net = wl.Serial(wl.Dense(8, 1.0, 0.1), wl.RectifiedMonomial(n), wl.Dense(1))
    self_ref = _rectified_reference(n, x1, x1)
    ours = net.kernel(torch.tensor(x1))
    for g, want in zip(("nngp", "ntk"), self_ref, strict=True):
        np.testing.assert_allclose(getattr(ours, g).numpy(), want, rtol=1e-13)
        assert np.isnan(np.diag(DATA[f"defect_rmono{n}_self_{g}"])).all()  # NT: NaN
    near_ref = _rectified_reference(n, x1, near)
    ours = net.kernel(torch.tensor(x1), torch.tensor(near))
    # arccos near 1 amplifies the rounding of rho (1e-16 / theta, theta ~ 1e-6): 1e-10 is the
    # float64 floor for the parts with pi - theta
    for g, want in zip(("nngp", "ntk"), near_ref, strict=True):
        np.testing.assert_allclose(getattr(ours, g).numpy(), want, rtol=2e-10)
    if n >= 1:  # NT's NTK loses about seven of its sixteen digits there
        nt = DATA[f"defect_rmono{n}_near_ntk"]
        assert np.abs(nt / near_ref[1] - 1).max() > 1e-5


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_gelu_tanh_approximation_has_its_own_kernel():
    with pytest.raises(ValueError, match="approximate"):
        wl.GELU(approximate=True)
    x1, x2 = DATA["x1"], DATA["x2"]
    net = wl.Serial(
        wl.Dense(8, 1.0, 0.1),
        wl.Elementwise(lambda x: F.gelu(x, approximate="tanh")),
        wl.Dense(1),
    )
    ours = net.kernel(torch.tensor(x1), torch.tensor(x2), get="nngp").numpy()
    k = _input_kernel(x1, x2, 1.0, 0.1)
    k11, k22 = (np.diag(_input_kernel(x, x, 1.0, 0.1)) for x in (x1, x2))
    brute = np.array([[_gauss_hermite_2d(_gelu_tanh, k11[i], k22[j], k[i, j])
                       for j in range(len(x2))] for i in range(len(x1))])  # fmt: skip
    np.testing.assert_allclose(ours, brute, rtol=1e-11)  # Elementwise's documented accuracy
    nt = DATA["defect_gelu_approx_nngp"]
    np.testing.assert_array_equal(nt, DATA["defect_gelu_exact_nngp"])  # NT: the exact kernel
    assert np.abs(nt - brute).max() > 1e-5  # ... which is not the tanh approximation's


def test_hermite_is_exact_at_any_variance():
    x1, x2 = DATA["x1"], DATA["x2"]
    net = wl.Serial(wl.Dense(8, 1.5, 0.1), wl.Hermite(3), wl.Dense(1))
    ours = net.kernel(torch.tensor(x1), torch.tensor(x2), get="nngp").numpy()

    def he3(x):
        return (x**3 - 3 * x) / math.sqrt(6)

    k = _input_kernel(x1, x2, 1.5, 0.1)
    k11, k22 = (np.diag(_input_kernel(x, x, 1.5, 0.1)) for x in (x1, x2))
    brute = np.array([[_gauss_hermite_2d(he3, k11[i], k22[j], k[i, j], degree=40)
                       for j in range(len(x2))] for i in range(len(x1))])  # fmt: skip
    np.testing.assert_allclose(ours, brute, rtol=1e-11, atol=1e-13)
    nt = DATA["defect_hermite3_nngp"]
    assert np.abs(nt - brute).max() > 0.1 * np.abs(brute).max()
    unit = wl.Serial(wl.Dense(8, 1.5, 0.1), wl.Hermite(3, assume_unit_variance=True), wl.Dense(1))
    np.testing.assert_allclose(
        unit.kernel(torch.tensor(x1), torch.tensor(x2), get="nngp").numpy(), nt, rtol=1e-12
    )


def test_dropout_pairs_rescaled_only_for_x2_none():
    """An explicit x2 is a second forward pass with independent dropout masks: no pair is an
    example with itself, even when x2 holds x1's values or is x1 itself.  ``x2=None`` is one pass
    over x1: its diagonal pairs each example with itself and gets the factor 1 / (1 - p)."""
    p = 0.2
    x = torch.tensor(DATA["x1"])
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dropout(p), wl.Dense(1))
    same_pass = net.kernel(x).nngp
    for x2 in (x, x.clone()):
        other_pass = net.kernel(x, x2).nngp
        off = ~torch.eye(len(x), dtype=torch.bool)
        torch.testing.assert_close(other_pass[off], same_pass[off], rtol=1e-14, atol=0)
        torch.testing.assert_close(
            other_pass.diagonal() / (1 - p), same_pass.diagonal(), rtol=1e-14, atol=0
        )
    # Monte Carlo: features of one wide network in training mode, one pass or two
    width = 20000
    features = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dropout(p)).build(8, width, seed=1, dtype=F64)
    assert features.training
    torch.manual_seed(2)  # the dropout masks
    with torch.no_grad():
        f1, f2 = features(x), features(x)
    one, two = f1 @ f1.T / width, f1 @ f2.T / width
    # each estimate averages `width` iid terms: tolerance from their sample spread
    terms = f1.unsqueeze(1) * f2.unsqueeze(0)
    tol = 6 * terms.std(dim=-1) / math.sqrt(width)
    assert ((two - net.kernel(x, x).nngp).abs() < tol).all()
    tol_one = 6 * (f1 * f1).std(dim=-1) / math.sqrt(width)
    assert ((one - same_pass).diagonal().abs() < tol_one).all()
    # neural-tangents rescales the diagonal whenever x2 equals x1, also in another pass
    nt = DATA["dropout_copy_nngp"]
    np.testing.assert_allclose(nt, DATA["dropout_none_nngp"], rtol=1e-14)
    assert (np.abs(np.diag(nt) - np.diag(two.numpy())) > np.diag(tol.numpy())).all()
