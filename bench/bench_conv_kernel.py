"""Benchmark: closed-form kernels of convolutional networks against neural-tangents.

Two cases, each timed against a baseline measured in the same run:

1. ``[Conv(3x3, same), ReLU] x 2, GlobalAvgPool | Flatten, Dense`` on N images of 3x8x8
   (float32 by default), NNGP + NTK with x2=None, against neural-tangents 0.6.5 (jit, best of 3
   after compilation, from ``.nt-venv``; see bench/README.md) on the same inputs.  The values
   are compared too (max |difference| relative to the kernel's largest entry).
2. Throughput on 3x32x32 images, in kernel entries per second (one entry = one pair of images,
   NNGP and NTK together), for Myrtle-5 (pooling: every pixel pair) and a 21-layer CNN ending in
   Flatten (no pooling: per-pixel layout), next to neural-tangents' published V100 figures of
   2.7 ms/entry (with pooling) and 0.0047 ms/entry (21 layers, no pooling).

    python bench/bench_conv_kernel.py [--n 100 200] [--dtype float32] [--device cpu|cuda]
        [--myrtle-n 4] [--no-nt] [--skip-small] [--skip-myrtle]

Targets (issue 7): >= 10x faster than neural-tangents with global pooling, >= 3x with Flatten.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import widelimits as wl

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".nt-venv" / "bin" / "python"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
PUBLISHED_MS_PER_ENTRY = {"myrtle5": 2.7, "cnn21-flatten": 0.0047}


def two_layer_cnn(readout: str) -> wl.Serial:
    end = wl.GlobalAvgPool() if readout == "gap" else wl.Flatten()
    return wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.Conv(None, 3), wl.ReLU(), end, wl.Dense(10))


def cnn21() -> wl.Serial:
    layers = []
    for _ in range(20):
        layers += [wl.Conv(None, 3, W_std=2**0.5), wl.ReLU()]
    return wl.Serial(*layers, wl.Flatten(), wl.Dense(10, W_std=2**0.5))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats: int, device: str) -> tuple[float, object]:
    result = fn()  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def nt_run(n: int, readout: str, dtype: str, save: Path) -> dict | None:
    if not NT_PYTHON.exists():
        return None
    cmd = [str(NT_PYTHON), str(ROOT / "bench" / "nt_side.py"), "cnn", "--n", str(n)]
    cmd += [f"--{readout}", "--dtype", dtype, "--save", str(save)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def small_images(args) -> None:
    print(f"[Conv(3x3, same), ReLU] x 2 + readout + Dense on N x 3x8x8, {args.dtype}, x2=None")
    print("readout  N     widelimits_s  nt_s     nt/ours  max|diff|/scale")
    dtype = DTYPES[args.dtype]
    for readout in ("gap", "flatten"):
        for n in args.n:
            with tempfile.TemporaryDirectory() as tmp:
                save = Path(tmp) / "nt.npz"
                nt = None if args.no_nt else nt_run(n, readout, args.dtype, save)
                if nt is not None:
                    ref = np.load(save)
                    x = torch.from_numpy(ref["x"]).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
                else:
                    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, 8, 8, 3)))
                    x = x.permute(0, 3, 1, 2).contiguous()
                x = x.to(dtype=dtype, device=args.device)
                net = two_layer_cnn(readout)
                ours, k = best_time(lambda net=net, x=x: net.kernel(x), args.repeats, args.device)
                if nt is None:
                    print(f"{readout:8s} {n:4d}  {ours:12.3f}     -        -        -")
                    continue
                diff = max(
                    float(np.abs(getattr(k, g).double().cpu().numpy() - ref[g]).max())
                    / float(np.abs(ref[g]).max())
                    for g in ("nngp", "ntk")
                )
                nt_s = nt["best_s"]
                print(
                    f"{readout:8s} {n:4d}  {ours:12.3f}  {nt_s:7.3f}  {nt_s / ours:7.1f}  "
                    f"{diff:9.1e}"
                )
    print("target: nt/ours >= 10 with global pooling, >= 3 with Flatten\n")


def throughput(args) -> None:
    dtype = DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(0)
    print(f"Throughput on 3x32x32 images, {args.dtype}, {args.device}, x1 vs x2 (N x N entries)")
    print("network         N   seconds  entries/s   ms/entry  published V100 ms/entry")
    for name, net in (("myrtle5", wl.Myrtle(5)), ("cnn21-flatten", cnn21())):
        n = args.myrtle_n if name == "myrtle5" else 4 * args.myrtle_n
        x1 = torch.randn(n, 3, 32, 32, generator=gen).to(dtype=dtype, device=args.device)
        x2 = torch.randn(n, 3, 32, 32, generator=gen).to(dtype=dtype, device=args.device)
        seconds, _ = best_time(lambda net=net, a=x1, b=x2: net.kernel(a, b), 1, args.device)
        entries = n * n
        print(
            f"{name:14s} {n:3d}  {seconds:8.2f}  {entries / seconds:9.3g}  "
            f"{1e3 * seconds / entries:9.4g}  {PUBLISHED_MS_PER_ENTRY[name]:g}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--myrtle-n", type=int, default=4, help="images per side for Myrtle-5")
    parser.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-myrtle", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}\n")
    if not args.skip_small:
        small_images(args)
    if not args.skip_myrtle:
        throughput(args)


if __name__ == "__main__":
    main()
