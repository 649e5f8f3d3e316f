"""Limit models (kernel dynamics, mean-field particles, IC-MF) and width sweeps."""

import numpy as np
import pytest
import torch

import widelimits as wl
from widelimits import finite
from widelimits.limits import Scaling
from widelimits.limits.models import (
    KernelDynamics,
    gp_draw,
    init_exponents,
    layer_ntks,
    mean_field_limit,
    tangent_kernel,
)
from widelimits.limits.sweep import (
    SweepConfig,
    load_binary_task,
    named_scaling,
    record_steps,
    width_sweep,
)
from widelimits.predict import gradient_descent_mse

NET = wl.Serial(wl.Dense(), wl.LeakyReLU(0.1), wl.Dense(1))


def _x(n=6, d=5, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_layer_ntks_sum_to_the_ntk():
    net = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), wl.ReLU(), wl.Dense(W_std=1.1), wl.Erf(),
                    wl.Dense(1, W_std=0.9, b_std=0.1))  # fmt: skip
    x = _x()
    torch.testing.assert_close(sum(layer_ntks(net, x)), net.kernel(x, get="ntk"))
    frozen = wl.Serial(wl.Dense(trainable=False), wl.ReLU(), wl.Dense(1))
    model = frozen.build(5, 32, seed=0)
    assert [p.requires_grad for p in model.parameters()] == [False, True]


@pytest.mark.parametrize("scaling", [Scaling.ntk(), Scaling.plane(-0.75, 0.25)], ids=str)
def test_tangent_kernel_matches_monte_carlo(scaling):
    """The analytic learning-rate-weighted tangent kernel, layer by layer, against the average
    of sum_l eta_l J_l J_l^T over 32 finite networks of width 1024."""
    x = _x()
    analytic = tangent_kernel(NET, scaling, 1024, x, lr=0.3, per_layer=True)
    mc = [0.0, 0.0]
    for seed in range(32):
        model = NET.build(5, 1024, parametrization=scaling, seed=seed, dtype=torch.float64)
        layers = [m for m in model if hasattr(m, "lr_scale")]
        for i, m in enumerate(layers):
            mc[i] = mc[i] + 0.3 * m.lr_scale * finite.empirical_ntk(model, x, params=[m]) / 32
    for a, b in zip(mc, analytic, strict=True):
        assert float((a - b).norm() / b.norm()) < 0.03


def test_kernel_dynamics_with_mse_is_the_closed_form_discrete_descent():
    x_tr, x_te = _x(8, seed=1), _x(3, seed=2)
    y = torch.sin(x_tr[:, 0])
    theta_all = NET.kernel(torch.cat([x_tr, x_te]), x_tr, get="ntk")
    lr = 0.7
    dyn = KernelDynamics(lr * theta_all, y, loss="mse")
    f0 = torch.zeros(11, dtype=torch.float64)
    traj = dyn.run(f0, 25, record=[25])
    predict = gradient_descent_mse(theta_all[:8], y[:, None], learning_rate=lr)
    zeros = torch.zeros(11, 1, dtype=torch.float64)
    f_tr, f_te = predict(25, zeros[:8], zeros[8:], theta_all[8:], discrete=True)
    torch.testing.assert_close(traj[25], torch.cat([f_tr, f_te])[:, 0])


def test_kernel_dynamics_with_a_callable_loss_and_a_gp_draw():
    """A callable loss equal to BCE gives BCE's trajectory; GP draws have the kernel as their
    covariance (10000 samples)."""
    x = _x(8, seed=4)
    theta = 0.5 * NET.kernel(x, get="ntk")
    y = (x[:, 0] > 0).double()
    f0 = gp_draw(NET.kernel(x, get="nngp"), seed=3)[0]
    bce = KernelDynamics(theta, y, loss="bce").run(f0, 20, [20])[20]
    custom = KernelDynamics(
        theta, y, loss=lambda f, t: torch.nn.functional.binary_cross_entropy_with_logits(
            f, t, reduction="none")
    ).run(f0, 20, [20])[20]  # fmt: skip
    torch.testing.assert_close(custom, bce)
    k = NET.kernel(x, get="nngp")
    samples = gp_draw(k, seed=0, n_samples=10000)
    # entries of a sample covariance have standard deviation <= sqrt(2 / n) max(k); 5 sigma
    assert float((samples.T @ samples / 10000 - k).abs().max()) < 5 * (2 / 10000) ** 0.5 * float(
        k.max()
    )


def test_mean_field_limit_starts_at_zero_and_wide_mf_nets_approach_it():
    x, y = _x(16, seed=3), (torch.sign(_x(16, seed=3)[:, 0]) + 1) / 2
    data = (x, y, x, y)
    limit = mean_field_limit(NET, 5, 2**14, seed=99, dtype=torch.float64)
    assert float(limit(x).abs().max()) < 1e-12  # exact up to the matmul's summation order
    from widelimits.limits.sweep import _train

    steps = [0, 10, 50]
    ref = _train(limit, data, 0.5, steps, x[:2])["logits"]
    gaps = []
    for width in (128, 512, 2048):
        gap = []
        for seed in range(3):
            model = NET.build(5, width, parametrization=Scaling.mean_field(), seed=seed,
                              dtype=torch.float64)  # fmt: skip
            gap.append(float((_train(model, data, 0.5, steps, x[:2])["logits"] - ref).abs().mean()))
        gaps.append(np.mean(gap))
    assert gaps[0] > gaps[1] > gaps[2], gaps
    slope = np.polyfit(np.log([128, 512, 2048]), np.log(gaps), 1)[0]
    assert -0.7 < slope < -0.3, (gaps, slope)


