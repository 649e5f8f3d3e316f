"""Benchmark: NNGP + NTK of a fully connected ReLU network on 4000 x 3072 inputs.

Prints, for float32 and float64 and depths 2 and 10, the time of ``net.kernel(x)`` against two
baselines measured in the same run:

- the Gram floor: the (N, N, d) product ``x @ x.T`` alone in torch;
- neural-tangents 0.6.5 (jit, best of 3 after compilation) when ``.nt-venv`` exists
  (see bench/README.md).

It also prints the peak extra memory (resident set growth in a fresh process, in units of
N^2 elements of the dtype) and the fraction of the machine's GEMM rate achieved.

    python bench/bench_fc_kernel.py [--n 4000] [--d 3072] [--repeats 3] [--no-nt]
    python bench/bench_fc_kernel.py --fused [--threads 1] [--clock cpu]   # fused vs eager only

Targets (issue 2): <= 1.3x the Gram floor and <= 0.7x neural-tangents at depth 2, <= 0.5x
neural-tangents at depth 10, peak extra memory at depth 10 <= 3 N^2 elements.

``--fused`` (issue 14) times, interleaved in one run, the Gram product, the kernel with the
eager activation maps and the kernel with the fused ones (the default), and prints both
kernel / Gram ratios.  Targets: depth 10 within 1.3x of the Gram product in float32 and 1.25x in
float64, depth 2 at or under 1.2x.  ``--clock cpu`` measures process CPU time instead of wall
time: on a loaded machine with one torch thread it is what the computation itself costs,
whatever share of a core the scheduler gives it.

Contention mode (issue 14): the depth-2 float32 kernel and the Gram product, on one torch thread
and with the default settings, beside each competing load of ``bench/_load.py`` in turn (idle,
one core taken, every core shared, a bursty multi-threaded job), all in one run:

    python bench/bench_fc_kernel.py --contention [--repeats 3]

Targets: under one-core and all-cores load the default within 1.3x of one thread under the same
load, under the bursty load within 2x; idle, the default at least 1.7x faster than one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from _load import KINDS, competing_load, describe_machine_load

import widelimits as wl

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / ".nt-venv" / "bin" / "python"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def relu_net(depth: int) -> wl.Serial:
    layers = []
    for _ in range(depth):
        layers += [wl.Dense(512), wl.ReLU()]
    return wl.Serial(*layers, wl.Dense(1))


def inputs(n: int, d: int, dtype: str) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0)).to(DTYPES[dtype])


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_time(fn, repeats: int) -> float:
    """Median of ``repeats`` timed calls after a warm-up: under a competing load the best of a
    few calls would flatter whoever got lucky with the scheduler."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@contextlib.contextmanager
def torch_threads(n: int):
    """torch on ``n`` threads (set globally, as a user would), restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def contention(n: int, d: int, repeats: int, kinds: list[str]) -> None:
    """One torch thread vs the default, beside each competing load in turn (one run)."""
    x = inputs(n, d, "float32")
    net = relu_net(2)
    print(f"NNGP+NTK of [Dense(512), ReLU] x 2 + Dense(1) on {n} x {d} float32 inputs, x2=None")
    print(f"torch {torch.__version__}, default {torch.get_num_threads()} threads; median of "
          f"{repeats} after a warm-up; {describe_machine_load()} before the run\n")  # fmt: skip
    print("load        gram_1t  gram_def  kernel_1t  kernel_def  def/1t  1t/def  target")
    rows = {}
    for kind in kinds:
        with competing_load(kind):
            with torch_threads(1):
                gram1 = median_time(lambda: x @ x.T, repeats)
                one = median_time(lambda: net.kernel(x), repeats)
            gram = median_time(lambda: x @ x.T, repeats)
            default = median_time(lambda: net.kernel(x), repeats)
        rows[kind] = (one, default)
        if kind == "idle":
            target, ok = "1t/def >= 1.7", one / default >= 1.7
        else:
            limit = 2.0 if kind == "bursty" else 1.3
            target, ok = f"def/1t <= {limit}", default / one <= limit
        print(
            f"{kind:10s}  {gram1:7.3f}  {gram:8.3f}  {one:9.3f}  {default:10.3f}  "
            f"{default / one:6.2f}  {one / default:6.2f}  {target} {'met' if ok else 'MISSED'}",
            flush=True,
        )
    print(f"\n{describe_machine_load()} after the run")
    print("def/1t: default time over one-thread time under the same load (< 1: the default is "
          "faster); 1t/def: its inverse, the speed-up of the default")  # fmt: skip


def gemm_rate(dtype: str, repeats: int) -> float:
    """FLOP/s of a square 4096 matrix product: the machine's practical GEMM peak."""
    a = torch.randn(4096, 4096).to(DTYPES[dtype])
    return 2 * 4096**3 / best_time(lambda: a @ a, repeats)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory_child(n: int, d: int, dtype: str, depth: int) -> None:
    """Run in a fresh process: print the resident-set growth of one kernel call in bytes.

    Uses the kernel's high-water mark (VmHWM), reset just before the call; ``ru_maxrss`` would
    not do, since it survives ``execve`` and so includes the parent's peak.
    """
    x = inputs(n, d, dtype)
    net = relu_net(depth)
    net.kernel(x[:64])  # load code paths before taking the baseline
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    k = net.kernel(x)
    after = _status_kib("VmHWM")
    del k
    print(json.dumps({"extra_bytes": (after - before) * 1024}))


