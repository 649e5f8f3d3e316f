"""Benchmark: kernels and kernel regression through the on-disk store (widelimits.scale).

1. Throughput of ``compute_kernel_store`` (NNGP + NTK, float32, Dask threads, one task per core)
   against the in-memory ``net.kernel(x)`` on the same N (a size that fits), in kernel entries
   per second, with the peak resident memory of each.
2. The N x N store at full size (default N = 50 000: 10 GB per kernel on disk): total time,
   entries per second, and the peak resident memory against a set budget.
3. CG kernel regression on the stored NTK: iterations and time to a relative residual of
   1e-6 with the pivoted-Cholesky preconditioner and without one (capped by --max-iter).

Network: [Dense(), ReLU()] x 2 + Dense(1).  Inputs of dimension --d lie near a --latent
dimensional manifold (tanh of a random linear map of Gaussian latents), like real data: the
kernel's spectrum decays fast, so CG needs a preconditioner (``--latent 0``: plain Gaussian
inputs, whose kernel is well conditioned).

    python bench/bench_scale.py [--n 50000] [--d 784] [--small 8000] [--tile 2048]
        [--latent 16] [--dir /tmp/widelimits-bench] [--budget-gib 4] [--max-iter 300]
        [--rank 500] [--diag-reg 1e-4]
        [--skip-full] [--skip-cg] [--keep]
"""

from __future__ import annotations

import argparse
import math
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


def store_run(x: torch.Tensor, path: Path, tile: int) -> tuple[float, float]:
    shutil.rmtree(path, ignore_errors=True)
    with PeakRSS() as mem:
        start = time.perf_counter()
        scale.compute_kernel_store(net(), x, path=path, tile_size=tile, progress=True)
        seconds = time.perf_counter() - start
    return seconds, mem.peak


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
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--skip-cg", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the stores on disk")
    args = parser.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; FC ReLU net, d={args.d}")

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
        store = scale.KernelStore.open(path)
        y = torch.randn(store.shape[0], 1, generator=torch.Generator().manual_seed(1))
        print(
            f"\n3. CG on the stored NTK, N = {store.shape[0]}, diag_reg {args.diag_reg}, tol 1e-6"
        )
        for pre in args.preconditioners:
            rank = args.rank if pre in ("pivoted_cholesky", "nystrom") else 1
            _, _, info = scale.kernel_regression(
                store, y, get="ntk", diag_reg=args.diag_reg, tol=1e-6, max_iter=args.max_iter,
                preconditioner=pre, rank=rank, progress=True,
            )  # fmt: skip
            print(f"   {info}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
