"""Benchmark: infinite-time NTK ensemble mean of a depth-2 ReLU MLP, 1000 train / 500 test.

Times ``gradient_descent_mse_ensemble(net, x_train, y_train, diag_reg=1e-4)`` followed by
``predict_fn(t=None, x_test, get="ntk")`` (fit + predict, the train kernel recomputed on every
call), best of ``--repeats`` after one warm-up, against neural-tangents' same case
(``bench/nt_side.py predict``, run in ``.nt-venv`` in the same run; skipped when it is missing).
Inputs are the ones nt_side.py uses: ``default_rng(seed).standard_normal`` with seeds 0 (x_train,
(n_train, d)), 1 (x_test, (n_test, d)) and 2 (y_train, (n_train, 1)), d = 3072.

It also prints the maximum relative difference (max |a - b| / max |b|) of widelimits' prediction
against neural-tangents' (saved by nt_side.py --save) and against a float64 Cholesky solve
``Theta(x, X) (Theta + diag_reg * mean(diag Theta) I)^-1 Y``.

    python bench/bench_predict.py [--n-train 1000] [--n-test 500] [--repeats 5] [--no-nt]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import widelimits as wl
from widelimits.predict import cholesky_solve, gradient_descent_mse_ensemble

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".nt-venv" / "bin" / "python"


def relu_net(depth: int = 2) -> wl.Serial:
    layers = []
    for _ in range(depth):
        layers += [wl.Dense(512), wl.ReLU()]
    return wl.Serial(*layers, wl.Dense(1))


def inputs(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def max_rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def nt_run(args: argparse.Namespace, save: Path) -> dict | None:
    if args.no_nt or not NT_PYTHON.exists():
        return None
    cmd = [str(NT_PYTHON), str(ROOT / "bench" / "nt_side.py"), "predict"]
    cmd += ["--n-train", str(args.n_train), "--n-test", str(args.n_test), "--d", str(args.d)]
    cmd += ["--dtype", args.dtype, "--diag-reg", str(args.diag_reg)]
    cmd += ["--repeats", str(args.repeats), "--save", str(save)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--d", type=int, default=3072)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--diag-reg", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    args = parser.parse_args()

    x_train = torch.from_numpy(inputs((args.n_train, args.d), args.dtype, 0))
    x_test = torch.from_numpy(inputs((args.n_test, args.d), args.dtype, 1))
    y_train = torch.from_numpy(inputs((args.n_train, 1), args.dtype, 2))
    net = relu_net(2)

    def fit_predict() -> torch.Tensor:
        predict_fn = gradient_descent_mse_ensemble(net, x_train, y_train, diag_reg=args.diag_reg)
        return predict_fn(t=None, x_test=x_test, get="ntk", compute_cov=False)

    mean = fit_predict()  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        mean = fit_predict()
        best = min(best, time.perf_counter() - start)

    # Reference: the closed form in float64 with widelimits' own Cholesky solver.
    x64, t64, y64 = x_train.double(), x_test.double(), y_train.double()
    theta_dd = net.kernel(x64, None, get="ntk")
    theta_td = net.kernel(t64, x64, get="ntk")
    ref = theta_td @ cholesky_solve(theta_dd, y64, args.diag_reg)

    print(
        f"n_train={args.n_train} n_test={args.n_test} d={args.d} dtype={args.dtype} "
        f"diag_reg={args.diag_reg} threads={torch.get_num_threads()}"
    )
    print(f"widelimits fit+predict: {best:.3f} s (best of {args.repeats})")
    print(f"max rel diff vs float64 Cholesky formula: {max_rel_diff(mean, ref):.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        save = Path(tmp) / "nt_predict.npz"
        nt = nt_run(args, save)
        if nt is None:
            print("neural-tangents: skipped (no .nt-venv or --no-nt)")
            return
        nt_mean = np.load(save)["mean"]
    print(
        f"neural-tangents fit+predict: {nt['best_s']:.3f} s (best of {args.repeats}; "
        f"first call {nt['compile_s']:.3f} s)"
    )
    print(f"ratio widelimits / NT: {best / nt['best_s']:.2f}")
    print(f"max rel diff vs neural-tangents: {max_rel_diff(mean, nt_mean):.2e}")
    print(f"max rel diff NT vs float64 Cholesky formula: {max_rel_diff(nt_mean, ref):.2e}")


if __name__ == "__main__":
    sys.exit(main())
