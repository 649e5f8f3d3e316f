r"""Width sweeps: train the same network at growing widths under given scalings and watch which
infinite-width limit it approaches.

A sweep trains, for each scaling and width (and seed), a network built from one description
with full-batch gradient descent on a binary task, the learning rate eta* at the reference width
and each layer's rate eta* rho^{-c_l} (`widelimits.optimizer`).  At logarithmically spaced steps
it records the train/test loss and accuracy, the mean |logit| on the test set, and the mean
diagonal of the learning-rate-weighted tangent kernel on a subset of training points, split by
layer (sum_l eta_l |df(x)/dtheta_l|^2), with its ratio to initialization.

From the records (and ``init_seeds`` more untrained networks per width) it fits the width
exponents of logits and kernel at initialization (log-log least squares in
rho = width / ref_width) and sets them next to `classify`'s predictions, and,
where a matching limit model exists, measures the mean |f_width - f_limit| on the test set per
recorded step:

- the NTK point: kernel gradient descent (`KernelDynamics`) started from the network's own
  initial logits (its GP draw), with the analytic tangent kernel;
- mean field (one hidden layer): the mean-field limit (`mean_field_limit`, antithetic particles);
- "IC-MF": the mean-field limit plus the network's own frozen correction f(theta_hat_0).

Scalings are given by name ("NTK", "MF", "sym-default", "IC-MF", "standard", "muP") or as
`Scaling` objects.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._threads import check_threads, run_parallel
from ..finite import empirical_ntk
from .classify import classify
from .models import (
    KernelDynamics,
    init_exponents,
    loss_and_derivative,
    mean_field_limit,
    tangent_kernel,
)
from .scaling import Scaling
from .training import InitCorrected, optimizer

__all__ = ["SweepConfig", "width_sweep", "load_binary_task", "named_scaling", "record_steps"]


@dataclass
class SweepConfig:
    """What to sweep.  Defaults follow the first seed's experiment at a smaller scale."""

    scalings: Sequence = ("NTK", "MF", "sym-default", "IC-MF")
    widths: Sequence[int] = (128, 512, 2048, 8192)
    seeds: int = 2
    steps: int = 1000
    lr: float = 0.02
    ref_width: int = 128
    hidden_layers: int = 1
    negative_slope: float = 0.1
    n_train: int = 1024
    kernel_points: int = 128
    records: int = 30
    limit_particles: int = 2**15
    limits: bool = True
    data_seed: int = 0
    init_seeds: int = 8  # extra untrained networks per width for the exponent fits
    dtype: str = "float32"


def record_steps(steps: int, records: int) -> list[int]:
    """0 and about ``records`` logarithmically spaced steps up to ``steps``."""
    if steps < 1:
        return [0]
    grid = np.unique(np.round(np.logspace(0, math.log10(steps), max(records - 1, 1))).astype(int))
    return [0] + [int(s) for s in grid if 1 <= s <= steps]


def load_binary_task(n_train: int = 1024, seed: int = 0, dtype=torch.float32):
    """scikit-learn's 8x8 digits as a binary task, 0-4 (label 0) vs 5-9 (label 1): a random
    ``n_train`` training images, the rest for testing; features centred on the training mean
    and scaled so that |x|^2 / d is 1 on average."""
    from sklearn.datasets import load_digits

    x, digit = load_digits(return_X_y=True)
    if not 1 <= n_train < len(x):
        raise ValueError(f"n_train must be between 1 and {len(x) - 1}, got {n_train}")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], (digit[order] >= 5).astype(float)
    x = x - x[:n_train].mean(0)
    x = x / np.sqrt((x[:n_train] ** 2).sum(1).mean() / x.shape[1])
    t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return t(x[:n_train]), t(y[:n_train]), t(x[n_train:]), t(y[n_train:])


def named_scaling(name, hidden_layers: int, ref_width: int):
    """A `Scaling` for a name (or "IC-MF", kept as the string), or the Scaling itself."""
    if isinstance(name, Scaling):
        return name
    table = {
        "NTK": lambda: Scaling.ntk(hidden_layers, ref_width),
        "MF": lambda: Scaling.mean_field(hidden_layers, ref_width),
        "standard": lambda: Scaling.standard(hidden_layers, ref_width),
        "muP": lambda: Scaling.mup(hidden_layers, ref_width),
        "sym-default": lambda: Scaling.plane(-0.5, 0.5, ref_width),
    }
    if name == "IC-MF":
        if hidden_layers != 1:
            raise ValueError("IC-MF is defined here for one hidden layer")
        return "IC-MF"
    if name not in table:
        raise ValueError(f"unknown scaling {name!r}; use one of {sorted(table) + ['IC-MF']}")
    return table[name]()


