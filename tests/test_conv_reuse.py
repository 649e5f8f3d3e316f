"""Buffer reuse (`widelimits.layers._reuse`): layers writing over inputs nothing else holds.

Reuse only changes where results are written, never the arithmetic, so every kernel must be
bit-identical with reuse on and off (the reference), for Myrtle networks, residual networks
(whose FanOut shares one state between branches: writing over it would corrupt the shortcut),
every activation with a closed form, symmetric and cross kernels, on several threads, and with
gradients.  Each test also checks that reuse did happen (or did not, where it must not), so that
none of them passes vacuously.
"""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits.layers import _jit, _reuse, _spatial
from widelimits.layers._reuse import reuse, taken_count
from widelimits.layers.myrtle import BLOCKS


def myrtle_like(depth: int, size: int) -> wl.Serial:
    """`wl.Myrtle`'s blocks for small ``size`` x ``size`` images: its Conv-ReLU stages, each
    followed by AvgPool(2) while more than one pixel is left, then Flatten and Dense."""
    layers = []
    for n in BLOCKS[depth]:
        for _ in range(n):
            layers += [wl.Conv(None, 3, padding="same", W_std=2**0.5, b_std=0.1), wl.ReLU()]
        if size > 1:
            layers.append(wl.AvgPool(2))
            size //= 2
    return wl.Serial(*layers, wl.Flatten(), wl.Dense(10, W_std=2**0.5))


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen, dtype=torch.float64)


def _both(net, *args, **kwargs) -> tuple[wl.Kernel, wl.Kernel, int]:
    """(kernel with reuse, kernel without, tensors taken over with reuse)."""
    before = taken_count()
    with reuse(True):
        on = net.kernel(*args, **kwargs)
    taken = taken_count() - before
    with reuse(False):
        off = net.kernel(*args, **kwargs)
    assert taken_count() - before == taken
    return on, off, taken


def _assert_identical(a: wl.Kernel, b: wl.Kernel) -> None:
    assert torch.equal(a.nngp, b.nngp)
    assert torch.equal(a.ntk, b.ntk)


