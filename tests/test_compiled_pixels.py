"""Compiled runs over per-pixel tiles: convolutions, activations, Flatten and Dense in one pass.

A network of convolutions ending in Flatten keeps one covariance per pixel (the per-pixel
layout).  `widelimits.layers._chain` hands its runs of Conv (NTK parametrization), compiled
activations, Dense and Flatten to one compiled loop, a convolution being a map of the pixels
(`Conv.chain_op`, `window_map`).  These tests hold it against the layer-by-layer eager kernels
(1e-12 of the kernel's scale in float64) on random architectures and geometries, check the map
of the pixels against the window sum it stands for, and check that the threads sharing one tile
(`_chain._bands`) and the thread count never change a bit.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits import _threads
from widelimits.layers import _chain, _jit
from widelimits.layers._fused import fused
from widelimits.layers._spatial import axis_paddings, check_padding, conv_window_sum
from widelimits.layers.conv import window_map

pytest.importorskip("numba")

TOL = 1e-12
ACTS = [wl.ReLU(), wl.LeakyReLU(0.2), wl.Abs(), wl.Erf(1.2, 0.7, 0.1)]
PADDINGS = ["same", "valid", "circular", 1, ((1, 0), (0, 2))]


def _scaled(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


def _eager(net, x1, x2=None, **kw) -> wl.Kernel:
    with fused(False):
        return net.kernel(x1, x2, **kw)


# --- the map of the pixels --------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    size=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    window=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.sampled_from(["same", "valid", "circular", 0, 2]),
    seed=st.integers(0, 2**16),
)
def test_window_map_is_the_window_sum(size, window, stride, padding, seed):
    """The sparse map applied to random per-pixel values equals `conv_window_sum` applied to
    them directly (any number of axes, strides, paddings, windows larger than the image)."""
    d = len(size)
    paddings = axis_paddings(check_padding(padding), d)
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(3, *size, dtype=torch.float64, generator=g)
    try:
        ref = conv_window_sum(values, d, False, (window,) * d, (stride,) * d, paddings)
    except ValueError:
        return  # no output pixel: Conv refuses it (and chain_op leaves it to Conv)
    pixels = window_map(tuple(size), (window,) * d, (stride,) * d, paddings)
    assert pixels.size == tuple(ref.shape[1:])
    flat = values.reshape(3, -1).numpy()
    got = np.stack([
        [(pixels.weight[a:b] * flat[n, pixels.index[a:b]]).sum()
         for a, b in zip(pixels.ptr[:-1], pixels.ptr[1:], strict=True)]
        for n in range(3)
    ])  # fmt: skip
    np.testing.assert_allclose(got.reshape(ref.shape), ref.numpy(), rtol=1e-13, atol=1e-13)


# --- random architectures ---------------------------------------------------------------------


def _cnn(spec) -> wl.Serial:
    layers = []
    for kernel, stride, padding, act, b, frozen, dense in spec["convs"]:
        conv = wl.Conv(None, kernel, stride, padding, W_std=1.3, b_std=b, trainable=not frozen)
        layers.append(conv)
        if dense:  # a Dense acts on every pixel's channels alike
            layers.append(wl.Dense(W_std=1.1, b_std=b))
        layers.append(act)
    layers.append(wl.Flatten())
    if spec["head"]:
        layers += [wl.Dense(W_std=1.2, b_std=0.2), spec["head"]]
    return wl.Serial(*layers, wl.Dense(1))


conv_spec = st.tuples(
    st.integers(1, 3),  # kernel size
    st.integers(1, 2),  # stride
    st.sampled_from(PADDINGS),
    st.sampled_from(ACTS + [wl.GELU()]),  # GELU has no compiled form: it ends a run
    st.one_of(st.none(), st.floats(0.0, 0.5)),
    st.booleans(),  # frozen
    st.booleans(),  # a Dense after it
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    spec=st.fixed_dictionaries({
        "convs": st.lists(conv_spec, min_size=1, max_size=3),
        "head": st.sampled_from([None, wl.ReLU(), wl.Erf()]),
    }),
    d=st.integers(1, 3),
    n1=st.integers(1, 9),
    n2=st.one_of(st.none(), st.integers(1, 5)),
    tile=st.one_of(st.none(), st.integers(1, 6)),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_random_cnns_ending_in_flatten_equal_eager(spec, d, n1, n2, tile, seed):
    """Random convolutional networks on the per-pixel layout (1-D to 3-D inputs, strides,
    every padding, biases, frozen layers, Dense between convolutions, runs broken by GELU, a
    head after Flatten), symmetric and cross kernels over several tiles, with a repeated
    example: the compiled runs give the layer-by-layer eager kernels."""
    g = torch.Generator().manual_seed(seed)
    size = (5, 4, 3)[:d]
    x1 = torch.randn(n1, 2, *size, generator=g, dtype=torch.float64)
    x2 = None if n2 is None else torch.randn(n2, 2, *size, generator=g, dtype=torch.float64)
    if x2 is not None:
        x2[0] = x1[0]
    elif n1 > 2:
        x1[-1] = x1[0]
    net = _cnn(spec)
    try:
        ref = _eager(net, x1, x2, tile_size=tile)
    except ValueError:
        return  # strides and "valid" paddings left no pixel: both paths refuse it
    got = net.kernel(x1, x2, tile_size=tile)
    assert _scaled(got.nngp, ref.nngp) < TOL
    assert _scaled(got.ntk, ref.ntk) < TOL


def test_a_flatten_network_is_one_compiled_run(chain_calls):
    """Conv, ReLU, Conv, ReLU, Flatten, Dense on a diagonal tile and a full tile: each tile is
    one compiled call over its pairs (TRIANGLE, OUTER) writing one entry per pair, besides the
    examples' own variances (SELF)."""
    net = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.Conv(None, 3), wl.ReLU(), wl.Flatten(),
                    wl.Dense(1))  # fmt: skip
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    k = net.kernel(x, tile_size=4)
    calls = [(c["mode"], c["t_out"].shape[0]) for c in chain_calls]  # entries written
    modes = [mode for mode, _ in calls]
    assert modes.count(_jit.TRIANGLE) == 2 and modes.count(_jit.OUTER) == 1
    assert (_jit.OUTER, 4 * 2) in calls  # a 4 x 2 tile, one entry per pair: flattened
    ref = _eager(net, x, tile_size=4)
    assert _scaled(k.nngp, ref.nngp) < TOL and _scaled(k.ntk, ref.ntk) < TOL