def _network(hidden_layers: int, negative_slope: float):
    from ..layers import Dense, LeakyReLU, Serial

    layers = []
    for _ in range(hidden_layers):
        layers += [Dense(), LeakyReLU(negative_slope)]
    return Serial(*layers, Dense(1))


def _scaled_layers(model: nn.Module) -> list[nn.Module]:
    trained = model.model if isinstance(model, InitCorrected) else model
    return [m for m in trained.modules() if hasattr(m, "lr_scale")]


def _kernel_diagonal(model: nn.Module, x: Tensor, lr: float) -> list[float]:
    """Mean over ``x`` of eta_l |df/dtheta_l|^2, for each layer l."""
    return [
        float(lr * m.lr_scale * empirical_ntk(model, x, params=[m], diagonal=True).mean())
        for m in _scaled_layers(model)
    ]


def _metrics(f: Tensor, y: Tensor) -> tuple[float, float]:
    loss, _ = loss_and_derivative("bce", f, y)
    return float(loss), float(((f > 0).to(y.dtype) == y).to(torch.float64).mean())


# Examples per chunk x widest layer: 8 MB of float32 activations, under glibc's largest mmap
# threshold, so a step's temporaries are reused rather than mapped and page-faulted anew (at
# width 65536 on 1024 examples full-batch steps ran 2.3x faster in chunks of 32).
CHUNK_ELEMENTS = 2**21


def _chunk(model: nn.Module) -> int:
    return max(1, CHUNK_ELEMENTS // max(m.out_features for m in _scaled_layers(model)))


def _logits(model: nn.Module, x: Tensor, size: int) -> Tensor:
    return torch.cat([model(x[s : s + size])[:, 0] for s in range(0, len(x), size)])


def _train(model, data, lr: float, steps: list[int], kernel_x: Tensor) -> dict:
    """Full-batch gradient descent on the mean BCE (gradients accumulated over chunks)."""
    x_tr, y_tr, x_te, y_te = data
    opt = optimizer(model, lr)
    size = _chunk(model)
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "mean_abs_logit")
    rec: dict[str, list] = {k: [] for k in (*keys, "kernel")}
    logits = []
    wanted, last = set(steps), steps[-1]
    for step in range(last + 1):
        if step in wanted:
            with torch.no_grad():
                f_tr, f_te = _logits(model, x_tr, size), _logits(model, x_te, size)
            for split, f, y in (("train", f_tr, y_tr), ("test", f_te, y_te)):
                loss, acc = _metrics(f, y)
                rec[f"{split}_loss"].append(loss)
                rec[f"{split}_accuracy"].append(acc)
            rec["mean_abs_logit"].append(float(f_te.abs().mean()))
            rec["kernel"].append(_kernel_diagonal(model, kernel_x, lr))
            logits.append(f_te.double())
        if step == last:
            break
        opt.zero_grad()
        for s in range(0, len(x_tr), size):
            f, y = model(x_tr[s : s + size])[:, 0], y_tr[s : s + size]
            (loss_and_derivative("bce", f, y)[0] * (len(y) / len(y_tr))).backward()
        opt.step()
    kernel = np.asarray(rec["kernel"])  # (records, layers)
    rec["kernel_total"] = kernel.sum(1).tolist()
    rec["kernel_ratio"] = (kernel.sum(1) / kernel.sum(1)[0]).tolist()
    return {"records": rec, "logits": torch.stack(logits)}


def _fit(widths: Sequence[int], values: Sequence[float], ref_width: int) -> float:
    rho = np.asarray(widths, dtype=float) / ref_width
    return float(np.polyfit(np.log(rho), np.log(np.asarray(values)), 1)[0])


def _predicted(scaling) -> dict:
    if scaling == "IC-MF":  # the NTK net's logits, the MF net's kernel
        return {"logits_exponent": 0.0, "kernel_exponent": 0.0, "region": "IC-MF (not a power)"}
    c = classify(scaling)
    if c.logits_exponent is None:  # not in the plane: from the kernel model's exponents
        logits, kernel = init_exponents(scaling)
    else:
        logits, kernel = float(c.logits_exponent), float(c.kernel_exponent)
    return {"logits_exponent": logits, "kernel_exponent": kernel, "region": c.region}


