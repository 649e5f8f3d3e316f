"""The command line's choice of how torch's OpenMP threads wait (`widelimits._openmp`).

Only the ``widelimits`` command sets ``GOMP_SPINCOUNT``, before torch loads, and never over a
user's own setting; a program that imports widelimits keeps its environment.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from widelimits._openmp import SPIN_COUNT, choose_spin_count, running_the_command

COMMAND = ["/usr/local/bin/widelimits", "demo"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/usr/local/bin/widelimits", "demo"], True),
        (["widelimits.exe"], True),
        (["-m"], True),  # python -m widelimits.cli, while the package loads
        (["/usr/bin/python3", "script.py"], False),
        (["-c"], False),
        ([""], False),
        ([], False),
    ],
)
def test_which_processes_are_the_command(argv, expected):
    assert running_the_command(argv) is expected


def test_the_command_sets_the_spin_count_before_torch_loads():
    env: dict[str, str] = {}
    assert choose_spin_count(env, COMMAND, modules={}) is True
    assert env == {"GOMP_SPINCOUNT": SPIN_COUNT}


@pytest.mark.parametrize(
    "env, argv, modules",
    [
        ({"GOMP_SPINCOUNT": "300000"}, COMMAND, {}),  # the user's own choice stays
        ({"OMP_WAIT_POLICY": "ACTIVE"}, COMMAND, {}),
        ({}, COMMAND, {"torch": object()}),  # too late: libgomp read its settings already
        ({}, ["/usr/bin/python3", "train.py"], {}),  # a program importing the library
    ],
)
def test_nothing_is_changed_otherwise(env, argv, modules):
    before = dict(env)
    assert choose_spin_count(env, argv, modules) is False
    assert env == before


def _spin_count_seen(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_in_real_processes():
    """Importing widelimits as the command sets the variable; as a library it does not."""
    show = "import widelimits, os; print(os.environ.get('GOMP_SPINCOUNT'))"
    assert _spin_count_seen(f"import sys; sys.argv[0] = 'widelimits'; {show}") == SPIN_COUNT
    assert _spin_count_seen(show) == "None"
