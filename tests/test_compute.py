"""Kernel computation: tiling, symmetry, dtypes and devices, and errors for bad input."""

import numpy as np
import pytest
import torch

import widelimits as wl


def relu_net(depth: int = 2, **dense):
    layers = []
    for _ in range(depth):
        layers += [wl.Dense(**dense), wl.ReLU()]
    return wl.Serial(*layers, wl.Dense(1, **dense))


@pytest.fixture
def x():
    return torch.randn(70, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture
def y():
    return torch.randn(45, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("tile", [1, 7, 16, 64])
def test_tiled_equals_one_shot(x, y, tile):
    net = relu_net(3, W_std=1.3, b_std=0.1)
    one = net.kernel(x, y, tile_size=1000)
    tiled = net.kernel(x, y, tile_size=tile)
    torch.testing.assert_close(tiled.nngp, one.nngp, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(tiled.ntk, one.ntk, rtol=1e-13, atol=1e-14)
    sym_one = net.kernel(x, tile_size=1000)
    sym_tiled = net.kernel(x, tile_size=tile)
    torch.testing.assert_close(sym_tiled.nngp, sym_one.nngp, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(sym_tiled.ntk, sym_one.ntk, rtol=1e-13, atol=1e-14)


def test_symmetric_matches_explicit_x2(x):
    net = relu_net(2, b_std=0.2)
    sym = net.kernel(x, tile_size=16)
    full = net.kernel(x, x.clone(), tile_size=16)
    # Rows of x2 equal to rows of x1 start from their variances, as x2=None does, so the diagonal
    # agrees bit for bit (from a Gram product, the rounding of k12 would put the correlation at
    # 1 - O(eps), and arccos would turn that into O(sqrt(eps)) ~ 1e-8 in the NTK).  Off the
    # diagonal only the Gram products' rounding differs.
    assert torch.equal(sym.nngp.diagonal(), full.nngp.diagonal())
    assert torch.equal(sym.ntk.diagonal(), full.ntk.diagonal())
    torch.testing.assert_close(sym.nngp, full.nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(sym.ntk, full.ntk, rtol=1e-13, atol=0)
    assert torch.equal(sym.nngp, sym.nngp.T) and torch.equal(sym.ntk, sym.ntk.T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("depth", [3, 10])
def test_same_point_same_value_deep(depth, dtype):
    # The measurement: K(x) and K(x, x.clone()) differed on the diagonal by 3e-4 (depth
    # 3) to 1e-3 (depth 10) relative in float32, and a self-pair's value depended on its tile.
    net = relu_net(depth, W_std=1.5, b_std=0.1)
    x = torch.randn(24, 30, generator=torch.Generator().manual_seed(2), dtype=dtype)
    ref = net.kernel(x, get="ntk").diagonal()
    for tile in (5, 64):
        assert torch.equal(net.kernel(x, x.clone(), get="ntk", tile_size=tile).diagonal(), ref)
        assert torch.equal(net.kernel(x, get="ntk", tile_size=tile).diagonal(), ref)
    # a permuted copy: each example meets itself off the diagonal, in another tile
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    k = net.kernel(x, x[perm], get="ntk", tile_size=7)
    assert torch.equal(k[perm, torch.arange(len(x))], ref[perm])


def test_diagonal_matches_full(x):
    net = relu_net(3, b_std=0.1)
    full = net.kernel(x)
    diag = net.kernel(x, diagonal=True)
    assert diag.nngp.shape == (len(x),)
    torch.testing.assert_close(diag.nngp, full.nngp.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(diag.ntk, full.ntk.diagonal(), rtol=1e-13, atol=0)
    torch.testing.assert_close(full.cov1, full.nngp.diagonal(), rtol=1e-13, atol=0)


def test_get_single_and_subset(x, y):
    net = relu_net()
    k = net.kernel(x, y)
    torch.testing.assert_close(net.kernel(x, y, get="ntk"), k.ntk)
    only = net.kernel(x, y, get=("nngp",))
    assert only.ntk is None
    torch.testing.assert_close(only.nngp, k.nngp)


def test_float32_close_to_float64_and_dtype_follows(x, y):
    net = relu_net(3, b_std=0.1)
    k64 = net.kernel(x, y)
    k32 = net.kernel(x.float(), y.float())
    assert k32.nngp.dtype == torch.float32 and k64.nngp.dtype == torch.float64
    torch.testing.assert_close(k32.nngp.double(), k64.nngp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(k32.ntk.double(), k64.ntk, rtol=1e-5, atol=1e-6)


def test_numpy_input(x, y):
    net = relu_net()
    k_np = net.kernel(x.numpy(), y.numpy())
    k_t = net.kernel(x, y)
    assert isinstance(k_np.nngp, torch.Tensor) and k_np.nngp.dtype == torch.float64
    torch.testing.assert_close(k_np.ntk, k_t.ntk)


def test_mixed_dtypes_promote(x, y):
    k = relu_net().kernel(x.float(), y)
    assert k.nngp.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_follows_input(x, y):
    net = relu_net(3, b_std=0.1)
    kc = net.kernel(x.cuda(), y.cuda())
    assert kc.nngp.is_cuda
    torch.testing.assert_close(kc.ntk.cpu(), net.kernel(x, y).ntk, rtol=1e-10, atol=1e-12)


def test_progress_bar_runs(x, capsys):
    k = relu_net().kernel(x, tile_size=8, progress=True)
    assert "kernel tiles" in capsys.readouterr().err
    torch.testing.assert_close(k.nngp, relu_net().kernel(x).nngp)


def test_memory_budget_sets_tile(x):
    net = relu_net()
    small = net.kernel(x, memory_budget=8 * 16 * 20**2)  # room for 20 x 20 tiles
    torch.testing.assert_close(small.ntk, net.kernel(x).ntk, rtol=1e-13, atol=0)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x1", "x2", "error", "match"),
    [
        (torch.randn(3, 4), torch.randn(2, 5), ValueError, "same example shape"),
        (torch.tensor([[1.0, float("nan")]]), None, ValueError, "NaN or infinite"),
        (torch.tensor([[1.0, float("inf")]]), None, ValueError, "NaN or infinite"),
        (torch.randn(3, 4), torch.tensor([[0.0, 1, 2, float("nan")]]), ValueError, "x2 contains"),
        (torch.zeros(0, 4), None, ValueError, "empty batch"),
        (torch.ones(3, 4, dtype=torch.int64), None, TypeError, "floating"),
        (torch.randn(3, 4).half(), None, TypeError, "float32 or float64"),
        (torch.randn(3), None, ValueError, "examples, features"),
        (torch.randn(3, 0), None, ValueError, "zero features"),
        ("abc", None, TypeError, "x1"),
    ],
)
def test_bad_inputs(x1, x2, error, match):
    with pytest.raises(error, match=match):
        relu_net().kernel(x1, x2)


def test_activation_after_activation_raises():
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.ReLU(), wl.Dense(1))
    with pytest.raises(ValueError, match="Gaussian pre-activations"):
        net.kernel(torch.randn(3, 4))


def test_activation_on_raw_inputs_raises():
    with pytest.raises(ValueError, match="put a Dense layer before it"):
        wl.Serial(wl.ReLU(), wl.Dense(1)).kernel(torch.randn(3, 4))


def test_no_parameters_has_no_ntk():
    net = wl.Serial(wl.Identity())
    with pytest.raises(ValueError, match="no trainable layer"):
        net.kernel(torch.randn(3, 4))
    k = net.kernel(torch.randn(3, 4, dtype=torch.float64), get="nngp")
    assert k.shape == (3, 3)


def test_bad_get_and_diagonal_with_x2():
    with pytest.raises(ValueError, match="get must name"):
        relu_net().kernel(torch.randn(3, 4), get="nngpp")
    with pytest.raises(ValueError, match="x2=None"):
        relu_net().kernel(torch.randn(3, 4), torch.randn(2, 4), diagonal=True)


def test_standard_parametrization_needs_finite_width():
    net = wl.Serial(
        wl.Dense(parametrization="standard"), wl.ReLU(), wl.Dense(1, parametrization="standard")
    )
    with pytest.raises(ValueError, match="finite width"):
        net.kernel(torch.randn(3, 4))
    assert net.kernel(torch.randn(3, 4), get="nngp").shape == (3, 3)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: wl.Dense(out=0), "positive int"),
        (lambda: wl.Dense(W_std=-1.0), "non-negative"),
        (lambda: wl.Dense(b_std=float("nan")), "finite"),
        (lambda: wl.Dense(parametrization="mup"), "parametrization"),
        (lambda: wl.Dropout(1.0), "drop probability"),
        (lambda: wl.FanOut(0), "positive integer"),
        (lambda: wl.Serial(wl.Dense(), wl.ReLU), "parentheses"),
    ],
)
def test_impossible_architectures(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_overflow_is_reported():
    net = wl.Serial(*[wl.Dense(W_std=1e30) for _ in range(12)], wl.Dense(1))
    with pytest.raises(FloatingPointError, match="non-finite"):
        net.kernel(torch.randn(3, 4))


def test_memory_error_for_impossible_output():
    net = relu_net()
    x = torch.randn(1, 3).expand(10**6, 3)  # a (1e6, 1e6) kernel: 16 TB, no real allocation
    with pytest.raises(MemoryError, match="row blocks"):
        net.kernel(x, x)


def test_reference_inputs_shape_independent_of_numpy_order():
    x = np.random.default_rng(0).standard_normal((4, 16))
    k1 = relu_net().kernel(x)
    k2 = relu_net().kernel(np.ascontiguousarray(x[::-1]))
    torch.testing.assert_close(k1.nngp.flip(0, 1), k2.nngp)


@pytest.mark.parametrize("act", [wl.ReLU(), wl.Sign(), wl.Abs(), wl.RectifiedMonomial(2), wl.Erf()])
def test_zero_input_row_gives_zero_kernel_row(act):
    # A zero input without bias has variance 0 at every layer: its kernel row is exactly 0, and
    # the 0/0 correlation must not produce NaN.  The other rows match a batch without it.
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[1] = 0
    net = wl.Serial(wl.Dense(), act, wl.Dense(), act, wl.Dense(1))
    k = net.kernel(x)
    assert torch.equal(k.nngp[1], torch.zeros(4, dtype=x.dtype))
    rest = net.kernel(x[[0, 2, 3]])
    torch.testing.assert_close(k.ntk[[0, 2, 3]][:, [0, 2, 3]], rest.ntk, rtol=1e-14, atol=0)


# --- kernel invariants, property-based ----------------------------------------------------------
#
# Random small architectures and inputs.  "Same point" values (an example with itself, wherever
# it appears) are compared bit for bit where every closed form meets them at correlation exactly
# 1; torch's vectorised and scalar atan2 differ in the last bit, so networks that evaluate atan2 at
# other correlations for them (GELU; pixel pairs p != q after pooling) are held to a few ulps.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
EXACT_ACTS = [wl.ReLU, lambda: wl.LeakyReLU(0.2), wl.Abs, wl.Erf, wl.Sign]
ALL_ACTS = [*EXACT_ACTS, wl.GELU]


@st.composite
def networks(draw, conv: bool | None = None):
    """``(net, example_shape, exact)``: a random Dense / activation / Residual / LayerNorm stack,
    or a small conv net that may pool; ``exact``: same-point values agree bit for bit."""
    conv = draw(st.booleans()) if conv is None else conv
    acts = draw(st.lists(st.sampled_from(range(len(ALL_ACTS))), min_size=1, max_size=3))
    w = draw(st.floats(0.5, 2.0))
    b = draw(st.sampled_from([None, 0.1, 0.5]))
    layers, exact = [], all(ALL_ACTS[a] is not wl.GELU for a in acts)
    for a in acts:
        act = ALL_ACTS[a]
        kind = draw(st.sampled_from(["plain", "residual", "layernorm"]))
        weight = (
            wl.Conv(None, 3, W_std=w, b_std=b, padding="same")
            if conv
            else wl.Dense(W_std=w, b_std=b)
        )
        layers.append(weight)
        if kind == "layernorm" and not conv:
            layers.append(wl.LayerNorm())
        layers.append(act())
        if kind == "residual":
            layers += [wl.Dense(W_std=w), wl.Residual(act(), wl.Dense(W_std=1.0, b_std=b))]
    if conv:
        pool = draw(st.booleans())
        layers += [wl.AvgPool(2), wl.GlobalAvgPool()] if pool else [wl.Flatten()]
        exact = exact and not pool
    layers.append(wl.Dense(1, W_std=w))
    return wl.Serial(*layers), ((2, 4, 4) if conv else (draw(st.integers(1, 5)),)), exact


def _batch(seed: int, n: int, shape, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _close(a, b, dtype=torch.float64):
    rtol = 1e-11 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


@PROPERTY
@given(networks(), st.integers(0, 2**16), st.integers(1, 7))
def test_property_symmetric_and_psd(arch, seed, n):
    net, shape, _ = arch
    k = net.kernel(_batch(seed, n, shape))
    for t in (k.nngp, k.ntk):
        assert torch.equal(t, t.T)
        eig = torch.linalg.eigvalsh(t)
        assert eig[0] >= -1e-10 * eig[-1].abs()


@PROPERTY
@given(networks(), st.integers(0, 2**16), st.integers(1, 6), st.integers(1, 6))
def test_property_permutation_equivariance(arch, seed, n1, n2):
    net, shape, _ = arch
    x, y = _batch(seed, n1, shape), _batch(seed + 1, n2, shape)
    g = torch.Generator().manual_seed(seed)
    p, q = torch.randperm(n1, generator=g), torch.randperm(n2, generator=g)
    k, kp = net.kernel(x, y), net.kernel(x[p], y[q])
    for name in ("nngp", "ntk"):
        _close(getattr(kp, name), getattr(k, name)[p][:, q])


@PROPERTY
@given(networks(), st.integers(0, 2**16), st.integers(2, 8), st.integers(1, 5), st.data())
def test_property_tiling_and_batch_independence(arch, seed, n, tile, data):
    net, shape, _ = arch
    x, y = _batch(seed, n, shape), _batch(seed + 1, 5, shape)
    k = net.kernel(x, y, tile_size=64)
    sym = net.kernel(x, tile_size=64)
    rows = data.draw(st.integers(1, n))
    budget = data.draw(st.integers(2**16, 2**22))
    for other in (net.kernel(x, y, tile_size=tile), net.kernel(x, y, memory_budget=budget)):
        _close(other.ntk, k.ntk)
    _close(net.kernel(x, tile_size=tile).ntk, sym.ntk)
    # the rows of x[:rows] do not depend on which other examples are in the batch
    _close(net.kernel(x[:rows], y).ntk, k.ntk[:rows])
    _close(net.kernel(x[:rows], x).ntk, sym.ntk[:rows])


@PROPERTY
@given(
    networks(),
    st.integers(0, 2**16),
    st.integers(1, 7),
    st.integers(1, 4),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_property_same_point_same_value(arch, seed, n, tile, dtype):
    net, shape, exact = arch
    x = _batch(seed, n, shape, dtype)
    g = torch.Generator().manual_seed(seed)
    # x's rows again, shuffled among new points: every x_i meets itself in some tile of K(x, y)
    y = torch.cat([x, _batch(seed + 1, 3, shape, dtype)])
    perm = torch.randperm(len(y), generator=g)
    y = y[perm]
    where = torch.argsort(perm)[:n]  # the column of x_i in y
    ref = net.kernel(x)
    seen = {
        "K(x, x.clone())": net.kernel(x, x.clone()),
        "K(x, tiled)": net.kernel(x, tile_size=tile),
        "K(x, y)": net.kernel(x, y, tile_size=tile),
        "K(x_i, x_i)": None,
        "diagonal": net.kernel(x, diagonal=True),
    }
    for name in ("nngp", "ntk"):
        diag = getattr(ref, name).diagonal()
        values = {
            "K(x, x.clone())": getattr(seen["K(x, x.clone())"], name).diagonal(),
            "K(x, tiled)": getattr(seen["K(x, tiled)"], name).diagonal(),
            "K(x, y)": getattr(seen["K(x, y)"], name)[torch.arange(n), where],
            "K(x_i, x_i)": torch.stack(
                [net.kernel(x[i : i + 1], get=name)[0, 0] for i in range(n)]
            ),
            "diagonal": getattr(seen["diagonal"], name),
        }
        for label, v in values.items():
            if exact:
                assert torch.equal(v, diag), (label, name, (v - diag).abs().max())
            else:
                torch.testing.assert_close(v, diag, rtol=64 * torch.finfo(dtype).eps, atol=0)


@PROPERTY
@given(networks(conv=False), st.integers(0, 2**16), st.integers(2, 6))
def test_property_duplicate_rows_are_the_same_point(arch, seed, n):
    net, shape, exact = arch
    x = _batch(seed, n, shape)
    x = torch.cat([x, x[:1], x[:1]])  # x_0 three times, in different tiles with tile_size=2
    k = net.kernel(x, tile_size=2)
    block = k.ntk[[0, n, n + 1]][:, [0, n, n + 1]]
    if exact:
        assert torch.equal(block, torch.full_like(block, float(k.ntk[0, 0])))
    else:
        _close(block, torch.full_like(block, float(k.ntk[0, 0])))


def test_same_point_same_value_with_pixel_pair_outputs():
    # A network ending with spatial features that pooled: the output keeps every pixel pair,
    # (N1, N2, H, W, H, W).  An example with itself is symmetric in (p, q) bit for bit, wherever
    # it is computed: on the diagonal, against a copy, in another tile, or alone.
    net = wl.Serial(
        wl.Conv(None, 3, W_std=1.2, b_std=0.1, padding="same"),
        wl.ReLU(),
        wl.AvgPool(2),
        wl.Conv(None, 3, padding="same"),
    )
    x = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    k = net.kernel(x, tile_size=2)
    assert k.ntk.shape == (5, 5, 3, 3, 3, 3)
    diag = k.ntk[torch.arange(5), torch.arange(5)]
    assert torch.equal(diag, diag.permute(0, 3, 4, 1, 2))
    perm = torch.tensor([3, 0, 4, 1, 2])
    cross = net.kernel(x, x[perm], tile_size=2).ntk
    assert torch.equal(cross[perm, torch.arange(5)], diag[perm])
    assert torch.equal(net.kernel(x, x.clone()).ntk[torch.arange(5), torch.arange(5)], diag)
    assert torch.equal(net.kernel(x, diagonal=True).ntk, diag)
    alone = torch.stack([net.kernel(x[i : i + 1]).ntk[0, 0] for i in range(5)])
    assert torch.equal(alone, diag)
    torch.testing.assert_close(cross, k.ntk[:, perm], rtol=1e-13, atol=1e-15)