def width_sweep(
    config: SweepConfig | None = None, progress: bool | None = False, data=None,
    threads: int | None = None,
) -> dict:  # fmt: skip
    """Run a sweep (module docstring); returns a JSON-serializable dict.

    ``threads``: the trainings, and then the mean-field limit models, run on this many Python
    threads, each on one torch thread (default: torch's thread count).  A training's small
    operations on several torch threads each wait for the slowest thread: beside one busy
    process the demo's sweep took 5.5 min that way, against about half a minute idle.  The
    trainings are independent and built before any starts, so the result does not depend on
    ``threads``.

    ``progress``: bars on stderr for the finite networks and then the limit models, with a
    status line when the limit phase starts (True: always; None: bars only when stderr is a
    terminal, the line anyway; False: nothing).

    ``data`` = (x_train, y_train, x_test, y_test) with labels 0/1 replaces the digits task.
    The result has ``runs`` (one per scaling, width and seed: the records), ``exponents`` (per
    scaling: fitted and predicted), ``limits`` (per scaling and width: the mean distance to
    the matching limit model per recorded step, averaged over seeds) and ``config``.
    """
    from .._progress import progress_bar

    config = config or SweepConfig()
    dtype = getattr(torch, config.dtype)
    if data is None:
        data = load_binary_task(config.n_train, config.data_seed, dtype)
    data = tuple(t.to(dtype) for t in data)
    x_tr, y_tr, x_te, _ = data
    steps = record_steps(config.steps, config.records)
    kernel_x = x_tr[: config.kernel_points]
    net = _network(config.hidden_layers, config.negative_slope)
    names = [s if isinstance(s, str) else s.name for s in config.scalings]
    scalings = {
        n: named_scaling(s, config.hidden_layers, config.ref_width)
        for n, s in zip(names, config.scalings, strict=True)
    }
    jobs = [(n, w, s) for n in names for w in config.widths for s in range(config.seeds)]
    threads = check_threads(threads)
    runs, logits, inits, models = [], {}, {}, []
    for name, width, seed in jobs:  # built here, in order: the seeds set torch's generator
        model = _model(net, scalings[name], x_tr.shape[1], width, seed, config, dtype)
        if isinstance(model, InitCorrected):
            inits[(name, width, seed)] = model.reference  # the frozen GP draw f(theta_hat_0)
        elif config.limits:  # initial logits everywhere: the kernel limit starts from them
            with torch.no_grad():
                inits[(name, width, seed)] = _logits(model, torch.cat([x_tr, x_te]),
                                                     _chunk(model)).double()  # fmt: skip
        models.append(model)
    trained: list[dict | None] = [None] * len(jobs)

    def train(i: int) -> None:
        trained[i] = _train(models[i], data, config.lr, steps, kernel_x)

    with progress_bar(total=len(jobs), progress=progress, desc="width sweep") as bar:
        run_parallel(train, len(jobs), threads, done=bar.update)
    for (name, width, seed), out in zip(jobs, trained, strict=True):
        logits[(name, width, seed)] = out["logits"]
        runs.append({"scaling": name, "width": width, "seed": seed, "steps": steps,
                     **out["records"]})  # fmt: skip

    exponents = {}
    for name in names:
        mine = [r for r in runs if r["scaling"] == name]
        at_init = {
            w: [(r["mean_abs_logit"][0], r["kernel_total"][0]) for r in mine if r["width"] == w]
            for w in config.widths
        }
        for w in config.widths:  # untrained networks are cheap: more seeds, steadier fits
            for seed in range(config.seeds, config.seeds + config.init_seeds):
                at_init[w].append(_at_init(net, scalings[name], x_tr.shape[1], w, seed, x_te,
                                           kernel_x, config, dtype))  # fmt: skip
        means = [[np.mean([v[i] for v in at_init[w]]) for w in config.widths] for i in (0, 1)]
        fitted = {"logits_exponent": None, "kernel_exponent": None}
        if len(config.widths) >= 2:
            fitted = {
                "logits_exponent": _fit(config.widths, means[0], config.ref_width),
                "kernel_exponent": _fit(config.widths, means[1], config.ref_width),
            }
        exponents[name] = {"fitted": fitted, "predicted": _predicted(scalings[name])}

    limits = {}
    if config.limits:
        limited = [n for n in names if _limit_kind(scalings[n])]
        runs_per = {n: sum(1 for k in logits if k[0] == n) for n in limited}
        if progress is not False and limited:
            print(f"width sweep: training the infinite-width limit models of "
                  f"{', '.join(limited)} ({config.limit_particles} mean-field particles; "
                  f"{sum(runs_per.values())} trajectories)", file=sys.stderr,
                  flush=True)  # fmt: skip
        with progress_bar(total=sum(runs_per.values()), progress=progress, desc="limit models",
                          unit="run") as bar:  # fmt: skip
            limits = _limit_distances(config, net, scalings, data, steps, logits, inits, dtype,
                                      bar, threads)  # fmt: skip
    return {"config": asdict(config) | {"scalings": names}, "steps": steps, "runs": runs,
            "exponents": exponents, "limits": limits}  # fmt: skip


def _model(net, scaling, d: int, width: int, seed: int, config, dtype) -> nn.Module:
    """The sweep's network for one scaling (or "IC-MF"), width and seed."""
    torch.manual_seed(seed)
    if scaling == "IC-MF":
        return InitCorrected.mean_field(net, d, width, seed, 1, config.ref_width, dtype)
    return net.build(d, width, parametrization=scaling, seed=seed, dtype=dtype)