def peak_memory(n: int, d: int, dtype: str, depth: int) -> float:
    cmd = [sys.executable, __file__, "--child-memory", str(depth), "--n", str(n), "--d", str(d)]
    out = subprocess.run(cmd + ["--dtypes", dtype], capture_output=True, text=True, check=True)
    extra = json.loads(out.stdout.strip().splitlines()[-1])["extra_bytes"]
    return extra / (n * n * torch.tensor([], dtype=DTYPES[dtype]).element_size())


def nt_time(n: int, d: int, dtype: str, depth: int) -> float | None:
    if not NT_PYTHON.exists():
        return None
    cmd = [str(NT_PYTHON), str(ROOT / "bench" / "nt_side.py"), "fc", "--n", str(n), "--d", str(d)]
    cmd += ["--depth", str(depth), "--dtype", dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["best_s"]


FUSED_TARGETS = {("float32", 10): 1.3, ("float64", 10): 1.25}
FUSED_TARGET_SHALLOW = 1.2  # depth 2, both dtypes


def _interleaved(fns: dict, repeats: int, clock) -> dict:
    """Best time of each function over ``repeats`` rounds, one call of each per round (so that
    a change of load hits all of them alike), after one warm-up round."""
    best = {name: math.inf for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = clock()
            fn()
            if round_:
                best[name] = min(best[name], clock() - start)
    return best


def fused_table(args) -> None:
    """Kernel / Gram ratios with the eager and the fused activation maps (issue 14)."""
    from widelimits.layers._fused import fused

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    n, d = args.n, args.d
    print(f"fused vs eager: [Dense(512), ReLU] x depth + Dense(1), {n} x {d}, x2=None")
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {args.clock} time, ", end="")
    print(f"best of {args.repeats}; load average {load}")
    print("dtype    depth  gram_s  eager_s  /gram  fused_s  /gram  target  met")
    for dtype in args.dtypes:
        x = inputs(n, d, dtype)
        for depth in args.depths:
            net = relu_net(depth)

            def eager(net=net, x=x):
                with fused(False):
                    net.kernel(x)

            def fused_call(net=net, x=x):
                net.kernel(x)

            fns = {"gram": lambda x=x: x @ x.T, "eager": eager, "fused": fused_call}
            times = _interleaved(fns, args.repeats, clock)
            target = FUSED_TARGETS.get((dtype, depth), FUSED_TARGET_SHALLOW)
            g, e, f = times["gram"], times["eager"], times["fused"]
            print(
                f"{dtype:8s} {depth:5d}  {g:6.3f}  {e:7.3f}  {e / g:5.2f}  {f:7.3f}  {f / g:5.2f}  "
                f"{target:6.2f}  {'yes' if f / g <= target else 'no'}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--d", type=int, default=3072)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fused", action="store_true", help="fused vs eager maps only")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument(
        "--contention", action="store_true", help="one thread vs default under competing loads"
    )
    parser.add_argument("--loads", nargs="+", choices=KINDS, default=list(KINDS))
    args = parser.parse_args()
    if args.child_memory is not None:
        return peak_memory_child(args.n, args.d, args.dtypes[0], args.child_memory)
    if args.contention:
        return contention(args.n, args.d, args.repeats, args.loads)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.fused:
        return fused_table(args)

    n, d = args.n, args.d
    print(f"NNGP+NTK of [Dense(512), ReLU] x depth + Dense(1) on {n} x {d} inputs, x2=None")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    header = "dtype    depth  gram_s  widelimits_s  /gram  nt_s    /nt    GEMM%  extra_mem/N^2"
    print(header)
    for dtype in args.dtypes:
        x = inputs(n, d, dtype)
        gram = best_time(lambda x=x: x @ x.T, args.repeats)
        rate = gemm_rate(dtype, args.repeats)
        for depth in args.depths:
            net = relu_net(depth)
            ours = best_time(lambda net=net, x=x: net.kernel(x), args.repeats)
            nt = None if args.no_nt else nt_time(n, d, dtype, depth)
            mem = peak_memory(n, d, dtype, depth)
            useful = n * n * d  # flops of the symmetric Gram product (half of 2 N^2 d)
            nt_s = f"{nt:6.3f}  {ours / nt:5.2f}" if nt else "   -      -  "
            print(
                f"{dtype:8s} {depth:5d}  {gram:6.3f}  {ours:12.3f}  {ours / gram:5.2f}  {nt_s}  "
                f"{100 * useful / ours / rate:5.1f}  {mem:6.2f}"
            )
    print("\nratios < 1 are faster than the baseline; GEMM% = N^2 d flops / time / GEMM peak")


if __name__ == "__main__":
    main()
