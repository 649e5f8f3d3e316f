"""Fused activation layer maps (`widelimits.layers._fused`) against the eager reference.

The fused path evaluates the same closed forms block by block (and, for `ABReLU`, a reordered
in-place form with arccos instead of atan2), so both paths must agree to rounding: 1e-12 of the
kernel's scale in float64, for every activation with a closed form, on flat inputs and on both
spatial layouts (per-pixel and pixel-pair), on symmetric (packed diagonal tiles) and cross
kernels, with blocks cut across every axis.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
import widelimits.layers._fused as fusedmod
from widelimits.layers._fused import _blocks, fused

TOL = 1e-12


def _closed_forms() -> dict[str, wl.Activation]:
    return {
        "relu": wl.ReLU(),
        "leaky_relu": wl.LeakyReLU(0.2),
        "abrelu": wl.ABReLU(-0.4, 1.3),
        "abs": wl.Abs(),
        "erf": wl.Erf(1.2, 0.8, 0.1),
        "gelu": wl.GELU(),
        "sin": wl.Sin(1.1, 0.9, 0.3),
        "cos": wl.Cos(0.8, 1.2, 0.2),
        "rbf": wl.RBF(0.7),
        "exp": wl.Exp(0.6, 0.5),
        "gaussian_bump": wl.Gaussian(1.0, -0.8),
        "gaussian_positive_b": wl.Gaussian(0.5, 0.05),
        "sign": wl.Sign(),
        "step": wl.RectifiedMonomial(0),
        "rectified_cubic": wl.RectifiedMonomial(3),
        "monomial": wl.Monomial(3),
        "hermite": wl.Hermite(3),
        "hermite_unit": wl.Hermite(2, assume_unit_variance=True),
        "polynomial": wl.Polynomial([0.1, -0.3, 0.2, 0.05]),
        "quadrature_tanh": wl.Elementwise(torch.tanh, degree=8),  # the default dual_into
        "user_closed_form": wl.Elementwise(
            torch.tanh, nngp_fn=lambda k11, k22, k12: k12 / (1 + k11 * k22)
        ),
    }


ACTIVATIONS = _closed_forms()


def _scaled_error(eager: wl.Kernel, fused_out: wl.Kernel) -> float:
    worst = 0.0
    for name in ("nngp", "ntk"):
        a, b = getattr(eager, name), getattr(fused_out, name)
        scale = float(a.abs().max())
        worst = max(worst, float((a - b).abs().max()) / scale)
    return worst


def _both(net, x1, x2=None, **options) -> tuple[wl.Kernel, wl.Kernel]:
    with fused(False):
        eager = net.kernel(x1, x2, **options)
    with fused(True):
        out = net.kernel(x1, x2, **options)
    return eager, out


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 40 float64 entries: cut inside rows, pixel axes and examples."""
    monkeypatch.setattr(fusedmod, "BLOCK_ENTRIES", 40)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_fused_matches_eager_flat(name, small_blocks):
    act = ACTIVATIONS[name]
    net = wl.Serial(wl.Dense(b_std=0.3), act, wl.Dense(W_std=1.2, b_std=0.1), act, wl.Dense())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(13, 7, generator=g, dtype=torch.float64)
    x[5] = x[2]  # a repeated point: correlation exactly 1 off the diagonal
    x2 = torch.randn(6, 7, generator=g, dtype=torch.float64)
    assert _scaled_error(*_both(net, x, tile_size=5)) < TOL  # packed diagonal tiles
    assert _scaled_error(*_both(net, x, x2, tile_size=4)) < TOL


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("readout", ["flatten", "pool"])  # per-pixel / pixel-pair layouts
def test_fused_matches_eager_spatial(name, readout, small_blocks):
    act = ACTIVATIONS[name]
    end = wl.Flatten() if readout == "flatten" else wl.GlobalAvgPool()
    net = wl.Serial(
        wl.Conv(kernel_size=3, padding="same", b_std=0.2), act,
        wl.Conv(kernel_size=2, padding="circular", W_std=0.9), act,
        end, wl.Dense(),
    )  # fmt: skip
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 4, 3, generator=g, dtype=torch.float64) / 2
    x2 = torch.randn(3, 2, 4, 3, generator=g, dtype=torch.float64) / 2
    assert _scaled_error(*_both(net, x, tile_size=3)) < TOL
    assert _scaled_error(*_both(net, x, x2)) < TOL


