"""The compiled (numba) maps of the ReLU family against the torch closed forms and eager maps.

`widelimits.layers._jit` compiles `ABReLU`'s layer map (one pass per block or flat tile) and
`widelimits.layers._chain` whole runs of Dense and ReLU-family layers (one pass per tile).  Both
must give the layer-by-layer eager values to rounding (1e-12 of the kernel's scale in float64),
keep the exact correlation 1 of an example with itself, and never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits.layers import _chain, _jit
from widelimits.layers._fused import fused, layer_map

pytest.importorskip("numba")
from widelimits.layers import _jit_loops  # noqa: E402

TOL = 1e-12


def _scaled(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


def _eager(net, x1, x2=None, **kw) -> wl.Kernel:
    with fused(False):
        return net.kernel(x1, x2, **kw)


@pytest.fixture
def compiled_off():
    _jit.set_compiled(False)
    yield
    _jit.set_compiled(True)


# --- the arc cosine ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["acos", "asin"])
def test_arc_functions_to_an_ulp(dtype, name):
    """The branch-free arccos and arcsin against numpy's, on a grid, both branch edges, near
    +-1 and near 0."""
    consts, _ = _jit.constants(dtype)
    near = 1 - np.logspace(-16 if dtype == np.float64 else -7, 0, 400)
    tiny = np.logspace(-30, -1, 100)
    x = np.concatenate([np.linspace(-1, 1, 20001), near, -near, tiny, -tiny, [0.5, -0.5, 1, -1, 0]])
    x = x.astype(dtype)
    fn = getattr(_jit_loops, "_" + name)
    got = np.array([fn(v, consts) for v in x])
    ref = getattr(np, "arc" + name[1:])(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
    assert np.all(np.abs(got - ref) <= 2 * ulp + (0 if dtype == np.float64 else 1e-7))


# --- one layer map ----------------------------------------------------------------------


def _block(seed: int, rows: int, cols: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows + cols, 6, generator=g, dtype=dtype)
    x[1] = 0.0  # an example of variance 0
    x[rows] = x[0]  # an example paired with itself: correlation exactly 1
    x[rows + 1] = -2.0 * x[2]  # correlation exactly -1
    gram = x @ x.T / 6
    v = gram.diagonal().clone()
    k12 = gram[:rows, rows:].contiguous()
    ntk = torch.rand(rows, cols, generator=g, dtype=dtype)
    return v[:rows, None].clone(), v[None, rows:].clone(), k12, ntk


@pytest.mark.parametrize(
    "act",
    [wl.ReLU(), wl.LeakyReLU(0.2), wl.Abs(), wl.ABReLU(-0.4, 1.3), wl.Erf(1.3, 0.7, 0.2)],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_map_compiled_equals_torch(act, dtype):
    """Flat tiles (one compiled pass) and a broadcast layout (compiled blocks) against the torch
    closed form; for the ReLU family an example with itself keeps T = d k exactly."""
    k11, k22, k12, ntk = _block(0, 9, 13, dtype)
    t, theta = layer_map(act, k11, k22, k12, ntk)
    _jit.set_compiled(False)
    try:
        t_ref, theta_ref = layer_map(act, k11, k22, k12, ntk)
    finally:
        _jit.set_compiled(True)
    tol = TOL if dtype == torch.float64 else 1e-5
    assert _scaled(t, t_ref) < tol and _scaled(theta, theta_ref) < tol
    if isinstance(act, wl.ABReLU):
        d = (act.a**2 + act.b**2) / 2
        assert t[0, 0] == t_ref[0, 0] and theta[0, 0] == torch.tensor(d, dtype=dtype) * ntk[0, 0]
    # a pixel-pair-like layout: variances broadcast along other axes than rows and columns
    k11_3, k22_3 = k11.reshape(9, 1, 1).expand(9, 1, 13), k22.reshape(1, 1, 13)
    k12_3 = k12.reshape(9, 1, 13).expand(9, 2, 13).contiguous()
    t3, _ = layer_map(act, k11_3, k22_3, k12_3, None)
    assert _scaled(t3[:, 1], t_ref) < tol


def test_layer_map_keeps_nan_and_falls_back(compiled_off):
    """A nan stays a nan in the compiled map; with the compiled maps off the torch form runs."""
    _jit.set_compiled(True)
    k11, k22, k12, ntk = _block(1, 4, 5)
    k12[2, 3] = float("nan")
    t, theta = layer_map(wl.ReLU(), k11, k22, k12, ntk)
    assert torch.isnan(t[2, 3]) and torch.isnan(theta[2, 3])
    assert torch.isfinite(t[torch.arange(4) != 2]).all()
    # non-contiguous or half-precision blocks are not compiled: abrelu_into declines
    out = torch.empty(4, 5, dtype=torch.float64)
    op = wl.ReLU().compiled_op()
    assert not _jit.map_block(op, k11, k22, k12.T.contiguous().T, out, None, None)
    h = k12.to(torch.float16)
    assert not _jit.map_block(op, k11, k22, h, h.clone(), None, None)


@pytest.mark.parametrize("value", [1, None, "yes"])
def test_set_compiled_needs_a_bool(value):
    with pytest.raises(TypeError, match="enabled"):
        _jit.set_compiled(value)
    assert _jit.compiled_enabled() is True


# --- compiled runs of layers ------------------------------------------------------------

CHAIN_ACTS = [wl.ReLU(), wl.LeakyReLU(0.3), wl.Abs(), wl.ABReLU(-0.5, 1.2), wl.Erf(1.1, 0.8, 0.1)]


def _net(spec) -> wl.Serial:
    layers = []
    param = spec["param"]
    for i, (act, w, b, frozen) in enumerate(spec["layers"]):
        kw = {"W_std": w, "b_std": b, "parametrization": param, "trainable": not frozen}
        if param == "standard":
            kw["out"] = 7 + i
        layers += [wl.Dense(**kw), act]
        if spec["nest"] and i == 0:
            layers = [wl.Serial(*layers)]
    return wl.Serial(*layers, wl.Dense(1, parametrization=param))


layer_spec = st.tuples(
    st.sampled_from(CHAIN_ACTS + [wl.GELU(), wl.Identity()]),  # GELU ends a run, Identity too
    st.floats(0.5, 2.0),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.booleans(),
)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    spec=st.fixed_dictionaries({
        "layers": st.lists(layer_spec, min_size=1, max_size=5),
        "param": st.sampled_from(["ntk", "standard"]),
        "nest": st.booleans(),
    }),
    n1=st.integers(1, 11),
    n2=st.one_of(st.none(), st.integers(1, 7)),
    tile=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_random_fc_networks_chain_equals_eager(spec, n1, n2, tile, seed):
    """Random fully connected networks (both parametrizations, biases, frozen layers, nested
    Serials, runs broken by non-chaining layers), symmetric and cross kernels over several tiles,
    with duplicate examples: the compiled runs give the layer-by-layer eager kernels."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n1, 4, generator=g, dtype=torch.float64)
    x2 = None if n2 is None else torch.randn(n2, 4, generator=g, dtype=torch.float64)
    if x2 is not None:
        x2[0] = x1[0]  # the same example in x1 and x2
    elif n1 > 2:
        x1[-1] = x1[0]
    net = _net(spec)
    got = net.kernel(x1, x2, tile_size=tile)
    ref = _eager(net, x1, x2, tile_size=tile)
    assert _scaled(got.nngp, ref.nngp) < TOL
    assert _scaled(got.ntk, ref.ntk) < TOL


