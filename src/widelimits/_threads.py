"""Parallelism across independent pieces of work (kernel tiles), each on one torch thread.

torch parallelises each operation over its intra-op threads and waits for all of them at the
end of it.  A kernel tile's recursion is thousands of small operations, so with torch's threads
it waits thousands of times per tile; when another process takes a core, one of those threads
is descheduled and every operation waits for it (2x to 15x slower than one thread on a busy
2-core machine).  Here the parallelism is across tiles instead: a pool of Python threads
(torch releases the GIL inside its operations), each running whole tiles with torch on one
thread, so there is one wait per call, at the end, and a descheduled thread only delays its
own tile.

Results do not depend on the number of threads: every piece is computed by the same code on the
same data with torch on one thread, and each writes its own part of the output.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["ONE_TORCH_THREAD", "SharedSetting", "check_threads", "torch_threads", "run_parallel"]


def check_threads(threads, arg: str = "threads") -> int:
    """``threads`` validated (a positive int), or torch's current setting for ``None``."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool | np.bool_) or not isinstance(threads, int | np.integer):
        raise TypeError(f"{arg} must be a positive integer or None, got {threads!r}")
    if threads < 1:
        raise ValueError(f"{arg} must be a positive integer or None, got {threads!r}")
    return int(threads)


class SharedSetting:
    """A process-wide torch setting held while any call needs it: the first call in applies
    it, the last one out restores what was there before.  (A context manager per call would,
    when one call ends, restore the setting under another call still running in another
    thread: a flash attention kernel without double backward, or torch's threads.)

    ``applied()`` (optional) says whether the setting is in force: a call that finds it changed
    by other code since (e.g. a nested ``torch_threads(2)``) applies it again for itself and
    puts back what it found when it ends."""

    def __init__(
        self, apply: Callable[[], Callable[[], None]], applied: Callable[[], bool] | None = None
    ):
        self._apply, self._applied, self._restore = apply, applied, None
        self._lock, self._count = threading.Lock(), 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        own = None
        with self._lock:
            if self._count == 0:
                self._restore = self._apply()
            elif self._applied is not None and not self._applied():
                own = self._apply()
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if own is not None:
                    own()
                if self._count == 0:
                    self._restore()


def _apply_one_torch_thread() -> Callable[[], None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(old)


ONE_TORCH_THREAD = SharedSetting(_apply_one_torch_thread, lambda: torch.get_num_threads() == 1)
"""torch on one intra-op thread while any call holds it (kernel tiles, empirical NTK blocks)."""

_setting_lock = threading.Lock()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads, restoring the previous setting afterwards (also
    after an exception).  The setting is process-wide (`torch.set_num_threads`): for one
    thread, calls overlapping in several Python threads share `ONE_TORCH_THREAD`, and the last
    one out restores the setting; other counts are for one caller at a time."""
    if n == 1:
        with ONE_TORCH_THREAD.held():
            yield
        return
    with _setting_lock:
        old = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _setting_lock:
            torch.set_num_threads(old)


_pool_lock = threading.Lock()
_pool: list = []  # [ThreadPoolExecutor, its number of threads], once made
_local = threading.local()  # .threads: what `piece_threads` says in this thread
_END = object()  # what a helper reports when it stops taking pieces


def piece_threads() -> int:
    """The threads a piece of `run_parallel` running in this thread may use for parallel work
    of its own: all of the call's when it is the call's only piece (a kernel of one tile),
    else 1 (the other threads run the other pieces); 1 outside `run_parallel`."""
    return getattr(_local, "threads", 1)


def _start_helper() -> None:
    # OpenMP's and MKL's thread counts are per OS thread: set them in each helper explicitly.
    torch.set_num_threads(1)


def _submit(n: int, fn: Callable[[], None]) -> list[Future]:
    """``fn`` started on ``n`` threads of the process's helper pool, made (or remade larger) on
    first need and kept: starting threads for every call cost 0.5-3 ms, and a helper started
    late runs its first piece late.  Submitting under the lock: a pool replaced by a larger
    one is shut down, and takes no new work."""
    with _pool_lock:
        if not _pool or _pool[1] < n:
            if _pool:
                _pool[0].shutdown(wait=False)  # its threads end when idle
            pool = ThreadPoolExecutor(n, "widelimits", initializer=_start_helper)
            _pool[:] = [pool, n]
        return [_pool[0].submit(fn) for _ in range(n)]


def _forget_pool() -> None:
    # a forked child has none of the parent's threads: it makes its own pool when needed
    global _pool_lock
    _pool_lock = threading.Lock()
    _pool.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_parallel(
    work: Callable[[int], None],
    count: int,
    threads: int,
    done: Callable[[], None] | None = None,
) -> None:
    """Call ``work(k)`` for ``k`` in ``range(count)`` on ``threads`` threads: this one and
    ``threads - 1`` helpers of a pool kept for the process, each taking the next piece when it
    is free.

    Each call runs with torch on one thread; the calls must be independent (each writes its own
    part of the output) so their order does not matter.  ``done()`` is called from this thread
    after each finished call (a progress bar).  The first exception raised by a call is raised
    here with its original traceback, after the calls already running have finished; the
    others are not started.  With one thread, or a single piece of work, the calls run here
    (and a single piece may split its own work over the threads: `piece_threads`).  Nested
    calls cannot deadlock: when this thread has run out of pieces, the helpers that have not
    started (the pool may be busy with the pieces of an enclosing call) are cancelled, and
    only those running are waited for.

    A single piece of work runs on one torch thread as well: on a busy 2-core machine, a
    512 x 512 FC tile on two torch threads took 3x to 7x as long as on one (measured), and
    MKL's two-thread product of a (100, 3072) block is not bit for bit its one-thread product.
    """
    tick = done or (lambda: None)
    workers = min(threads, count)
    outer = piece_threads()
    with torch_threads(1):
        if workers <= 1:
            _local.threads = threads if count == 1 else 1
            try:
                for k in range(count):
                    work(k)
                    tick()
            finally:
                _local.threads = outer
            return
        pieces, taking, failed = iter(range(count)), threading.Lock(), threading.Event()
        finished: queue.SimpleQueue = queue.SimpleQueue()

        def take() -> int | None:
            with taking:
                return None if failed.is_set() else next(pieces, None)

        def pieces_here(report: Callable[[int], None]) -> None:
            here = piece_threads()
            _local.threads = 1
            try:
                while (k := take()) is not None:
                    try:
                        work(k)
                    except BaseException:
                        failed.set()  # the pieces not started are not started
                        raise
                    report(k)
            finally:
                _local.threads = here

        def helper() -> None:
            try:
                pieces_here(finished.put)
            finally:
                finished.put(_END)

        ended = 0

        def drain(block: bool) -> None:  # tick for the helpers' finished pieces
            nonlocal ended
            while ended < workers - 1:
                try:
                    item = finished.get(block=block)
                except queue.Empty:
                    return
                if item is _END:
                    ended += 1
                else:
                    tick()

        futures = _submit(workers - 1, helper)
        error = None
        try:
            pieces_here(lambda k: (tick(), drain(block=False)))
        except BaseException as e:
            error = e
        ended += sum(f.cancel() for f in futures)  # helpers not started never will be
        drain(block=True)  # every helper that started has stopped
        errors = [error] + [None if f.cancelled() else f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