@pytest.mark.parametrize("depth, size", [(5, 8), (10, 4)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_myrtle_identical_with_and_without_reuse(depth, size, symmetric):
    net = myrtle_like(depth, size)
    x1 = _images(3, size, 0)
    x2 = None if symmetric else _images(2, size, 1)
    on, off, taken = _both(net, x1, x2)
    _assert_identical(on, off)
    # every Conv after the first and every ReLU take their inputs over
    assert taken >= 2 * sum(BLOCKS[depth]) - 1


def test_myrtle_32x32_identical_with_and_without_reuse():
    net = wl.Myrtle(5)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    on, off, taken = _both(net, x[:1], x[1:])
    _assert_identical(on, off)
    assert taken > 0


def _residual_net() -> wl.Serial:
    conv = {"W_std": 1.3, "b_std": 0.2}
    return wl.Serial(
        wl.Conv(None, 3, **conv), wl.ReLU(),
        wl.Residual(wl.Conv(None, 3, **conv), wl.ReLU(), wl.Conv(None, 3, **conv)),
        wl.Conv(None, 3, **conv),
        wl.Serial(wl.FanOut(2), wl.Parallel(wl.ReLU(), wl.Identity()), wl.FanInSum()),
        wl.Conv(None, 3, **conv), wl.ReLU(), wl.AvgPool(2), wl.GlobalAvgPool(), wl.Dense(1),
    )  # fmt: skip


def test_residual_shared_branches_identical_with_and_without_reuse():
    net = _residual_net()
    x1, x2 = _images(3, 6, 3), _images(2, 6, 4)
    on, off, taken = _both(net, x1, x2)
    _assert_identical(on, off)
    assert taken > 0


def _state(n: int, p: int, seed: int) -> wl.Kernel:
    """A hand-made pixel-pair state ``(n, n, p, p, p, p)`` of n examples of p x p pixels."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(n, p, p, 5, generator=gen, dtype=torch.float64)
    gram = (torch.einsum("axyc,buvc->abxyuv", f, f) / 5).contiguous()
    cov = torch.stack([gram[i, i] for i in range(n)])
    return wl.Kernel(gram, gram.clone(), cov, cov.clone(), is_gaussian=True, layout="full")


def _snapshot(k: wl.Kernel) -> list[torch.Tensor]:
    return [t.clone() for t in (k.nngp, k.ntk, k.cov1, k.cov2)]


@pytest.mark.parametrize(
    "layers",
    [
        # the caller's tensors pass through a layer unchanged before an activation
        (wl.Identity(), wl.ReLU(), wl.Conv(None, 3)),
        # FanOut hands one state to two branches: the ReLU branch must not write over the
        # shortcut's tensors (the FanInSum would read T twice instead of T + K)
        (wl.ReLU(), wl.Conv(None, 3), wl.FanOut(2), wl.Parallel(wl.ReLU(), wl.Identity())),
        (
            wl.ReLU(),
            wl.Conv(None, 3),
            wl.FanOut(2),
            wl.Parallel(wl.Serial(wl.ReLU(), wl.Conv(None, 3)), wl.Identity()),
        ),
    ],  # fmt: skip
)
def test_shared_tensors_are_never_overwritten(layers):
    """The chain's input (held by its caller) and a FanOut's shared state keep their values, and
    the branches' results equal those computed without reuse."""
    k = _state(3, 3, 5)
    before = _snapshot(k)
    with reuse(False):
        ref = wl.Serial(*layers).kernel_fn(k)
    count = taken_count()
    out = wl.Serial(*layers).kernel_fn(k)
    for t, saved in zip(_snapshot(k), before, strict=True):
        assert torch.equal(t, saved)
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    for a, b in zip(outs, refs, strict=True):
        for name in ("nngp", "ntk", "cov1", "cov2"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    if isinstance(out, tuple):  # the shortcut is the very state the FanOut shared, unchanged
        assert torch.equal(out[1].nngp, ref[1].nngp)
        assert out[1].nngp.data_ptr() != out[0].nngp.data_ptr()
    assert taken_count() > count  # the ReLU's output went over something: reuse did happen


def test_fanout_state_is_not_granted():
    """A state that a FanOut hands to two branches has no storage anyone may take."""
    k = wl.Serial(wl.ReLU(), wl.Conv(None, 3)).kernel_fn(_state(2, 3, 6))
    assert _reuse._grantable((k, k), set()) == set()
    assert _reuse._grantable(k, set())  # alone, its tensors are the chain's to give
    meta = k.replace(nngp=k.nngp.to("meta"), ntk=k.ntk.to("meta"))
    assert _reuse._grantable(meta, set()) == _reuse._grantable(k, set()) - {
        k.nngp.untyped_storage().data_ptr(),
        k.ntk.untyped_storage().data_ptr(),
    }  # tensors without memory of their own are never granted


@pytest.mark.parametrize("name", sorted(
    ["relu", "abrelu", "erf", "gelu", "sin", "rbf", "exp", "sign", "step", "monomial",
     "hermite", "polynomial", "quadrature_tanh"]
))  # fmt: skip
def test_every_activation_identical_when_writing_over_its_inputs(name):
    """``dual_into`` is called with outputs that are its inputs' memory (T over K, Tdot * Theta
    over Theta, and Tdot * Theta over K when the NTK is K after the first layer)."""
    from tests.test_fused import ACTIVATIONS

    act = ACTIVATIONS[name]
    net = wl.Serial(
        wl.Conv(None, 3, W_std=0.9, b_std=0.3), act, wl.Conv(None, 3, W_std=0.9, b_std=0.3), act,
        wl.AvgPool(2), wl.GlobalAvgPool(), wl.Dense(1),
    )  # fmt: skip
    x1, x2 = _images(2, 4, 7), _images(3, 4, 8)
    on, off, taken = _both(net, x1, x2)
    _assert_identical(on, off)
    assert taken >= 3


def test_gradients_identical_and_nothing_taken():
    """With a gradient to compute, nothing is written over (autograd saved those tensors)."""
    net = myrtle_like(5, 4)
    x2 = _images(2, 4, 10)
    grads, kernels = [], []
    for enabled in (True, False):
        x1 = _images(2, 4, 9).requires_grad_()
        before = taken_count()
        with reuse(enabled):
            k = net.kernel(x1, x2)
            (g,) = torch.autograd.grad(k.nngp.sum() + k.ntk.sum(), x1)
        assert taken_count() == before
        grads.append(g)
        kernels.append(k)
    assert torch.equal(grads[0], grads[1])
    _assert_identical(*kernels)


def test_identical_on_several_threads():
    """Grants and scratch buffers are per thread: two threads computing kernels at once get
    what one thread gets."""
    net = myrtle_like(5, 8)
    xs = [(_images(2, 8, 20 + i), _images(2, 8, 30 + i)) for i in range(2)]
    with reuse(False):
        refs = [net.kernel(a, b) for a, b in xs]
    results: list = [None, None]

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = net.kernel(*xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, ref in zip(results, refs, strict=True):
        _assert_identical(got, ref)


_layer = st.sampled_from(["conv", "conv_valid", "conv_stride", "relu", "erf", "pool", "res"])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(_layer, min_size=1, max_size=6), st.booleans())
def test_random_conv_nets_identical_with_and_without_reuse(names, symmetric):
    layers: list = [wl.Conv(None, 3, W_std=1.2, b_std=0.1)]
    h, w, gaussian = 8, 8, True
    for name in names:
        if name == "conv":
            layers.append(wl.Conv(None, 3, W_std=1.2, b_std=0.1))
        elif name == "conv_valid" and min(h, w) >= 3:
            layers.append(wl.Conv(None, 3, padding="valid"))
            h, w = h - 2, w - 2
        elif name == "conv_stride":
            layers.append(wl.Conv(None, (3, 2), stride=(1, 2), padding="circular"))
            w = (w + 1) // 2
        elif name in ("relu", "erf") and gaussian:
            layers.append(wl.ReLU() if name == "relu" else wl.Erf())
        elif name == "pool" and min(h, w) >= 2:
            layers.append(wl.AvgPool(2))
            h, w = h // 2, w // 2
        elif name == "res" and gaussian:  # Gaussian block output plus a Gaussian shortcut
            layers.append(wl.Residual(wl.ReLU(), wl.Conv(None, 3)))
        else:
            continue
        gaussian = name.startswith(("conv", "res")) or (gaussian and name == "pool")
    net = wl.Serial(*layers, wl.GlobalAvgPool(), wl.Dense(1))
    x1 = _images(2, 8, 40)
    x2 = None if symmetric else _images(2, 8, 41)
    on, off, _ = _both(net, x1, x2)
    _assert_identical(on, off)


@pytest.mark.parametrize("pool", [False, True])
def test_chunked_window_sums_match_the_padded_reference(monkeypatch, pool):
    """Window sums cut into chunks of pairs (`_spatial.CHUNK_BYTES`) equal the reference
    `window_sum` (a padded copy and one slice per offset), written fresh or over the input."""
    gen = torch.Generator().manual_seed(11)
    t = torch.randn(5, 6, 5, 6, 5, generator=gen, dtype=torch.float64)
    monkeypatch.setattr(_spatial, "CHUNK_BYTES", 2 * t[0].nbytes)  # chunks of 2, 2 and 1
    if pool:
        got = _spatial.pool_sum(t, 2, (2, 3), (2, 1), "same", scale=0.5)
        ref = t
        for ax, w, s in ((1, 2, 2), (3, 2, 2), (2, 3, 1), (4, 3, 1)):
            ref = _spatial.window_sum(ref, (ax,), w, s, "same")
        torch.testing.assert_close(got, 0.5 * ref, rtol=1e-13, atol=1e-13)
        return
    base = torch.randn(5, 6, 5, 6, 5, generator=gen, dtype=torch.float64)
    ref = _spatial.window_sum(t, (1, 3), 3, 1, "same")
    ref = base + 0.25 * _spatial.window_sum(ref, (2, 4), 3, 1, "same")
    fresh = _spatial.conv_sum(t, 2, True, (3, 3), (1, 1), "same", 0.25, base)
    over = _spatial.conv_sum(t, 2, True, (3, 3), (1, 1), "same", 0.25, base, out=t)
    assert over is t
    torch.testing.assert_close(fresh, ref, rtol=1e-13, atol=1e-13)
    assert torch.equal(over, fresh)


def test_out_argument_refused_where_it_would_be_wrong():
    t = torch.randn(2, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="out="):  # one step reading and writing t
        _spatial.conv_sum(t, 1, True, (3,), (1,), "same", out=t)
    with pytest.raises(ValueError, match="out= has shape"):
        _spatial.conv_sum(t, 1, True, (3,), (1,), "valid", out=torch.empty(2, 4, 4))
    x = t.clone().requires_grad_()
    with pytest.raises(ValueError, match="out="):
        _spatial.conv_sum(x, 1, True, (3,), (1,), "same", out=torch.empty(2, 4, 4))


def test_reuse_switch_arguments():
    with pytest.raises(TypeError, match="enabled"):
        _reuse.set_reuse("yes")  # the environment variable: tests/test_trust_fused.py


def test_a_state_given_away_is_written_over_and_a_kept_one_is_not():
    """``chain(..., give=True)``: the caller hands its state over (a tile's input state), so the
    first layer may take its tensors; without ``give`` they stay the caller's."""
    layers = (wl.Conv(None, 3, W_std=1.1, b_std=0.2), wl.ReLU())
    kept = _state(2, 3, 12)
    saved = _snapshot(kept)
    with reuse(False):
        ref = _reuse.chain(layers, kept)
    count = taken_count()
    out = _reuse.chain(layers, kept)
    assert all(torch.equal(a, b) for a, b in zip(_snapshot(kept), saved, strict=True))
    after_kept = taken_count()
    given = _state(2, 3, 12)
    out_given = _reuse.chain(layers, given, give=True)
    assert taken_count() - after_kept > after_kept - count  # the Conv took the given tensors
    assert not torch.equal(given.nngp, saved[0])  # ... and wrote over them
    for a in (out, out_given):
        assert torch.equal(a.nngp, ref.nngp) and torch.equal(a.ntk, ref.ntk)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_fully_connected_identical_with_and_without_reuse(symmetric, compiled):
    """The same rule holds on the flat layout: the activations take Dense's outputs.  (With
    the compiled runs of `widelimits.layers._chain` the whole network is one run, which takes
    nothing over; the values must not change either way.)"""
    net = wl.Serial(
        wl.Dense(None, W_std=1.4, b_std=0.1), wl.ReLU(), wl.Dense(None, W_std=1.4), wl.Erf(),
        wl.Dense(None, W_std=1.4, b_std=0.1), wl.ABReLU(-0.3, 1.2), wl.Dense(1),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(13)
    x1 = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    x2 = None if symmetric else torch.randn(4, 5, generator=gen, dtype=torch.float64)
    _jit.set_compiled(compiled)
    try:
        on, off, taken = _both(net, x1, x2)
    finally:
        _jit.set_compiled(True)
    _assert_identical(on, off)
    assert taken > 0 or compiled