def _at_init(net, scaling, d, width, seed, x_te, kernel_x, config, dtype) -> tuple[float, float]:
    """(mean |logit| on the test set, total tangent-kernel diagonal) of an untrained network."""
    model = _model(net, scaling, d, width, seed, config, dtype)
    with torch.no_grad():
        logits = float(_logits(model, x_te, _chunk(model)).abs().mean())
    return logits, sum(_kernel_diagonal(model, kernel_x, config.lr))


class _Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(len(x), 1)


def _limit_kind(scaling) -> str | None:
    """Which limit model a scaling is compared with: "IC-MF", "MF", "NTK" or None."""
    if scaling == "IC-MF":
        return "IC-MF"
    if isinstance(scaling, Scaling) and scaling.plane_coordinates() == (-1.0, 1.0):
        return "MF"
    if isinstance(scaling, Scaling) and scaling.name == "NTK":
        return "NTK"
    return None


def _particle_runs(config, net, scalings, data, steps, logits, inits, dtype, bar, threads):
    """The mean-field particle models' test logits per recorded step: ``{key: logits}`` for
    each IC-MF network (the particles driven by the loss at f + g, one run per frozen draw g)
    and ``{"MF": logits}`` (one run serves every MF network).  The runs are independent and
    built before any starts, so they go over ``threads`` threads, each on one torch thread
    (`widelimits._threads.run_parallel`; beside one busy process their small operations on two
    torch threads made them 17x slower), and the result does not depend on ``threads``."""
    x_tr = data[0]
    runs = []  # (key, model, trajectories it serves)
    for name, scaling in scalings.items():
        kind = _limit_kind(scaling)
        for key in [k for k in logits if k[0] == name] if kind == "IC-MF" else []:
            particles = mean_field_limit(net, x_tr.shape[1], config.limit_particles,
                                         seed=10_007, dtype=dtype)  # fmt: skip
            model = InitCorrected(particles, inits[key])
            model.initial = _Zero()  # the limit's own logits start at exactly 0
            runs.append((key, model, 1))
        if kind == "MF" and all(key != "MF" for key, _, _ in runs):
            served = sum(1 for k in logits if _limit_kind(scalings[k[0]]) == "MF")
            model = mean_field_limit(net, x_tr.shape[1], config.limit_particles,
                                     seed=10_007, dtype=dtype)  # fmt: skip
            runs.append(("MF", model, served))
    out: dict = {}
    finished: list[int] = []

    def train(i: int) -> None:
        key, model, served = runs[i]
        out[key] = _train(model, data, config.lr, steps, x_tr[:2])["logits"]
        finished.append(served)

    run_parallel(train, len(runs), threads, done=lambda: bar.update(finished.pop()))
    return out


def _limit_distances(
    config, net, scalings, data, steps, logits, inits, dtype, bar, threads=1
) -> dict:
    """Mean |f_width - f_limit| on the test set per recorded step, per scaling and width;
    ``bar`` advances by one per network whose limit trajectory is done."""
    x_tr, y_tr, x_te, _ = data
    out: dict[str, dict] = {}
    bar.set_postfix_str("mean-field particles")
    particles = _particle_runs(config, net, scalings, data, steps, logits, inits, dtype, bar,
                               threads)  # fmt: skip
    for name, scaling in scalings.items():
        kind = _limit_kind(scaling)
        bar.set_postfix_str(name)
        if kind == "IC-MF":
            limit = {key: particles[key] for key in logits if key[0] == name}
            kind = "IC-MF limit (mean-field particles + the network's frozen GP draw)"
        elif kind == "MF":
            limit = {key: particles["MF"] for key in logits if key[0] == name}
            kind = "mean-field limit (antithetic particles)"
        elif kind == "NTK":
            x_all = torch.cat([x_tr, x_te]).double()
            theta = tangent_kernel(net, scaling, config.ref_width, x_all, x_tr.double(), config.lr)
            dyn = KernelDynamics(theta, y_tr.double(), "bce")
            limit = {}
            for key in logits:
                if key[0] != name:
                    continue
                traj = dyn.run(inits[key], steps[-1], steps)
                limit[key] = torch.stack([traj[s][len(x_tr) :] for s in steps])
                bar.update()
            kind = "NTK limit (kernel gradient descent from the network's own initial logits)"
        else:
            continue
        per_width = {}
        for w in config.widths:
            keys = [k for k in logits if k[0] == name and k[1] == w]
            dist = torch.stack([(logits[k] - limit[k]).abs().mean(1) for k in keys]).mean(0)
            per_width[str(w)] = dist.tolist()
        out[name] = {"model": kind, "distance": per_width}
    return out