def test_fused_path_is_taken_and_switch_works(monkeypatch):
    """The fused path runs by default without gradients, and set_fused(False) turns it off."""
    calls = []
    original = fusedmod.layer_map

    def spy(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr("widelimits.layers.activations.layer_map", spy)
    # GELU: not one of the compiled runs of widelimits.layers._chain (tested in test_compiled)
    net = wl.Serial(wl.Dense(), wl.GELU(), wl.Dense())
    x = torch.randn(5, 3, dtype=torch.float64)
    net.kernel(x)
    assert calls, "the fused layer map was not used"
    calls.clear()
    with fused(False):
        net.kernel(x)
    assert not calls
    calls.clear()
    x.requires_grad_(True)  # gradients: the eager (differentiable) path
    k = net.kernel(x, get="ntk")
    assert not calls
    k.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_fused_relu_edge_correlations():
    """Correlation exactly +-1, zero variances and a zero NTK: same values as the eager maps."""
    k11 = torch.tensor([[1.0], [2.0], [0.0], [3.0]], dtype=torch.float64)
    k22 = torch.tensor([[1.0, 2.0, 0.0, 3.0]], dtype=torch.float64)
    k12 = torch.tensor(
        [[1.0, -math.sqrt(2.0), 0.0, 0.3], [1.4, 2.0, 0.0, -1.0], [0.0] * 4, [0.3, 1.0, 0.0, 3.0]],
        dtype=torch.float64,
    )
    for ntk in (torch.rand(4, 4, dtype=torch.float64), torch.zeros((), dtype=torch.float64)):
        for act in (wl.ReLU(), wl.ABReLU(0.3, -1.1), wl.Sign()):
            with fused(False):
                t_e, n_e = act.layer_map(k11, k22, k12, ntk)
            t_f, n_f = act.layer_map(k11, k22, k12, ntk)
            assert torch.equal(torch.isfinite(t_f), torch.ones_like(t_f, dtype=torch.bool))
            torch.testing.assert_close(t_f, t_e, rtol=0, atol=1e-15)
            torch.testing.assert_close(n_f, n_e.expand_as(n_f), rtol=0, atol=1e-15)
    t_f, _ = wl.ReLU().layer_map(k11, k22, k12, None)
    assert t_f[0, 0] == 0.5 and t_f[1, 1] == 1.0  # self-pairs: exactly k / 2


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(1, 6), min_size=0, max_size=5),
    per_block=st.integers(1, 50),
)
def test_blocks_cover_every_entry_once(shape, per_block):
    counts = torch.zeros(shape, dtype=torch.int64)
    for index in _blocks(tuple(shape), per_block):
        counts[index] += 1
        assert counts[index].numel() <= per_block or index == ()
    assert bool((counts == 1).all())


@pytest.mark.parametrize("block", [2**15, 2**19])
def test_many_tile_workers_give_the_same_bits_as_one(monkeypatch, block):
    """Four tile workers against one, with each block size a machine may use (2^15 on two
    cores, 2^19 on more) and tiles larger than a small block: the same bits."""
    monkeypatch.setattr(fusedmod, "BLOCK_ENTRIES", block)
    net = wl.Serial(
        wl.Dense(None, b_std=0.1), wl.ReLU(), wl.Dense(None), wl.GELU(), wl.Dense(None),
        wl.RectifiedMonomial(3), wl.Dense(1),
    )
    x = torch.randn(800, 5, generator=torch.Generator().manual_seed(4))
    one = net.kernel(x, tile_size=200, threads=1)
    four = net.kernel(x, tile_size=200, threads=4)
    assert torch.equal(one.nngp, four.nngp) and torch.equal(one.ntk, four.ntk)
