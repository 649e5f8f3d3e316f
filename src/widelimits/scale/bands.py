"""A stored kernel for the solvers: held in memory when it fits, else streamed with read-ahead.

Conjugate gradients touch the whole train kernel once per iteration.  Read from disk at every
product, a 50 000 x 50 000 float32 kernel (10 GB) costs seconds of I/O per iteration; held in
memory, a product is one GEMM over RAM.  `store_operator` chooses:

- **in memory** (`ResidentKernel`) when ``N^2 x itemsize`` fits the memory budget (by default
  `MEMORY_FRACTION` of the memory available now): the kernel is read once, band by band, into one
  preallocated tensor (the peak is the kernel itself, never two copies), each chunk
  verified against its checksum as it is read (the checksums cost one hash of each chunk);
- **out of core** (`StreamedStoreKernel`) otherwise: each product reads the kernel a band of rows
  at a time, a background thread reading (and verifying) the next bands while the current one is
  multiplied, at most ``read_ahead`` bands ahead.  File reads, hashing and the GEMM all release
  the GIL, so one Python thread suffices for the overlap.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .._progress import progress_bar
from ..predict.operators import DenseKernel
from .store import KernelStore, StoreKernel

__all__ = [
    "MEMORY_FRACTION",
    "ResidentKernel",
    "StreamedStoreKernel",
    "available_memory",
    "load_kernel",
    "resolve_in_memory",
    "store_operator",
]

MEMORY_FRACTION = 0.6
"""Share of the available memory that an in-memory kernel may take by default (the rest is
headroom for the solver's vectors, the preconditioner and the other processes)."""


def available_memory() -> int:
    """Bytes this process could allocate now: ``MemAvailable`` (free memory plus reclaimable
    page cache; after writing a store, most memory is page cache), capped by a cgroup limit,
    else free pages (``os.sysconf``)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not POSIX: assume nothing
            return 0
    try:  # a container's limit (cgroup v2)
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return int(avail)


def resolve_in_memory(nbytes: int, in_memory="auto", memory_budget=None) -> bool:
    """Whether a kernel of ``nbytes`` is held in memory.

    ``in_memory``: ``"auto"`` (if ``nbytes <= memory_budget``), True or False.
    ``memory_budget``: bytes (a positive number), or None for `MEMORY_FRACTION` of
    `available_memory`.  True loads even past the budget, but never past the memory available.
    """
    if not (in_memory is True or in_memory is False or in_memory == "auto"):
        raise ValueError(f"in_memory must be 'auto', True or False, got {in_memory!r}")
    if memory_budget is not None:
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int | float):
            raise ValueError(
                f"memory_budget must be a number of bytes (e.g. 8e9) or None, got {memory_budget!r}"
            )
        if not (math.isfinite(memory_budget) and memory_budget > 0):
            raise ValueError(
                f"memory_budget must be a positive number of bytes, got {memory_budget}"
            )
    if in_memory is False:
        return False
    avail = available_memory()
    if in_memory is True:
        if avail and nbytes > avail:
            raise MemoryError(
                f"in_memory=True: the kernel takes {nbytes / 2**30:.1f} GiB but only "
                f"{avail / 2**30:.1f} GiB of memory is available; use in_memory='auto' or False "
                "to stream it from disk"
            )
        return True
    budget = MEMORY_FRACTION * avail if memory_budget is None else memory_budget
    return nbytes <= budget


class ResidentKernel(DenseKernel):
    """An exactly symmetric kernel held in memory (both triangles equal, as a store writes them).

    Products with up to `SYMV_COLUMNS` columns use the BLAS symmetric product (``?symv``), which
    reads one triangle: half the memory traffic of a GEMV, so about twice as fast for this
    memory-bound product; more columns use one GEMM.  Columns are read as rows (contiguous).
    """

    column_block = StoreKernel.column_block  # the same pivots as the store's operator
    SYMV_COLUMNS = 3  # measured: C symv calls beat one GEMM up to 3-4 columns

    def matmul(self, v: Tensor) -> Tensor:
        symv = _SYMV.get(self.k.dtype)
        fits = self.k.device.type == "cpu" and self.k.is_contiguous() and v.dtype == self.k.dtype
        if symv is None or not fits or v.shape[1] > self.SYMV_COLUMNS:
            return self.k @ v
        from scipy.linalg import blas

        symv = getattr(blas, symv)
        a = self.k.numpy().T  # a Fortran-ordered view of the same symmetric matrix: no copy
        cols = [symv(1.0, a, v[:, c].contiguous().numpy()) for c in range(v.shape[1])]
        return torch.from_numpy(np.stack(cols, axis=1))

    def columns(self, index: Tensor) -> Tensor:
        return self.k[index.to(self.device)].T


_SYMV = {torch.float32: "ssymv", torch.float64: "dsymv"}


def _bands(
    store: KernelStore, name: str, block_rows: int, verify: bool | None = None
) -> Iterator[tuple[int, int, Tensor]]:
    """Bands of ``block_rows`` rows (a multiple of the tile), each read and verified once."""
    n = store.shape[0]
    for r0 in range(0, n, block_rows):
        r1 = min(r0 + block_rows, n)
        yield r0, r1, torch.from_numpy(store.read_rows(name, r0, r1, verify=verify))


def _band_rows(store: KernelStore, block_rows: int | None) -> int:
    """Rows per band: whole tiles (a band reads whole chunks once)."""
    t = store.tile
    if block_rows is None:
        return t
    block_rows = int(block_rows)
    if block_rows < 1:
        raise ValueError(f"block_rows must be a positive number of rows, got {block_rows}")
    return max(1, round(block_rows / t)) * t


def load_kernel(
    store: KernelStore, name: str = "ntk", block_rows: int | None = None, progress: bool = False
) -> Tensor:
    """The whole (N, N) kernel ``name`` as one tensor, each band of rows read straight into its
    place in a preallocated tensor (peak memory: the kernel itself, never two copies), each
    chunk verified (per the store's ``verify``) from that same read.

    Raises `CorruptStoreError` naming the damaged tiles, as `KernelStore.read` does.
    """
    store._require(name)
    n = store.shape[0]
    rows = _band_rows(store, block_rows)
    out = torch.empty(store.shape, dtype=store.dtype)
    bar = progress_bar(
        total=n, desc="loading the kernel", unit="row", progress=progress, leave=False
    )
    with bar:
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            store.read_rows(name, r0, r1, out=out[r0:r1].numpy())
            bar.update(r1 - r0)
    return out


def read_ahead(make: Callable[[], Iterator], depth: int = 2) -> Iterator:
    """The items of ``make()``, produced by a background thread at most ``depth`` items ahead
    (``depth=0``: in this thread).  An exception in the producer is raised here; leaving the
    loop early stops the producer."""
    if depth <= 0:
        yield from make()
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in make():
                if not put((None, item)):
                    return
            put((None, end))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            put((err, None))

    worker = threading.Thread(target=produce, name="widelimits-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            err, item = items.get()
            if err is not None:
                raise err
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join()


class StreamedStoreKernel(StoreKernel):
    """A stored symmetric kernel read band by band at every product, the next ``read_ahead``
    bands read (and verified, in one pass) by a background thread during the current GEMM."""

    def __init__(
        self,
        store: KernelStore,
        name: str,
        block_rows: int | None = None,
        *,
        read_ahead: int = 2,
        verify: bool | None = None,
    ) -> None:
        super().__init__(store, name, _band_rows(store, block_rows), verify=verify)
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 0:
            raise ValueError(f"read_ahead must be an integer >= 0 (bands), got {read_ahead!r}")
        self.read_ahead = read_ahead

    def _bands(self):
        def make():
            return _bands(self.store, self.name, self.block_rows, self.verify)

        yield from read_ahead(make, self.read_ahead)


def store_operator(
    store: KernelStore,
    name: str = "ntk",
    *,
    in_memory="auto",
    memory_budget=None,
    block_rows: int | None = None,
    read_ahead: int = 2,
    progress: bool = False,
) -> DenseKernel | StreamedStoreKernel:
    """The stored symmetric kernel ``name`` as a solver operator: a `ResidentKernel` loaded once
    if it fits (see `resolve_in_memory`), else a `StreamedStoreKernel`."""
    store._require(name)
    if not store.symmetric:
        raise ValueError("solvers need a symmetric kernel (a store computed with x2=None)")
    n = store.shape[0]
    nbytes = n * n * store.dtype.itemsize
    if resolve_in_memory(nbytes, in_memory, memory_budget):
        return ResidentKernel(load_kernel(store, name, block_rows, progress))
    return StreamedStoreKernel(store, name, block_rows, read_ahead=read_ahead)
