"""Benchmark: closed-form kernels of convolutional networks against neural-tangents.

Three cases, each timed against a baseline measured in the same run:

1. ``[Conv(3x3, same), ReLU] x 2, GlobalAvgPool | Flatten, Dense`` on N images of 3x8x8
   (float32 by default), NNGP + NTK with x2=None, against neural-tangents 0.6.5 (jit, best of 3
   after compilation, from ``.nt-venv``; see bench/README.md) on the same inputs.  The values
   are compared too (max |difference| relative to the kernel's largest entry).
2. Myrtle-5 and Myrtle-10 on 3x32x32 float32 images, one torch thread, x1 vs x2 (N x N pairs,
   one tile): milliseconds per pair of images (NNGP and NTK together, wall and CPU time of the
   thread), against the measured single-pass floor on the same 32^4 pixel-pair layout: one pass
   of the ReLU dual map (`ReLU.dual`, NNGP and Tdot) plus one 3x3 same-offset window sum, per
   pair.  Each case runs in a fresh subprocess, which also reports its peak memory (maxrss
   growth over the process before the kernel call) for its one tile.
3. Throughput of a 21-layer CNN ending in Flatten (per-pixel layout), next to neural-tangents'
   published V100 figure of 0.0047 ms/entry.

    python bench/bench_conv_kernel.py [--n 100 200] [--dtype float32] [--device cpu|cuda]
        [--myrtle-n 4] [--no-nt] [--nt-python PATH] [--skip-small] [--skip-myrtle] [--thp]
        [--threads T] [--in-place-dual] [--reuse on off] [--by-layer]

Each Myrtle case runs with buffer reuse on and off (``--reuse``; `widelimits.layers._reuse`,
off: ``WIDELIMITS_REUSE=0``, every layer writes into fresh tensors) and reports its page faults
per call; ``--by-layer`` adds each layer's CPU time and page faults per pair.
``--in-place-dual`` swaps ReLU's dual map for `relu_dual_in_place` in the Myrtle cases (what a
dual with few temporaries would give; the floor keeps the library's).  ``--thp`` sets
``THP_MEM_ALLOC_ENABLE=1`` in the Myrtle subprocesses (torch then asks for transparent huge
pages for large tensors: fewer page faults on each fresh tile-sized tensor).

Targets (issue 7): >= 10x faster than neural-tangents with global pooling, >= 3x with Flatten.
Target (issue 14): Myrtle-5 at <= 25 ms per pair on one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
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
FLOOR_PAIRS = 16  # pairs in the floor measurement: one 4 x 4 tile


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


def print_row(label: str, n: int, ours: float, k, nt: dict | None, ref: dict | None) -> None:
    """One row of a side-by-side table: our time, neural-tangents' (if run), their ratio and
    the largest difference of NNGP and NTK relative to the reference's scale."""
    if nt is None or ref is None:
        print(f"{label:8s} {n:4d}  {ours:12.3f}     -        -        -")
        return
    diff = max(
        float(np.abs(getattr(k, g).double().cpu().numpy() - ref[g]).max())
        / float(np.abs(ref[g]).max())
        for g in ("nngp", "ntk")
    )
    nt_s = nt["best_s"]
    print(f"{label:8s} {n:4d}  {ours:12.3f}  {nt_s:7.3f}  {nt_s / ours:7.1f}  {diff:9.1e}")


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


def nt_run(n: int, readout: str, dtype: str, save: Path, python: Path) -> dict | None:
    if not python.exists():
        return None
    cmd = [str(python), str(ROOT / "bench" / "nt_side.py"), "cnn", "--n", str(n)]
    cmd += [f"--{readout}", "--dtype", dtype, "--save", str(save)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def small_images(args) -> None:
    print(f"[Conv(3x3, same), ReLU] x 2 + readout + Dense on N x 3x8x8, {args.dtype}, x2=None")
    print(f"load {os.getloadavg()[0]:.1f}, ours on {torch.get_num_threads()} torch threads")
    print("readout  N     widelimits_s  nt_s     nt/ours  max|diff|/scale")
    dtype = DTYPES[args.dtype]
    for readout in ("gap", "flatten"):
        for n in args.n:
            with tempfile.TemporaryDirectory() as tmp:
                save = Path(tmp) / "nt.npz"
                nt = None if args.no_nt else nt_run(n, readout, args.dtype, save, args.nt_python)
                ref = None
                if nt is not None:
                    ref = np.load(save)
                    x = torch.from_numpy(ref["x"]).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
                else:
                    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, 8, 8, 3)))
                    x = x.permute(0, 3, 1, 2).contiguous()
                x = x.to(dtype=dtype, device=args.device)
                net = two_layer_cnn(readout)
                ours, k = best_time(lambda net=net, x=x: net.kernel(x), args.repeats, args.device)
                print_row(readout, n, ours, k, nt, ref)
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print("target: nt/ours >= 10 with global pooling, >= 3 with Flatten\n")