def test_chain_runs_and_switches_off(chain_calls):
    """The run is compiled by default; gradients, fused(False) and set_compiled(False) take
    the layer-by-layer path, each giving the same kernel."""
    calls = chain_calls
    net = wl.Serial(wl.Dense(b_std=0.1), wl.ReLU(), wl.Dense(), wl.ReLU(), wl.Dense())
    x = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    k = net.kernel(x, tile_size=4)
    assert {_jit.OUTER, _jit.TRIANGLE, _jit.SELF} <= {call["mode"] for call in calls}
    for switch in (lambda: fused(False), lambda: _jit.COMPILED(False)):
        calls.clear()
        with switch():
            k_off = net.kernel(x, tile_size=4)
        assert not calls
        assert _scaled(k.ntk, k_off.ntk) < TOL
    xg = x.clone().requires_grad_(True)
    k_grad = net.kernel(xg, get="ntk")
    assert not calls
    k_grad.sum().backward()
    assert _scaled(k.ntk, k_grad.detach()) < TOL and torch.isfinite(xg.grad).all()


def test_chain_without_numba_uses_torch(monkeypatch):
    """Without numba (loops() is None) every map runs as torch operations, same values."""
    net = wl.Serial(wl.Dense(), wl.LeakyReLU(0.1), wl.Dense(), wl.Abs(), wl.Dense())
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    k = net.kernel(x, tile_size=3)
    monkeypatch.setattr(_jit, "loops", lambda: None)
    state = wl.Kernel(nngp=x @ x.T, ntk=None, cov1=(x * x).sum(1), cov2=(x * x).sum(1))
    assert _chain.run(net.layers, state) is None
    k_torch = net.kernel(x, tile_size=3)
    assert _scaled(k.nngp, k_torch.nngp) < TOL and _scaled(k.ntk, k_torch.ntk) < TOL


def test_standard_ntk_error_still_raised():
    """A run never hides a layer's own error: the standard NTK of an infinite-width input."""
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(parametrization="standard"), wl.ReLU())
    with pytest.raises(ValueError, match="standard-parametrization NTK"):
        net.kernel(torch.randn(3, 2, dtype=torch.float64))


