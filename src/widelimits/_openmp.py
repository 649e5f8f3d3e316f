"""How torch's OpenMP threads wait, chosen by the ``widelimits`` command before torch loads.

An idle OpenMP thread of libgomp (torch's OpenMP on Linux) spins about 300 000 times before it
sleeps.  On a machine where another process takes a core, the spinning threads of one parallel
operation take CPU from the thread that the others wait for: the demo's width-4096 network
trained 3 epochs in 6.2 s on two idle cores and in 18.0 s beside one busy process, against
6.3 s and 11.5 s with ``GOMP_SPINCOUNT=1000`` (and 10.9 s and 11.3 s on one thread).  libgomp
reads the variable when torch loads it, so it has to be set before ``import torch``.

A library does not change the environment of the program that imports it: only the command line
(``widelimits ...``, ``python -m widelimits.cli``), which is an application, sets
``GOMP_SPINCOUNT=1000``, and only when neither it nor ``OMP_WAIT_POLICY`` is set and torch is
not loaded yet.  Set either variable to choose otherwise.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "1000"
"""What the command line sets ``GOMP_SPINCOUNT`` to."""


def running_the_command(argv: list[str]) -> bool:
    """Whether this process is the ``widelimits`` command: its console script, or
    ``python -m widelimits.cli`` (whose ``argv[0]`` is ``-m`` while the package loads)."""
    name = os.path.basename(argv[0]) if argv else ""
    return name in ("widelimits", "widelimits.exe", "-m")


def choose_spin_count(
    environ=os.environ, argv: list[str] | None = None, modules=sys.modules
) -> bool:
    """Set ``GOMP_SPINCOUNT`` for the command line (see the module docstring); returns whether
    it was set."""
    argv = sys.argv if argv is None else argv
    if not running_the_command(argv) or "torch" in modules:
        return False
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


choose_spin_count()
