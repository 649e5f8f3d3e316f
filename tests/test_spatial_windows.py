"""Windows against the image: circular padding that wraps several times, windows larger than
the image (only the distinct taps are summed, `widelimits.layers._spatial.effective_taps`), and
window sums against explicit padding.  The finite side is checked in tests/test_conv.py's exact
linear geometries (empirical NTK of built networks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
import widelimits._compute as compute
from widelimits.layers._spatial import SpatialPad, pads, window_sum


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


def _force_full_layout(monkeypatch) -> None:
    """Spatial inputs take the pixel-pair layout even when no layer pools."""
    monkeypatch.setattr(compute, "_layout", lambda layer, x: "none" if x.ndim == 2 else "full")


@pytest.mark.parametrize("size, window", [((1, 1), (3, 3)), ((2, 3), (7, 4)), ((3, 2), (3, 2))])
def test_circular_pad_wraps_like_numpy(size, window):
    """SpatialPad wraps as numpy's pad(mode="wrap"), also past torch's one-wrap limit."""
    x = _images(2, (3, *size), seed=5)
    padded = SpatialPad(window, (1, 1), "circular")(x)
    amounts = [(0, 0), (0, 0)]
    for w in window:
        total = w - 1
        amounts.append((total // 2, total - total // 2))
    expected = np.pad(x.numpy(), amounts, mode="wrap")
    np.testing.assert_array_equal(padded.numpy(), expected)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 6),
    window=st.integers(1, 20),
    stride=st.integers(1, 4),
    padding=st.sampled_from(["same", "circular", "valid"]),
    pair=st.booleans(),
)
def test_window_sum_equals_brute_force(n, window, stride, padding, pair):
    """The effective taps (merged or dropped) against padding the array explicitly (numpy,
    wrapping as often as needed) and summing every filter offset; ``pair``: two axes that share
    the offset, as a convolution of a pixel-pair kernel."""
    if padding == "valid" and window > n:
        return
    t = torch.randn((n, n) if pair else (3, n), generator=torch.Generator().manual_seed(n),
                    dtype=torch.float64)  # fmt: skip
    axes = (0, 1) if pair else (1,)
    got = window_sum(t, axes, window, stride, padding)
    before, after, out = pads(n, window, stride, padding)
    widths = [(before, after) if ax in axes else (0, 0) for ax in range(2)]
    mode = "wrap" if padding == "circular" else "constant"
    padded = np.pad(t.numpy(), widths, mode=mode)
    expected = 0
    for a in range(window):
        idx = [slice(None), slice(None)]
        for ax in axes:
            idx[ax] = slice(a, a + stride * (out - 1) + 1, stride)
        expected = expected + padded[tuple(idx)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", ["same", "circular"])
def test_huge_windows_are_exact_and_cheap(padding, monkeypatch):
    """Past the image size a window only repeats taps (circular) or adds zero taps (same).

    Circular, window m n on n pixels: every tap is read m times, so K / (m n) does not depend
    on m.  Same, stride 1, odd window w >= 2n + 1: every shift in (-n, n) is read once, so
    w K(w) does not depend on w.  A window of 10^9 + 1 costs what a window of 2n does.
    """
    _force_full_layout(monkeypatch)
    x1, x2 = _images(3, (2, 3, 4), seed=3), _images(2, (2, 3, 4), seed=4)
    if padding == "circular":
        small, huge = (3, 4), (3 * 10**8, 4 * 10**8)
        w_small, w_huge = 1.0, 1.0
    else:
        small, huge = (7, 9), (10**9 + 1, 10**9 + 1)
        w_small, w_huge = float(np.sqrt(63.0)), float(np.sqrt(float(huge[0]) * huge[1]))
    k_small = wl.Conv(1, small, padding=padding, W_std=w_small).kernel(x1, x2)
    k_huge = wl.Conv(1, huge, padding=padding, W_std=w_huge).kernel(x1, x2)
    for g in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(k_huge, g), getattr(k_small, g), rtol=1e-12, atol=0)