def test_record_steps_and_data():
    assert record_steps(1000, 10)[:2] == [0, 1] and record_steps(1000, 10)[-1] == 1000
    x_tr, y_tr, x_te, y_te = load_binary_task(512, seed=0)
    assert x_tr.shape == (512, 64) and len(x_te) == 1797 - 512
    assert set(y_tr.tolist()) == {0.0, 1.0}
    assert abs(float((x_tr**2).sum(1).mean() / 64) - 1.0) < 1e-5


@pytest.mark.slow
def test_small_width_sweep_measures_the_predicted_exponents():
    """Fitted init exponents of logits and kernel within +-0.1 of `classify`'s, and every
    limit model gets closer as the width grows."""
    cfg = SweepConfig(widths=(128, 512, 2048), seeds=2, steps=30, n_train=128, kernel_points=48,
                      records=4, limit_particles=4096, lr=0.5)  # fmt: skip
    res = width_sweep(cfg)
    for name, e in res["exponents"].items():
        for key in ("logits_exponent", "kernel_exponent"):
            assert abs(e["fitted"][key] - e["predicted"][key]) < 0.1, (name, e)
    assert set(res["limits"]) == {"NTK", "MF", "IC-MF"}
    for name, lim in res["limits"].items():
        final = [lim["distance"][str(w)][-1] for w in cfg.widths]
        assert final[0] > final[-1], (name, final)
    run = res["runs"][0]
    assert len(run["kernel"][0]) == 2 and run["kernel_ratio"][0] == 1.0


@pytest.mark.parametrize("hidden_layers", [1, 2])
def test_init_exponents_of_deeper_networks(hidden_layers):
    """Standard, NTK and muP networks at initialization (no training): the fitted logits
    exponent is `init_exponents`' within +-0.1; the fitted kernel exponent is the slope of the
    kernel model's expected Theta_eta over the same widths (the standard scaling's first layer
    adds a rho^-1 share that biases finite-range fits) within +-0.1, and the model's slope far
    out (rho 1e5 to 1e6) is `init_exponents`' asymptotic one."""
    scalings = ("standard", "NTK", "muP")
    widths = (128, 512, 2048)
    cfg = SweepConfig(scalings=scalings, widths=widths, seeds=8, steps=0, n_train=64,
                      kernel_points=64, hidden_layers=hidden_layers, limits=False)  # fmt: skip
    res = width_sweep(cfg)
    x = load_binary_task(64)[0][:64].double()
    net = wl.Serial(*[wl.Serial(wl.Dense(), wl.LeakyReLU(0.1)) for _ in range(hidden_layers)],
                    wl.Dense(1))  # fmt: skip
    for name in scalings:
        scaling = named_scaling(name, hidden_layers, 128)
        logits, kernel = init_exponents(scaling)
        fitted = res["exponents"][name]["fitted"]
        assert abs(fitted["logits_exponent"] - logits) < 0.1, (name, fitted)

        def expected(w, s=scaling):
            return float(tangent_kernel(net, s, w, x, lr=cfg.lr).diagonal().mean())

        model_slope = np.polyfit(np.log(widths), np.log([expected(w) for w in widths]), 1)[0]
        assert abs(fitted["kernel_exponent"] - model_slope) < 0.1, (name, fitted, model_slope)
        far = np.log(expected(128 * 10**6) / expected(128 * 10**5)) / np.log(10)
        assert abs(far - kernel) < 0.01, (name, far, kernel)


def test_sweep_errors():
    with pytest.raises(ValueError, match="unknown scaling"):
        width_sweep(SweepConfig(scalings=("lazy",), widths=(128,), steps=1, n_train=32))
    shared = wl.Dense()
    with pytest.raises(ValueError, match="one Dense object at several places"):
        layer_ntks(wl.Serial(shared, wl.ReLU(), shared), _x())
    with pytest.raises(ValueError, match="f0 must have shape"):
        KernelDynamics(torch.ones(3, 2), torch.zeros(2)).run(torch.zeros(2), 1)
    with pytest.raises(ValueError, match="y_train"):
        KernelDynamics(torch.ones(3, 2), torch.zeros(3))


def test_width_sweep_does_not_depend_on_threads():
    """The trainings spread over threads (each on one torch thread) give the same records
    bit for bit as one after the other; bad ``threads`` values are refused by name."""
    cfg = SweepConfig(scalings=("NTK", "MF"), widths=(32, 64), seeds=1, steps=3, n_train=32,
                      kernel_points=8, records=2, limits=False)  # fmt: skip
    one, two = width_sweep(cfg, threads=1), width_sweep(cfg, threads=2)
    assert one["runs"] == two["runs"]
    with pytest.raises(ValueError, match="threads"):
        width_sweep(cfg, threads=0)
