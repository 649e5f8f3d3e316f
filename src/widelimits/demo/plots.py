"""The ``demo.png`` figure of the ``widelimits demo`` (matplotlib, the ``demo`` extra)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def plot_results(results: dict, path: Path) -> None:
    """Four panels: test accuracy vs width (kernel accuracies as horizontal lines); NTK relative
    error vs width (log-log, fitted power law); the full-batch GD training curve of a finite net
    against the infinite-width prediction (log step axis); accuracy by predictive-std bin."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 8.6), layout="constrained")
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)

    widths = [r["width"] for r in results["finite"]]
    accs = [100 * r["accuracy"] for r in results["finite"]]
    ax1.plot(widths, accs, "o-", color="k", label="finite nets, SGD")
    for key, label, style in (
        ("nngp_accuracy", "NNGP regression", ("tab:blue", "-")),
        ("ntk_accuracy", "NTK regression", ("tab:orange", "-")),
        ("ntk_gd_accuracy", "NTK, same GD steps as SGD", ("tab:orange", ":")),
    ):
        ax1.axhline(100 * results[key], color=style[0], ls=style[1], label=label)
    n_test = results["setup"]["n_test"]
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(widths, [str(w) for w in widths])
    ax1.set_xlabel("hidden width")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title(f"digits: {n_test} test images (1 image = {100 / n_test:.2f} pt)")
    shown = [a for a in accs if math.isfinite(a)] + [
        100 * results[k] for k in ("nngp_accuracy", "ntk_accuracy", "ntk_gd_accuracy")
    ]
    lo, hi = min(shown), max(shown)
    span = max(hi - lo, 0.5)
    ax1.set_ylim(lo - 0.8 * span, min(100.0, hi + 0.15 * span))  # room for the legend below
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right", fontsize=9)

    _plot_curve(ax3, results["training_curve"])
    _plot_calibration(ax4, results["uncertainty"])

    rows = results["ntk_error"]["rows"]
    w = np.array([r["width"] for r in rows], float)
    mean = np.array([r["mean"] for r in rows])
    std = np.array([r["std"] for r in rows])
    slope, c = results["ntk_error"]["slope"], results["ntk_error"]["prefactor"]
    ax2.errorbar(w, mean, yerr=std, fmt="o", color="k", capsize=3, label="empirical NTK at init")
    ax2.plot(w, c * w**slope, "-", color="tab:red", label=f"fit: slope {slope:.2f}")
    ax2.plot(w, mean[0] * (w / w[0]) ** -0.5, ":", color="gray", label="width$^{-1/2}$")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(w, [str(int(v)) for v in w])
    ax2.set_yscale("log")
    ax2.set_xlabel("hidden width")
    ax2.set_ylabel(r"$\|\Theta_{emp} - \Theta\|_F / \|\Theta\|_F$")
    ax2.set_title(f"NTK error, {results['setup']['ntk_points']} test points")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=9)
    fig.savefig(path, dpi=120)


def _plot_curve(ax, curve: dict) -> None:
    fin, inf, ens = curve["finite"], curve["infinite_same_f0"], curve["infinite_ensemble_mean"]
    steps = np.array(fin["steps"])
    keep = steps > 0  # log axis
    for key, color, name in (("train_loss", "tab:blue", "train"), ("test_loss", "tab:red", "test")):
        ax.plot(steps[keep], np.array(fin[key])[keep], "o", color=color, ms=4,
                label=f"{name}, width {curve['width']} net")  # fmt: skip
        ax.plot(steps[keep], np.array(inf[key])[keep], "-", color=color,
                label=f"{name}, infinite width (same $f_0$)")  # fmt: skip
    ax.plot(steps[keep], np.array(ens["test_loss"])[keep], ":", color="tab:red",
            label="test, infinite-ensemble mean")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("full-batch gradient-descent step")
    ax.set_ylabel(r"MSE loss $\|f - Y\|^2 / (2\,Y.size)$")
    ax.set_title(f"training curve, lr {curve['lr']:.3g}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def _plot_calibration(ax, unc: dict) -> None:
    for key, name, color, style, shift in (
        ("ntk_ensemble", "NTK ensemble", "tab:orange", "s--", -0.04),
        ("nngp_posterior", "NNGP posterior", "tab:blue", "o-", 0.04),
    ):  # shifted sideways: the two often coincide
        u = unc[key]
        bins = u["bins"]
        x = np.arange(1, len(bins) + 1) + shift
        ax.plot(x, [100 * b["accuracy"] for b in bins], style, color=color,
                label=f"{name}: mean std {u['mean_std_correct']:.3f} correct / "
                f"{u['mean_std_incorrect']:.3f} wrong")  # fmt: skip
    n = len(unc["ntk_ensemble"]["bins"])
    ax.set_xticks(np.arange(1, n + 1), [f"{100 * i // n}-{100 * (i + 1) // n}%" for i in range(n)])
    ax.set_xlabel("test points binned by predictive std (quantiles, low to high)")
    ax.set_ylabel("test accuracy in bin (%)")
    ax.set_title("t = inf: accuracy vs predictive uncertainty")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
