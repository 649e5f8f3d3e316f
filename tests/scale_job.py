"""Helper for the scale tests: a kernel-store computation shared by the tests and a subprocess.

``python tests/scale_job.py PATH N TILE`` computes the kernel store of `problem(N)` at PATH with
``tile_size=TILE`` on the synchronous scheduler (one tile after another), so that a test can kill
it midway and resume it.
"""

import sys

import torch

import widelimits as wl


def count_tile_tasks(monkeypatch) -> list:
    """Record the (i, j) of every tile task the store computes from now on (the list fills up)."""
    from widelimits.scale import compute

    calls, task = [], compute._tile_task

    def counting(path, i, j, *args):
        calls.append((i, j))
        return task(path, i, j, *args)

    monkeypatch.setattr(compute, "_tile_task", counting)
    return calls


def network():
    return wl.Serial(
        wl.Dense(512, b_std=0.1), wl.ReLU(), wl.Dense(512, b_std=0.1), wl.ReLU(), wl.Dense(1)
    )


def inputs(n: int, seed: int = 0, features: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g, dtype=torch.float64)


def scaled_tanh(a: float):
    """An activation that captures ``a`` in a closure."""
    return wl.Elementwise(lambda x: a * torch.tanh(x))


def look_alikes() -> dict:
    """Networks that print alike in pairs but compute different kernels (and one that is
    rebuilt equal), for the fingerprint tests; also fingerprinted in a subprocess."""
    return {
        "tanh": wl.Serial(wl.Dense(8), wl.Elementwise(lambda x: torch.tanh(x)), wl.Dense(1)),
        "sin": wl.Serial(wl.Dense(8), wl.Elementwise(lambda x: torch.sin(x)), wl.Dense(1)),
        "w1": wl.Serial(wl.Dense(8, W_std=torch.tensor(1.50001)), wl.ReLU(), wl.Dense(1)),
        "w4": wl.Serial(wl.Dense(8, W_std=torch.tensor(1.50004)), wl.ReLU(), wl.Dense(1)),
        "a2": wl.Serial(wl.Dense(8), scaled_tanh(2.0), wl.Dense(1)),
        "a3": wl.Serial(wl.Dense(8), scaled_tanh(3.0), wl.Dense(1)),
        "float": wl.Serial(wl.Dense(8, W_std=1.5, b_std=0.1), wl.Erf(), wl.Dense(1)),
    }


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
