"""Per-chunk quantities of the empirical NTK, computed once and shared by the threads.

A chunk of examples pairs with every other chunk, so what is computed from one chunk alone
(its per-example Jacobians; the layer inputs and cotangents of the structured method) is kept
while it fits a byte budget instead of being recomputed for every pair.  Blocks run on several
threads at once (`widelimits._threads.run_parallel`): each chunk has its own lock, so a chunk's
quantities are computed once, by the first thread that needs them, while other threads compute
other chunks' beside it; a thread needing a chunk that is being computed waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["ChunkCache"]


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class ChunkCache:
    """``compute(x)`` for chunks ``x`` (views of the caller's batches), kept up to
    ``max_bytes`` in all; thread-safe.  A chunk is known by its storage address, shape and
    strides, which identify it while the batches it views are alive (one call)."""

    def __init__(self, compute: Callable[[Tensor], Any], max_bytes: int):
        self.compute, self.max_bytes = compute, max_bytes
        self._entries: dict[tuple, list] = {}  # key: [lock, value or None]
        self._bytes = 0
        self._lock = threading.Lock()

    def __call__(self, x: Tensor) -> Any:
        key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()))
        with self._lock:
            entry = self._entries.setdefault(key, [threading.Lock(), None])
        with entry[0]:  # another thread computing this chunk: wait for its result
            if entry[1] is not None:
                return entry[1]
            value = self.compute(x)
            size = _nbytes(value)
            with self._lock:
                if self._bytes + size <= self.max_bytes:
                    entry[1] = value
                    self._bytes += size
        return value
