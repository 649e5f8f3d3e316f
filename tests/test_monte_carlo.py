"""The heavier Monte Carlo checks: analytic kernels against averages over many finite networks
built from the same description, the convergence of a single network's empirical NTK with width,
and checks of the tolerance rule itself (its quantiles, its finite-width bias allowance, and its
power to reject wrong kernels).  Tolerances: `widelimits.testing` module docstring.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

import widelimits as wl
from widelimits.finite import empirical_ntk, monte_carlo_kernel, relative_error
from widelimits.testing import (
    BIAS_COEFFICIENT,
    KernelContract,
    assert_matches_monte_carlo,
    count_finite_width_layers,
    student_t_quantile,
)


def _inputs():
    return KernelContract(lambda: wl.Dense(1)).inputs()  # the contract's awkward inputs


def _deep(out=1):
    return wl.Serial(
        wl.Dense(W_std=1.4, b_std=0.1),
        wl.ReLU(),
        wl.Dense(W_std=1.6, b_std=0.2),
        wl.Erf(),
        wl.Dense(W_std=1.3),
        wl.LeakyReLU(0.2),
        wl.Dense(out, W_std=1.2, b_std=0.1),
    )


def _one_hidden(out=1, w_out=1.2, act=None):
    return wl.Serial(
        wl.Dense(W_std=1.5, b_std=0.2), act or wl.ReLU(), wl.Dense(out, W_std=w_out, b_std=0.1)
    )


def _variances(net, x1, x2, get):
    return (net.kernel(x1, get=get, diagonal=True), net.kernel(x2, get=get, diagonal=True))


# ---------------------------------------------------------------------------------------------
# The tolerance rule


def test_student_t_quantile_normal_limit():
    assert student_t_quantile(0.025, math.inf) == pytest.approx(1.959963984540054, rel=1e-10)
    assert student_t_quantile(0.025, 1e7) == pytest.approx(1.959963984540054, rel=1e-6)
    with pytest.raises(ValueError):
        student_t_quantile(0.6, 3)


def test_count_finite_width_layers():
    assert count_finite_width_layers(wl.Dense(1)) == 0
    assert count_finite_width_layers(_one_hidden()) == 1
    assert count_finite_width_layers(_deep()) == 3
    net = wl.Serial(wl.Dense(), wl.LayerNorm(), wl.Residual(wl.ReLU(), wl.Dense()), wl.Dense(1))
    assert count_finite_width_layers(net) == 3


def test_monte_carlo_rejects_wrong_kernels():
    """The checks have power: a 5% error in one W_std (10% in the kernel), a LeakyReLU slope of
    0.15 in place of 0, or a Dropout missing from the analytic side all fail the rule that the
    correct kernels pass (same Monte Carlo sample)."""
    x1, _ = _inputs()
    p = 0.2
    truth = wl.Serial(
        wl.Dense(W_std=1.5, b_std=0.2), wl.ReLU(), wl.Dropout(p), wl.Dense(1, W_std=1.2)
    )
    wrong = {
        "W_std": wl.Serial(
            wl.Dense(W_std=1.5, b_std=0.2), wl.ReLU(), wl.Dropout(p), wl.Dense(1, W_std=1.26)
        ),
        "activation": wl.Serial(
            wl.Dense(W_std=1.5, b_std=0.2),
            wl.LeakyReLU(0.15),
            wl.Dropout(p),
            wl.Dense(1, W_std=1.2),
        ),
        "no dropout": wl.Serial(wl.Dense(W_std=1.5, b_std=0.2), wl.ReLU(), wl.Dense(1, W_std=1.2)),
    }
    nngp = monte_carlo_kernel(
        wl.Serial(*truth.layers[:-1], wl.Dense(128, W_std=1.2)), x1, width=256, n_samples=500,
        get=("nngp",), seed=11,
    )  # fmt: skip
    ntk = monte_carlo_kernel(truth, x1, width=2048, n_samples=64, get=("ntk",), seed=12)
    rule = {"finite_width_layers": 1}
    assert_matches_monte_carlo(
        truth.kernel(x1, get="nngp"), nngp.nngp, nngp.nngp_stderr, 500, width=256, **rule
    )
    assert_matches_monte_carlo(
        truth.kernel(x1, get="ntk"), ntk.ntk, ntk.ntk_stderr, 64, width=2048, **rule
    )
    for net in wrong.values():
        with pytest.raises(AssertionError, match="differs from its Monte Carlo"):
            assert_matches_monte_carlo(
                net.kernel(x1, get="nngp"), nngp.nngp, nngp.nngp_stderr, 500, width=256, **rule
            )
        with pytest.raises(AssertionError, match="differs from its Monte Carlo"):
            assert_matches_monte_carlo(
                net.kernel(x1, get="ntk"), ntk.ntk, ntk.ntk_stderr, 64, width=2048, **rule
            )


@pytest.mark.slow
def test_finite_width_bias_within_allowance():
    """At width 16 the O(1/width) bias dominates the Monte Carlo error of a 3-hidden-layer net:
    the allowance c * L * scale / width (c = BIAS_COEFFICIENT, derived in widelimits.testing)
    must still cover it, with 4000 networks (NNGP) and 600 (NTK) making the standard error small.
    Were c too small, this is where it would show."""
    x1, _ = _inputs()
    width, layers = 16, count_finite_width_layers(_deep())
    nngp = monte_carlo_kernel(_deep(64), x1, width=width, n_samples=4000, get=("nngp",), seed=3)
    ntk = monte_carlo_kernel(_deep(1), x1, width=width, n_samples=600, get=("ntk",), seed=4)
    rule = {"width": width, "finite_width_layers": layers}
    s1 = assert_matches_monte_carlo(
        _deep().kernel(x1, get="nngp"), nngp.nngp, nngp.nngp_stderr, 4000, **rule, name="NNGP"
    )
    s2 = assert_matches_monte_carlo(
        _deep().kernel(x1, get="ntk"), ntk.ntk, ntk.ntk_stderr, 600, **rule, name="NTK"
    )
    # the allowance is needed at this width: the NNGP bias is many standard errors (~7% of
    # the kernel's scale, i.e. ~0.4 * L * scale / width: c = 2 has a factor ~5 of margin)
    assert s1["max_standardized_error"] > s1["quantile"]
    assert s1["max_relative_error"] < BIAS_COEFFICIENT * layers / width
    assert s2["max_relative_error"] < BIAS_COEFFICIENT * layers / width


# ---------------------------------------------------------------------------------------------
# Deep networks against many finite networks


@pytest.mark.slow
def test_nngp_deep_vs_2000_networks():
    """k(x, x) and k(x1, x2) of a 3-hidden-layer net vs the output covariance of 2000 networks
    (width 256, 128 outputs each)."""
    x1, x2 = _inputs()
    net = _deep()
    layers = count_finite_width_layers(net)
    mc = monte_carlo_kernel(_deep(128), x1, width=256, n_samples=2000, get=("nngp",), seed=21)
    s = assert_matches_monte_carlo(
        net.kernel(x1, get="nngp"), mc.nngp, mc.nngp_stderr, 2000, width=256,
        finite_width_layers=layers, name="NNGP k(x, x)",
    )  # fmt: skip
    assert s["max_relative_tolerance"] < 0.06  # the check is sharp, not vacuous
    mc = monte_carlo_kernel(_deep(128), x1, x2, width=256, n_samples=1000, get=("nngp",), seed=22)
    assert_matches_monte_carlo(
        net.kernel(x1, x2, get="nngp"), mc.nngp, mc.nngp_stderr, 1000, width=256,
        finite_width_layers=layers, variances=_variances(net, x1, x2, "nngp"),
        name="NNGP k(x1, x2)",
    )  # fmt: skip


@pytest.mark.slow
def test_ntk_deep_vs_empirical():
    """NTK of a 3-hidden-layer net vs the empirical NTK averaged over 48 networks of width 512.

    For a fixed cost many narrower nets beat few wider ones: the variance of one empirical NTK
    falls like 1/width while its cost (the width x width Jacobian) grows like width^2, and the
    t quantile of few samples is large (8.4 for 8 nets, 4.3 for 64); 512 keeps the O(1/width)
    bias (~1%) well under the standard-error term."""
    x1, x2 = _inputs()
    net = _deep()
    layers = count_finite_width_layers(net)
    mc = monte_carlo_kernel(net, x1, width=512, n_samples=48, get=("ntk",), seed=31)
    s = assert_matches_monte_carlo(
        net.kernel(x1, get="ntk"), mc.ntk, mc.ntk_stderr, 48, width=512,
        finite_width_layers=layers, name="NTK k(x, x)",
    )  # fmt: skip
    assert s["max_relative_tolerance"] < 0.15
    mc = monte_carlo_kernel(net, x1, x2, width=512, n_samples=24, get=("ntk",), seed=32)
    assert_matches_monte_carlo(
        net.kernel(x1, x2, get="ntk"), mc.ntk, mc.ntk_stderr, 24, width=512,
        finite_width_layers=layers, variances=_variances(net, x1, x2, "ntk"),
        name="NTK k(x1, x2)",
    )  # fmt: skip


def test_dropout_cross_kernel_uses_independent_masks():
    """k(x1, x2) with Dropout: x1 and x2 go through separate forward passes (independent masks),
    even where a row of x2 equals a row of x1, and the analytic kernel applies no 1/(1-p) there."""
    x1, x2 = _inputs()
    net = wl.Serial(wl.Dense(W_std=1.5, b_std=0.2), wl.ReLU(), wl.Dropout(0.4), wl.Dense(1))
    readout = wl.Serial(*net.layers[:-1], wl.Dense(128))
    mc = monte_carlo_kernel(readout, x1, x2, width=256, n_samples=500, get=("nngp",), seed=41)
    assert_matches_monte_carlo(
        net.kernel(x1, x2, get="nngp"), mc.nngp, mc.nngp_stderr, 500, width=256,
        finite_width_layers=1, variances=_variances(net, x1, x2, "nngp"),
    )  # fmt: skip
    mc = monte_carlo_kernel(net, x1, x2, width=2048, n_samples=32, get=("ntk",), seed=42)
    assert_matches_monte_carlo(
        net.kernel(x1, x2, get="ntk"), mc.ntk, mc.ntk_stderr, 32, width=2048,
        finite_width_layers=1, variances=_variances(net, x1, x2, "ntk"),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Convergence with width


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["structured", "jacobian"])
def test_empirical_ntk_converges_with_width(implementation):
    """The relative (Frobenius) error of one network's empirical NTK to the analytic NTK falls
    with the width like width^(-1/2) (fluctuations; the O(1/width) bias falls faster): averaged
    over 16 seeds (one network's error has a broad distribution), the least-squares log-log slope
    over widths 64 ... 1024 (five widths) is near -1/2 (-0.41 to -0.58 over other seed sets)."""
    x1, _ = _inputs()
    net = wl.Serial(
        wl.Dense(W_std=1.4, b_std=0.1), wl.ReLU(), wl.Dense(W_std=1.4, b_std=0.1), wl.Erf(),
        wl.Dense(1, W_std=1.2),
    )  # fmt: skip
    analytic = net.kernel(x1, get="ntk")
    widths, seeds = [64, 128, 256, 512, 1024], range(16)
    errors = []
    for width in widths:
        errs = [
            relative_error(
                empirical_ntk(
                    net.build(x1.shape[1], width, seed=s, dtype=torch.float64),
                    x1,
                    implementation=implementation,
                ),
                analytic,
            )
            for s in seeds
        ]
        errors.append(sum(errs) / len(errs))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.65 < slope < -0.35, (errors, slope)
    assert errors[-1] < 0.1, errors


@pytest.mark.slow
def test_single_network_output_covariance_converges_with_width():
    """With as many outputs as hidden units, one network's f f^T / outputs averages over the
    outputs and converges to the NNGP (relative error ~ width^(-1/2))."""
    x1, _ = _inputs()
    analytic = _one_hidden().kernel(x1, get="nngp")
    widths, seeds = [64, 256, 1024], range(16)
    errors = []
    for width in widths:
        errs = []
        for s in seeds:
            model = _one_hidden(out=width).build(x1.shape[1], width, seed=s, dtype=torch.float64)
            with torch.no_grad():
                f = model(x1)
            errs.append(relative_error(f @ f.T / f.shape[1], analytic))
        errors.append(sum(errs) / len(errs))
    assert errors[0] > errors[1] > errors[2], errors
    slope = math.log(errors[2] / errors[0]) / math.log(widths[2] / widths[0])
    assert -0.8 < slope < -0.3, (errors, slope)


# --- samples on several threads -----------------------------------------------------------------


def _same(a, b) -> bool:
    return all(
        (x is None and y is None) or torch.equal(x, y)
        for x, y in ((a.nngp, b.nngp), (a.ntk, b.ntk), (a.nngp_stderr, b.nngp_stderr),
                     (a.ntk_stderr, b.ntk_stderr))
    ) and a.n_samples == b.n_samples  # fmt: skip


def _global_rng_factory(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # the usual way to seed a model: torch's global generator
    time.sleep(0.005)  # two such factories run at once would interleave their draws here
    return torch.nn.Sequential(
        torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)
    ).double()


@pytest.mark.parametrize(
    "net, width",
    [
        pytest.param(_deep(), 64, id="described"),
        pytest.param(_global_rng_factory, None, id="factory-global-rng"),
        pytest.param(wl.Serial(wl.Dense(), wl.ReLU(), wl.Dropout(0.3), wl.Dense(1)), 32,
                     id="dropout"),
    ],
)  # fmt: skip
def test_thread_count_never_changes_the_estimates(net, width):
    """Samples run several at once, each on one torch thread; the networks are built in seed
    order in the caller's thread (a factory may seed torch's global generator), and networks
    drawing random numbers as they run go one at a time: the same bits on 1, 2 and 3 threads,
    at every step of the running estimate."""
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    runs = {}
    for t in (1, 2, 3):
        torch.manual_seed(11)  # Dropout's masks come from torch's global generator
        runs[t] = list(wl.finite.monte_carlo_kernels(net, x, n_samples=5, width=width, threads=t))
    assert [k.n_samples for k in runs[1]] == [2, 3, 4, 5]
    for t in (2, 3):
        assert all(_same(a, b) for a, b in zip(runs[1], runs[t], strict=True))


def test_a_running_estimate_can_be_stopped_early():
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    estimates = wl.finite.monte_carlo_kernels(_deep(), x, n_samples=50, width=16, threads=2)
    first = next(estimates)
    estimates.close()
    assert first.n_samples == 2 and torch.isfinite(first.ntk).all()


@pytest.mark.parametrize("threads, error", [(0, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_threads_are_refused(threads, error):
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(error, match="threads"):
        monte_carlo_kernel(_deep(), x, n_samples=3, width=8, threads=threads)
