"""Compiled window sums (`widelimits.layers._compiled_windows`) against the torch path.

The compiled path does the torch path's adds in one pass per axis pair (both 2-D convolution
steps in one pass, a 2-D pooling in one pass), so the two agree to rounding: 1e-12 in float64,
and float32 results against the float64 torch path to float32 precision.  Each test also
checks which path ran (a spy on the compiled loops), so that none passes vacuously.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits.layers import _compiled_windows, _jit, _spatial
from widelimits.layers._reuse import reuse

pytestmark = pytest.mark.skipif(
    _compiled_windows.windows() is None, reason="numba is not installed"
)

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
LOOPS = ("pair_sum", "plane_sum", "pair2_sum", "pool2_sum")


@contextlib.contextmanager
def compiled(enabled: bool):
    previous = _jit.compiled_enabled()
    _jit.set_compiled(enabled)
    try:
        yield
    finally:
        _jit.set_compiled(previous)


@contextlib.contextmanager
def counting():
    """Counts the calls of each compiled loop inside the block."""
    loops = _compiled_windows.windows()
    calls = dict.fromkeys(LOOPS, 0)
    originals = {name: getattr(loops, name) for name in LOOPS}

    def counted(name):
        def call(*args):
            calls[name] += 1
            return originals[name](*args)

        return call

    try:
        for name in LOOPS:
            setattr(loops, name, counted(name))
        yield calls
    finally:
        for name in LOOPS:
            setattr(loops, name, originals[name])


@pytest.fixture
def spy():
    with counting() as calls:
        yield calls


def _randn(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@st.composite
def geometries(draw):
    """(d, sizes, window, paddings): 1 to 3 spatial axes, each with a window of 1 to 5 and
    zero padding ('same', 'valid' where the window fits, or explicit (before, after))."""
    d = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 7 if d < 3 else 4)) for _ in range(d)]
    window, paddings = [], []
    for n in sizes:
        w = draw(st.integers(1, 5))
        kind = draw(st.sampled_from(["same", "valid", "explicit"]))
        if kind == "valid" and w > n:
            kind = "same"
        if kind == "explicit":
            before = draw(st.integers(0, 2))
            after = max(draw(st.integers(0, 2)), w - n - before)
            paddings.append((before, after))
        else:
            paddings.append(kind)
        window.append(w)
    return d, sizes, tuple(window), tuple(paddings)


def _both(t, d, full, window, paddings, scale, base, dtype):
    """(compiled in ``dtype``, torch path in float64)."""
    ones = (1,) * d
    with compiled(True):
        b = None if base is None else base.to(dtype)
        got = _spatial.conv_window_sum(t.to(dtype), d, full, window, ones, paddings, scale, b)
    with compiled(False):
        want = _spatial.conv_window_sum(t, d, full, window, ones, paddings, scale, base)
    return got, want


def _close(got: torch.Tensor, want: torch.Tensor, dtype) -> None:
    if dtype == torch.float64:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    else:  # float32 against float64: a few float32 roundings of the largest terms
        bound = 1e-6 * float(want.abs().max()) + 1e-30
        assert float((got.double() - want).abs().max()) <= 8 * bound


@SETTINGS
@given(
    geometry=geometries(),
    full=st.booleans(),
    with_base=st.booleans(),
    scale=st.sampled_from([1.0, 0.37]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=st.integers(0, 2**16),
)
def test_conv_window_sum_matches_torch_path(geometry, full, with_base, scale, dtype, seed):
    d, sizes, window, paddings = geometry
    shape = (2, 3, *sizes, *sizes) if full else (2, 3, *sizes)
    t = _randn(shape, seed)
    out_shape = list(shape)
    for r, (n, w, p) in enumerate(zip(sizes, window, paddings, strict=True)):
        m = _spatial.pads(n, w, 1, p)[2]
        out_shape[2 + r] = m
        if full:
            out_shape[2 + d + r] = m
    base = _randn(out_shape, seed + 1) if with_base else None
    with counting() as calls:
        got, want = _both(t, d, full, window, paddings, scale, base, dtype)
    assert got.dtype == dtype and list(got.shape) == out_shape
    _close(got, want, dtype)
    # the compiled path runs on the pixel-pair layout, the per-pixel layout stays with torch
    assert (sum(calls.values()) >= 1) == full


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("window, stride, padding", [(2, 2, "valid"), (3, 1, "same"),
                                                     (3, 2, "same"), (4, 3, "valid")])  # fmt: skip
def test_pool_window_sum_matches_torch_path(spy, dtype, window, stride, padding):
    t = _randn((2, 3, 7, 6, 7, 6), 0)
    with compiled(True):
        got = _spatial.pool_sum(t.to(dtype), 2, (window,) * 2, (stride,) * 2, padding, 0.25)
    with compiled(False):
        want = _spatial.pool_sum(t, 2, (window,) * 2, (stride,) * 2, padding, 0.25)
    _close(got, want, dtype)
    assert spy["pool2_sum"] == 1


def test_fused_2d_steps_equal_the_steps_one_by_one_to_the_bit(spy):
    # pair2_sum against two single-step passes (pair_sum, then plane_sum)
    t, base = _randn((3, 2, 6, 5, 6, 5), 1), _randn((3, 2, 6, 5, 6, 5), 2)
    with compiled(True):
        fused = _spatial.conv_sum(t, 2, True, (3, 4), (1, 1), "same", 0.3, base)
        step = _spatial._axis_sum(t, (2, 4), 3, 1, "same", scale=0.3)
        steps = _spatial._axis_sum(step, (3, 5), 4, 1, "same", base=base)
    assert spy["pair2_sum"] == 1 and spy["pair_sum"] == 1 and spy["plane_sum"] == 1
    assert torch.equal(fused, steps)


@pytest.mark.parametrize("base_kind", ["none", "other", "t"])
def test_in_place_sum_equals_a_fresh_one_to_the_bit(spy, base_kind):
    # out=t: each output plane waits until no output reads its input plane
    t = _randn((2, 3, 6, 5, 6, 5), 3)
    base = {"none": None, "other": _randn(t.shape, 4), "t": t}[base_kind]
    with compiled(True):
        fresh = _spatial.conv_sum(t, 2, True, (5, 3), (1, 1), "same", 0.7, base)
        over = t.clone()
        same = over if base_kind == "t" else base
        got = _spatial.conv_sum(over, 2, True, (5, 3), (1, 1), "same", 0.7, same, out=over)
    assert got.data_ptr() == over.data_ptr()
    assert torch.equal(got, fresh)
    assert spy["pair2_sum"] == 2


def test_shift_is_added_after_the_sum():
    t = _randn((2, 2, 5, 4, 5, 4), 5)
    with compiled(True):
        got = _spatial.conv_window_sum(t, 2, True, (3, 3), (1, 1), ("same",) * 2, 0.5,
                                       shift=0.25)  # fmt: skip
    with compiled(False):
        want = _spatial.conv_window_sum(t, 2, True, (3, 3), (1, 1), ("same",) * 2, 0.5) + 0.25
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_strided_views_are_summed_by_the_compiled_path(spy):
    # a permuted kernel (as the input layer makes) is copied, not sent to the torch path: the
    # covariances and the variances must round alike
    t = _randn((2, 5, 4, 3, 5, 4), 6).permute(0, 3, 1, 2, 4, 5)
    with compiled(True):
        got = _spatial.conv_sum(t, 2, True, (3, 3), (1, 1), "same", 0.5)
    with compiled(False):
        want = _spatial.conv_sum(t, 2, True, (3, 3), (1, 1), "same", 0.5)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert spy["pair2_sum"] == 1


@pytest.mark.parametrize(
    "stride, padding", [((1, 1), "circular"), ((2, 1), "same"), ((1, 2), "valid")]
)
def test_torch_path_for_circular_padding_and_strides(spy, monkeypatch, stride, padding):
    # the steps the compiled loops do not cover take the torch path (`_plan` is its plan); a
    # step of stride 1 beside a strided one is still compiled
    plans = []
    plan = _spatial._plan
    monkeypatch.setattr(_spatial, "_plan", lambda *a: plans.append(a) or plan(*a))
    t = _randn((2, 2, 6, 5, 6, 5), 7)
    with compiled(True):
        got = _spatial.conv_sum(t, 2, True, (3, 3), stride, padding, 0.5)
    torch_strides = sorted(args[4] for args in plans)  # (ndim, axes, n, window, stride, padding)
    if padding == "circular":
        assert sum(spy.values()) == 0 and torch_strides == [1, 1]
    else:
        assert sum(spy.values()) == 1 and torch_strides == [2]
    with compiled(False):
        want = _spatial.conv_sum(t, 2, True, (3, 3), stride, padding, 0.5)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_torch_path_when_autograd_records(spy):
    t = _randn((2, 2, 5, 4, 5, 4), 8).requires_grad_()
    with compiled(True):
        got = _spatial.conv_sum(t, 2, True, (3, 3), (1, 1), "same", 0.5)
    got.sum().backward()
    assert sum(spy.values()) == 0
    assert torch.allclose(t.grad, t.grad)  # a gradient exists


def _myrtle(depth: int, size: int) -> wl.Serial:
    layers = []
    for n in {5: (1, 1, 1), 7: (2, 2, 2)}[depth]:
        for _ in range(n):
            layers += [wl.Conv(None, 3, padding="same", W_std=2**0.5, b_std=0.1), wl.ReLU()]
        layers.append(wl.AvgPool(2))
        size //= 2
    return wl.Serial(*layers, wl.Flatten(), wl.Dense(10, W_std=2**0.5))


def test_myrtle5_on_8x8_images_equals_the_eager_kernel(spy):
    net = _myrtle(5, 8)
    x1, x2 = _randn((3, 3, 8, 8), 9), _randn((2, 3, 8, 8), 10)
    with compiled(True):
        got = net.kernel(x1, x2)
        got_sym = net.kernel(x1)
    assert spy["pair2_sum"] > 0 and spy["pool2_sum"] > 0
    with compiled(False):
        want = net.kernel(x1, x2)
        want_sym = net.kernel(x1)
    for a, b in ((got, want), (got_sym, want_sym)):
        torch.testing.assert_close(a.nngp, b.nngp, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.ntk, b.ntk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_reuse", [True, False])
def test_thread_count_does_not_change_a_bit(spy, with_reuse):
    net = _myrtle(5, 8)
    x1, x2 = _randn((4, 3, 8, 8), 11, torch.float32), _randn((3, 3, 8, 8), 12, torch.float32)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 3):
            torch.set_num_threads(n)
            with compiled(True), reuse(with_reuse):
                results.append(net.kernel(x1, x2))
    finally:
        torch.set_num_threads(threads)
    assert spy["pair2_sum"] > 0
    assert torch.equal(results[0].nngp, results[1].nngp)
    assert torch.equal(results[0].ntk, results[1].ntk)
