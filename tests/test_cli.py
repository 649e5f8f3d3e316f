"""The ``widelimits`` command line and the digits demo (quick mode)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import widelimits as wl
from widelimits.cli import build_parser, main
from widelimits.demo import (
    DemoConfig,
    fit_power_law,
    log_spaced_steps,
    make_network,
    stable_learning_rate,
)

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One quick demo run through ``main``, shared by the tests below: (results, out, stdout)."""
    import io
    from contextlib import redirect_stdout

    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with redirect_stdout(buf):
        status = main(["demo", "--quick", "--out", str(out), "--seed", "0", "--no-progress"])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    return results, out, buf.getvalue()


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"widelimits {wl.__version__}"


def test_version_via_module_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "widelimits.cli", "--version"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == f"widelimits {wl.__version__}"


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_demo_defaults():
    args = build_parser().parse_args(["demo"])
    assert args.out == "./widelimits-out/demo" and args.seed == 0 and not args.quick


def test_demo_writes_files(quick_demo):
    results, out, stdout = quick_demo
    for name in ("demo.png", "limits.png", "linear.png", "report.md", "results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    for name in ("demo.png", "limits.png", "linear.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["files"]["limits_figure"] == str(out / "limits.png")
    assert results["files"]["linear_figure"] == str(out / "linear.png")
    assert str(out) in stdout


def test_demo_kernel_accuracy_well_above_chance(quick_demo):
    results, _, _ = quick_demo
    # chance is 10%; the FC-NNGP reference on a half/half split is about 98.5%
    assert results["nngp_accuracy"] > 0.95
    assert results["ntk_accuracy"] > 0.95
    assert results["ntk_gd_accuracy"] > 0.9
    # even the quick, briefly trained finite networks learn the task
    assert all(r["accuracy"] > 0.85 for r in results["finite"])


def test_demo_ntk_error_falls_with_width(quick_demo):
    results, _, _ = quick_demo
    rows = results["ntk_error"]["rows"]
    means = [r["mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    assert means[-1] < 0.6 * means[0]
    assert -0.8 < results["ntk_error"]["slope"] < -0.3  # theory: -1/2


def test_report_contains_the_numbers(quick_demo):
    results, out, stdout = quick_demo
    report = (out / "report.md").read_text()
    for key in ("nngp_accuracy", "ntk_accuracy", "ntk_gd_accuracy"):
        pct = f"{100 * results[key]:.2f}%"
        assert pct in report and pct in stdout
    for r in results["finite"]:
        assert f"| {r['width']} | {100 * r['accuracy']:.2f}% |" in report
    for r in results["ntk_error"]["rows"]:
        assert f"| {r['width']} | {r['mean']:.4f} |" in report
    assert f"{results['ntk_error']['slope']:.3f}" in report


def test_stable_learning_rate_is_a_fraction_of_the_edge():
    """lr = fraction x 2 Y.size / lambda_max; at the edge, 1 - eta' lambda_max = -1."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    k = make_network(DemoConfig()).kernel(x, get="ntk")
    lr = stable_learning_rate(k, 3, 1.0)
    lam_max = float(torch.linalg.eigvalsh(k)[-1])
    assert 1 - lr / (20 * 3) * lam_max == pytest.approx(-1.0)
    assert stable_learning_rate(k, 3, 0.5) == pytest.approx(lr / 2)


def test_log_spaced_steps():
    steps = log_spaced_steps(280, 16)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 280
    assert steps == sorted(set(steps)) and 12 <= len(steps) <= 17
    assert log_spaced_steps(3, 16) == [0, 1, 2, 3]


def test_demo_uncertainty(quick_demo):
    """t = inf predictive stds (NTK ensemble, NNGP posterior).

    These are closed-form float64 computations on the fixed seed-0 split, identical in quick
    and default mode (the kernels do not depend on the sizes that --quick changes), so the
    measured ordering is deterministic. Measured: mean std on errors / on correct predictions
    = 1.34 (NTK, 10 errors) and 1.27 (NNGP, 8 errors); the highest-std fifth of the test set
    has 96-97% accuracy against 100% for the lowest-std fifth.
    """
    results, _, _ = quick_demo
    unc = results["uncertainty"]
    assert unc["ntk_ensemble"]["accuracy"] == results["ntk_accuracy"]
    assert unc["nngp_posterior"]["accuracy"] == results["nngp_accuracy"]
    # the ensemble at t = inf is the same distribution as gp_inference(get="ntk")
    assert unc["ensemble_vs_gp_inference"]["mean_max_abs_diff"] < 1e-8
    assert unc["ensemble_vs_gp_inference"]["cov_max_rel_diff"] < 1e-8
    for key in ("ntk_ensemble", "nngp_posterior"):
        u = unc[key]
        assert u["min_std"] > 0
        assert u["n_incorrect"] >= 3  # enough errors for the comparison to mean something
        assert u["mean_std_incorrect"] > 1.15 * u["mean_std_correct"]
        bins = u["bins"]
        assert sum(b["count"] for b in bins) == results["setup"]["n_test"]
        assert [b["mean_std"] for b in bins] == sorted(b["mean_std"] for b in bins)
        assert bins[-1]["accuracy"] < bins[0]["accuracy"]


def test_demo_training_curve_tracks_infinite_width(quick_demo):
    """Full-batch GD of the width-256 net against the closed-form infinite-width curve.

    Both start from the same initial outputs, so they agree at step 0 up to float32 rounding.
    Measured with seed 0 in quick mode: the largest relative test-loss gap over the recorded
    steps is 0.147 (the finite net ends slightly lower); asserted below 0.3. The test loss falls
    by a factor of about 7 over the 112 steps, so the tolerance still separates a matching curve
    from a wrong one (e.g. the f0 = 0 ensemble mean starts 11% lower at step 0).
    """
    results, _, _ = quick_demo
    curve = results["training_curve"]
    fin, inf, ens = curve["finite"], curve["infinite_same_f0"], curve["infinite_ensemble_mean"]
    assert curve["optimizer"] == "full-batch gradient descent"
    assert fin["steps"] == inf["steps"] == ens["steps"]
    assert fin["steps"][0] == 0 and fin["steps"][-1] == results["setup"]["steps"]
    assert not fin["diverged"]
    for key in ("train_loss", "test_loss"):
        assert fin[key][0] == pytest.approx(inf[key][0], rel=1e-5)
        assert fin[key][-1] < 0.3 * fin[key][0]  # it trains
        gaps = [abs(a - b) / b for a, b in zip(fin[key], inf[key], strict=True)]
        assert max(gaps) < 0.35  # measured 0.21 (train) and 0.15 (test)
    assert curve["max_rel_test_loss_gap"] < 0.3
    assert abs(fin["test_accuracy"][-1] - inf["test_accuracy"][-1]) < 0.02
    # the infinite-width loss decreases monotonically under stable GD
    assert inf["train_loss"] == sorted(inf["train_loss"], reverse=True)


def test_report_has_new_sections(quick_demo):
    results, out, stdout = quick_demo
    report = (out / "report.md").read_text()
    assert "## Predictions with uncertainty (t = inf)" in report
    assert "## Training curve: finite network vs infinite width" in report
    assert "full-batch gradient descent" in report
    u = results["uncertainty"]["ntk_ensemble"]
    for text in (f"{u['mean_std_correct']:.4f}", f"{u['mean_std_incorrect']:.4f}"):
        assert text in report and text in stdout
    c = results["training_curve"]
    assert (
        f"{c['max_rel_test_loss_gap']:.3f}" in report
        and f"{c['max_rel_test_loss_gap']:.3f}" in stdout
    )


def test_fit_power_law_recovers_exponent():
    widths = [64, 256, 1024]
    slope, c = fit_power_law(widths, [3.0 * w**-0.5 for w in widths])
    assert slope == pytest.approx(-0.5) and c == pytest.approx(3.0)


def test_demo_map_of_limits(quick_demo):
    """The small width sweep: its tables in report.md match results.json."""
    from widelimits.limits.report import exponent_rows, properties_rows

    results, out, stdout = quick_demo
    sweep = results["map_of_limits"]
    report = (out / "report.md").read_text()
    assert "## The map of limits" in report and "![map of limits](limits.png)" in report
    assert sweep["config"]["scalings"] == ["NTK", "MF", "sym-default", "IC-MF"]
    assert set(sweep["exponents"]) == set(sweep["config"]["scalings"])
    for row in exponent_rows(sweep) + properties_rows(sweep["properties"]):
        assert row in report
    ex = sweep["exponents"]["sym-default"]
    assert f"| {ex['fitted']['kernel_exponent']:.3f} | 0.500 | sym-default point |" in report
    assert ex["fitted"]["kernel_exponent"] == pytest.approx(0.5, abs=0.2)  # measured 0.51
    assert f"{sweep['exponents']['NTK']['fitted']['logits_exponent']:+.2f}" in stdout
    assert results["timings"]["map of limits"] > 0
    # all scalings coincide at the reference width: the same default network
    first = [r["test_loss"] for r in sweep["runs"] if r["width"] == 128]
    assert all(f == pytest.approx(first[0]) for f in first)


def test_demo_deep_linear(quick_demo):
    """The deep-linear-network section: its numbers in report.md match results.json."""
    from widelimits.linear.report import slope_row, width_rows

    results, out, stdout = quick_demo
    lin = results["linear"]
    report = (out / "report.md").read_text()
    assert "## Deep linear networks" in report and "![deep linear networks](linear.png)" in report
    # the last section of the report
    assert report.index("## Deep linear networks") > report.index("## Timings")
    setup = lin["setup"]
    assert (setup["q"], setup["d"], setup["k"], setup["n"]) == (1, 6, 2, 3)
    assert setup["widths"] == [32, 64, 128, 256] and len(setup["seeds"]) == 2
    for row in width_rows(lin) + [slope_row(lin)]:
        assert row in report
    we, mn, lim = lin["width_errors"], lin["min_norm"], lin["limit"]
    assert f"**{we['slope']:.3f}** (expected -0.5)" in report
    assert f"**{mn['rate']:.3f}**" in report and f"Chosen R = **{lim['R']}**" in report
    assert f"width exponent {we['slope']:.3f}" in stdout and f"R = {lim['R']}" in stdout
    # measured (seed 0, quick): slope -0.64, rate 4.1, R = 6
    assert -0.9 < we["slope"] < -0.3
    assert mn["rate"] > 1 and mn["final_relative"] < 1e-3
    assert lim["row_space_residual"] < 1e-8
    assert results["timings"]["deep linear networks"] > 0
