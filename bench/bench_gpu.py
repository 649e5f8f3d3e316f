"""Benchmark: the kernel, convolutional and empirical-NTK paths on a GPU, with tile sizes scanned.

    python bench/bench_gpu.py [--device cuda] [--quick]

Run it where a CUDA device is present (it runs on the CPU too, for a dry run with ``--quick``).
Every row is the best of ``--repeats`` synchronised calls after one warm-up call, in one process,
with the peak device memory of the timed calls (``torch.cuda.max_memory_allocated``; RSS growth is
not measured on the CPU).  Sections:

(a) FC ``[Dense, ReLU] x depth, Dense(1)`` on N x 3072 standard-normal inputs, ``x2=None``,
    float32 and float64, depth 2 and 10: the kernel against the bare Gram product ``x @ x.T`` of
    the same inputs on the same device (the ratio is the cost of the recursion on top of the
    GEMM), then the default tile edge against fixed edges, to check that the default (sized from
    the device's free memory) is not slower than a hand-picked one.
(b) Convolutions on 3x32x32 images, float32: a 2-layer CNN with global average pooling and with
    Flatten (N x N entries), Myrtle-5 and Myrtle-10 (ms per pair of images), with a scan of the
    tile edge for Myrtle-5 and the peak memory of each tile edge.
(c) Empirical NTK of finite networks, float32: the MLP 3072-512-512-1 of
    ``bench_empirical_ntk.py`` on N inputs (structured and jacobian implementations) and the CIFAR
    ResNet-18 on 64 inputs over its 10 logits (trace).
(d) The same FC and Myrtle-5 cases on the host CPU with all its threads, for the GPU/CPU ratio on
    the same machine.
(e) Attention and graphs, float32: the network of ``bench_attention.py`` (softmax, summed
    positional embedding) on N sequences of length L, a two-block `TransformerBlock` network, and
    the graph network of ``bench_aggregate.py`` (dense adjacencies), N x N kernels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import widelimits as wl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_aggregate import gnn  # noqa: E402
from bench_attention import network  # noqa: E402
from bench_conv_kernel import two_layer_cnn  # noqa: E402
from bench_empirical_ntk import mlp, resnet  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> tuple[float, float]:
    """Best wall time of ``repeats`` calls after a warm-up, and the peak memory in GiB."""
    fn()
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return best, peak


def fc(depth: int) -> wl.Serial:
    layers = []
    for _ in range(depth):
        layers += [wl.Dense(None, W_std=2**0.5, b_std=0.1), wl.ReLU()]
    return wl.Serial(*layers, wl.Dense(1))


def section_fc(args, device: str, n: int) -> None:
    print(f"\n(a) FC kernel, {n} x 3072 inputs, x2=None, {device}")
    print(f"{'dtype':8} {'depth':>5} {'tile':>7} {'kernel s':>9} {'Gram s':>8} {'ratio':>6} "
          f"{'peak GiB':>8}")
    gen = torch.Generator().manual_seed(0)
    for name in args.dtypes:
        x = torch.randn(n, 3072, generator=gen).to(dtype=DTYPES[name], device=device)
        gram, _ = timed(lambda x=x: x @ x.T, device, args.repeats)
        for depth in (2, 10):
            net = fc(depth)
            tiles = [None] + ([] if args.quick or depth == 10 else args.fc_tiles)
            for tile in tiles:
                s, peak = timed(
                    lambda net=net, x=x, t=tile: net.kernel(x, tile_size=t), device, args.repeats
                )
                label = "default" if tile is None else str(tile)
                print(f"{name:8} {depth:5d} {label:>7} {s:9.4f} {gram:8.4f} {s / gram:6.2f} "
                      f"{peak:8.2f}")


def section_conv(args, device: str) -> None:
    print(f"\n(b) convolutions on 3x32x32 images, float32, {device}")
    gen = torch.Generator().manual_seed(0)
    for readout, n in (("gap", args.gap_n), ("flatten", args.flatten_n)):
        x = torch.randn(n, 3, 32, 32, generator=gen).to(device)
        s, peak = timed(lambda r=readout, x=x: two_layer_cnn(r).kernel(x), device, args.repeats)
        print(f"2-layer CNN + {readout:7}: {n} x {n} in {s:.3f} s, "
              f"{1e6 * s / n**2:.2f} us per entry, peak {peak:.2f} GiB")
    m = args.myrtle_n
    x1 = torch.randn(m, 3, 32, 32, generator=gen).to(device)
    x2 = torch.randn(m, 3, 32, 32, generator=gen).to(device)
    for depth in (5, 10):
        net = wl.Myrtle(depth)
        tiles = [None] + (args.myrtle_tiles if depth == 5 and not args.quick else [])
        for tile in tiles:
            try:
                s, peak = timed(
                    lambda net=net, t=tile: net.kernel(x1, x2, tile_size=t), device, 1
                )
            except torch.OutOfMemoryError:
                print(f"Myrtle-{depth} tile {tile}: out of device memory")
                torch.cuda.empty_cache()
                continue
            label = "default" if tile is None else str(tile)
            print(f"Myrtle-{depth:<2} {m} x {m} tile {label:>7}: {1e3 * s / m**2:8.3f} ms per "
                  f"pair, peak {peak:.2f} GiB")


def section_empirical(args, device: str) -> None:
    print(f"\n(c) empirical NTK, float32, {device}")
    gen = torch.Generator().manual_seed(0)
    n = args.ntk_n
    model = mlp(1).to(device)
    x = torch.randn(n, 3072, generator=gen).to(device)
    for impl in ("structured", "jacobian"):
        s, peak = timed(
            lambda i=impl: wl.finite.empirical_ntk(model, x, implementation=i), device,
            args.repeats,
        )
        print(f"MLP 3072-512-512-1, {n} inputs, {impl:10}: {s:.3f} s, peak {peak:.2f} GiB")
    if args.quick:
        return
    model = resnet().to(device)
    x = torch.randn(64, 3, 32, 32, generator=gen).to(device)
    for impl in ("structured", "jacobian"):
        s, peak = timed(
            lambda i=impl: wl.finite.empirical_ntk(model, x, implementation=i), device, 1
        )
        print(f"ResNet-18, 64 inputs, trace over 10 logits, {impl:10}: {s:.3f} s, "
              f"peak {peak:.2f} GiB")


def section_sequences(args, device: str) -> None:
    print(f"\n(e) attention and graphs, float32, {device}")

    gen = torch.Generator().manual_seed(0)
    n, length = args.seq_n, args.seq_length
    x = torch.randn(n, 3, length, generator=gen).to(device)
    nets = {
        "attention (softmax, sum)": network("softmax", "sum"),
        "2 transformer blocks": wl.Serial(
            wl.Dense(None), wl.TransformerBlock(), wl.TransformerBlock(), wl.GlobalAvgPool(),
            wl.Dense(1),
        ),
    }
    for name, net in nets.items():
        s, peak = timed(lambda net=net: net.kernel(x), device, args.repeats)
        print(f"{name:26}: {n} sequences of length {length}, {s:.3f} s, peak {peak:.2f} GiB")
    nodes = args.graph_nodes
    xg = torch.randn(n, 8, nodes, generator=gen).to(device)
    adj = (torch.rand(n, nodes, nodes, generator=gen) < 0.1).float().to(device)
    net = gnn("dense")
    s, peak = timed(lambda: net.kernel(xg, pattern=adj), device, args.repeats)
    print(f"{'graph network (dense)':26}: {n} graphs of {nodes} nodes, {s:.3f} s, "
          f"peak {peak:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fc-n", type=int, default=20000)
    parser.add_argument("--cpu-fc-n", type=int, default=4000)
    parser.add_argument("--fc-tiles", type=int, nargs="*", default=[4096, 8192, 16384])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--gap-n", type=int, default=256)
    parser.add_argument("--flatten-n", type=int, default=2000)
    parser.add_argument("--myrtle-n", type=int, default=64)
    parser.add_argument("--myrtle-tiles", type=int, nargs="*", default=[4, 8, 16, 32])
    parser.add_argument("--ntk-n", type=int, default=1000)
    parser.add_argument("--seq-n", type=int, default=1000)
    parser.add_argument("--seq-length", type=int, default=32)
    parser.add_argument("--graph-nodes", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="small sizes, no scans")
    parser.add_argument("--sections", nargs="+", default=["fc", "conv", "ntk", "seq", "cpu"])
    args = parser.parse_args()
    if args.quick:
        (args.fc_n, args.cpu_fc_n, args.gap_n, args.flatten_n, args.myrtle_n, args.ntk_n) = (
            400, 400, 4, 20, 2, 20
        )
        args.seq_n, args.seq_length, args.graph_nodes = 20, 8, 6
        args.repeats = 1
    device = args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    free = torch.cuda.mem_get_info()[0] / 2**30 if device.startswith("cuda") else float("nan")
    print(f"torch {torch.__version__}, device {device} ({name}, {free:.1f} GiB free), "
          f"{torch.get_num_threads()} CPU threads")
    if "fc" in args.sections:
        section_fc(args, device, args.fc_n)
    if "conv" in args.sections:
        section_conv(args, device)
    if "ntk" in args.sections:
        section_empirical(args, device)
    if "seq" in args.sections:
        section_sequences(args, device)
    if "cpu" in args.sections and device != "cpu":
        print("\n(d) the same FC and Myrtle-5 cases on this machine's CPU")
        args.dtypes, args.fc_tiles, args.myrtle_tiles = ["float32"], [], []
        section_fc(args, "cpu", args.cpu_fc_n)
        gen = torch.Generator().manual_seed(0)
        m = 4
        x1 = torch.randn(m, 3, 32, 32, generator=gen)
        s, _ = timed(lambda: wl.Myrtle(5).kernel(x1, x1 + 0.1), "cpu", 1)
        print(f"Myrtle-5 on the CPU, {m} x {m}: {1e3 * s / m**2:.2f} ms per pair")


if __name__ == "__main__":
    main()
