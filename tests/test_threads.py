"""Kernel tiles spread over threads: the thread count never changes a result, not even by
rounding; torch's global thread setting is restored; errors in a worker reach the caller.

The reference for every comparison is the same kernel on one thread (``threads=1``, tiles one
after another in the calling thread): the results must be equal bit for bit, which also checks
that a BLAS product on one thread does not depend on which OS thread runs it.
"""

from __future__ import annotations

import threading
import traceback

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits._threads import run_parallel, torch_threads

DTYPES = (torch.float32, torch.float64)


def fc_net() -> wl.Serial:
    return wl.Serial(wl.Dense(64, b_std=0.1), wl.ReLU(), wl.Dense(64), wl.Erf(), wl.Dense(1))


def conv_net() -> wl.Serial:
    return wl.Serial(
        wl.Conv(8, 3, padding="same", b_std=0.1), wl.ReLU(), wl.AvgPool(2),
        wl.Conv(8, 3), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1),
    )  # fmt: skip


def inputs(kind: str, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (n, 12) if kind == "fc" else (n, 2, 6, 6)
    return torch.randn(shape, generator=gen).to(dtype)


def assert_identical(a: wl.Kernel, b: wl.Kernel) -> None:
    for name in ("nngp", "ntk", "cov1", "cov2"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


CASES = [
    pytest.param("fc", 41, 8, id="fc-tiles"),
    pytest.param("fc", 9, None, id="fc-one-tile"),
    pytest.param("conv", 7, 3, id="conv-pool-tiles"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind, n, tile", CASES)
@pytest.mark.parametrize("with_x2", [False, True], ids=["x2=None", "x2"])
def test_thread_count_never_changes_the_kernel(kind, n, tile, dtype, with_x2):
    net = fc_net() if kind == "fc" else conv_net()
    x1 = inputs(kind, n, dtype, seed=0)
    x2 = inputs(kind, n - 2, dtype, seed=1) if with_x2 else None
    if x2 is not None:
        x2[1] = x1[3]  # a repeated point: the same-point rule inside a tile
    ref = net.kernel(x1, x2, tile_size=tile, threads=1)
    for threads in (2, 3):
        assert_identical(net.kernel(x1, x2, tile_size=tile, threads=threads), ref)
    for torch_setting in (1, 2):  # the default follows torch.set_num_threads
        with torch_threads(torch_setting):
            assert_identical(net.kernel(x1, x2, tile_size=tile), ref)
    # Independent check that the tiles were assembled right: one tile holding everything.
    whole = net.kernel(x1, x2, tile_size=max(n, 64), threads=1)
    torch.testing.assert_close(ref.nngp, whole.nngp)


def test_a_single_wide_tile_is_the_same_on_any_thread_count():
    # MKL's two-thread product of a (100, 3072) block differs from its one-thread product in
    # the last bits: a single tile must run on one thread too.
    x = torch.randn(100, 3072, generator=torch.Generator().manual_seed(7))
    net = wl.Serial(wl.Dense(64), wl.ReLU(), wl.Dense(1))
    ref = net.kernel(x, threads=1)
    with torch_threads(2):
        assert_identical(net.kernel(x), ref)
        assert_identical(net.kernel(x, x[:50], threads=2), net.kernel(x, x[:50], threads=1))


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_thread_count_never_changes_the_batch_diagonal(kind):
    net = fc_net() if kind == "fc" else conv_net()
    x = inputs(kind, 30, torch.float64, seed=2)
    ref = net.kernel(x, diagonal=True, tile_size=2, threads=1)
    assert torch.equal(net.kernel(x, diagonal=True, tile_size=2, threads=3).nngp, ref.nngp)
    full = net.kernel(x, get="nngp", threads=1)
    torch.testing.assert_close(ref.nngp, full.diagonal(), rtol=1e-12, atol=0)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    n1=st.integers(1, 30),
    n2=st.integers(0, 30),
    tile=st.integers(1, 12),
    threads=st.integers(2, 5),
)
def test_any_tiling_and_thread_count_gives_the_same_bits(n1, n2, tile, threads):
    net = fc_net()
    x1 = inputs("fc", n1, torch.float32, seed=n1)
    x2 = None if n2 == 0 else inputs("fc", n2, torch.float32, seed=100 + n2)
    ref = net.kernel(x1, x2, tile_size=tile, threads=1)
    assert_identical(net.kernel(x1, x2, tile_size=tile, threads=threads), ref)


def test_gradients_through_threaded_tiles_match_one_thread_to_rounding():
    # Autograd sums the tiles' contributions in the order the tiles finished: to rounding only.
    w_std = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    net = wl.Serial(wl.Dense(64, W_std=w_std), wl.ReLU(), wl.Dense(1, W_std=w_std))
    x = inputs("fc", 20, torch.float64, seed=3).requires_grad_()
    grads = []
    for threads in (1, 3):
        k = net.kernel(x, tile_size=6, threads=threads)
        grads.append(torch.autograd.grad((k.nngp.sum() + k.ntk.sum()), (x, w_std)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
    # The gradient itself, against finite differences (an independent source).
    assert torch.autograd.gradcheck(
        lambda w: wl.Serial(wl.Dense(64, W_std=w), wl.ReLU(), wl.Dense(1, W_std=w)).kernel(
            x.detach()[:8], tile_size=3, threads=2, get="ntk"
        ),
        (w_std,),
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_torch_setting_restored_after_success_and_after_an_error(threads):
    before = torch.get_num_threads()
    net = fc_net()
    net.kernel(inputs("fc", 20, torch.float32, seed=4), tile_size=5, threads=threads)
    assert torch.get_num_threads() == before
    x = inputs("fc", 20, torch.float32, seed=5)
    x[13] = 1e30  # its variance overflows float32: the tiles holding row 13 raise
    with pytest.raises(FloatingPointError, match="non-finite") as info:
        net.kernel(x, tile_size=5, threads=threads)
    assert torch.get_num_threads() == before
    # The original traceback survives: it reaches the check inside the tile's recursion.
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "_check_finite" in frames


@pytest.mark.parametrize("tiles_in_budget, expected", [(1, 1), (2, 2), (3, 3), (50, 4)])
def test_memory_budget_bounds_the_tiles_in_flight(monkeypatch, tiles_in_budget, expected):
    import widelimits._compute as compute

    seen = []

    def recording(work, count, threads, done=None):
        seen.append(threads)
        return run_parallel(work, count, threads, done)

    monkeypatch.setattr(compute, "run_parallel", recording)
    x = inputs("fc", 20, torch.float32, seed=8)
    per_tile = 4 * compute.TEMPORARIES_PER_TILE * 4 * 4  # float32, 4 x 4 pairs
    k = fc_net().kernel(x, tile_size=4, threads=4, memory_budget=tiles_in_budget * per_tile)
    assert seen == [expected]
    assert_identical(k, fc_net().kernel(x, tile_size=4, threads=1))


def test_a_worker_exception_propagates_and_stops_the_rest():
    started = []
    lock = threading.Lock()

    def work(k: int) -> None:
        with lock:
            started.append(k)
        if k == 1:
            raise KeyError("tile 1 failed")

    with pytest.raises(KeyError, match="tile 1 failed") as info:
        run_parallel(work, 500, threads=2)
    assert "work" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert len(started) < 500  # the tiles not started yet were cancelled


def test_every_piece_runs_once_on_one_torch_thread_and_progress_counts_them():
    seen, ticks = [], []
    lock = threading.Lock()

    def work(k: int) -> None:
        with lock:
            seen.append((k, torch.get_num_threads()))

    run_parallel(work, 17, threads=3, done=lambda: ticks.append(threading.get_ident()))
    assert sorted(k for k, _ in seen) == list(range(17))
    assert {t for _, t in seen} == {1}
    assert ticks == [threading.get_ident()] * 17  # progress is updated from the caller's thread


def test_progress_bar_with_threads(capsys):
    net = fc_net()
    net.kernel(inputs("fc", 30, torch.float32, seed=6), tile_size=4, threads=2, progress=True)
    assert "kernel tiles" in capsys.readouterr().err


def test_overlapping_calls_restore_the_thread_setting():
    """Calls overlapping in several Python threads hold one torch thread together, and the
    setting they found comes back when the last ends (a per-call restore would leave torch on
    one thread, or switch it back under a call still running); a nested explicit setting is
    honoured and undone."""
    import threading

    from widelimits._threads import ONE_TORCH_THREAD

    before = torch.get_num_threads()
    with torch_threads(3):
        seen = []
        inside = threading.Barrier(2)

        def call():
            with ONE_TORCH_THREAD.held():
                inside.wait()  # both calls are inside at once
                seen.append(torch.get_num_threads())
                inside.wait()

        workers = [threading.Thread(target=call) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert seen == [1, 1] and torch.get_num_threads() == 3
        with ONE_TORCH_THREAD.held():
            with torch_threads(2):
                with torch_threads(1):
                    assert torch.get_num_threads() == 1
                assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
