"""`Gabor`, `ExpNormalized` and the standard parametrization's width factors ``s``.

Independent sources: brute-force two-dimensional Gauss-Hermite quadrature (numpy, written here),
the derivative identity Tdot = dT/dk12 (Price), neural-tangents 0.6.5 reference values
(``tests/data/nt_acts.npz``, made by ``bench/nt_reference_acts.py``) and Monte Carlo over the
finite networks the same descriptions build.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits.finite import monte_carlo_kernel
from widelimits.testing import assert_matches_monte_carlo, count_finite_width_layers

DATA = np.load(Path(__file__).parent / "data" / "nt_acts.npz")
F64 = torch.float64


def gauss_hermite_2d(fn, k11: float, k22: float, k12: float, degree: int = 160) -> float:
    """E[fn(u) fn(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]) by a tensor Gauss-Hermite rule
    on the Cholesky factor (numpy only)."""
    z, w = np.polynomial.hermite_e.hermegauss(degree)
    w = w / math.sqrt(2 * math.pi)
    a = math.sqrt(k11)
    rho = k12 / math.sqrt(k11 * k22)
    b, c = math.sqrt(k22) * rho, math.sqrt(k22) * math.sqrt(max(0.0, 1 - rho * rho))
    u = a * z[:, None]
    v = b * z[:, None] + c * z[None, :]
    return float(np.sum(w[:, None] * w[None, :] * fn(u) * fn(v)))


COVARIANCES = [
    (0.3, 0.7, 0.2), (1.0, 1.0, 1.0), (2.0, 1.2, -1.5), (0.5, 0.5, 0.5), (1.5, 0.1, -0.3),
]  # fmt: skip


def _gabor(x):
    return np.exp(-(x**2)) * np.sin(x)


def _gabor_prime(x):
    return np.exp(-(x**2)) * (np.cos(x) - 2 * x * np.sin(x))


@pytest.mark.parametrize("k11, k22, k12", COVARIANCES)
def test_gabor_dual_matches_brute_force_quadrature(k11, k22, k12):
    t, tdot = wl.Gabor().dual(*(torch.tensor(v, dtype=F64) for v in (k11, k22, k12)), True)
    assert float(t) == pytest.approx(gauss_hermite_2d(_gabor, k11, k22, k12), abs=1e-13)
    assert float(tdot) == pytest.approx(gauss_hermite_2d(_gabor_prime, k11, k22, k12), abs=1e-13)


def test_gabor_tdot_is_the_derivative_of_t():
    g = torch.Generator().manual_seed(0)
    k11, k22 = torch.rand(50, generator=g, dtype=F64) * 3, torch.rand(50, generator=g, dtype=F64)
    k12 = (2 * torch.rand(50, generator=g, dtype=F64) - 1) * torch.sqrt(k11 * k22)
    k12.requires_grad_(True)
    t, tdot = wl.Gabor().dual(k11, k22, k12, True)
    (grad,) = torch.autograd.grad(t.sum(), k12)
    torch.testing.assert_close(grad, tdot.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("gamma, shift", [(1.0, -1.0), (2.5, 0.3), (0.0, 0.5)])
def test_exp_normalized_finite_function_has_the_dual(gamma, shift):
    # the finite side at unit rms is a exp(b x); its Gaussian integral on unit variances is T
    layer = wl.ExpNormalized(gamma, shift)
    a, b = math.exp(gamma * (shift - 1) / 2), math.sqrt(gamma)
    for rho in (-0.9, 0.0, 0.4, 1.0):
        want = gauss_hermite_2d(lambda x: a * np.exp(b * x), 1.0, 1.0, rho, degree=80)
        t, _ = layer.dual(*(torch.tensor(v, dtype=F64) for v in (2.0, 2.0, 2.0 * rho)), False)
        assert float(t) == pytest.approx(2.0 * want, rel=1e-12)


def _covariance(a: float, b: float, rho: float) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(v, dtype=F64) for v in (a, b, rho * math.sqrt(a * b)))


_variance = st.floats(0.0, 8.0)
_rho = st.floats(-1.0, 1.0)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(a=_variance, b=_variance, rho=_rho)
def test_gabor_symmetries_and_bounds(a, b, rho):
    # phi is odd: T is odd in k12 and Tdot even; both symmetric in the two inputs; Cauchy-Schwarz
    g = wl.Gabor()
    k11, k22, k12 = _covariance(a, b, rho)
    t, tdot = g.dual(k11, k22, k12, True)
    t_neg, tdot_neg = g.dual(k11, k22, -k12, True)
    t_swap, tdot_swap = g.dual(k22, k11, k12, True)
    assert float(t) == pytest.approx(-float(t_neg), abs=1e-15)
    assert float(tdot) == pytest.approx(float(tdot_neg), abs=1e-15)
    assert float(t) == float(t_swap) and float(tdot) == float(tdot_swap)
    t11, d11 = g.dual(k11, k11, k11, True)
    t22, d22 = g.dual(k22, k22, k22, True)
    assert float(t) ** 2 <= float(t11 * t22) * (1 + 1e-12) + 1e-300
    assert float(tdot) ** 2 <= float(d11 * d22) * (1 + 1e-12) + 1e-300


@settings(max_examples=30, deadline=None, derandomize=True)
@given(a=st.floats(0.01, 8.0), b=st.floats(0.01, 8.0), rho=_rho, c=st.floats(0.1, 10.0),
       gamma=st.floats(0.0, 5.0), shift=st.floats(-2.0, 2.0))  # fmt: skip
def test_exp_normalized_is_homogeneous_and_depends_on_rho_only(a, b, rho, c, gamma, shift):
    layer = wl.ExpNormalized(gamma, shift)
    k = _covariance(a, b, rho)
    t, tdot = layer.dual(*k, True)
    t_c, tdot_c = layer.dual(*(c * v for v in k), True)
    assert float(t_c) == pytest.approx(c * float(t), rel=1e-12)
    assert float(tdot_c) == pytest.approx(float(tdot), rel=1e-12)
    assert float(t) == pytest.approx(math.sqrt(a * b) * math.exp(gamma * (rho + shift)), rel=1e-12)


# --------------------------------------------------------------------------- neural-tangents


def _layer(spec):
    """A widelimits layer from nt_reference's spec grammar (the layers these cases use)."""
    name, p = spec[0], spec[1]
    if name == "Serial":
        return wl.Serial(*(_layer(s) for s in p))
    if name in ("Dense", "Conv"):
        common = dict(
            W_std=p["W_std"], b_std=p["b_std"] if p["bias"] else None,
            parametrization=p["parameterization"],
        )  # fmt: skip
        s = tuple(p.get("s", (1, 1)))
        if name == "Dense":
            return wl.Dense(p["out"], s=s, **common)
        return wl.Conv(p["out"], tuple(p["filter_shape"]), padding="same", s=s, **common)
    simple = {"Relu": wl.ReLU, "Gabor": wl.Gabor, "GlobalAvgPool": wl.GlobalAvgPool}
    if name == "ExpNormalized":
        return wl.ExpNormalized(p["gamma"], p["shift"])
    return simple[name]()


