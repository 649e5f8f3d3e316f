"""Every gallery example (examples/plot_*.py) runs to completion, with fast settings.

Each script runs in its own subprocess, in a temporary working directory (so a stray file
written by an example could not land in the repository), with matplotlib's non-interactive
backend and ``WIDELIMITS_EXAMPLES_FAST=1``, which each example reads to shrink its sizes.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))


def test_the_gallery_has_examples():
    assert len(EXAMPLES) >= 10, [p.name for p in EXAMPLES]


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path):
    env = dict(os.environ)
    env.update(MPLBACKEND="Agg", WIDELIMITS_EXAMPLES_FAST="1", OMP_NUM_THREADS="1")
    src = str(ROOT / "src")
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = src + os.pathsep + extra if extra else src
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )
    output = f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{script.name} failed:\n{output}"
    assert proc.stdout.strip(), f"{script.name} printed nothing"
    assert list(tmp_path.iterdir()) == [], f"{script.name} left files in its working directory"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_in_gallery_format(script: Path):
    """A module docstring whose first line is an RST title underlined with '=' (sphinx-gallery)."""
    text = script.read_text()
    assert text.startswith(('"""\n', 'r"""\n')), script.name
    title, underline = text.splitlines()[1:3]
    assert title.strip() and set(underline) == {"="} and len(underline) >= len(title), script.name
