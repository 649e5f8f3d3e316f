"""Onboarding traps (issue 15): the command line explains itself, kernel solve takes --cross in
either orientation and says where its predictions went, default output folders per command.

References are independent of the code under test: argparse's own parser tree, a dense
in-memory kernel regression, and the files on disk.
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
import pytest
import torch

from widelimits import predict
from widelimits.cli import build_parser, main
from widelimits.layers.spec import parse_architecture

ARCH = "Dense(), ReLU(), Dense(1)"


# ------------------------------------------------------------------------ help everywhere
def _parsers(parser: argparse.ArgumentParser, path=("widelimits",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{' '.join(path)} {name} has no help line"
                yield from _parsers(sub, (*path, name))


PARSERS = list(_parsers(build_parser()))


@pytest.mark.parametrize("path, parser", PARSERS, ids=[" ".join(p) for p, _ in PARSERS])
def test_every_command_has_a_description_and_every_flag_a_help_line(path, parser):
    assert parser.description and len(parser.description) > 20, f"{path}: no description"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, (
            f"{' '.join(path)} {action.option_strings or action.dest} has no help line"
        )


def test_compute_without_arch_is_refused_by_the_parser(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    with pytest.raises(SystemExit) as exit_:
        main(["kernel", "compute", "--data", str(tmp_path / "x.npy"), "--out",
              str(tmp_path / "k.zarr")])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--arch" in err and "required" in err and "None" not in err


# --------------------------------------------------------------------- kernel solve --cross
@pytest.fixture
def stores(tmp_path):
    pytest.importorskip("zarr")
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((40, 5)), rng.standard_normal((7, 5))
    y = rng.standard_normal((40, 2))
    for name, a in (("x", x), ("xt", xt), ("y", y)):
        np.save(tmp_path / f"{name}.npy", a)
    common = ["--arch", ARCH, "--dtype", "float64", "--no-progress", "--tile", "16"]
    for out, data, data2 in (("k", "x", None), ("test_train", "xt", "x"),
                             ("train_test", "x", "xt")):  # fmt: skip
        more = [] if data2 is None else ["--data2", str(tmp_path / f"{data2}.npy")]
        assert main(["kernel", "compute", "--data", str(tmp_path / f"{data}.npy"), *more,
                     "--out", str(tmp_path / f"{out}.zarr"), *common]) == 0  # fmt: skip
    net = parse_architecture(ARCH)
    X, XT = torch.from_numpy(x), torch.from_numpy(xt)
    alpha = predict.cholesky_solve(net.kernel(X, get="ntk"), torch.from_numpy(y), diag_reg=1e-3)
    return tmp_path, (net.kernel(XT, X, get="ntk") @ alpha).numpy()


def _solve(t, cross, *more):
    return main(["kernel", "solve", "--store", str(t / "k.zarr"), "--targets", str(t / "y.npy"),
                 "--cross", str(t / cross), "--diag-reg", "1e-3", "--tol", "1e-12", "--rank",
                 "20", "--no-progress", *more])  # fmt: skip


@pytest.mark.parametrize("cross", ["test_train.zarr", "train_test.zarr"])
def test_solve_takes_the_cross_kernel_in_either_order(stores, cross, capsys):
    t, expected = stores
    assert _solve(t, cross, "--out", str(t / "pred.npy")) == 0
    np.testing.assert_allclose(np.load(t / "pred.npy"), expected, rtol=1e-7, atol=1e-9)
    err = capsys.readouterr().err
    assert ("transpose" in err) == (cross == "train_test.zarr")


def test_solve_without_out_says_the_predictions_were_not_saved(stores, capsys):
    t, _ = stores
    assert _solve(t, "test_train.zarr") == 0
    out = capsys.readouterr().out
    assert "no --out given" in out and "(7, 2)" in out and "not saved" in out


def test_solve_refuses_a_cross_kernel_of_other_points(stores, capsys):
    t, _ = stores
    # a cross store whose sides are neither the 40 training points: the 7 x 7 test kernel
    assert main(["kernel", "compute", "--data", str(t / "xt.npy"), "--out", str(t / "tt.zarr"),
                 "--arch", ARCH, "--dtype", "float64", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert _solve(t, "tt.zarr") == 2
    err = capsys.readouterr().err
    assert "--cross" in err and "(7, 7)" in err and "40 training points" in err


# ------------------------------------------------------------------- output folders
def test_each_command_has_its_own_default_folder():
    parse = build_parser().parse_args
    outs = {c: parse(c.split()).out for c in ("demo", "linear", "limits sweep", "limits plane")}
    assert len({outs["demo"], outs["linear"], outs["limits sweep"]}) == 3
    assert outs["limits plane"] == outs["limits sweep"]  # plane.png is not a sweep file
    assert all(o.startswith("./widelimits-out/") for o in outs.values())


TINY_LINEAR = ["linear", "--no-progress", "--q", "0", "--d", "4", "--k", "1", "--n", "2",
               "--widths", "8", "16", "--seeds", "1", "--t-max", "0.5"]  # fmt: skip


def test_linear_leaves_the_demo_report_and_says_when_it_replaces_its_own(
    tmp_path, monkeypatch, capsys
):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    demo_report = tmp_path / "widelimits-out" / "demo" / "report.md"
    demo_report.parent.mkdir(parents=True)
    demo_report.write_text("the demo's report\n")
    assert main(TINY_LINEAR) == 0
    report = tmp_path / "widelimits-out" / "linear" / "report.md"
    assert report.is_file() and demo_report.read_text() == "the demo's report\n"
    assert "replacing" not in capsys.readouterr().err  # nothing there before
    report.write_text("stale\n")
    assert main(TINY_LINEAR) == 0
    err = capsys.readouterr().err
    assert f"replacing the previous {report}" in err and "--out" in err
    assert report.read_text() != "stale\n"


# ------------------------------------------------------------------------- progress bars
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_are_auto_only_on_a_terminal(monkeypatch):
    from widelimits._progress import show_progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert [show_progress(p) for p in (None, True, False)] == [False, True, False]
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert [show_progress(p) for p in (None, True, False)] == [True, True, False]
    assert show_progress(None, default=False) is False  # a small job draws no bar


@pytest.fixture
def recorded_bars(monkeypatch):
    """Every bar widelimits makes, drawn as if stderr were a terminal."""
    import widelimits._progress as prog

    bars, make = [], prog.progress_bar
    monkeypatch.setattr(prog, "_watched", lambda: True)  # pytest swaps sys.stderr per phase

    def record(*args, **kwargs):
        bars.append(make(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(prog, "progress_bar", record)
    return bars


def test_training_curve_bar_reaches_its_total(recorded_bars):
    """The GD bar used to stop one short (280/281): the loop broke before its last count."""
    import widelimits as wl
    from widelimits.demo import gd_training_curve

    torch.manual_seed(0)
    x, xt = torch.randn(12, 4), torch.randn(5, 4)
    y, yt = torch.randn(12, 1), torch.randn(5, 1)
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(1))
    curve = gd_training_curve(net, 16, x, y, xt, yt, (yt[:, 0] > 0).long(), lr=0.1,
                              record=[0, 3, 7], seed=0, progress=True)  # fmt: skip
    assert curve["steps"] == [0, 3, 7]
    (bar,) = recorded_bars
    assert bar.total == 8 and bar.n == bar.total


TINY_SWEEP = ["limits", "sweep", "--scalings", "NTK", "MF", "IC-MF", "--widths", "16", "32",
              "--seeds", "1", "--steps", "4", "--n-train", "24",
              "--limit-particles", "64"]  # fmt: skip


def test_sweep_to_a_file_has_no_carriage_returns_but_announces_the_limit_phase(
    tmp_path, capsys
):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    assert main([*TINY_SWEEP, "--out", str(tmp_path)]) == 0  # stderr captured: not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "limit models of NTK, MF, IC-MF" in err and "6 trajectories" in err


def test_sweep_limit_phase_has_its_own_bar(tmp_path, recorded_bars):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from widelimits.cli import QUICK_SWEEP
    from widelimits.limits.sweep import SweepConfig, width_sweep

    sizes = dict(QUICK_SWEEP, scalings=["NTK", "MF", "IC-MF"], widths=[16, 32], steps=4,
                 n_train=24, limit_particles=64)  # fmt: skip
    width_sweep(SweepConfig(**sizes), progress=None)
    named = ("width sweep", "limit models")
    sweep, limits = (b for b in recorded_bars if getattr(b, "desc", "") in named)
    assert sweep.total == sweep.n == 6  # 3 scalings x 2 widths x 1 seed
    assert limits.total == limits.n == 6 and limits.desc == "limit models"


# ----------------------------------------------------------------------------- figures
def test_coinciding_curves_are_found():
    from widelimits.linear.report import coincides_with

    a = np.array([1.0, 2.0, 4.0])
    cols = np.stack([a, 2 * a, a * (1 + 1e-4), 2 * a * (1 - 1e-4), a * 1.05], axis=1)
    assert coincides_with(cols) == [None, None, 0, 1, None]


def test_linear_figure_says_which_curves_coincide(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import json

    from widelimits.linear.report import plot_linear

    monkeypatch.chdir(tmp_path)
    assert main(TINY_LINEAR) == 0
    result = json.loads((tmp_path / "widelimits-out/linear/results.json").read_text())
    we = result["width_errors"]
    for key in ("mean", "scaled"):  # make the last time repeat the second exactly
        we[key] = [[*row[:-1], row[1]] for row in we[key]]
    fig = plot_linear(result)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    times = we["times"]
    assert labels[-1] == f"t = {times[-1]:g}, same as t = {times[1]:g}"
    assert fig.axes[0].get_legend().get_title().get_text().startswith("'same as'")
    markers = {line.get_marker() for line in fig.axes[0].get_lines()}
    assert len(markers) == len(times)  # each time its own marker


def test_map_of_limits_figure_has_three_titled_panels(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from widelimits.cli import QUICK_SWEEP
    from widelimits.limits.report import MAP_PANELS, plot_sweep
    from widelimits.limits.sweep import SweepConfig, width_sweep

    sizes = dict(QUICK_SWEEP, scalings=["NTK", "MF"], widths=[16, 32], steps=4, n_train=24,
                 limits=False)  # fmt: skip
    result = width_sweep(SweepConfig(**sizes))
    fig = plot_sweep(result, tmp_path / "limits.png", panels=MAP_PANELS)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and titles[0].startswith("mean |logit|") and "\n" in titles[0]
    assert "one seed" in fig._suptitle.get_text()
    assert len(plot_sweep(result).axes) == 6  # the sweep command's full grid is unchanged
    with pytest.raises(ValueError, match="panels must be among"):
        plot_sweep(result, panels=["loss"])
