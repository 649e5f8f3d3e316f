"""The ``widelimits demo``: infinite-width kernels against finite networks on scikit-learn's digits.

One network description, a 3-hidden-layer ReLU net, gives

a. its closed-form NNGP and NTK kernels (float64), used for kernel regression on the 10 classes;
b. finite networks of several widths built from the same description, trained with plain
   mini-batch SGD (NTK parametrization, the neural-tangents MSE convention);
c. the relative Frobenius error of the finite networks' empirical NTK at initialization to the
   analytic NTK, which falls like width^(-1/2);
d. predictive means and stds at t = inf (`widelimits.predict`: the NTK-trained infinite
   ensemble and the NNGP posterior), with accuracy by uncertainty bin;
e. the training curve of a finite network under full-batch gradient descent next to the
   closed-form infinite-width curve started from the same initial function;
f. the map of limits: a small width sweep (`widelimits.limits.sweep.width_sweep`) of a
   one-hidden-layer leaky-ReLU classifier (digits 0-4 vs 5-9) under the NTK, mean-field,
   sym-default and IC-MF scalings, with fitted against predicted width exponents and the
   measured properties of each scaling's widest network (``limits.png``);
g. deep linear networks (`widelimits.linear.report.linear_experiment`, small sizes): finite
   widths against the deterministic infinite-width limit, whose predictor converges
   exponentially to the minimum-norm solution (``linear.png``);

and writes ``demo.png``, ``limits.png``, ``linear.png``, ``report.md`` and ``results.json`` into an
output
folder.  Everything runs offline (the digits ship with scikit-learn) in a minute or two on two
CPU cores.

Progress goes to stderr; `format_summary` gives the short stdout summary the CLI prints.

The code is split by what it holds: `widelimits.demo.config` (`DemoConfig`),
`widelimits.demo.experiments` (the computations), `widelimits.demo.plots` (``demo.png``),
`widelimits.demo.report` (``report.md``, `format_summary`) and this module (`run_demo`).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .._threads import check_threads
from ..predict import gradient_descent_mse
from .config import N_CLASSES, DemoConfig
from .experiments import (
    _threads,
    accuracy,
    deep_linear,
    fit_power_law,
    gd_training_curve,
    infinite_width_curve,
    load_digits_split,
    log_spaced_steps,
    make_network,
    map_of_limits,
    ntk_error_vs_width,
    one_hot_targets,
    predictive_uncertainty,
    stable_learning_rate,
    train_network,
)
from .plots import plot_results
from .report import _pct, format_summary, write_report

__all__ = [
    "DemoConfig",
    "run_demo",
    "load_digits_split",
    "make_network",
    "stable_learning_rate",
    "predictive_uncertainty",
    "train_network",
    "gd_training_curve",
    "infinite_width_curve",
    "log_spaced_steps",
    "ntk_error_vs_width",
    "fit_power_law",
    "plot_results",
    "write_report",
    "format_summary",
    "map_of_limits",
    "deep_linear",
]


# ------------------------------------------------------------------------------------ driver


def _log(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def run_demo(
    out_dir: str | Path = "widelimits-out/demo",
    quick: bool = False,
    seed: int = 0,
    *,
    progress: bool = True,
    threads: int | None = None,
    config: DemoConfig | None = None,
) -> dict:
    """Run the whole demo and write ``demo.png``, ``limits.png``, ``linear.png``, ``report.md``
    and ``results.json``.

    Args:
        out_dir: output folder (created if needed).
        quick: use `DemoConfig.quick` sizes (for tests); ignored when ``config`` is given.
        seed: seeds the split, the SGD-trained networks and the NTK-error networks.
        progress: print progress lines and bars to stderr.
        threads: torch threads for networks of width 2048 and more (``None``: torch's current
            setting).  Everything else runs on one thread: its matrices are small, and several
            threads on a busy machine can be several times slower than one.
        config: explicit sizes and hyperparameters.

    Returns:
        A dict of the numbers: ``nngp_accuracy``, ``ntk_accuracy``, ``ntk_gd_accuracy``,
        ``finite`` (one dict per width), ``uncertainty`` (``ntk_ensemble``,
        ``nngp_posterior``), ``training_curve`` (``finite``, ``infinite_same_f0``,
        ``infinite_ensemble_mean``, ``max_rel_test_loss_gap``), ``ntk_error`` (``rows``,
        ``slope``, ``prefactor``), ``map_of_limits`` (a `width_sweep` result plus
        ``properties`` and ``seconds``; its figure is ``limits.png``), ``linear`` (a
        `linear_experiment` result; its figure is ``linear.png``),
        ``timings`` (seconds), ``setup`` and ``files`` (absolute paths).
    """
    wide_threads = check_threads(threads)  # before any work
    config = config or (DemoConfig.quick() if quick else DemoConfig.default())
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    with _threads(1):
        return _run_demo(out, config, quick, seed, progress, wide_threads)


def _run_demo(
    out: Path, config: DemoConfig, quick: bool, seed: int, progress: bool, threads: int
) -> dict:
    import widelimits

    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    _log("[1/7] kernels, kernel regression and predictive uncertainty (float64)", progress)
    t0 = time.perf_counter()
    x_tr, x_te, lab_tr, lab_te = load_digits_split(seed)
    y_tr, y_te = one_hot_targets(lab_tr), one_hot_targets(lab_te)
    net = make_network(config)
    # The kernels' tiles spread over `threads` threads, each tile on one torch thread.
    k_train = net.kernel(x_tr, threads=threads)
    k_test = net.kernel(x_te, x_tr, threads=threads)
    k_tt = net.kernel(x_te, None, get="nngp", threads=threads)
    uncertainty = predictive_uncertainty(
        net, x_tr, y_tr, x_te, lab_te, (k_train, k_test, k_tt), config.ridge, config.std_bins
    )
    nngp_acc = uncertainty["nngp_posterior"]["accuracy"]
    ntk_acc = uncertainty["ntk_ensemble"]["accuracy"]
    lr = stable_learning_rate(k_train.ntk, N_CLASSES, config.lr_fraction)
    steps = config.epochs * (len(x_tr) // config.batch_size)
    gd_predict = gradient_descent_mse(k_train.ntk, y_tr, learning_rate=lr)
    gd_acc = accuracy(gd_predict(steps, k_test_train=k_test.ntk, discrete=True)[1], lab_te)
    timings["kernels, regression, uncertainty"] = time.perf_counter() - t0
    _log(f"      NNGP {_pct(nngp_acc)}, NTK {_pct(ntk_acc)}, lr {lr:.4g}", progress)

    _log(f"[2/7] training finite networks at widths {list(config.train_widths)}", progress)
    t0 = time.perf_counter()
    finite = []
    for width in config.train_widths:
        row = train_network(
            net, width, x_tr, y_tr, x_te, lab_te, epochs=config.epochs,
            batch_size=config.batch_size, lr=lr, seed=seed, threads=threads, progress=progress,
        )  # fmt: skip
        finite.append(row)
        _log(f"      width {width}: {_pct(row['accuracy'])} ({row['seconds']:.1f} s)", progress)
    timings["training finite networks"] = time.perf_counter() - t0

    _log(f"[3/7] full-batch GD at width {config.curve_width} vs infinite width", progress)
    t0 = time.perf_counter()
    record = log_spaced_steps(steps, config.curve_points)
    gd = gd_training_curve(
        net, config.curve_width, x_tr, y_tr, x_te, y_te, lab_te, lr=lr, record=record,
        seed=seed, threads=threads, progress=progress,
    )  # fmt: skip
    f0_train, f0_test = gd.pop("f0_train"), gd.pop("f0_test")
    done = gd["steps"]
    same_f0 = infinite_width_curve(
        gd_predict, done, y_tr, y_te, lab_te, k_test.ntk, f0_train, f0_test
    )
    ens_mean = infinite_width_curve(gd_predict, done, y_tr, y_te, lab_te, k_test.ntk)
    gaps = [abs(a - b) / b for a, b in zip(gd["test_loss"], same_f0["test_loss"], strict=True)]
    curve = {
        "optimizer": "full-batch gradient descent",
        "width": config.curve_width,
        "lr": lr,
        "finite": gd,
        "infinite_same_f0": same_f0,
        "infinite_ensemble_mean": ens_mean,
        "max_rel_test_loss_gap": max(gaps),
        "final_rel_test_loss_gap": gaps[-1],
    }
    timings["GD training curve"] = time.perf_counter() - t0
    _log(
        f"      final test loss {gd['test_loss'][-1]:.4f} (finite) vs "
        f"{same_f0['test_loss'][-1]:.4f} (infinite width, same f0)",
        progress,
    )

    _log(f"[4/7] empirical NTK at widths {list(config.ntk_widths)}", progress)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(x_te), generator=gen)[: config.ntk_points]
    ntk_err = ntk_error_vs_width(
        net, x_te[subset], config.ntk_widths, config.ntk_seeds, seed, threads, progress
    )
    widths = [r["width"] for r in ntk_err["rows"]]
    ntk_err["slope"], ntk_err["prefactor"] = fit_power_law(
        widths, [r["mean"] for r in ntk_err["rows"]]
    )
    timings["empirical NTK vs width"] = time.perf_counter() - t0

    _log(
        f"[5/7] the map of limits: scalings {list(config.limits_scalings)} at widths "
        f"{list(config.limits_widths)}",
        progress,
    )
    t0 = time.perf_counter()
    limits = map_of_limits(config, seed, threads, progress)
    timings["map of limits"] = time.perf_counter() - t0
    for row in limits["properties"]:
        _log(
            f"      {row['scaling']}: logits {row['logits']}, kernel {row['kernel']}, kernel "
            f"change {row['kernel_change']:+.3f}",
            progress,
        )

    _log(
        f"[6/7] deep linear networks: q = {config.linear_q}, widths {list(config.linear_widths)}",
        progress,
    )
    t0 = time.perf_counter()
    linear = deep_linear(config, seed, progress)
    timings["deep linear networks"] = time.perf_counter() - t0

    _log("[7/7] writing the figures and the report", progress)
    t0 = time.perf_counter()
    results = {
        "nngp_accuracy": nngp_acc,
        "ntk_accuracy": ntk_acc,
        "ntk_gd_accuracy": gd_acc,
        "finite": finite,
        "uncertainty": uncertainty,
        "training_curve": curve,
        "ntk_error": ntk_err,
        "map_of_limits": limits,
        "linear": linear,
        "setup": {
            **asdict(config),
            "quick": quick,
            "seed": seed,
            "network": repr(net),
            "n_train": len(x_tr),
            "n_test": len(x_te),
            "lr": lr,
            "steps": steps,
            "version": widelimits.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": threads,
        },
        "timings": timings,
        "files": {
            "figure": str(out / "demo.png"),
            "report": str(out / "report.md"),
            "json": str(out / "results.json"),
            "limits_figure": str(out / "limits.png"),
            "linear_figure": str(out / "linear.png"),
        },
    }
    plot_results(results, out / "demo.png")
    from ..limits.report import MAP_PANELS, plot_sweep

    plot_sweep(limits, out / "limits.png", panels=MAP_PANELS)
    from ..linear.report import plot_linear

    plot_linear(linear, out / "linear.png")
    timings["figure and report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    write_report(results, out / "report.md")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
