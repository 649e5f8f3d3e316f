"""Bad ``threads`` arguments are refused, naming the argument (`net.kernel`, `run_demo`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import widelimits as wl

BAD = [
    pytest.param(0, ValueError, id="zero"),
    pytest.param(-2, ValueError, id="negative"),
    pytest.param(np.int64(0), ValueError, id="numpy-zero"),
    pytest.param(1.5, TypeError, id="float"),
    pytest.param(2.0, TypeError, id="integral-float"),
    pytest.param("2", TypeError, id="string"),
    pytest.param(True, TypeError, id="bool"),
]


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("threads, error", BAD)
def test_kernel_refuses_bad_threads(threads, error, diagonal):
    net = wl.Serial(wl.Dense(8), wl.ReLU(), wl.Dense(1))
    before = torch.get_num_threads()
    with pytest.raises(error, match="threads"):
        net.kernel(torch.randn(4, 3), threads=threads, diagonal=diagonal)
    assert torch.get_num_threads() == before


def test_kernel_accepts_numpy_integer_threads():
    net = wl.Serial(wl.Dense(8), wl.ReLU(), wl.Dense(1))
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(net.kernel(x, threads=np.int64(2)).ntk, net.kernel(x, threads=1).ntk)


@pytest.mark.parametrize("threads, error", BAD)
def test_demo_refuses_bad_threads_before_any_work(threads, error, tmp_path):
    from widelimits.demo import run_demo

    with pytest.raises(error, match="threads"):
        run_demo(tmp_path / "out", quick=True, threads=threads, progress=False)
    assert not (tmp_path / "out").exists()