def test_chain_does_not_depend_on_threads():
    """Bit for bit the same kernel on 1, 2 and 3 threads (float32 and float64)."""
    net = wl.Serial(*[wl.Dense(W_std=1.4, b_std=0.1), wl.ReLU()] * 4, wl.Dense(1))
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(70, 9, generator=g, dtype=dtype)
        ks = [net.kernel(x, tile_size=16, threads=t) for t in (1, 2, 3)]
        for k in ks[1:]:
            assert torch.equal(k.nngp, ks[0].nngp) and torch.equal(k.ntk, ks[0].ntk)


def test_two_python_threads_share_a_network():
    """Two user threads computing kernels of one network at once get the right values."""
    import threading

    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(), wl.ReLU(), wl.Dense())
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(40, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    refs = [_eager(net, x) for x in xs]
    out = [None, None]

    def work(i):
        out[i] = net.kernel(xs[i], tile_size=8, threads=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, ref in zip(out, refs, strict=True):
        assert _scaled(k.ntk, ref.ntk) < TOL


@pytest.mark.parametrize(
    ("shape", "s11", "s22", "split"),
    [
        ((5, 7), (5, 1), (1, 7), (0, 1)),  # a flat tile
        ((2, 3, 4, 5, 4, 5), (2, 1, 4, 5, 1, 1), (1, 3, 1, 1, 4, 5), (2, 4)),  # pixel pairs
        ((2, 3, 4, 5), (2, 1, 4, 5), (1, 3, 4, 5), None),  # one covariance per pixel
        ((6,), (6,), (6,), None),  # the examples with themselves
        ((4, 5, 6), (5, 1), (6,), (1, 2)),  # variances broadcast from fewer axes
    ],
)
def test_outer_split(shape, s11, s22, split):
    """Which layouts are outer products of the two examples' variances."""
    assert _jit._outer_split(shape, s11, s22) == split


def test_pixel_pairs_take_the_outer_path(chain_calls):
    """A pooling CNN's pixel-pair tiles go through the compiled outer loop, slice by slice, and
    equal the eager kernel."""
    net = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.Conv(None, 3), wl.ReLU(), wl.GlobalAvgPool(),
                    wl.Dense(1))  # fmt: skip
    x = torch.randn(5, 2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    k = net.kernel(x, tile_size=2)
    seen = [(c["mode"], c["rows"], c["k12"].shape) for c in chain_calls]
    assert (_jit.OUTER, 12, (144,)) in seen  # (H W) x (H W) pixel pairs of a pair
    ref = _eager(net, x, tile_size=2)
    assert _scaled(k.nngp, ref.nngp) < TOL and _scaled(k.ntk, ref.ntk) < TOL


def test_damaged_numba_cache_is_bypassed_with_a_warning(monkeypatch):
    """numba reads its on-disk cache before compiling, and a damaged cache file raises there
    (checked by hand: garbage in the .nbi files gives a ValueError from pickle).  The first
    use then warns, compiles the loops without the cache, and the kernels stay right."""
    import numba

    calls = []
    original_warm_up = _jit_loops.warm_up

    def damaged_then_fine():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("invalid literal for int() with base 10: 'arbage'")
        original_warm_up()

    recompiled = []

    def njit(**options):  # no real recompilation: the test is about the control flow
        assert "cache" not in options
        return lambda fn: recompiled.append(fn.__name__) or getattr(_jit_loops, fn.__name__)

    monkeypatch.setattr(_jit_loops, "warm_up", damaged_then_fine)
    monkeypatch.setattr(numba, "njit", njit)
    _jit.load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="cache"):
            assert _jit.loops() is _jit_loops
        assert sorted(recompiled) == sorted(_jit_loops.LOOPS) and len(calls) == 2
    finally:
        _jit.load.cache_clear()
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense())
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    assert _scaled(net.kernel(x).ntk, _eager(net, x).ntk) < TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pixel_pair_input_covariances(dtype):
    """The compiled pixel-pair covariances of the inputs (a few channels) against the batched
    product: equal to rounding, and an example's own covariance symmetric to the bit."""
    from widelimits import _compute

    g = torch.Generator().manual_seed(9)
    a, b = (
        torch.randn(3, 3, 4, 5, generator=g, dtype=dtype),
        torch.randn(2, 3, 4, 5, generator=g, dtype=dtype),
    )
    cross = _compute._cross(a, b, "full")
    ref = torch.einsum("ncp,mcq->nmpq", a.reshape(3, 3, -1), b.reshape(2, 3, -1))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert _scaled(cross.reshape(ref.shape), ref) < tol
    var = _compute._variances(a, "full").reshape(3, 20, 20)
    assert torch.equal(var, var.transpose(1, 2))
    assert (
        _scaled(var, torch.bmm(a.reshape(3, 3, -1).transpose(1, 2), a.reshape(3, 3, -1)) / 3) < tol
    )
    # more channels than the loop is for, or gradients: the batched product
    wide = torch.randn(2, _compute.SMALL_GRAM_CHANNELS + 1, 3, 3, generator=g, dtype=dtype)
    assert _compute._pixel_gram(wide, wide, diagonal=False) is None
    assert _compute._pixel_gram(a.clone().requires_grad_(), a, diagonal=True) is None