def throughput(args) -> None:
    dtype = DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(0)
    print(f"Throughput on 3x32x32 images, {args.dtype}, {args.device}, x1 vs x2 (N x N entries)")
    print("network         N   seconds  entries/s   ms/entry  published V100 ms/entry")
    name, net, n = "cnn21-flatten", cnn21(), 4 * args.myrtle_n
    x1 = torch.randn(n, 3, 32, 32, generator=gen).to(dtype=dtype, device=args.device)
    x2 = torch.randn(n, 3, 32, 32, generator=gen).to(dtype=dtype, device=args.device)
    seconds, _ = best_time(lambda: net.kernel(x1, x2), 1, args.device)
    entries = n * n
    print(
        f"{name:14s} {n:3d}  {seconds:8.2f}  {entries / seconds:9.3g}  "
        f"{1e3 * seconds / entries:9.4g}  {PUBLISHED_MS_PER_ENTRY[name]:g}\n"
    )


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Best (wall, thread CPU) seconds of ``repeats`` calls after a warm-up call."""
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        w, c = time.perf_counter(), time.thread_time()
        fn()
        cpu, wall = min(cpu, time.thread_time() - c), min(wall, time.perf_counter() - w)
    return wall, cpu


def relu_dual_in_place(k11, k22, k12, need_dot):
    """What a ReLU dual with few temporaries gives (``--in-place-dual``; not the library's).

    The maths of ``ReLU.dual`` (rho = k12 / sqrt(k11 k22) clamped, sin = sqrt(1 - rho^2),
    theta = atan2(sin, rho), Tdot = (pi - theta) / 2 pi, T = (sqrt(k11 k22) sin) / 2 pi + Tdot
    k12) with three tile-sized buffers and in-place passes.
    """
    prod = torch.mul(k11, k22).sqrt_()
    rho = torch.div(k12, prod.clamp(min=torch.finfo(prod.dtype).tiny)).clamp_(-1.0, 1.0)
    sin = torch.mul(rho, rho).neg_().add_(1.0).clamp_(min=0.0).sqrt_()
    tdot = torch.atan2(sin, rho, out=rho).mul_(-0.5 / math.pi).add_(0.5)
    t = sin.mul_(prod).mul_(0.5 / math.pi).addcmul_(tdot, k12)
    return t, tdot


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def by_layer(net: wl.Serial, x1, x2, repeats: int) -> list[dict]:
    """CPU ms and page faults per pair of each of ``net``'s layers (a wrapper around each
    layer's kernel map; the layers are still chained with buffer reuse), the mean of
    ``repeats`` calls after a warm-up."""
    stats = [{"layer": repr(layer).split("(")[0], "cpu": 0.0, "faults": 0} for layer in net.layers]

    def wrap(i: int, layer) -> None:
        kernel_fn = layer.kernel_fn

        def timed(k):
            cpu, faults = time.thread_time(), _faults()
            out = kernel_fn(k)
            stats[i]["cpu"] += time.thread_time() - cpu
            stats[i]["faults"] += _faults() - faults
            return out

        layer.kernel_fn = timed  # on the instance: the chain still passes this layer its grants

    for i, layer in enumerate(net.layers):
        wrap(i, layer)
    net.kernel(x1, x2)
    for s in stats:
        s["cpu"], s["faults"] = 0.0, 0
    for _ in range(repeats):
        net.kernel(x1, x2)
    pairs = x1.shape[0] * x2.shape[0]
    return [
        {"layer": s["layer"], "cpu_ms": 1e3 * s["cpu"] / repeats / pairs,
         "faults": s["faults"] / repeats / pairs}
        for s in stats
    ]  # fmt: skip


def child(
    case: str, n: int, repeats: int, in_place_dual: bool = False, layers: bool = False
) -> dict:
    """One Myrtle case or the floor, single-threaded, in this (fresh) process."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    if case == "floor":
        from widelimits.layers._spatial import conv_sum

        p = FLOOR_PAIRS
        v1 = torch.rand(p, 32, 32, 1, 1, generator=gen) + 1
        v2 = torch.rand(p, 1, 1, 32, 32, generator=gen) + 1
        k12 = (2 * torch.rand(p, 32, 32, 32, 32, generator=gen) - 1) * (v1 * v2).sqrt()
        relu = wl.ReLU()
        dual = _timed(lambda: relu.dual(v1, v2, k12, True), repeats)
        window = _timed(lambda: conv_sum(k12, 2, True, (3, 3), (1, 1), "same"), repeats)
        out = {
            "relu_dual_ms": [1e3 * t / p for t in dual],
            "window_ms": [1e3 * t / p for t in window],
        }
        # the window sum alone, compiled (`_compiled_windows`) and the torch path, into a fresh
        # tensor and in place (out=t, as a Conv that owns its input does)
        from widelimits.layers import _jit

        for path in ("compiled", "torch"):
            _jit.set_compiled(path == "compiled")
            fresh = _timed(lambda: conv_sum(k12, 2, True, (3, 3), (1, 1), "same"), repeats)
            over = _timed(
                lambda: conv_sum(k12, 2, True, (3, 3), (1, 1), "same", out=k12), repeats
            )  # values grow (scale 1), timing does not change
            out[f"window_{path}_ms"] = 1e3 * fresh[1] / p
            out[f"window_{path}_in_place_ms"] = 1e3 * over[1] / p
        _jit.set_compiled(True)
        return out
    if in_place_dual:
        wl.ReLU.dual = lambda self, k11, k22, k12, need_dot: relu_dual_in_place(k11, k22, k12, 0)
    x1 = torch.randn(n, 3, 32, 32, generator=gen)
    x2 = torch.randn(n, 3, 32, 32, generator=gen)
    net = wl.Myrtle(int(case.removeprefix("myrtle")))
    before, faults = _maxrss_mib(), _faults()
    wall, cpu = _timed(lambda: net.kernel(x1, x2), repeats)
    out = {
        "wall_ms": 1e3 * wall / n**2,
        "cpu_ms": 1e3 * cpu / n**2,
        "peak_mib": _maxrss_mib() - before,
        "tile_mib": n * n * 32**4 * 4 / 2**20,
        "faults_per_call": (_faults() - faults) / (repeats + 1),
    }
    if layers:
        out["layers"] = by_layer(net, x1, x2, repeats)
    return out


def run_child(case: str, n: int, repeats: int, args, reuse: str = "on") -> dict:
    env = dict(os.environ, WIDELIMITS_REUSE="1" if reuse == "on" else "0")
    if args.thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    cmd = [sys.executable, __file__, "--child", case, "--myrtle-n", str(n)]
    cmd += ["--repeats", str(repeats)] + (["--in-place-dual"] if args.in_place_dual else [])
    cmd += ["--by-layer"] if args.by_layer and case != "floor" else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def myrtle(args) -> None:
    n = args.myrtle_n
    print(
        f"Myrtle on {n} x {n} pairs of 3x32x32 float32 images, 1 torch thread, one tile"
        f"{' (THP_MEM_ALLOC_ENABLE=1)' if args.thp else ''}"
        f"{' (in-place ReLU dual)' if args.in_place_dual else ''}; load {os.getloadavg()[0]:.1f}"
    )
    floor = run_child("floor", n, args.repeats, args)
    (dual_w, dual_c), (win_w, win_c) = floor["relu_dual_ms"], floor["window_ms"]
    floor_w, floor_c = dual_w + win_w, dual_c + win_c
    print(
        f"floor per pair (32^4 layout, {FLOOR_PAIRS} pairs): ReLU dual {dual_w:.1f} ms wall / "
        f"{dual_c:.1f} ms CPU + 3x3 window sum {win_w:.1f} / {win_c:.1f} = "
        f"{floor_w:.1f} / {floor_c:.1f} ms"
    )
    print(
        "3x3 window sum alone, CPU ms per pair, fresh output / in place: compiled "
        f"{floor['window_compiled_ms']:.2f} / {floor['window_compiled_in_place_ms']:.2f}, "
        f"torch path {floor['window_torch_ms']:.2f} / {floor['window_torch_in_place_ms']:.2f}"
    )
    print(
        "network   reuse  wall ms/pair  CPU ms/pair  vs floor (wall, CPU)  peak MiB  "
        "tile tensor MiB  page faults/call"
    )
    for case in ("myrtle5", "myrtle10"):
        for reuse in args.reuse:
            r = run_child(case, n, max(1, args.repeats - 1), args, reuse)
            print(
                f"{case:9s} {reuse:5s}  {r['wall_ms']:12.1f}  {r['cpu_ms']:11.1f}  "
                f"{r['wall_ms'] / floor_w:8.2f} {r['cpu_ms'] / floor_c:8.2f}    "
                f"{r['peak_mib']:8.0f}  {r['tile_mib']:8.0f}  {r['faults_per_call']:12.0f}"
            )
            for row in r.get("layers", []):
                print(
                    f"    {row['layer']:10s} {row['cpu_ms']:6.1f} ms CPU/pair "
                    f"{row['faults']:8.0f} faults/pair"
                )
    print(f"load after: {os.getloadavg()[0]:.1f}; target: Myrtle-5 <= 25 ms per pair\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--myrtle-n", type=int, default=4, help="images per side for Myrtle")
    parser.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    parser.add_argument("--nt-python", type=Path, default=NT_PYTHON)
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-myrtle", action="store_true")
    parser.add_argument("--thp", action="store_true", help="THP_MEM_ALLOC_ENABLE=1 for Myrtle")
    parser.add_argument("--threads", type=int, help="torch threads for our side (default: torch's)")
    parser.add_argument(
        "--in-place-dual", action="store_true", help="Myrtle with `relu_dual_in_place` (what-if)"
    )
    parser.add_argument(
        "--reuse", nargs="+", choices=("on", "off"), default=["on", "off"],
        help="Myrtle with buffer reuse on and/or off (WIDELIMITS_REUSE)",
    )  # fmt: skip
    parser.add_argument("--by-layer", action="store_true", help="Myrtle: CPU time per layer")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child:
        result = child(args.child, args.myrtle_n, args.repeats, args.in_place_dual, args.by_layer)
        print(json.dumps(result))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}\n")
    if not args.skip_small:
        small_images(args)
    if not args.skip_myrtle:
        myrtle(args)
        throughput(args)


if __name__ == "__main__":
    main()
