"""Benchmark: closed-form kernels of an attention network against neural-tangents, side by side.

Network ``Dense(b_std=0.1), GlobalSelfAttention(mechanism, pos_emb_type, b_std=0.1), ReLU,
GlobalAvgPool, Dense(1)`` on N sequences of 3 channels and length L, NNGP + NTK with x2=None
(the full position-pair layout: L^2 entries per pair of sequences, and two L x L matrix products
per pair in the attention map).  neural-tangents 0.6.5 runs from its own environment
(``bench/nt_side.py attention``: jit, best of ``--repeats`` after compilation) on the same
inputs, and the values are compared (max |difference| relative to the kernel's largest entry).

    python bench/bench_attention.py [--n 100 400] [--length 16 64] [--mechanism softmax
        identity-sqrt] [--pos sum] [--dtype float32] [--nt-python PATH] [--no-nt]

Also times a call under a small ``memory_budget`` (tiles of a few sequences), which neural-
tangents has no counterpart for (its kernel_fn holds the whole N x N x L x L tensor at once;
``nt.batch`` tiles it by hand).
"""

from __future__ import annotations

import argparse
import json
import os
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


def network(mechanism: str, pos: str) -> wl.Serial:
    linear = mechanism != "identity-sqrt"
    attention = wl.GlobalSelfAttention(
        linear_scaling=linear, attention_mechanism=mechanism if linear else "identity",
        pos_emb_type=pos, b_std=0.1,
    )  # fmt: skip
    return wl.Serial(
        wl.Dense(b_std=0.1), attention, wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1)
    )  # fmt: skip


def best_time(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def nt_run(args, n: int, length: int, mechanism: str, save: Path) -> dict | None:
    if args.no_nt or not Path(args.nt_python).exists():
        return None
    cmd = [str(args.nt_python), str(ROOT / "bench" / "nt_side.py"), "attention", "--n", str(n),
           "--length", str(length), "--mechanism", mechanism, "--pos", args.pos,
           "--dtype", args.dtype, "--repeats", str(args.repeats), "--save", str(save)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--length", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--mechanism", nargs="+", default=["softmax", "identity-sqrt"])
    parser.add_argument("--pos", choices=("none", "sum", "concat"), default="sum")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nt-python", default=str(NT_PYTHON))
    parser.add_argument("--no-nt", action="store_true")
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    print(f"Dense, GlobalSelfAttention(pos={args.pos}), ReLU, GlobalAvgPool, Dense(1); N x 3 x L, "
          f"{args.dtype}, x2=None; load {os.getloadavg()[0]:.1f}, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print("mechanism      L     N  widelimits_s  nt_s     nt/ours  max|diff|/scale  tiled_s")
    for mechanism in args.mechanism:
        for length in args.length:
            for n in args.n:
                with tempfile.TemporaryDirectory() as tmp:
                    save = Path(tmp) / "nt.npz"
                    nt = nt_run(args, n, length, mechanism, save)
                    if nt is not None:
                        ref = np.load(save)
                        x = torch.from_numpy(ref["x"]).transpose(1, 2).contiguous()  # NLC -> NCL
                    else:
                        x = torch.from_numpy(
                            np.random.default_rng(0).standard_normal((n, length, 3))
                        ).transpose(1, 2).contiguous()  # fmt: skip
                    x = x.to(dtype)
                    net = network(mechanism, args.pos)
                    ours, k = best_time(lambda net=net, x=x: net.kernel(x), args.repeats)
                    budget = 64 * 16 * 4 * length**4  # tiles of about 8 x 8 sequences
                    tiled, _ = best_time(
                        lambda net=net, x=x, b=budget: net.kernel(x, memory_budget=b), 1
                    )
                    if nt is None:
                        print(f"{mechanism:13s} {length:3d} {n:5d}  {ours:12.3f}     -        -"
                              f"        -          {tiled:7.3f}")  # fmt: skip
                        continue
                    diff = max(
                        float(np.abs(getattr(k, g).double().numpy() - ref[g]).max())
                        / float(np.abs(ref[g]).max())
                        for g in ("nngp", "ntk")
                    )
                    nt_s = nt["best_s"]
                    print(f"{mechanism:13s} {length:3d} {n:5d}  {ours:12.3f}  {nt_s:7.3f}  "
                          f"{nt_s / ours:7.1f}  {diff:15.1e}  {tiled:7.3f}")  # fmt: skip
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
