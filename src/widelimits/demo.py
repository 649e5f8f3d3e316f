"""The ``widelimits demo``: infinite-width kernels against finite networks on scikit-learn's digits.

One network description, a 3-hidden-layer ReLU net, gives

a. its closed-form NNGP and NTK kernels (float64), used for kernel regression on the 10 classes;
b. finite networks of several widths built from the same description, trained with plain
   mini-batch SGD (NTK parametrization, the neural-tangents MSE convention);
c. the relative Frobenius error of the finite networks' empirical NTK at initialization to the
   analytic NTK, which falls like width^(-1/2);

and writes ``demo.png``, ``report.md`` and ``results.json`` into an output folder.  Everything
runs offline (the digits ship with scikit-learn) in a minute or two on two CPU cores.

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

__all__ = [
    "DemoConfig",
    "run_demo",
    "load_digits_split",
    "make_network",
    "kernel_regression",
    "gradient_descent_predictions",
    "train_network",
    "layerwise_empirical_ntk",
    "ntk_error_vs_width",
    "fit_power_law",
    "plot_results",
    "write_report",
    "format_summary",
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

    @classmethod
    def default(cls) -> DemoConfig:
        return cls()

    @classmethod
    def quick(cls) -> DemoConfig:
        """Small sizes for tests and a first look (well under 30 s)."""
        return cls(
            train_widths=(64, 256, 1024), epochs=8, ntk_widths=(64, 256, 1024), ntk_seeds=2,
            ntk_points=64,
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


def kernel_regression(k_train: Tensor, k_test_train: Tensor, y: Tensor, ridge: float) -> Tensor:
    """Kernel ridge regression mean ``K(test, train) (K + lambda I)^{-1} Y`` by a Cholesky solve.

    ``lambda = ridge * mean(diag K)``: the regularizer is relative to the kernel's scale.
    """
    lam = ridge * k_train.diagonal().mean()
    eye = torch.eye(len(k_train), dtype=k_train.dtype)
    chol = torch.linalg.cholesky(k_train + lam * eye)
    return k_test_train @ torch.cholesky_solve(y.to(k_train.dtype), chol)


def gradient_descent_predictions(
    ntk_train: Tensor, ntk_test_train: Tensor, y: Tensor, lr: float, steps: int
) -> Tensor:
    """Mean test outputs of an infinitely wide network after ``steps`` of full-batch GD.

    With the loss ||f - Y||^2 / (2 Y.size) and eta' = lr / Y.size (background section 2):
    f_t(x) = Theta(x, X) Theta^{-1} (I - (I - eta' Theta)^t) Y, the ensemble mean (f_0 = 0).
    """
    eig, vec = torch.linalg.eigh(ntk_train)
    eig = eig.clamp_min(eig[-1] * 1e-14)
    eta = lr / y.numel()
    factor = (1 - (1 - eta * eig) ** steps) / eig
    return ntk_test_train @ (vec @ (factor[:, None] * (vec.T @ y.to(ntk_train.dtype))))


def stable_learning_rate(ntk_train: Tensor, n_outputs: int, fraction: float) -> float:
    """``fraction`` of the full-batch GD stability edge lr < 2 Y.size / lambda_max(Theta)."""
    lam_max = float(torch.linalg.eigvalsh(ntk_train)[-1])
    return fraction * 2.0 * ntk_train.shape[0] * n_outputs / lam_max


# ------------------------------------------------------------------------- finite networks


@contextlib.contextmanager
def _threads(n: int | None):
    """Temporarily run torch on ``n`` threads (``None``: leave the setting alone)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


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


def layerwise_empirical_ntk(model: nn.Module, x: Tensor) -> Tensor:
    """Empirical NTK (traced over outputs, float64) of a network of widelimits Dense layers.

    For a Dense layer z = c W a + d b, df/dW = c delta a^T and df/db = d delta, with
    delta = df/dz, so its share of the NTK is c^2 (a a^T) * (delta delta^T) + d^2 delta delta^T.
    This needs one forward pass and one backward pass per output, never the (N, P) Jacobian,
    so it is cheap at widths where `widelimits.finite.empirical_ntk` would need gigabytes.
    Examples must not interact (no batch statistics), which holds for Dense/activation nets.
    """
    from .layers.dense import DenseModule

    dense = [m for m in model.modules() if isinstance(m, DenseModule)]
    owned = {id(p) for m in dense for p in m.parameters()}
    if any(p.requires_grad and id(p) not in owned for p in model.parameters()):
        raise ValueError(
            "layerwise_empirical_ntk handles only Dense parameters; use "
            "widelimits.finite.empirical_ntk for other layers"
        )
    records: list[tuple[nn.Module, Tensor, Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: records.append((mod, inp[0], out)))
        for m in dense
    ]
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    if out.ndim != 2:
        raise ValueError(f"expected outputs of shape (N, outputs), got {tuple(out.shape)}")
    inputs_gram = [a.detach().double() @ a.detach().double().T for _, a, _ in records]
    zs = [z for _, _, z in records]
    n_out = out.shape[1]
    ntk = torch.zeros(len(x), len(x), dtype=torch.float64)
    for o in range(n_out):
        deltas = torch.autograd.grad(out[:, o].sum(), zs, retain_graph=o < n_out - 1)
        for (mod, _, _), gram, delta in zip(records, inputs_gram, deltas, strict=True):
            d = delta.double()
            dd = d @ d.T
            if mod.parametrization == "ntk":
                cw, cb = mod.W_std**2 / mod.in_features, (mod.b_std or 0.0) ** 2
            else:
                cw, cb = 1.0, 1.0
            ntk += cw * gram * dd
            if mod.bias is not None:
                ntk += cb * dd
    return ntk / n_out


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
    analytic = net.kernel(x.double(), get="ntk")
    x32 = x.float()
    rows = []
    bar = _progress(widths, len(widths), "empirical NTK", progress)
    for width in bar:
        with _threads(1 if width < SMALL_WIDTH_ONE_THREAD else threads):
            errs = []
            for s in range(n_seeds):
                model = net.build(x.shape[1], width, seed=seed + s, dtype=torch.float32)
                errs.append(relative_frobenius_error(layerwise_empirical_ntk(model, x32), analytic))
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


def check_layerwise_ntk(net, x: Tensor, seed: int) -> float:
    """Largest relative difference between `layerwise_empirical_ntk` and the general
    `widelimits.finite.empirical_ntk` (torch.func Jacobians) on a small float64 network."""
    from .finite import empirical_ntk

    model = net.build(x.shape[1], 32, seed=seed, dtype=torch.float64)
    x = x.double()
    ref = empirical_ntk(model, x)
    return float((layerwise_empirical_ntk(model, x) - ref).abs().max() / ref.abs().max())


# ----------------------------------------------------------------------------------- outputs


def _pct(x: float) -> str:
    return "diverged" if not math.isfinite(x) else f"{100 * x:.2f}%"


def plot_results(results: dict, path: Path) -> None:
    """Two panels: test accuracy vs width with the kernel accuracies as horizontal lines, and the
    NTK relative error vs width on log-log axes with the fitted power law."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.3), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)

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
        "- Targets: one-hot minus 0.1. Kernels in float64; kernel regression with ridge "
        f"{s['ridge']:g} x mean(diag K) by a Cholesky solve.",
        f"- Finite networks: float32, plain mini-batch SGD, batch {s['batch_size']}, "
        f"{s['epochs']} epochs ({s['steps']} steps), loss ||f - Y||^2 / (2 Y.size), learning rate "
        f"{s['lr']:.4g} = {s['lr_fraction']} x the gradient-descent stability edge "
        "2 Y.size / lambda_max(Theta) of the analytic NTK; weight seed "
        f"{s['seed']}.",
        f"- NTK error: traced empirical NTK at initialization on {s['ntk_points']} test images, "
        f"{s['ntk_seeds']} networks per width, against the analytic NTK. The per-layer formula "
        "used for it agrees with `widelimits.finite.empirical_ntk` to "
        f"{results['layerwise_check']:.1e} (relative).",
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
    lines += ["", "![demo figure](demo.png)", ""]
    path.write_text("\n".join(lines))


def format_summary(results: dict) -> str:
    """The concise summary the CLI prints to stdout."""
    s = results["setup"]
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
            f"  total time {results['timings']['total']:.1f} s",
            f"  wrote {results['files']['report']} and {results['files']['figure']}",
        ]
    )


# ------------------------------------------------------------------------------------ driver


def _log(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def run_demo(
    out_dir: str | Path = "widelimits-out",
    quick: bool = False,
    seed: int = 0,
    *,
    progress: bool = True,
    threads: int | None = None,
    config: DemoConfig | None = None,
) -> dict:
    """Run the whole demo and write ``demo.png``, ``report.md`` and ``results.json``.

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
        ``finite`` (one dict per width), ``ntk_error`` (``rows``, ``slope``, ``prefactor``),
        ``timings`` (seconds), ``setup`` and ``files`` (absolute paths).
    """
    config = config or (DemoConfig.quick() if quick else DemoConfig.default())
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    wide_threads = threads if threads is not None else torch.get_num_threads()
    with _threads(1):
        return _run_demo(out, config, quick, seed, progress, wide_threads)


def _run_demo(
    out: Path, config: DemoConfig, quick: bool, seed: int, progress: bool, threads: int
) -> dict:
    import widelimits

    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    _log("[1/4] loading digits and computing NNGP/NTK kernels (float64)", progress)
    t0 = time.perf_counter()
    x_tr, x_te, lab_tr, lab_te = load_digits_split(seed)
    y_tr = one_hot_targets(lab_tr)
    net = make_network(config)
    k_train = net.kernel(x_tr)
    k_test = net.kernel(x_te, x_tr)
    nngp_acc = accuracy(kernel_regression(k_train.nngp, k_test.nngp, y_tr, config.ridge), lab_te)
    ntk_acc = accuracy(kernel_regression(k_train.ntk, k_test.ntk, y_tr, config.ridge), lab_te)
    lr = stable_learning_rate(k_train.ntk, N_CLASSES, config.lr_fraction)
    steps = config.epochs * (len(x_tr) // config.batch_size)
    gd_acc = accuracy(
        gradient_descent_predictions(k_train.ntk, k_test.ntk, y_tr, lr, steps), lab_te
    )
    timings["kernels and kernel regression"] = time.perf_counter() - t0
    _log(f"      NNGP {_pct(nngp_acc)}, NTK {_pct(ntk_acc)}, lr {lr:.4g}", progress)

    _log(f"[2/4] training finite networks at widths {list(config.train_widths)}", progress)
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

    _log(f"[3/4] empirical NTK at widths {list(config.ntk_widths)}", progress)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(x_te), generator=gen)[: config.ntk_points]
    check = check_layerwise_ntk(net, x_te[subset[:16]], seed)
    ntk_err = ntk_error_vs_width(
        net, x_te[subset], config.ntk_widths, config.ntk_seeds, seed, threads, progress
    )
    widths = [r["width"] for r in ntk_err["rows"]]
    ntk_err["slope"], ntk_err["prefactor"] = fit_power_law(
        widths, [r["mean"] for r in ntk_err["rows"]]
    )
    timings["empirical NTK vs width"] = time.perf_counter() - t0

    _log("[4/4] writing the figure and the report", progress)
    t0 = time.perf_counter()
    results = {
        "nngp_accuracy": nngp_acc,
        "ntk_accuracy": ntk_acc,
        "ntk_gd_accuracy": gd_acc,
        "finite": finite,
        "ntk_error": ntk_err,
        "layerwise_check": check,
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
        },
    }
    plot_results(results, out / "demo.png")
    timings["figure and report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    write_report(results, out / "report.md")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
