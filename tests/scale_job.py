"""Helper for tests/test_scale.py: a kernel-store computation shared by the tests and a subprocess.

``python tests/scale_job.py PATH N TILE`` computes the kernel store of `problem(N)` at PATH with
``tile_size=TILE`` on the synchronous scheduler (one tile after another), so that a test can kill
it midway and resume it.
"""

import sys

import torch

import widelimits as wl


def network():
    return wl.Serial(
        wl.Dense(512, b_std=0.1), wl.ReLU(), wl.Dense(512, b_std=0.1), wl.ReLU(), wl.Dense(1)
    )


def inputs(n: int, seed: int = 0, features: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g, dtype=torch.float64)


def main(argv: list[str]) -> None:
    from widelimits.scale import compute_kernel_store

    path, n, tile = argv[0], int(argv[1]), int(argv[2])
    torch.set_num_threads(1)
    print("started", flush=True)
    compute_kernel_store(
        network(), inputs(n), path=path, tile_size=tile, scheduler="synchronous", progress=False
    )
    print("finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
