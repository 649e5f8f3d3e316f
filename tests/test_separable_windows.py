"""Separable window sums (`widelimits.layers._spatial.conv_sum`, `pool_sum`) against the direct
sum over every filter offset of an explicitly padded array (numpy, wrapping as often as the
window needs), and the fused Conv kernel map against the general affine map.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
import widelimits._compute as compute
from widelimits.layers._spatial import Scratch, conv_sum, pads, pool_sum


def _padded(t: np.ndarray, axes, geometry, padding: str) -> np.ndarray:
    """``t`` padded on ``axes`` (axis r of each pixel gets ``geometry[r]`` = (n, w, s))."""
    widths = [(0, 0)] * t.ndim
    for ax, (n, w, s) in axes:
        before, after, _ = pads(n, w, s, padding)
        widths[ax] = (before, after)
    return np.pad(t, widths, mode="wrap" if padding == "circular" else "constant")


def direct_conv_sum(t: np.ndarray, d: int, full: bool, window, stride, padding) -> np.ndarray:
    """sum over every offset tuple a = (a_1..a_d) of T[s p + a, s q + a]: the 9-term 3x3 sum."""
    lead = t.ndim - (2 * d if full else d)
    spatial = t.shape[lead : lead + d]
    geometry = list(zip(spatial, window, stride, strict=True))
    pixel_axes = [lead + r for r in range(d)] + ([lead + d + r for r in range(d)] if full else [])
    axes = [(ax, geometry[k % d]) for k, ax in enumerate(pixel_axes)]
    padded = _padded(t, axes, geometry, padding)
    outs = [pads(n, w, s, padding)[2] for n, w, s in geometry]
    total = 0
    for offset in itertools.product(*(range(w) for w in window)):
        index = [slice(None)] * t.ndim
        for k, ax in enumerate(pixel_axes):
            r = k % d
            a, s, out = offset[r], stride[r], outs[r]
            index[ax] = slice(a, a + s * (out - 1) + 1, s)
        total = total + padded[tuple(index)]
    return total


def direct_pool_sum(t: np.ndarray, d: int, window, stride, padding) -> np.ndarray:
    """sum over offsets a at p and b at q independently: T[s p + a, s q + b]."""
    lead = t.ndim - 2 * d
    geometry = list(zip(t.shape[lead : lead + d], window, stride, strict=True))
    pixel_axes = list(range(lead, t.ndim))
    axes = [(ax, geometry[k % d]) for k, ax in enumerate(pixel_axes)]
    padded = _padded(t, axes, geometry, padding)
    outs = [pads(n, w, s, padding)[2] for n, w, s in geometry]
    total = 0
    for offset in itertools.product(*(range(window[k % d]) for k in range(2 * d))):
        index = [slice(None)] * t.ndim
        for k, ax in enumerate(pixel_axes):
            r = k % d
            index[ax] = slice(offset[k], offset[k] + stride[r] * (outs[r] - 1) + 1, stride[r])
        total = total + padded[tuple(index)]
    return total


geometries = st.tuples(
    st.integers(1, 5), st.integers(1, 5), st.integers(1, 12), st.integers(1, 12),
    st.integers(1, 3), st.integers(1, 3),
)  # fmt: skip


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    geometry=geometries,
    padding=st.sampled_from(["same", "circular", "valid"]),
    full=st.booleans(),
    scale=st.sampled_from([1.0, 0.3]),
    base=st.booleans(),
)
def test_separable_conv_sum_equals_direct_sum(geometry, padding, full, scale, base):
    """Images of 1-5 pixels a side, windows up to 12 (larger than the image: merged and dropped
    taps), strides 1-3; ``scale`` and ``base`` (the fused affine map) too."""
    h, w, kh, kw, sh, sw = geometry
    if padding == "valid" and (kh > h or kw > w):
        return
    g = torch.Generator().manual_seed(h * 100 + w)
    shape = (2, 3, h, w, h, w) if full else (2, 3, h, w)
    t = torch.randn(shape, generator=g, dtype=torch.float64)
    expected = scale * direct_conv_sum(t.numpy(), 2, full, (kh, kw), (sh, sw), padding)
    b = torch.randn(expected.shape, generator=g, dtype=torch.float64) if base else None
    got = conv_sum(t, 2, full, (kh, kw), (sh, sw), padding, scale, b)
    if base:
        expected = expected + b.numpy()
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "n, window, stride, padding",
    [(7, 3, 1, "same"), (7, 4, 3, "valid"), (5, 11, 2, "circular"), (4, 9, 1, "same"),
     (6, 2, 2, "valid"), (3, 7, 2, "circular")],
)  # fmt: skip
def test_separable_pool_sum_equals_direct_sum_1d_and_2d(n, window, stride, padding):
    g = torch.Generator().manual_seed(n)
    for d in (1, 2):
        t = torch.randn((3,) + (n,) * 2 * d, generator=g, dtype=torch.float64)
        got = pool_sum(t, d, (window,) * d, (stride,) * d, padding, scale=0.5)
        expected = 0.5 * direct_pool_sum(t.numpy(), d, (window,) * d, (stride,) * d, padding)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_scratch_shared_by_several_sums_keeps_results_apart():
    """Intermediates of one sum live in the scratch buffer that the next sum overwrites: the
    results must not alias it (a later sum must not change an earlier result)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2, 5, 5, 5, 5, generator=g, dtype=torch.float64) for _ in range(2))
    scratch = Scratch()
    ra = conv_sum(a, 2, True, (3, 3), (1, 1), "same", 1.0, None, scratch)
    ra_copy = ra.clone()
    rb = conv_sum(b, 2, True, (3, 3), (1, 1), "same", 1.0, ra, scratch)
    torch.testing.assert_close(ra, ra_copy, rtol=0, atol=0)
    expected = direct_conv_sum(b.numpy(), 2, True, (3, 3), (1, 1), "same") + ra_copy.numpy()
    np.testing.assert_allclose(rb.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("trainable, b_std", [(True, 0.3), (False, 0.3), (True, None)])
def test_fused_conv_map_equals_general_affine_map(trainable, b_std, monkeypatch):
    """Conv's fused map (scale and NTK sum on the window sums) against `affine_kernel`, the
    general path (taken for tensor-valued W_std), on the full layout with x2=None (packed
    pairs) and x1 vs x2, through two conv layers (the zero NTK first, then a full one)."""
    monkeypatch.setattr(compute, "_layout", lambda layer, x: "none" if x.ndim == 2 else "full")
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64)

    def net(w_std):
        conv = [
            wl.Conv(None, 3, padding="circular", W_std=w_std, b_std=b_std),
            wl.Conv(None, (2, 3), stride=(1, 2), W_std=w_std, b_std=b_std, trainable=trainable),
        ]
        return wl.Serial(conv[0], wl.ReLU(), conv[1], wl.GlobalAvgPool())

    fused, general = net(1.3), net(torch.tensor(1.3, dtype=torch.float64))
    for args in ((x1,), (x1, x2)):
        a, b = fused.kernel(*args), general.kernel(*args)
        for name in ("nngp", "ntk"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0)


def test_sums_stay_differentiable():
    """With autograd recording, the sums take the out-of-place path: gradients match finite
    differences (torch.autograd.gradcheck)."""
    t = torch.randn(1, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    base = torch.randn(1, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)

    def fn(t, base):
        conv = conv_sum(t, 2, True, (3, 3), (1, 1), "circular", 0.5, base)
        return conv, pool_sum(t, 2, (2, 2), (1, 1), "same", scale=0.25)

    assert torch.autograd.gradcheck(fn, (t, base))
