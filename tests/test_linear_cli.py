"""``widelimits linear`` and its report (`widelimits.linear.report`)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from widelimits.cli import LINEAR_QUICK, build_parser, main
from widelimits.linear.report import (
    linear_experiment,
    make_problem,
    plot_min_norm,
    plot_width_errors,
    slope_row,
    width_rows,
)

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def _run(argv) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        status = main(argv)
    return status, buf.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``widelimits linear --quick`` run: (result, out, stdout)."""
    out = tmp_path_factory.mktemp("linear")
    status, stdout = _run(["linear", "--quick", "--out", str(out), "--no-progress"])
    assert status == 0
    return json.loads((out / "results.json").read_text()), out, stdout


@pytest.fixture(scope="module")
def tiny_result():
    """A tiny experiment for the plotting tests (well under a second)."""
    return linear_experiment(q=1, d=4, k=1, n=2, widths=[16, 32], seeds=1, t_max=1.0,
                             time_points=9)  # fmt: skip


def test_quick_writes_three_files(quick_run):
    result, out, stdout = quick_run
    for name in ("linear.png", "results.json", "report.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "linear.png").read_bytes()[:8] == PNG
    assert str(out / "report.md") in stdout
    s = result["setup"]
    assert s["quick"] and s["widths"] == LINEAR_QUICK["widths"]
    assert (s["q"], s["d"], s["k"], s["n"]) == (1, 8, 2, 4)


def test_report_numbers_match_results(quick_run):
    result, out, stdout = quick_run
    report = (out / "report.md").read_text()
    we, mn, lim = result["width_errors"], result["min_norm"], result["limit"]
    for row in width_rows(result) + [slope_row(result)]:
        assert row in report
    assert f"**{we['slope']:.3f}** (expected -0.5)" in report
    assert f"**{mn['rate']:.3f}**" in report
    assert f"Chosen R = **{lim['R']}**, last relative change {lim['last_change']:.2e}" in report
    for r, c, _ in lim["history"]:
        assert f"| {r} | {c} |" in report
    law = result["first_layer_law"]
    assert f"**{law['cov_error']:.4f}**" in report
    assert f"**{law['in_span']['cov_error']:.4f}**" in report
    for row in result["tangent_kernel"]["rows"]:
        assert f"| {row['width']} | {row['rel_error']:.4f} |" in report
    # the printed summary
    assert f"{we['slope']:.3f}" in stdout and f"{mn['rate']:.3f}" in stdout
    assert f"R = {lim['R']}" in stdout
    # and the numbers themselves (measured, seed 0: slope -0.51, rate 3.4, R = 6)
    assert -0.8 < we["slope"] < -0.3
    assert mn["rate"] > 1 and mn["final_relative"] < 1e-3
    assert lim["R"] >= 3 and lim["last_change"] <= 1e-5
    assert lim["row_space_residual"] < 1e-8
    assert result["tangent_kernel"]["slope"] < -0.3


def test_plots_return_figures(tiny_result):
    from matplotlib.figure import Figure

    fig = plot_width_errors(tiny_result)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_yscale() == "log"
    fig = plot_min_norm(tiny_result)
    assert isinstance(fig, Figure) and fig.axes[0].get_yscale() == "log"
    # also from the dict loaded back from JSON
    assert isinstance(plot_min_norm(json.loads(json.dumps(tiny_result))), Figure)


def test_make_problem_is_seeded_and_well_conditioned():
    import numpy as np

    X, Y = make_problem(7, 2, 3, seed=5)
    X2, Y2 = make_problem(7, 2, 3, seed=5)
    assert X.shape == (7, 3) and Y.shape == (2, 3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(Y, Y2)
    np.testing.assert_allclose(X.T @ X / 3, np.eye(3), atol=1e-12)


def test_defaults():
    args = build_parser().parse_args(["linear"])
    assert args.out == "./widelimits-out/linear" and args.eta == 1.0 and args.seed == 0
    assert args.q is None and not args.quick  # filled from LINEAR_DEFAULTS


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--q", "-1"], "must be at least 0"),
        (["--d", "0"], "must be at least 1"),
        (["--widths", "64", "x"], "expected a whole number"),
        (["--t-max", "-2"], "positive"),
        (["--eta", "0"], "positive"),
        (["--widths", "64", "64"], "at least two distinct widths"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys, tmp_path):
    try:
        status = main(["linear", "--quick", "--no-progress", "--out", str(tmp_path), *argv])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()


def test_n_at_least_d_warns(capsys, tmp_path):
    argv = ["linear", "--no-progress", "--out", str(tmp_path), "--q", "0", "--d", "3", "--k",
            "1", "--n", "4", "--widths", "16", "32", "--seeds", "1", "--t-max", "1"]  # fmt: skip
    status, _ = _run(argv)
    assert status == 0
    err = capsys.readouterr().err
    assert "n = 4 >= d = 3" in err and "needs an underdetermined problem (n < d)" in err
    assert (tmp_path / "report.md").is_file()
