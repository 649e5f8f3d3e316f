"""``widelimits limits plane|sweep`` and the sweep report (`widelimits.limits.report`)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from widelimits.cli import main
from widelimits.limits import REGIONS
from widelimits.limits.report import (
    DIVERGE_ABOVE,
    EVOLVES_BY,
    VANISH_BELOW,
    exponent_rows,
    properties_rows,
    properties_table,
)

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def _run(argv) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        status = main(argv)
    return status, buf.getvalue()


def test_limits_plane_writes_figure_and_prints_13_regions(tmp_path):
    status, out = _run(["limits", "plane", "--out", str(tmp_path)])
    assert status == 0
    assert (tmp_path / "plane.png").read_bytes()[:8] == PNG
    lines = out.splitlines()
    for region in REGIONS:
        assert any(
            line.split()[:1] == [str(region.index)] and region.name in line for line in lines
        )
    rows = [line for line in lines if line[:2].strip().isdigit()]
    assert len(rows) == 13
    ntk = next(line for line in rows if "NTK point" in line)
    assert "bounded  bounded" in ntk and "(-0.5, 0)" in ntk


def test_limits_sweep_quick_writes_report(tmp_path):
    pytest.importorskip("sklearn")
    status, out = _run(["limits", "sweep", "--quick", "--out", str(tmp_path), "--no-progress"])
    assert status == 0
    for name in ("sweep.png", "limits.png", "exponents.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    result = json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert set(result["exponents"]) == {"NTK", "MF", "sym-default", "IC-MF"}
    for row in exponent_rows(result):
        assert row in report
    ex = result["exponents"]["sym-default"]
    assert f"| sym-default | {ex['fitted']['logits_exponent']:.3f} | 0.000 |" in report
    assert f"{ex['fitted']['kernel_exponent']:.3f} | 0.500 | sym-default point |" in report
    assert "all scalings coincide at the reference width" in report
    assert len(result["properties"]) == 4
    # every scaling's width-128 network is the same default network
    first = [r["mean_abs_logit"] for r in result["runs"] if r["width"] == 128]
    assert all(f == pytest.approx(first[0]) for f in first)
    assert "sym-default" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scalings", "NTK", "bogus"], "invalid choice: 'bogus'"),
        (["--widths", "128", "0"], "must be at least 1"),
        (["--steps", "ten"], "expected a whole number"),
        (["--lr", "-1"], "positive"),
    ],
)
def test_limits_sweep_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["limits", "sweep", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_limits_sweep_reports_bad_n_train(tmp_path, capsys):
    pytest.importorskip("sklearn")
    argv = ["limits", "sweep", "--quick", "--n-train", "5000", "--out", str(tmp_path)]
    assert main([*argv, "--no-progress"]) == 2
    assert "n_train must be between 1 and" in capsys.readouterr().err


def _run_record(scaling, width, logit0, kernel0, kernel_last, steps=(0, 1, 10)):
    n = len(steps)
    return {
        "scaling": scaling,
        "width": width,
        "seed": 0,
        "steps": list(steps),
        "train_loss": [0.7] * n,
        "train_accuracy": [0.5] * n,
        "test_loss": [0.7] * n,
        "test_accuracy": [0.5] * n,
        "mean_abs_logit": [logit0] * n,
        "kernel": [[kernel0, 0.0]] * n,
        "kernel_total": [kernel0] * n,
        "kernel_ratio": [1.0] * (n - 1) + [kernel_last],
    }


def test_properties_table_thresholds_on_a_synthetic_result():
    """The words come from the ratios to the width-128 default network and the thresholds."""
    assert (VANISH_BELOW, DIVERGE_ABOVE, EVOLVES_BY) == (0.5, 2.0, 0.1)
    # (scaling, logits ratio, kernel ratio, kernel ratio at the last step)
    wide = {
        "NTK": (1.99, 0.51, 1.09),  # bounded, bounded, frozen
        "MF": (0.49, 1.0, 1.11),  # vanish, bounded, evolves
        "sym-default": (1.0, 2.01, 0.85),  # bounded, diverge, evolves (downwards)
        "muP": (2.5, 0.2, 1.0),  # diverge, vanish, frozen
    }
    runs = []
    for name, (lr_, kr, last) in wide.items():
        runs.append(_run_record(name, 128, 0.4, 3.0, 1.3))  # the default network
        runs.append(_run_record(name, 8192, 0.4 * lr_, 3.0 * kr, last))
    result = {
        "config": {"scalings": list(wide), "ref_width": 128, "hidden_layers": 1},
        "steps": [0, 1, 10],
        "runs": runs,
        "exponents": {
            name: {
                "fitted": {"logits_exponent": 0.01, "kernel_exponent": -0.02},
                "predicted": {
                    "logits_exponent": {"MF": -0.5}.get(name, 0.0),
                    "kernel_exponent": {"sym-default": 0.5}.get(name, 0.0),
                    "region": f"{name} region",
                },
            }
            for name in wide
        },
        "limits": {},
    }
    rows = {r["scaling"]: r for r in properties_table(result)}
    assert list(rows) == list(wide)
    words = {n: (r["logits"], r["kernel"], r["kernel_evolves"]) for n, r in rows.items()}
    assert words == {
        "NTK": ("bounded", "bounded", False),
        "MF": ("vanish", "bounded", True),
        "sym-default": ("bounded", "diverge", True),
        "muP": ("diverge", "vanish", False),
    }
    for r in rows.values():
        assert r["width"] == 8192 and r["baseline"] == "default (width 128)"
        assert r["feature_learning"] == r["kernel_evolves"]
        assert r["default_kernel_change"] == pytest.approx(0.3) and r["default_kernel_evolves"]
        assert r["logits_fitted_exponent"] == 0.01
    assert rows["NTK"]["logits_ratio"] == pytest.approx(1.99)
    assert rows["sym-default"]["kernel_change"] == pytest.approx(-0.15)
    assert [r["finite_width_like"] for r in rows.values()] == [False, False, False, False]
    # classify's words next to the measured ones
    assert rows["NTK"]["logits_predicted"] == "bounded"
    assert rows["MF"]["logits_predicted"] == "vanish"
    assert rows["sym-default"]["kernel_predicted"] == "diverge"
    assert rows["NTK"]["kernel_evolves_predicted"] is False
    assert rows["MF"]["kernel_evolves_predicted"] is True
    assert rows["MF"]["feature_learning_predicted"] is True
    assert rows["NTK"]["finite_width_like_predicted"] is False
    assert rows["MF"]["region"] == "MF region"


def test_properties_table_finite_width_like():
    runs = [_run_record("IC-MF", 128, 0.4, 3.0, 1.3), _run_record("IC-MF", 512, 0.5, 3.2, 1.2)]
    result = {
        "config": {"scalings": ["IC-MF"], "ref_width": 128},
        "steps": [0, 1, 10],
        "runs": runs,
        "exponents": {},
    }
    (row,) = properties_table(result)
    assert (row["logits"], row["kernel"], row["kernel_evolves"]) == ("bounded", "bounded", True)
    assert row["finite_width_like"] is True
    assert row["kernel_evolves_predicted"] is True  # IC-MF: mean-field dynamics


def test_properties_table_fixed_loss_and_disagreements():
    """The fixed-loss column reads the kernel at the first step whose training loss reaches the
    sweep's largest final loss; a measured word that differs from classify's is listed with
    classify's note, and agreeing rows list nothing."""
    runs = []
    for name, width, losses, ratios in (
        ("NTK", 128, [0.7, 0.5, 0.3], [1.0, 1.2, 1.4]),
        ("NTK", 8192, [0.7, 0.45, 0.35], [1.0, 1.01, 1.02]),
        ("sym-default", 128, [0.7, 0.5, 0.3], [1.0, 1.2, 1.4]),
        ("sym-default", 8192, [0.7, 0.2, 0.1], [1.0, 1.03, 1.05]),
    ):
        run = _run_record(name, width, 0.4, 3.0 * (8 if name != "NTK" and width > 128 else 1),
                          ratios[-1])  # fmt: skip
        run["train_loss"], run["kernel_ratio"] = losses, ratios
        runs.append(run)
    result = {
        "config": {"scalings": ["NTK", "sym-default"], "ref_width": 128, "hidden_layers": 1},
        "steps": [0, 1, 10],
        "runs": runs,
        "exponents": {},
    }
    rows = {r["scaling"]: r for r in properties_table(result)}
    assert rows["NTK"]["loss_target"] == pytest.approx(0.35)  # NTK's widest final loss
    assert rows["NTK"]["step_at_loss"] == 10 and rows["sym-default"]["step_at_loss"] == 1
    assert rows["sym-default"]["kernel_change_at_loss"] == pytest.approx(0.03)
    assert rows["NTK"]["default_kernel_change_at_loss"] == pytest.approx(0.4)
    assert rows["NTK"]["disagreements"] == []
    (text,) = rows["sym-default"]["disagreements"]
    assert text.startswith("sym-default, kernel evolves and feature learning (fixed steps): "
                           "measured no, predicted yes")  # fmt: skip
    assert "fixed training loss" in text  # classify's note
    assert rows["sym-default"]["kernel_evolves_at_loss_predicted"] is False
    lines = properties_rows(list(rows.values()))
    assert lines[1].endswith("see below |") and not lines[0].endswith("see below |")
