"""Benchmark: closed-form kernels of graph networks (`Aggregate`) against neural-tangents.

The network ``[Conv(1), ReLU, Aggregate] x 2, GlobalAvgPool, Dense(10)`` (hidden channels
infinite) on N random directed multigraphs of V nodes with E edges each and 8 node features,
NNGP + NTK with x2=None, once with dense adjacency patterns (N, V, V) and once with edge lists
(N, E, 2), against neural-tangents 0.6.5 on the same inputs (jit, best of ``--repeats`` after
compilation, from ``.nt-venv``; see bench/README.md).  The values are compared too (max
|difference| relative to the kernel's largest entry).

    python bench/bench_aggregate.py [--n 50 100] [--nodes 32] [--edges 32] [--dtype float32]
        [--device cpu|cuda] [--no-nt] [--nt-python PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_conv_kernel import (  # same folder: run as python bench/bench_aggregate.py
    best_time,
    print_row,
)
from nt_side import graph_patterns as patterns  # the graphs neural-tangents is given

import widelimits as wl

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".nt-venv" / "bin" / "python"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def gnn(implementation: str) -> wl.Serial:
    return wl.Serial(
        wl.Conv(None, 1), wl.ReLU(), wl.Aggregate(implementation),
        wl.Conv(None, 1), wl.ReLU(), wl.Aggregate(implementation),
        wl.GlobalAvgPool(), wl.Dense(10),
    )  # fmt: skip


def nt_run(args, n: int, sparse: bool, save: Path) -> dict | None:
    if args.no_nt or not args.nt_python.exists():
        return None
    cmd = [str(args.nt_python), str(ROOT / "bench" / "nt_side.py"), "graph", "--n", str(n)]
    cmd += ["--nodes", str(args.nodes), "--edges", str(args.edges), "--dtype", args.dtype]
    cmd += ["--repeats", str(args.repeats), "--save", str(save)] + (["--sparse"] if sparse else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--edges", type=int, default=32)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-nt", action="store_true")
    parser.add_argument("--nt-python", type=Path, default=NT_PYTHON)
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    print(
        f"[Conv(1), ReLU, Aggregate] x 2, GlobalAvgPool, Dense on N graphs of {args.nodes} "
        f"nodes, {args.edges} edges, 8 features; {args.dtype}, {args.device}, x2=None"
    )
    print(f"load {os.getloadavg()[0]:.1f}, ours on {torch.get_num_threads()} torch threads")
    print("pattern  N     widelimits_s  nt_s     nt/ours  max|diff|/scale")
    for implementation in ("dense", "sparse"):
        for n in args.n:
            dense, lists = patterns(n, args.nodes, args.edges)
            x = np.random.default_rng(0).standard_normal((n, args.nodes, 8))
            with tempfile.TemporaryDirectory() as tmp:
                save = Path(tmp) / "nt.npz"
                nt = nt_run(args, n, implementation == "sparse", save)
                ref = np.load(save) if nt is not None else None
                if ref is not None:
                    x = ref["x"]
            xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))
            xt = xt.to(dtype=dtype, device=args.device)
            p = torch.from_numpy(dense if implementation == "dense" else lists)
            p = p.to(dtype=dtype if implementation == "dense" else torch.long, device=args.device)
            net = gnn(implementation)
            ours, k = best_time(lambda net=net, x=xt, p=p: net.kernel(x, pattern=p),
                                args.repeats, args.device)  # fmt: skip
            print_row(implementation, n, ours, k, nt, ref)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
