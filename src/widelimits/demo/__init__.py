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
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ._threads import check_threads, torch_threads
from .finite import empirical_ntk
from .predict import gradient_descent_mse

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

N_CLASSES = 10
TARGET_OFFSET = 0.1  # targets: one-hot minus 0.1, so each output has mean zero over the classes
SMALL_WIDTH_ONE_THREAD = 2048  # below this width, one thread beats several (thread sync overhead)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and hyperparameters of one demo run (`default` or `quick`)."""

    hidden_layers: int = 3
    W_std: float = 1.5
    b_std: float = 0.05
    readout_W_std: float = 0.1
    ridge: float = 1e-4
    train_widths: tuple[int, ...] = (64, 256, 1024, 4096)
    epochs: int = 20
    batch_size: int = 64
    lr_fraction: float = 0.5
    ntk_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    ntk_seeds: int = 3
    ntk_points: int = 128
    curve_width: int = 512
    curve_points: int = 16
    std_bins: int = 5
    limits_scalings: tuple[str, ...] = ("NTK", "MF", "sym-default", "IC-MF")
    limits_widths: tuple[int, ...] = (128, 512, 2048)
    limits_steps: int = 300
    limits_n_train: int = 512
    limits_records: int = 12
    limits_kernel_points: int = 64
    limits_particles: int = 1024
    linear_q: int = 1
    linear_d: int = 10
    linear_k: int = 2
    linear_n: int = 6
    linear_widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    linear_seeds: int = 3
    linear_t_max: float = 5.0

    @classmethod
    def default(cls) -> DemoConfig:
        return cls()

    @classmethod
    def quick(cls) -> DemoConfig:
        """Small sizes for tests and a first look (well under 30 s)."""
        return cls(
            train_widths=(64, 256, 1024), epochs=8, ntk_widths=(64, 256, 1024), ntk_seeds=2,
            ntk_points=64, curve_width=256, limits_widths=(128, 512), limits_steps=100,
            limits_n_train=256, limits_records=10, limits_kernel_points=32, limits_particles=512,
            linear_d=6, linear_n=3, linear_widths=(32, 64, 128, 256), linear_seeds=2,
            linear_t_max=3.0,
        )  # fmt: skip


# --------------------------------------------------------------------------------------- data


def load_digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), split half/half.

    The split is stratified and seeded by ``seed``.  Pixels (0..16) are scaled to [0, 1],
    centred on their training-set means, and divided by one global scale so that the average
    squared feature of the training set is 1 (the input kernel x.x'/64 is then about 1 on the
    diagonal).  A single global scale keeps the relative weight of the pixels, unlike
    per-pixel standardization, which inflates rarely-inked border pixels.

    Returns ``x_train, x_test`` (float64, shape (N, 64)) and ``y_train, y_test`` (int64 labels).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.5, random_state=seed, stratify=y
    )
    mean = x_tr.mean(axis=0)
    scale = np.sqrt(((x_tr - mean) ** 2).mean())
    x_tr, x_te = (x_tr - mean) / scale, (x_te - mean) / scale
    as_t = torch.from_numpy
    return as_t(x_tr), as_t(x_te), as_t(y_tr).long(), as_t(y_te).long()


