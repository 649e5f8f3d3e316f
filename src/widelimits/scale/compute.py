"""Kernels tile by tile into a `KernelStore`, in parallel on this machine or on a Dask cluster.

Every tile is an independent task: it reads its rows of x1 and x2, runs the network's kernel on
them with one torch thread (so the bits do not depend on the worker or on how the run was cut)
and writes its block and its marker.  Schedulers:

- ``"threads"`` (default): Dask's threaded scheduler on this machine, one task per core;
- ``"processes"``: a ``dask.distributed.LocalCluster`` of single-threaded worker processes,
  started and stopped for the call (no setup);
- ``"synchronous"``: one tile after another in this process (debugging);
- an address ``"tcp://host:8786"`` or a ``dask.distributed.Client``: the cluster's workers, with
  the inputs scattered once and failed tasks (a worker that died) retried by the scheduler.

An interrupted run (killed process, crashed worker, lost cluster) is resumed by calling the same
function again with the same arguments: every marked tile is first verified against its
checksums (one read of the store), then the tiles without a marker and the damaged ones are
computed.  A store for another computation (network, inputs, tile, dtype, versions) is never
reused: the network is identified by its exact fingerprint (`widelimits.fingerprint`), or by a
name the caller gives it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .._compute import GETS, as_input
from .._progress import progress_bar
from ..testing import single_thread
from .store import KernelStore, manifest_for

__all__ = ["compute_kernel_store", "SCHEDULERS"]

SCHEDULERS = ("threads", "processes", "synchronous")
DEFAULT_TILE = 2048


def _tile_task(path: str, i: int, j: int, net, x1: np.ndarray, x2, gets, device: str) -> tuple:
    """Compute tile (i, j) of the store at ``path`` and write it (runs on a worker)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    store = KernelStore.open(path)
    rows, cols = store.bounds(i, j)
    # Fresh (aligned) copies: BLAS kernels may round differently on differently aligned data.
    a = torch.tensor(x1[rows], device=device)
    b = None
    if not (store.symmetric and i == j):
        b = torch.tensor((x1 if x2 is None else x2)[cols], device=device)
    with torch.no_grad():
        k = net.kernel(a, b, get=tuple(gets), progress=False)
    store.write_tile(i, j, {g: getattr(k, g).cpu().numpy() for g in gets})
    return i, j