def _inputs(images: bool):
    if images:
        return (torch.tensor(DATA[k]).permute(0, 3, 1, 2) for k in ("x_img", "x_img2"))
    return torch.tensor(DATA["x1"]), torch.tensor(DATA["x2"])


NT_CASES = [
    ("gabor_fc", False), ("expnorm_fc_0", False), ("expnorm_fc_1", False), ("acts_cnn", True),
    ("standard_s_fc", False), ("standard_s_fc_nobias", False), ("standard_s_cnn", True),
]  # fmt: skip


@pytest.mark.parametrize("case, images", NT_CASES)
def test_matches_neural_tangents(case, images):
    net = _layer(json.loads(str(DATA[f"{case}_spec"])))
    x1, x2 = _inputs(images)
    for suffix, k in (("", net.kernel(x1, x2)), ("_self", net.kernel(x1))):
        for g in ("nngp", "ntk"):
            want = torch.tensor(DATA[f"{case}{suffix}_{g}"])
            torch.testing.assert_close(getattr(k, g), want, rtol=1e-11, atol=1e-13)


# --------------------------------------------------------------------------- width factor s


def test_consistent_width_factors_leave_the_kernel_unchanged():
    def net(s1, s2):
        return wl.Serial(
            wl.Dense(6, 1.4, 0.1, "standard", s=(1, s1)), wl.Erf(),
            wl.Dense(5, 1.1, 0.2, "standard", s=(s1, s2)), wl.ReLU(),
            wl.Dense(1, 0.9, 0.1, "standard", s=(s2, 1)),
        )  # fmt: skip

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    ref = net(1, 1).kernel(x)
    for s1, s2 in ((2, 3), (7, 1), (64, 5)):
        k = net(s1, s2).kernel(x)
        torch.testing.assert_close(k.nngp, ref.nngp, rtol=1e-13, atol=0)
        torch.testing.assert_close(k.ntk, ref.ntk, rtol=1e-13, atol=0)


