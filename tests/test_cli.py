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
    gradient_descent_predictions,
    kernel_regression,
    layerwise_empirical_ntk,
    make_network,
)
from widelimits.finite import empirical_ntk

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
    assert args.out == "./widelimits-out" and args.seed == 0 and not args.quick


def test_demo_writes_files(quick_demo):
    results, out, stdout = quick_demo
    for name in ("demo.png", "report.md", "results.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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


def test_layerwise_ntk_matches_jacobian_ntk():
    """The per-layer NTK formula used by the demo equals the torch.func Jacobian NTK."""
    net = make_network(DemoConfig())
    x = torch.randn(12, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = net.build(7, 24, seed=3, dtype=torch.float64)
    torch.testing.assert_close(layerwise_empirical_ntk(model, x), empirical_ntk(model, x))
    std = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2, parametrization="standard"), wl.ReLU(),
                    wl.Dense(3, W_std=0.7, parametrization="standard"))  # fmt: skip
    model = std.build(7, 16, seed=1, dtype=torch.float64)
    torch.testing.assert_close(layerwise_empirical_ntk(model, x), empirical_ntk(model, x))


def test_gradient_descent_predictions_limits():
    """Zero steps predict zero; many steps converge to the ridgeless kernel regression."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    k = make_network(DemoConfig()).kernel(x, get="ntk")
    y = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    lr = y.numel() / float(torch.linalg.eigvalsh(k)[-1])
    assert gradient_descent_predictions(k, k, y, lr, 0).abs().max() == 0
    long = gradient_descent_predictions(k, k, y, lr, 10**7)
    torch.testing.assert_close(long, kernel_regression(k, k, y, ridge=1e-12), atol=1e-5, rtol=0)


def test_fit_power_law_recovers_exponent():
    widths = [64, 256, 1024]
    slope, c = fit_power_law(widths, [3.0 * w**-0.5 for w in widths])
    assert slope == pytest.approx(-0.5) and c == pytest.approx(3.0)