def compute_kernel_store(
    net,
    x1,
    x2=None,
    path: str | os.PathLike = "kernel.zarr",
    *,
    get=GETS,
    tile_size: int = DEFAULT_TILE,
    scheduler=None,
    workers: int | None = None,
    retries: int = 3,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    fingerprint: str | None = None,
    verify: bool = True,
) -> KernelStore:
    """Compute ``net``'s kernels between x1 and x2 (or x1 with itself) into a zarr store.

    Args:
        net: a widelimits network description (must be picklable for process or cluster
            schedulers: layers are, functions given to `Elementwise` must be importable).
        x1, x2: inputs as for `Layer.kernel` (x2=None: symmetric, only tiles j >= i computed,
            both triangles stored).
        path: the store's directory (new, or an empty directory).  An existing store for the
            same computation is resumed; one for anything else raises `StaleStoreError` unless
            ``overwrite``.  Anything at ``path`` that is not a store (a file, a folder with
            other content) raises `NotAStoreError` and is left untouched.
        get: kernels to store, ``"nngp"`` and/or ``"ntk"``.
        tile_size: edge of the tiles (= zarr chunks) in examples; each task holds a few tiles.
        scheduler: ``None``/"threads", "processes", "synchronous", a scheduler address or a
            ``dask.distributed.Client`` (see the module docstring).
        workers: parallel tasks on this machine (default: CPU count).
        retries: how often the cluster retries a failed tile task.
        device: where tiles are computed (default: "cuda" if available, else "cpu"); part of
            the manifest, since GPU and CPU results differ in the last bits.
        overwrite: delete an existing store at ``path`` first (only a directory that is
            recognisably a widelimits store: else `NotAStoreError`, nothing deleted).
        progress: show a progress bar (default: when there are 4 tiles or more).
        fingerprint: a name or version string you choose for the network, used instead of its
            exact fingerprint to recognise the store on a resume; required when the network
            holds something that cannot be fingerprinted (`FingerprintError` says what).
            Change it whenever the network changes.
        verify: on a resume, check every finished tile against its checksums (a read of the
            whole store) and recompute the damaged ones with a warning; the returned store
            verifies chunks when read.  ``False`` skips both.

    Returns:
        The finished `KernelStore`; ``store.read("ntk")`` loads a kernel, ``store.operator()``
        gives a `KernelOperator` for `widelimits.predict.cg_solve`.
    """
    from .._compute import _normalize_get

    gets, _ = _normalize_get(get)
    if "ntk" in gets and not net.any_parameters():
        raise ValueError("this network has no trainable layer, so it has no NTK; ask get='nngp'")
    x1 = as_input(x1, "x1")
    if x2 is not None:
        x2 = as_input(x2, "x2").to(x1.dtype)
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x1 examples have shape {tuple(x1.shape[1:])} but x2 examples "
                f"{tuple(x2.shape[1:])}: both batches must have the same example shape"
            )
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    # A tile past the data would make every zarr chunk that large: one tile holds it all.
    tile_size = min(tile_size, max(x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0]))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    manifest = manifest_for(
        net, x1, x2, gets, x1.dtype, tile_size, torch.device(device).type, fingerprint=fingerprint
    )
    store = KernelStore.create_or_resume(path, manifest, overwrite=overwrite)
    store.verify = verify
    if verify and (damaged := store.damaged_tiles()):
        warnings.warn(
            f"{len(damaged)} finished tile(s) of the kernel store at {store.path} do not match "
            f"their checksums (damaged on disk): {damaged[:8]}{' ...' if damaged[8:] else ''}; "
            "recomputing them",
            RuntimeWarning,
            stacklevel=2,
        )
        store.unmark(damaged)
    pending = store.pending()
    if not pending:
        return store
    a = x1.detach().cpu().numpy()
    b = None if x2 is None else x2.detach().cpu().numpy()
    bar = progress_bar(
        total=len(store.tiles()), initial=len(store.tiles()) - len(pending), unit="tile",
        desc="kernel store", progress=progress, default=len(store.tiles()) >= 4,
    )  # fmt: skip
    args = (str(Path(path)), net, gets, device)
    with bar:
        if scheduler is None or scheduler in ("threads", "synchronous"):
            _run_local(pending, args, a, b, scheduler or "threads", workers, bar)
        else:
            _run_distributed(pending, args, a, b, scheduler, workers, retries, bar)
    if not store.complete:  # pragma: no cover - every task either wrote its tile or raised
        raise RuntimeError(f"{len(store.pending())} tiles are still missing; run again to resume")
    return KernelStore.open(path, verify=verify)


def _run_local(pending, args, a, b, scheduler: str, workers, bar) -> None:
    import dask
    from dask.callbacks import Callback

    path, net, gets, device = args
    tasks = [dask.delayed(_tile_task)(path, i, j, net, a, b, gets, device) for i, j in pending]

    class Tick(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, tuple) and len(result) == 2:
                bar.update()

    with single_thread(), Tick():
        dask.compute(*tasks, scheduler=scheduler, num_workers=workers or os.cpu_count())


def _run_distributed(pending, args, a, b, scheduler, workers, retries, bar) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "this scheduler needs dask.distributed: pip install 'widelimits[scale]'"
        ) from err
    path, net, gets, device = args
    with contextlib.ExitStack() as stack:
        if isinstance(scheduler, Client):
            client = scheduler
        elif scheduler == "processes":
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers or os.cpu_count(),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                )  # fmt: skip
            )
            client = stack.enter_context(Client(cluster))
        elif isinstance(scheduler, str) and "://" in scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            raise ValueError(
                f"scheduler must be one of {SCHEDULERS}, a scheduler address like "
                f"'tcp://host:8786' or a dask.distributed.Client, got {scheduler!r}"
            )
        a_f = client.scatter(a, broadcast=True)
        b_f = None if b is None else client.scatter(b, broadcast=True)
        futures = [
            client.submit(
                _tile_task, path, i, j, net, a_f, b_f, gets, device, retries=retries, pure=False
            )
            for i, j in pending
        ]
        for future in as_completed(futures):
            future.result()  # raises the task's error after the retries
            bar.update()