def test_width_factor_builds_s_out_times_wider_layers_with_the_stated_init():
    net = wl.Serial(
        wl.Dense(30, 1.5, 0.3, "standard", s=(1, 40)), wl.ReLU(),
        wl.Dense(1, 1.0, None, "standard", s=(40, 1)),
    )  # fmt: skip
    model = net.build(10, width=1, seed=0, dtype=F64)
    first, last = model[0], model[2]
    assert first.weight.shape == (1200, 10) and last.weight.shape == (1, 1200)
    # std W_std / sqrt(fan_in / s_in): 1.5 / sqrt(10) and 1 / sqrt(30); forward 1 / sqrt(s_in)
    assert float(first.weight.detach().std()) == pytest.approx(1.5 / math.sqrt(10), rel=0.05)
    assert float(last.weight.detach().std()) == pytest.approx(1 / math.sqrt(30), rel=0.1)
    assert last.weight_multiplier == pytest.approx(1 / math.sqrt(40))
    assert first.weight_multiplier == 1.0


def test_width_factor_monte_carlo_at_the_stated_widths():
    # the NTK of out=4 units, realised by networks 4 * s wide: the limit s -> infinity
    net = wl.Serial(
        wl.Dense(4, 1.5, 0.2, "standard", s=(1, 128)), wl.ReLU(),
        wl.Dense(1, 1.2, 0.1, "standard", s=(128, 1)),
    )  # fmt: skip
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    k = net.kernel(x)
    mc = monte_carlo_kernel(net, x, n_samples=40, width=1, seed=3, dtype=F64)
    for g in ("nngp", "ntk"):
        assert_matches_monte_carlo(
            getattr(k, g), getattr(mc, g), getattr(mc, f"{g}_stderr"), mc.n_samples,
            width=512, finite_width_layers=1, name=g,
        )  # fmt: skip


def test_conv_width_factor_monte_carlo_at_the_stated_widths():
    """Conv takes ``s`` too (channels are its width): 4 channels realised 64 times wider."""
    net = wl.Serial(
        wl.Conv(4, 3, W_std=1.5, b_std=0.2, parametrization="standard", s=(1, 64)), wl.ReLU(),
        wl.Flatten(), wl.Dense(1, 1.2, 0.1, "standard", s=(64, 1)),
    )  # fmt: skip
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    k = net.kernel(x)
    mc = monte_carlo_kernel(net, x, n_samples=40, width=1, seed=3, dtype=F64)
    for g in ("nngp", "ntk"):
        assert_matches_monte_carlo(
            getattr(k, g), getattr(mc, g), getattr(mc, f"{g}_stderr"), mc.n_samples,
            width=256, finite_width_layers=1, name=g,
        )  # fmt: skip


# --------------------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize(
    "act, extra",
    [(wl.Gabor(), 0), (wl.ExpNormalized(1.5, -0.5), 1)],  # ExpNormalized divides by a norm
    ids=["gabor", "exp_normalized"],
)
def test_monte_carlo(act, extra):
    net = wl.Serial(wl.Dense(W_std=1.5, b_std=0.2), act, wl.Dense(1, W_std=1.2, b_std=0.1))
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    k = net.kernel(x)
    width = 1024
    mc = monte_carlo_kernel(net, x, n_samples=40, width=width, seed=5, dtype=F64)
    for g in ("nngp", "ntk"):
        assert_matches_monte_carlo(
            getattr(k, g), getattr(mc, g), getattr(mc, f"{g}_stderr"), mc.n_samples,
            width=width, finite_width_layers=count_finite_width_layers(net) + extra, name=g,
        )  # fmt: skip


def test_exp_normalized_on_images_monte_carlo():
    net = wl.Serial(
        wl.Conv(W_std=1.5, b_std=0.1), wl.ExpNormalized(1.0, -1.0), wl.GlobalAvgPool(),
        wl.Dense(1),
    )  # fmt: skip
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(6), dtype=F64)
    k = net.kernel(x, get="nngp")
    width = 256
    mc = monte_carlo_kernel(net, x, n_samples=30, width=width, seed=7, get=("nngp",), dtype=F64)
    assert_matches_monte_carlo(
        k, mc.nngp, mc.nngp_stderr, mc.n_samples, width=width,
        finite_width_layers=count_finite_width_layers(net) + 1,
    )  # fmt: skip