def test_tensor_scales_and_the_standard_parametrization_run_layer_by_layer(monkeypatch):
    """A Conv whose scale needs a gradient, or in the standard parametrization, is not a map
    of the pixels (the general affine map handles it); the kernel is still right."""
    w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    for conv in (wl.Conv(None, 3, W_std=w), wl.Conv(8, 3, parametrization="standard")):
        net = wl.Serial(conv, wl.ReLU(), wl.Flatten(), wl.Dense(1))
        state = wl.Kernel(
            torch.ones(2, 2, 4, 4, dtype=torch.float64), torch.zeros((), dtype=torch.float64),
            torch.ones(2, 4, 4, dtype=torch.float64), torch.ones(2, 4, 4, dtype=torch.float64),
            layout="diagonal",
        )  # fmt: skip
        assert conv.chain_op(state, (4, 4)) is None
        x = torch.randn(4, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            got = net.kernel(x)
            ref = _eager(net, x)
        assert _scaled(got.ntk, ref.ntk) < TOL


# --- threads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_threads_sharing_one_tile_never_change_a_bit(dtype):
    """A kernel of one tile is shared by the threads in bands of rows (`_chain._bands`): the
    same bits on 1, 2 and 3 threads, and as with several tiles."""
    net = wl.Serial(wl.Conv(None, 3, b_std=0.1), wl.ReLU(), wl.Conv(None, 3), wl.Erf(),
                    wl.Flatten(), wl.Dense(1))  # fmt: skip
    x = torch.randn(50, 3, 8, 8, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert 50 * 51 // 2 * 64 >= _chain.MIN_BAND_ENTRIES  # big enough to be shared
    ref = net.kernel(x, threads=1)
    for threads in (2, 3):
        k = net.kernel(x, threads=threads)
        assert torch.equal(k.nngp, ref.nngp) and torch.equal(k.ntk, ref.ntk)
    tiled = net.kernel(x, tile_size=16, threads=2)
    assert torch.equal(tiled.nngp, ref.nngp) and torch.equal(tiled.ntk, ref.ntk)
    cross = net.kernel(x[:25], x[25:], threads=2)
    assert torch.equal(cross.ntk, net.kernel(x[:25], x[25:], threads=1).ntk)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rows=st.integers(1, 300), threads=st.integers(1, 5), triangle=st.booleans())
def test_bands_cover_every_row_once_with_balanced_pairs(rows, threads, triangle):
    mode = _jit.TRIANGLE if triangle else _jit.OUTER
    bands = _chain._bands(rows, mode, _chain.MIN_BAND_ENTRIES, threads)
    assert bands[0][0] == 0 and bands[-1][1] == rows
    assert all(a < b for a, b in bands)
    assert all(b == c for (_, b), (c, _) in zip(bands[:-1], bands[1:], strict=True))
    assert len(bands) <= max(1, _chain.BANDS_PER_THREAD * threads)
    if threads == 1 or rows == 1:
        return
    pairs = [sum(rows - r if triangle else rows for r in range(a, b)) for a, b in bands]
    total = rows * (rows + 1) // 2 if triangle else rows * rows
    assert max(pairs) <= total / len(bands) + rows  # each band within one row of its share
    assert _chain._bands(rows, mode, _chain.MIN_BAND_ENTRIES - 1, threads) == [(0, rows)]


def test_piece_threads_are_the_calls_threads_for_a_single_piece():
    seen = []
    _threads.run_parallel(lambda k: seen.append(_threads.piece_threads()), 1, 3)
    _threads.run_parallel(lambda k: seen.append(_threads.piece_threads()), 4, 2)
    assert seen[0] == 3 and seen[1:] == [1, 1, 1, 1] and _threads.piece_threads() == 1


def test_nested_parallel_calls_finish():
    """Pieces that run parallel calls of their own, on more threads than the pool has free,
    finish: a caller cancels the helpers that have not started and runs their pieces itself."""
    done = []
    lock = threading.Lock()

    def inner(k: int) -> None:
        with lock:
            done.append(k)

    def outer(k: int) -> None:
        _threads.run_parallel(inner, 6, 3)

    worker = threading.Thread(target=lambda: _threads.run_parallel(outer, 5, 3))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "nested parallel calls deadlocked"
    assert sorted(done) == sorted(list(range(6)) * 5)