def one_hot_targets(labels: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Centred regression targets: one-hot minus 0.1 (0.9 for the class, -0.1 elsewhere)."""
    return nn.functional.one_hot(labels, N_CLASSES).to(dtype) - TARGET_OFFSET


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose largest output is the label."""
    return float((predictions.argmax(dim=1) == labels).double().mean())


# ------------------------------------------------------------------------------------ network


def make_network(config: DemoConfig):
    """The demo's description: ``hidden_layers`` x (Dense(W_std, b_std), ReLU), readout Dense(10).

    The readout uses a small weight scale (``readout_W_std``, 0.1 by default): a trained
    network's outputs are the kernel predictor plus what remains of the random function it
    started from, whose standard deviation (the NNGP prior's: 0.13 at the default 0.1, 0.6 at
    0.5) is then small against the targets (0.9), so one finite network can reach the kernels'
    accuracy.  The readout scale barely changes the kernels' regression predictions (the bias
    aside, it rescales both kernels) but it raises the stable learning rate, which goes like
    1 / readout_W_std^2 in the NTK parametrization.
    """
    import widelimits as wl

    layers = []
    for _ in range(config.hidden_layers):
        layers += [wl.Dense(W_std=config.W_std, b_std=config.b_std), wl.ReLU()]
    layers.append(wl.Dense(N_CLASSES, W_std=config.readout_W_std, b_std=config.b_std))
    return wl.Serial(*layers)


# ------------------------------------------------------------------------- kernel predictions


def stable_learning_rate(ntk_train: Tensor, n_outputs: int, fraction: float) -> float:
    """``fraction`` of the full-batch GD stability edge lr < 2 Y.size / lambda_max(Theta)."""
    from .predict import max_learning_rate

    return fraction * max_learning_rate(ntk_train, ntk_train.shape[0] * n_outputs)


def _std_summary(mean: Tensor, cov: Tensor, labels: Tensor, bins: int) -> dict:
    """Accuracy, predictive std on correct vs incorrect test points, and accuracy by std bin.

    The std of a test point is sqrt(cov[i, i]) (the covariance is shared by the outputs); the
    bins split the test points into ``bins`` equal-count groups by increasing std.
    """
    std = cov.diagonal().clamp_min(0).sqrt()
    correct = mean.argmax(dim=1) == labels
    order = torch.argsort(std)
    groups = [g for g in torch.tensor_split(order, bins) if len(g)]
    wrong = ~correct
    return {
        "accuracy": float(correct.double().mean()),
        "n_incorrect": int(wrong.sum()),
        "min_std": float(std.min()),
        "mean_std": float(std.mean()),
        "mean_std_correct": float(std[correct].mean()) if bool(correct.any()) else float("nan"),
        "mean_std_incorrect": float(std[wrong].mean()) if bool(wrong.any()) else float("nan"),
        "bins": [
            {
                "std_low": float(std[g].min()),
                "std_high": float(std[g].max()),
                "mean_std": float(std[g].mean()),
                "accuracy": float(correct[g].double().mean()),
                "count": len(g),
            }
            for g in groups
        ],
    }


def predictive_uncertainty(
    net, x_train: Tensor, y_train: Tensor, x_test: Tensor, labels_test: Tensor, kernels,
    ridge: float, bins: int,
) -> dict:  # fmt: skip
    """Test-set means and stds at t = inf: the NTK-trained infinite ensemble and the NNGP posterior.

    ``kernels`` is ``(k_train, k_test_train, k_test_test)`` (the last needs only its NNGP). The
    ensemble comes from `gradient_descent_mse_ensemble` (t = inf, ``compute_cov=True``), the NNGP
    posterior from `gp_inference`; both with relative diagonal regularization ``ridge``. Also
    reports how far the ensemble's mean and covariance are from `gp_inference(get="ntk")`, which
    gives the same distribution in closed form.
    """
    from .predict import gp_inference, gradient_descent_mse_ensemble

    k_train, k_test, k_tt = kernels
    ens = gradient_descent_mse_ensemble(net, x_train, y_train, diag_reg=ridge)
    ntk = ens(t=math.inf, x_test=x_test, get="ntk", compute_cov=True)
    gp = gp_inference(k_train, y_train, diag_reg=ridge)(("nngp", "ntk"), k_test, k_tt)
    nngp = gp["nngp"]
    scale = float(ntk.covariance.diagonal().abs().max())
    return {
        "ntk_ensemble": _std_summary(ntk.mean, ntk.covariance, labels_test, bins),
        "nngp_posterior": _std_summary(nngp.mean, nngp.covariance, labels_test, bins),
        "ensemble_vs_gp_inference": {
            "mean_max_abs_diff": float((ntk.mean - gp["ntk"].mean).abs().max()),
            "cov_max_rel_diff": float((ntk.covariance - gp["ntk"].covariance).abs().max() / scale),
        },
    }


# ------------------------------------------------------------------------- finite networks


def _threads(n: int | None) -> contextlib.AbstractContextManager[None]:
    """Temporarily run torch on ``n`` threads (``None``: leave the setting alone)."""
    return contextlib.nullcontext() if n is None else torch_threads(n)


def _progress(iterable, total: int, desc: str, enabled: bool):
    """A bar when ``enabled`` and stderr is a terminal (`widelimits._progress`)."""
    from ._progress import progress_bar

    return progress_bar(iterable, total=total, desc=desc, progress=None if enabled else False,
                        leave=False)  # fmt: skip


def train_network(
    net,
    width: int,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    labels_test: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Build ``net`` at ``width`` (float32) and train it with plain mini-batch SGD on MSE.

    Loss per batch: ||f - Y||^2 / (2 Y.size) (the neural-tangents convention); the last
    incomplete batch of each epoch is dropped.  Returns the test accuracy, the final training
    loss (on the whole training set), the number of SGD steps and the wall time; a run whose
    loss stops being finite is reported as diverged with accuracy NaN.  Widths below 2048 run on
    one thread (faster for small matrices); wider ones on ``threads`` (``None``: torch's setting).
    """
    x_tr, y_tr, x_te = x_train.float(), y_train.float(), x_test.float()
    n = len(x_tr)
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and the {n} training examples")
    steps_per_epoch = n // batch_size
    start = time.perf_counter()
    with _threads(1 if width < SMALL_WIDTH_ONE_THREAD else threads):
        model = net.build(x_tr.shape[1], width, seed=seed, dtype=torch.float32)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        diverged = False
        bar = _progress(range(epochs), epochs, f"SGD width {width}", progress)
        for _ in bar:
            perm = torch.randperm(n, generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                loss = 0.5 * ((model(x_tr[idx]) - y_tr[idx]) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not math.isfinite(loss.item()):
                diverged = True
                break
            bar.set_postfix(loss=f"{loss.item():.4f}")
        with torch.no_grad():
            train_loss = float(0.5 * ((model(x_tr) - y_tr) ** 2).mean())
            acc = float("nan") if diverged else accuracy(model(x_te), labels_test)
    return {
        "width": width,
        "accuracy": acc,
        "train_loss": train_loss,
        "diverged": diverged,
        "steps": epochs * steps_per_epoch,
        "seconds": time.perf_counter() - start,
    }


def log_spaced_steps(steps: int, points: int) -> list[int]:
    """0 and about ``points`` distinct, roughly log-spaced integers from 1 to ``steps``."""
    grid = np.unique(np.round(np.geomspace(1, max(steps, 1), max(points, 1))).astype(int))
    return [0] + [int(s) for s in grid if s <= steps]


def _mse(f: Tensor, y: Tensor) -> float:
    return float(0.5 * ((f - y) ** 2).mean())


def gd_training_curve(
    net,
    width: int,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    labels_test: Tensor,
    *,
    lr: float,
    record: list[int],
    seed: int,
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Full-batch gradient descent of ``net`` at ``width`` (float32), recorded at steps ``record``.

    Same loss and learning rate as `train_network`, but every step uses the whole training set,
    which is the dynamics `widelimits.predict.gradient_descent_mse(..., discrete=True)` solves in
    closed form. At each recorded step (after that many updates) stores the train and test MSE
    and the test accuracy; also returns the initial outputs ``f0_train`` / ``f0_test`` (float64),
    so that the infinite-width prediction can start from the same function.
    """
    x_tr, y_tr, x_te, y_te = x_train.float(), y_train.float(), x_test.float(), y_test.float()
    wanted = sorted(set(record))
    curve = {"steps": [], "train_loss": [], "test_loss": [], "test_accuracy": []}
    start = time.perf_counter()
    with _threads(1 if width < SMALL_WIDTH_ONE_THREAD else threads):
        model = net.build(x_tr.shape[1], width, seed=seed, dtype=torch.float32)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        diverged = False
        last = wanted[-1]
        for step in _progress(range(last + 1), last + 1, f"GD width {width}", progress):
            if step in wanted:
                with torch.no_grad():
                    f_tr, f_te = model(x_tr), model(x_te)
                if step == 0:
                    f0_train, f0_test = f_tr.double(), f_te.double()
                curve["steps"].append(step)
                curve["train_loss"].append(_mse(f_tr, y_tr))
                curve["test_loss"].append(_mse(f_te, y_te))
                curve["test_accuracy"].append(accuracy(f_te, labels_test))
                if not math.isfinite(curve["train_loss"][-1]):
                    diverged = True
                    break
            if step == last:  # no update after the last record; the bar still counts it
                continue
            loss = 0.5 * ((model(x_tr) - y_tr) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {
        "width": width,
        **curve,
        "diverged": diverged,
        "seconds": time.perf_counter() - start,
        "f0_train": f0_train,
        "f0_test": f0_test,
    }


def infinite_width_curve(
    predict_fn, steps: list[int], y_train: Tensor, y_test: Tensor, labels_test: Tensor,
    k_test_train: Tensor, f0_train=0.0, f0_test=None,
) -> dict:  # fmt: skip
    """Train/test MSE and test accuracy of the linearized infinite-width network at ``steps`` of
    full-batch GD, from ``predict_fn = gradient_descent_mse(ntk_train, y_train, lr)``.

    ``f0_train=0, f0_test=None`` gives the infinite ensemble's mean; a finite network's initial
    outputs give the infinite-width (analytic-NTK) dynamics started from that same function.
    """
    fx_tr, fx_te = predict_fn(
        t=torch.tensor(steps, dtype=torch.float64), fx_train_0=f0_train, fx_test_0=f0_test,
        k_test_train=k_test_train, discrete=True,
    )  # fmt: skip
    return {
        "steps": list(steps),
        "train_loss": [_mse(f, y_train) for f in fx_tr],
        "test_loss": [_mse(f, y_test) for f in fx_te],
        "test_accuracy": [accuracy(f, labels_test) for f in fx_te],
    }


def relative_frobenius_error(a: Tensor, b: Tensor) -> float:
    """||a - b||_F / ||b||_F."""
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def ntk_error_vs_width(
    net,
    x: Tensor,
    widths,
    n_seeds: int,
    seed: int,
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Relative Frobenius error of the empirical NTK at initialization to the analytic NTK.

    For each width, ``n_seeds`` networks (float32, seeds ``seed .. seed + n_seeds - 1``) are
    built from ``net``; their traced empirical NTK on ``x`` is compared with the analytic
    per-output NTK (float64).  Returns ``{"rows": [...]}``, one row per width with the mean and
    standard deviation over seeds and the individual errors.  Threads as in `train_network`.
    """
    analytic = net.kernel(x.double(), get="ntk", threads=threads)
    x32 = x.float()
    rows = []
    bar = _progress(widths, len(widths), "empirical NTK", progress)
    for width in bar:
        with _threads(1 if width < SMALL_WIDTH_ONE_THREAD else threads):
            errs = []
            for s in range(n_seeds):
                model = net.build(x.shape[1], width, seed=seed + s, dtype=torch.float32)
                errs.append(relative_frobenius_error(empirical_ntk(model, x32), analytic))
        rows.append(
            {
                "width": width,
                "mean": float(np.mean(errs)),
                "std": float(np.std(errs)),
                "errors": errs,
            }
        )
    return {"rows": rows}


def fit_power_law(widths, values) -> tuple[float, float]:
    """Least-squares fit of log(value) = log(c) + slope * log(width); returns (slope, c)."""
    slope, intercept = np.polyfit(np.log(np.asarray(widths, float)), np.log(values), 1)
    return float(slope), float(np.exp(intercept))


# ------------------------------------------------------------------------------ map of limits


def map_of_limits(
    config: DemoConfig, seed: int, threads: int | None = None, progress: bool = False
) -> dict:
    """A small width sweep (`widelimits.limits.sweep.width_sweep`): the sweep's result dict plus
    ``properties`` (`widelimits.limits.report.properties_table`) and ``seconds``.

    One seed (``seed``, which also picks the digits split of `load_binary_task`), the
    ``limits_*`` sizes of ``config``. The sweep trains all its widths in one call, so it runs
    on ``threads`` threads when its widest network is at least 2048 wide (the demo's rule for
    wide networks), else on one thread.
    """
    from .limits.report import properties_table
    from .limits.sweep import SweepConfig, width_sweep

    sweep = SweepConfig(
        scalings=config.limits_scalings, widths=config.limits_widths, seeds=1,
        steps=config.limits_steps, n_train=config.limits_n_train, records=config.limits_records,
        kernel_points=config.limits_kernel_points, limit_particles=config.limits_particles,
        data_seed=seed,
    )  # fmt: skip
    wide = max(config.limits_widths) >= SMALL_WIDTH_ONE_THREAD
    start = time.perf_counter()
    with _threads(threads if wide else 1):
        result = width_sweep(sweep, progress=progress)
    result["properties"] = properties_table(result)
    result["seconds"] = time.perf_counter() - start
    return result


def deep_linear(config: DemoConfig, seed: int, progress: bool = False) -> dict:
    """The deep-linear-network experiment (`widelimits.linear.report.linear_experiment`) at the
    ``linear_*`` sizes of ``config``; numpy only (its BLAS threads follow
    `widelimits.linear.network.blas_threads`)."""
    from .linear.report import linear_experiment

    return linear_experiment(
        q=config.linear_q, d=config.linear_d, k=config.linear_k, n=config.linear_n,
        widths=config.linear_widths, seeds=config.linear_seeds, t_max=config.linear_t_max,
        seed=seed, progress=progress,
    )  # fmt: skip


# ----------------------------------------------------------------------------------- outputs


def _exp(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _pct(x: float) -> str:
    return "diverged" if not math.isfinite(x) else f"{100 * x:.2f}%"


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


def write_report(results: dict, path: Path) -> None:
    """A short markdown report: setup, accuracy table, NTK error table and slope, timings."""
    s, t = results["setup"], results["timings"]
    lines = [
        "# widelimits demo: infinite-width kernels vs finite networks on digits",
        "",
        f"widelimits {s['version']}, torch {s['torch']}, Python {s['python']}; "
        f"`widelimits demo{' --quick' if s['quick'] else ''} --seed {s['seed']}`.",
        "",
        "## Setup",
        "",
        f"- Data: scikit-learn's 8x8 digits, stratified half/half split (seed {s['seed']}): "
        f"{s['n_train']} train / {s['n_test']} test images. Pixels scaled to [0, 1], centred on "
        "the training means, divided by one global scale (mean squared feature 1).",
        f"- Network: `{s['network']}` (NTK parametrization, ReLU; the smaller readout scale keeps "
        "the random initial function small against the targets).",
        "- Targets: one-hot minus 0.1. Kernels in float64; kernel regression and uncertainties "
        "from `widelimits.predict` with relative diagonal regularization (`diag_reg`) "
        f"{s['ridge']:g} x mean(diag K).",
        f"- Finite networks: float32, plain mini-batch SGD, batch {s['batch_size']}, "
        f"{s['epochs']} epochs ({s['steps']} steps), loss ||f - Y||^2 / (2 Y.size), learning rate "
        f"{s['lr']:.4g} = {s['lr_fraction']} x the gradient-descent stability edge "
        "2 Y.size / lambda_max(Theta) of the analytic NTK; weight seed "
        f"{s['seed']}.",
        f"- NTK error: traced empirical NTK at initialization on {s['ntk_points']} test images, "
        f"{s['ntk_seeds']} networks per width, against the analytic NTK "
        "(`widelimits.finite.empirical_ntk`, structured path).",
        "",
        "## Test accuracy",
        "",
        "| model | width | test accuracy | final train loss | time |",
        "|---|---|---|---|---|",
        f"| NNGP kernel regression | inf | {_pct(results['nngp_accuracy'])} | | |",
        f"| NTK kernel regression | inf | {_pct(results['ntk_accuracy'])} | | |",
        f"| NTK, {s['steps']} steps of full-batch GD (mean) | inf | "
        f"{_pct(results['ntk_gd_accuracy'])} | | |",
    ]
    for r in results["finite"]:
        lines.append(
            f"| SGD-trained network | {r['width']} | {_pct(r['accuracy'])} | "
            f"{r['train_loss']:.4f} | {r['seconds']:.1f} s |"
        )
    lines += _uncertainty_section(results, s) + _curve_section(results["training_curve"])
    lines += _limits_section(results["map_of_limits"])
    ne = results["ntk_error"]
    lines += [
        "",
        "## Empirical NTK vs analytic NTK at initialization",
        "",
        "| width | relative Frobenius error (mean) | std over seeds |",
        "|---|---|---|",
    ]
    lines += [f"| {r['width']} | {r['mean']:.4f} | {r['std']:.4f} |" for r in ne["rows"]]
    lines += [
        "",
        f"Fitted slope of log(error) against log(width): **{ne['slope']:.3f}** (theory: -0.5).",
        "",
        "## Timings",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in t.items()]
    lines += ["", "![demo figure](demo.png)"]
    lines += _linear_section(results["linear"])
    path.write_text("\n".join(lines + [""]))


def _linear_section(linear: dict) -> list[str]:
    from .linear.report import report_lines

    lines = report_lines(linear, level=2)
    lines[0] = "## Deep linear networks"
    return [
        "",
        *lines,
        "",
        "`widelimits linear` runs the same experiment at larger sizes.",
    ]


def _uncertainty_section(results: dict, s: dict) -> list[str]:
    unc = results["uncertainty"]
    names = (
        ("ntk_ensemble", "NTK-trained infinite ensemble"),
        ("nngp_posterior", "NNGP posterior"),
    )
    lines = [
        "",
        "## Predictions with uncertainty (t = inf)",
        "",
        "Predictive std of a test point: sqrt of the diagonal of the covariance over test points "
        "(shared by the 10 outputs). NTK: `gradient_descent_mse_ensemble(..., compute_cov=True)` "
        "at t = inf, the distribution over random initializations of infinitely wide networks "
        "trained to convergence; NNGP: the Bayesian posterior from `gp_inference`. The ensemble "
        "agrees with `gp_inference(get='ntk')` to "
        f"{unc['ensemble_vs_gp_inference']['mean_max_abs_diff']:.1e} (mean, absolute) and "
        f"{unc['ensemble_vs_gp_inference']['cov_max_rel_diff']:.1e} (covariance, relative).",
        "",
        "| model | test accuracy | errors | mean std, correct | mean std, incorrect | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in names:
        u = unc[key]
        ratio = u["mean_std_incorrect"] / u["mean_std_correct"]
        lines.append(
            f"| {name} | {_pct(u['accuracy'])} | {u['n_incorrect']} | "
            f"{u['mean_std_correct']:.4f} | {u['mean_std_incorrect']:.4f} | {ratio:.2f} |"
        )
    n = len(unc["ntk_ensemble"]["bins"])
    lines += [
        "",
        f"Accuracy in {n} equal-count bins of test points sorted by predictive std "
        f"(about {s['n_test'] // n} points per bin):",
        "",
        "| std quantile | NTK std range | NTK accuracy | NNGP std range | NNGP accuracy |",
        "|---|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(
        zip(unc["ntk_ensemble"]["bins"], unc["nngp_posterior"]["bins"], strict=True)
    ):
        lines.append(
            f"| {100 * i // n}-{100 * (i + 1) // n}% | {a['std_low']:.4f}-{a['std_high']:.4f} | "
            f"{_pct(a['accuracy'])} | {b['std_low']:.4f}-{b['std_high']:.4f} | "
            f"{_pct(b['accuracy'])} |"
        )
    return lines


def _curve_section(curve: dict) -> list[str]:
    fin, inf, ens = curve["finite"], curve["infinite_same_f0"], curve["infinite_ensemble_mean"]
    lines = [
        "",
        "## Training curve: finite network vs infinite width",
        "",
        f"A width-{curve['width']} network (float32, same description, seed and learning rate "
        f"{curve['lr']:.4g}) trained by **full-batch gradient descent** ({fin['seconds']:.1f} s), "
        "not mini-batch SGD: full-batch GD is exactly the dynamics that "
        "`gradient_descent_mse(ntk_train, y_train, lr)(t=steps, ..., discrete=True)` solves in "
        "closed form, so the comparison has no SGD noise. The infinite-width curve starts from "
        "the same initial outputs f0 as the finite net (linearized dynamics with the analytic "
        "NTK); the ensemble-mean curve starts from f0 = 0. Losses are ||f - Y||^2 / (2 Y.size).",
        "",
        "| step | train loss, finite | train loss, inf (same f0) | test loss, finite | "
        "test loss, inf (same f0) | test loss, ensemble mean | test acc, finite | "
        "test acc, inf (same f0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, step in enumerate(fin["steps"]):
        lines.append(
            f"| {step} | {fin['train_loss'][i]:.5f} | {inf['train_loss'][i]:.5f} | "
            f"{fin['test_loss'][i]:.5f} | {inf['test_loss'][i]:.5f} | {ens['test_loss'][i]:.5f} | "
            f"{_pct(fin['test_accuracy'][i])} | {_pct(inf['test_accuracy'][i])} |"
        )
    lines += [
        "",
        "Largest relative gap between the finite and infinite-width test loss over the recorded "
        f"steps: **{curve['max_rel_test_loss_gap']:.3f}** (at the last step: "
        f"{curve['final_rel_test_loss_gap']:.3f}).",
    ]
    return lines


def _limits_section(sweep: dict) -> list[str]:
    from .limits.report import exponent_rows, properties_rows

    c = sweep["config"]
    return [
        "",
        "## The map of limits",
        "",
        f"A one-hidden-layer leaky-ReLU({c['negative_slope']}) network without bias, one logit, "
        f"trained on digits 0-4 vs 5-9 ({c['n_train']} training images) with BCE and "
        f"{c['steps']} steps of full-batch SGD (learning rate {c['lr']} at the reference width "
        f"{c['ref_width']}), under the scalings {', '.join(c['scalings'])} at widths "
        f"{', '.join(map(str, c['widths']))} ({sweep['seconds']:.1f} s). All scalings coincide "
        f"at the reference width {c['ref_width']}; they differ in how the network changes as "
        "the width grows. Curves in limits.png; `widelimits limits sweep` runs larger sweeps.",
        "",
        "Width exponents at initialization (slope of log value against log(width / "
        f"{c['ref_width']}), one seed) against `classify`'s predictions:",
        "",
        "| scaling | logits, fitted | logits, predicted | kernel, fitted | kernel, predicted "
        "| region |",
        "|---|---|---|---|---|---|",
        *exponent_rows(sweep),
        "",
        "Measured at the widest network against the default (width "
        f"{c['ref_width']}) network: mean |logit| and total kernel ratios at init ('vanish' "
        "below 0.5, 'diverge' above 2), the kernel's relative change over training (evolves "
        "above 10%); `classify`'s words in brackets. Short training and small widths blur the "
        "distinctions that the exponents predict for rho -> infinity.",
        "",
        "| scaling | width | logits at init | kernel at init | kernel change (evolves) | "
        "feature learning | finite-width-like |",
        "|---|---|---|---|---|---|---|",
        *properties_rows(sweep["properties"]),
        "",
        "![map of limits](limits.png)",
    ]


def format_summary(results: dict) -> str:
    """The concise summary the CLI prints to stdout."""
    s, c = results["setup"], results["training_curve"]
    lin = results["linear"]
    finite = ", ".join(f"{r['width']}: {_pct(r['accuracy'])}" for r in results["finite"])
    errs = ", ".join(f"{r['width']}: {r['mean']:.3f}" for r in results["ntk_error"]["rows"])
    return "\n".join(
        [
            f"widelimits demo on digits ({s['n_train']} train / {s['n_test']} test), "
            f"{s['hidden_layers']}-hidden-layer ReLU net",
            f"  NNGP kernel regression  test accuracy {_pct(results['nngp_accuracy'])}",
            f"  NTK kernel regression   test accuracy {_pct(results['ntk_accuracy'])}",
            f"  NTK after {s['steps']} GD steps  test accuracy {_pct(results['ntk_gd_accuracy'])}",
            f"  SGD-trained nets ({s['epochs']} epochs, lr {s['lr']:.3g}) by width: {finite}",
            f"  empirical NTK relative error by width: {errs}",
            f"  fitted slope {results['ntk_error']['slope']:.3f} (theory -0.5)",
            *(
                f"  {name} predictive std: correct {u['mean_std_correct']:.4f}, "
                f"incorrect {u['mean_std_incorrect']:.4f} ({u['n_incorrect']} errors)"
                for name, u in (
                    ("NTK ensemble", results["uncertainty"]["ntk_ensemble"]),
                    ("NNGP posterior", results["uncertainty"]["nngp_posterior"]),
                )
            ),
            f"  full-batch GD, width {c['width']}, {c['finite']['steps'][-1]} steps: test loss "
            f"{c['finite']['test_loss'][-1]:.4f} (finite) vs "
            f"{c['infinite_same_f0']['test_loss'][-1]:.4f} (infinite width, same f0); "
            f"max relative gap {c['max_rel_test_loss_gap']:.3f}",
            "  map of limits, fitted (predicted) logits / kernel exponents: "
            + "; ".join(
                f"{name} {_exp(e['fitted']['logits_exponent'])} "
                f"({_exp(e['predicted']['logits_exponent'])}) / "
                f"{_exp(e['fitted']['kernel_exponent'])} "
                f"({_exp(e['predicted']['kernel_exponent'])})"
                for name, e in results["map_of_limits"]["exponents"].items()
            ),
            f"  deep linear networks (q = {lin['setup']['q']}): width exponent "
            f"{lin['width_errors']['slope']:.3f} (theory -0.5), min-norm rate "
            f"{lin['min_norm']['rate']:.3f}, R = {lin['limit']['R']}",
            f"  total time {results['timings']['total']:.1f} s",
            f"  wrote {results['files']['report']}, {results['files']['figure']}, "
            f"{results['files']['limits_figure']} and {results['files']['linear_figure']}",
        ]
    )


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
    from .limits.report import MAP_PANELS, plot_sweep

    plot_sweep(limits, out / "limits.png", panels=MAP_PANELS)
    from .linear.report import plot_linear

    plot_linear(linear, out / "linear.png")
    timings["figure and report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    write_report(results, out / "report.md")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
