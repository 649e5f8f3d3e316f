"""Kernel regression on mnist1d: 1-D CNN kernels with global average pooling vs FC kernels.

For each architecture, computes the NNGP and NTK kernels on ``--n-train`` training and
``--n-test`` test points of mnist1d (generated offline with ``make_dataset``), then does kernel
regression on one-hot targets (``gp_inference``, argmax of the posterior mean). ``diag_reg`` is
chosen from a grid on a validation split of the training set (train on the first 80%, validate
on the last 20%, using blocks of the same training kernel), never on the test set; the final
predictor uses all ``--n-train`` points.

Prints one line per architecture and kernel (accuracy, chosen diag_reg, kernel time), then the
ratio of the best CNN accuracy to the best FC accuracy.

    python bench/bench_mnist1d.py --n-train 1000 --n-test 1000
    python bench/bench_mnist1d.py --n-train 4000 --n-test 1000 --arch cnn2_pool
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import widelimits as wl
from widelimits.predict import gp_inference

DIAG_REGS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def fc(depth: int) -> wl.Serial:
    """[Dense(b_std=0.1), ReLU] x depth + Dense(10) on (N, 40) inputs."""
    hidden = [m for _ in range(depth) for m in (wl.Dense(None, 1.0, 0.1), wl.ReLU())]
    return wl.Serial(*hidden, wl.Dense(10))


def cnn(convs: int, k: int, padding: str, pool_after: int | None = None) -> wl.Serial:
    """``convs`` x [Conv(k, padding, b_std=0.1), ReLU], an AvgPool(2) after conv number
    ``pool_after`` if given, then GlobalAvgPool and Dense(10), on (N, 1, 40) inputs."""
    layers: list[wl.Layer] = []
    for i in range(1, convs + 1):
        layers += [wl.Conv(None, k, padding=padding, b_std=0.1), wl.ReLU()]
        if i == pool_after:
            layers.append(wl.AvgPool(2))
    return wl.Serial(*layers, wl.GlobalAvgPool(), wl.Dense(10))


def architectures() -> dict[str, tuple[str, wl.Layer]]:
    """name -> (input kind: "fc" (N, 40) or "cnn" (N, 1, 40), network)."""
    return {
        "fc2": ("fc", fc(2)),
        "fc3": ("fc", fc(3)),
        "cnn1_circ_k5": ("cnn", cnn(1, 5, "circular")),
        "cnn2_same_k5_pool": ("cnn", cnn(2, 5, "same", pool_after=1)),
        "cnn2_circ_k5": ("cnn", cnn(2, 5, "circular")),
        "cnn2_same_k5": ("cnn", cnn(2, 5, "same")),
        "cnn3_circ_k3": ("cnn", cnn(3, 3, "circular")),
        "cnn3_circ_k5_pool": ("cnn", cnn(3, 5, "circular", pool_after=1)),
    }


def load(n_train: int, n_test: int, dtype: torch.dtype, seed: int = 0):
    from mnist1d.data import get_dataset_args, make_dataset  # offline generation

    d = make_dataset(get_dataset_args())
    g = torch.Generator().manual_seed(seed)
    itr = torch.randperm(len(d["y"]), generator=g)[:n_train]
    ite = torch.randperm(len(d["y_test"]), generator=g)[:n_test]
    x = torch.as_tensor(d["x"], dtype=dtype)
    mu, sd = x.mean(), x.std()  # one scalar: keeps the translation structure for the CNN
    xtr = (x[itr] - mu) / sd
    xte = (torch.as_tensor(d["x_test"], dtype=dtype)[ite] - mu) / sd
    return xtr, torch.as_tensor(d["y"])[itr], xte, torch.as_tensor(d["y_test"])[ite]


def accuracy(k_tr: torch.Tensor, k_te: torch.Tensor, ytr: torch.Tensor, yte: torch.Tensor):
    """(test accuracy, diag_reg chosen on a validation split of the training set)."""
    onehot = torch.nn.functional.one_hot(ytr, 10).to(k_tr.dtype)
    n = len(ytr)
    m = int(0.8 * n)
    best = None
    for reg in DIAG_REGS:
        try:
            with warnings.catch_warnings():  # ill-conditioning warnings at the smallest diag_reg
                warnings.simplefilter("ignore", RuntimeWarning)
                pred = gp_inference(k_tr[:m, :m], onehot[:m], diag_reg=reg)("nngp", k_tr[m:, :m])
        except ValueError:  # not positive definite at this regularization
            continue
        acc = (pred.argmax(1) == ytr[m:]).double().mean().item()
        if best is None or acc > best[0]:
            best = (acc, reg)
    reg = best[1]
    pred = gp_inference(k_tr, onehot, diag_reg=reg)("nngp", k_te)
    return (pred.argmax(1) == yte).double().mean().item(), reg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--arch", nargs="*", default=None, help="subset of architecture names")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    xtr, ytr, xte, yte = load(args.n_train, args.n_test, dtype)
    archs = architectures()
    names = args.arch or list(archs)
    best = {"fc": 0.0, "cnn": 0.0}
    print(f"n_train={args.n_train} n_test={args.n_test} dtype={args.dtype} threads={args.threads}")
    for name in names:
        kind, net = archs[name]
        a, b = (xtr, xte) if kind == "fc" else (xtr[:, None], xte[:, None])
        t0 = time.perf_counter()
        k_tr = net.kernel(a, None, progress=False)
        k_te = net.kernel(b, a, progress=False)
        secs = time.perf_counter() - t0
        for g in ("nngp", "ntk"):
            acc, reg = accuracy(getattr(k_tr, g), getattr(k_te, g), ytr, yte)
            best[kind] = max(best[kind], acc)
            print(
                f"{name:20s} {g:5s} acc={acc:.3f} diag_reg={reg:g} kernel_time={secs:.1f}s",
                flush=True,
            )
    if best["fc"] > 0 and best["cnn"] > 0:
        print(
            f"best CNN / best FC accuracy = {best['cnn']:.3f} / {best['fc']:.3f} "
            f"= {best['cnn'] / best['fc']:.2f}"
        )


if __name__ == "__main__":
    main()
