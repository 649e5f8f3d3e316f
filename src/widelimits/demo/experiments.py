"""The computations of the ``widelimits demo``: data, networks, training, curves, the NTK
error against width, the map of limits and deep linear networks (see `widelimits.demo`).
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
from torch import Tensor, nn

from .._threads import torch_threads
from ..finite import empirical_ntk
from .config import N_CLASSES, SMALL_WIDTH_ONE_THREAD, TARGET_OFFSET, DemoConfig

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
    from ..predict import max_learning_rate

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
    from ..predict import gp_inference, gradient_descent_mse_ensemble

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
    from .._progress import progress_bar

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
    from ..limits.report import properties_table
    from ..limits.sweep import SweepConfig, width_sweep

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
    from ..linear.report import linear_experiment

    return linear_experiment(
        q=config.linear_q, d=config.linear_d, k=config.linear_k, n=config.linear_n,
        widths=config.linear_widths, seeds=config.linear_seeds, t_max=config.linear_t_max,
        seed=seed, progress=progress,
    )  # fmt: skip
