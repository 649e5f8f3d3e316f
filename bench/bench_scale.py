"""Benchmark: kernels and kernel regression through the on-disk store (widelimits.scale).

1. Throughput of ``compute_kernel_store`` (NNGP + NTK, float32, Dask threads, one task per core)
   against the in-memory ``net.kernel(x)`` on the same N (a size that fits), in kernel entries
   per second, with the peak resident memory of each.
2. The N x N store at full size (default N = 50 000: 10 GB per kernel on disk): total time,
   entries per second, and the peak resident memory against a set budget.
3. CG kernel regression on the stored NTK: the time to load it into memory (verified; peak
   resident memory), the time of one product read from disk without and with read-ahead and
   held in memory (one and ten right-hand sides), then iterations, time per iteration and total
   time to a relative residual of 1e-6 with the pivoted-Cholesky preconditioner and without one
   (capped by --max-iter).  The load average is printed with each step: the machine may be
   shared.

Network: [Dense(), ReLU()] x 2 + Dense(1).  Inputs of dimension --d lie near a --latent
dimensional manifold (tanh of a random linear map of Gaussian latents), like real data: the
kernel's spectrum decays fast, so CG needs a preconditioner (``--latent 0``: plain Gaussian
inputs, whose kernel is well conditioned).

    python bench/bench_scale.py [--n 50000] [--d 784] [--small 8000] [--tile 2048]
        [--latent 16] [--dir /tmp/widelimits-bench] [--budget-gib 4] [--max-iter 300]
        [--rank 500] [--diag-reg 1e-4] [--in-memory auto|yes|no] [--disk-products 2]
        [--skip-small] [--skip-full] [--skip-cg] [--keep]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import threading
import time
from pathlib import Path

import torch

import widelimits as wl
from widelimits import scale


def net() -> wl.Serial:
    return wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(), wl.ReLU(), wl.Dense(1))


def inputs(n: int, d: int, latent: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if latent == 0:
        return torch.randn(n, d, generator=gen)
    mix = torch.randn(latent, d, generator=gen) / math.sqrt(latent)
    return torch.tanh(torch.randn(n, latent, generator=gen) @ mix)


class PeakRSS:
    """Peak resident set size (bytes) while the block runs, sampled every 50 ms."""

    def __enter__(self):
        self.peak, self._stop = 0, False

        def sample():
            while not self._stop:
                with open("/proc/self/status") as f:
                    rss = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
                self.peak = max(self.peak, rss * 1024)
                time.sleep(0.05)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def timed_products(op, v: torch.Tensor, repeat: int) -> float:
    """Seconds per product ``op.matmul(v)``, the mean of ``repeat``."""
    start = time.perf_counter()
    for _ in range(repeat):
        op.matmul(v)
    return (time.perf_counter() - start) / max(repeat, 1)


def solve_bench(path: Path, args) -> None:
    """Step 3: loading, products from disk and from memory, CG to 1e-6."""
    from widelimits.scale.bands import StreamedStoreKernel, store_operator

    store = scale.KernelStore.open(path)
    n = store.shape[0]
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(n, 1, generator=gen)
    v1, v10 = torch.randn(n, 1, generator=gen), torch.randn(n, 10, generator=gen)
    print(f"\n3. CG on the stored NTK, N = {n}, diag_reg {args.diag_reg}, tol 1e-6 ({load()})")
    if args.disk_products:
        plain = store.operator("ntk")  # re-reads the kernel at each product, verified once
        plain.matmul(v1)  # first pass: verification
        disk = timed_products(plain, v1, args.disk_products)
        ahead = timed_products(StreamedStoreKernel(store, "ntk"), v1, args.disk_products)
        print(f"   product from disk: {disk:.2f} s plain, {ahead:.2f} s with read-ahead "
              f"({load()})")  # fmt: skip
    in_memory = {"auto": "auto", "yes": True, "no": False}[args.in_memory]
    with PeakRSS() as mem:
        start = time.perf_counter()
        op = store_operator(scale.KernelStore.open(path), "ntk", in_memory=in_memory, progress=True)
        seconds = time.perf_counter() - start
    where = "in memory" if hasattr(op, "k") else "streamed from disk"
    print(f"   {where}: {seconds:.1f} s to open/load ({n * n * 4 / 2**30:.1f} GiB, checksums "
          f"verified), peak RSS {mem.peak / 2**30:.2f} GiB ({load()})")  # fmt: skip
    one, ten = timed_products(op, v1, 3), timed_products(op, v10, 3)
    print(f"   product {where}: {one:.2f} s with 1 column, {ten:.2f} s with 10 ({load()})")
    for pre in args.preconditioners:
        rank = args.rank if pre in ("pivoted_cholesky", "nystrom") else 1
        start = time.perf_counter()
        _, _, info = scale.kernel_regression(
            op, y, get="ntk", diag_reg=args.diag_reg, tol=1e-6, max_iter=args.max_iter,
            preconditioner=pre, rank=rank, progress=True,
        )  # fmt: skip
        total = time.perf_counter() - start
        print(f"   {info}; {total:.0f} s ({load()})")
    print(f"   total with the load: {seconds:.0f} s + the solves above")


def store_run(x: torch.Tensor, path: Path, tile: int) -> tuple[float, float]:
    shutil.rmtree(path, ignore_errors=True)
    with PeakRSS() as mem:
        start = time.perf_counter()
        scale.compute_kernel_store(net(), x, path=path, tile_size=tile, progress=True)
        seconds = time.perf_counter() - start
    return seconds, mem.peak


def small(args, root: Path) -> None:
    """Step 1: the store against the in-memory kernel at a size that fits."""
    x = inputs(args.small, args.d, args.latent)
    net().kernel(x[:256])  # warm-up
    with PeakRSS() as mem:
        start = time.perf_counter()
        net().kernel(x)
        in_memory = time.perf_counter() - start
    entries = args.small**2
    stored, stored_mem = store_run(x, root / "small.zarr", args.tile)
    print(f"\n1. N = {args.small}: in-memory {in_memory:.1f} s "
          f"({entries / in_memory:.3g} entries/s, peak RSS {mem.peak / 2**30:.2f} GiB); "
          f"store {stored:.1f} s "
          f"({entries / stored:.3g} entries/s, peak RSS {stored_mem / 2**30:.2f} GiB); "
          f"store / in-memory throughput {in_memory / stored:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--small", type=int, default=8000, help="N of the in-memory comparison")
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--dir", default="/tmp/widelimits-bench")
    parser.add_argument("--budget-gib", type=float, default=4.0, help="resident memory budget")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--rank", type=int, default=500)
    parser.add_argument("--diag-reg", type=float, default=1e-4)
    parser.add_argument("--preconditioners", nargs="+", default=["pivoted_cholesky", "none"])
    parser.add_argument("--in-memory", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument(
        "--disk-products",
        type=int,
        default=2,
        help="products timed from disk, plain and with read-ahead (0: none)",
    )
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--skip-cg", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the stores on disk")
    args = parser.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; FC ReLU net, d={args.d}")

    if not args.skip_small:
        small(args, root)

    path = root / "full.zarr"
    if not args.skip_full:
        x = inputs(args.n, args.d, args.latent)
        seconds, peak = store_run(x, path, args.tile)
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        verdict = "within" if peak <= args.budget_gib * 2**30 else "OVER"
        print(f"\n2. N = {args.n}: {seconds:.0f} s, {args.n**2 / seconds:.3g} entries/s, "
              f"{disk / 2**30:.1f} GiB on disk, peak RSS {peak / 2**30:.2f} GiB ({verdict} the "
              f"{args.budget_gib:g} GiB budget)")  # fmt: skip

    if not args.skip_cg and path.exists():
        solve_bench(path, args)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
