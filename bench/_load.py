"""A bounded competing load for benchmarks: measure on a machine that is not idle.

    with competing_load("all-cores"):
        ...  # timings taken here share the machine with a busy loop per core

Kinds (`KINDS`):

- ``idle``: nothing started (whatever else runs on the machine still runs: see the load
  average printed by the benchmarks);
- ``one-core``: one pure-Python busy loop (one core taken);
- ``all-cores``: one busy loop per core (every core shared);
- ``bursty``: a multi-threaded torch job on every core that alternates bursts of small matrix
  products (each a parallel region ending in a barrier, whose OpenMP threads spin while waiting)
  with short sleeps, like a JAX or BLAS job running beside the benchmark.

The load runs in child processes that are always stopped: when the ``with`` block ends, also on
an exception or Ctrl-C; and each child exits by itself after ``max_seconds`` or as soon as its
parent process is gone, so it can never outlive the benchmark.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["KINDS", "competing_load", "describe_machine_load"]

KINDS = ("idle", "one-core", "all-cores", "bursty")

# Each child checks its deadline and its parent about every 10-50 ms.
_PRELUDE = """
import os, sys, time
deadline = time.monotonic() + {max_seconds}
parent = os.getppid()
def alive():
    return time.monotonic() < deadline and os.getppid() == parent
"""

_BUSY = """
print("ready", flush=True)
while alive():
    for _ in range(100_000):
        pass
"""

_BURSTY = """
import torch
torch.set_num_threads(os.cpu_count() or 1)
a = torch.randn(256, 256)
a @ a
print("ready", flush=True)
while alive():
    burst_end = time.monotonic() + {burst_s}
    while time.monotonic() < burst_end:
        for _ in range(20):
            a = torch.tanh(a @ a / 16)
    time.sleep({sleep_s})
"""


def _child(code: str, max_seconds: float) -> subprocess.Popen:
    source = _PRELUDE.format(max_seconds=max_seconds) + code
    return subprocess.Popen(
        [sys.executable, "-c", source],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()


@contextlib.contextmanager
def competing_load(
    kind: str,
    max_seconds: float = 900.0,
    burst_s: float = 0.2,
    sleep_s: float = 0.05,
) -> Iterator[None]:
    """Run a competing load of ``kind`` (one of `KINDS`) for the duration of the block.

    ``max_seconds`` is the hard cap on each child's life; ``burst_s`` and ``sleep_s`` shape the
    ``bursty`` load.  The block starts once every child is running its loop.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds!r}")
    procs: list[subprocess.Popen] = []
    try:
        if kind == "one-core":
            procs.append(_child(_BUSY, max_seconds))
        elif kind == "all-cores":
            procs.extend(_child(_BUSY, max_seconds) for _ in range(os.cpu_count() or 1))
        elif kind == "bursty":
            code = _BURSTY.format(burst_s=burst_s, sleep_s=sleep_s)
            procs.append(_child(code, max_seconds))
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {kind} load process failed to start")
        yield
    finally:
        _stop(procs)


def describe_machine_load() -> str:
    """The 1-, 5- and 15-minute load averages and the core count, for the benchmark header."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
