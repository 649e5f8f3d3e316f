"""Convolutional layers: Conv, AvgPool, SumPool, GlobalAvgPool, Flatten, Myrtle.

- the neural-tangents 0.6.5 reference kernels of a two-layer CNN (Flatten and global pooling);
- the kernel contract (`widelimits.testing.KernelContract`, Monte Carlo included) on small
  networks that together use every layer and option, on 2x5x5 / 2x6x6 images and length-7
  sequences;
- exact geometry: a linear network's NTK does not depend on its weights, so the empirical NTK of
  one finite Conv / pooling network equals the analytic pixel-pair kernel (padding splits,
  strides, circular wrap, tuple windows) to rounding;
- the per-pixel and pixel-pair layouts agree; outputs with pixel axes; translation invariance
  of global pooling and a toy task where it matters;
- the finite side (torch modules, shapes, RNG, structured empirical NTK), Myrtle, and errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import widelimits as wl
import widelimits._compute as compute
from widelimits.finite import empirical_ntk
from widelimits.finite.structured import StructuredNTK
from widelimits.layers._spatial import SpatialPad
from widelimits.layers.base import BuildContext, SpatialFeatures
from widelimits.predict import gp_inference
from widelimits.testing import KernelContract, count_finite_width_layers

REFERENCE = Path(__file__).parent / "data" / "neural_tangents_0.6.5.npz"


def _force_full_layout(monkeypatch) -> None:
    """Spatial inputs take the pixel-pair layout even when no layer pools."""
    monkeypatch.setattr(compute, "_layout", lambda layer, x: "none" if x.ndim == 2 else "full")


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# neural-tangents reference


@pytest.mark.parametrize("pool", ["flatten", "gap"])
def test_matches_neural_tangents(pool):
    ref = np.load(REFERENCE)
    x = torch.from_numpy(ref["x_img"].transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW
    readout = wl.Flatten() if pool == "flatten" else wl.GlobalAvgPool()
    net = wl.Serial(
        wl.Conv(256, 3, padding="same"), wl.ReLU(), wl.Conv(256, 3), wl.ReLU(), readout,
        wl.Dense(10),
    )  # fmt: skip
    k = net.kernel(x)
    for g in ("nngp", "ntk"):
        expected = torch.from_numpy(ref[f"cnn_{pool}_{g}"])
        torch.testing.assert_close(getattr(k, g), expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# The kernel contract on small convolutional networks


@dataclass
class Case:
    id: str
    make: Callable
    options: dict = field(default_factory=dict)

    def contract(self) -> KernelContract:
        return KernelContract(self.make, **{**MONTE_CARLO, **self.options})

    def param(self):
        return pytest.param(self, id=self.id)


# Convolutions between hidden layers of width n cost n^2 * taps per pixel: narrower networks
# than the contract's defaults (bias allowance 2 L / 128 of the scale for the NNGP), with the
# standard error measured from 400 (NNGP) and 32 (NTK) networks.  Measured relative tolerances
# 4-9% of the kernel's scale (NNGP; worst |error| 0.3-2.6%); a kernel that treats circular
# padding as zeros fails.  The exact geometry tests below pin padding splits down further.
MONTE_CARLO = dict(nngp_width=128, nngp_samples=400, nngp_outputs=64, ntk_width=256, ntk_samples=32)
IMG, IMG6, SEQ = (2, 5, 5), (2, 6, 6), (2, 7)

CASES = [
    Case(
        # per-pixel layout: same and valid padding, stride 2, a (2, 3) window, Erf and ReLU
        "conv2d-stride2-valid-flatten",
        lambda out: wl.Serial(
            wl.Conv(W_std=1.5, b_std=0.2),
            wl.ReLU(),
            wl.Conv(kernel_size=(2, 3), stride=2, padding="valid", W_std=1.3, b_std=0.1),
            wl.Erf(),
            wl.Flatten(),
            wl.Dense(out, W_std=1.2, b_std=0.1),
        ),  # fmt: skip
        {"in_features": IMG},
    ),
    Case(
        "conv1d-circular-gap",
        lambda out: wl.Serial(
            wl.Conv(kernel_size=3, padding="circular", W_std=1.4, b_std=0.3),
            wl.Erf(),
            wl.Conv(kernel_size=2, padding="same", W_std=1.6),
            wl.ReLU(),
            wl.GlobalAvgPool(),
            wl.Dense(out, W_std=1.3),
        ),  # fmt: skip
        {"in_features": SEQ},
    ),
    Case(
        # AvgPool (default: valid, stride = window) and AvgPool(3, stride 1, same); a Dense layer
        # on spatial features (a 1x1 convolution over channels)
        "avgpool-dense-on-pixels",
        lambda out: wl.Serial(
            wl.Conv(W_std=1.4, b_std=0.1),
            wl.ReLU(),
            wl.AvgPool(2),
            wl.Dense(W_std=1.3, b_std=0.2),
            wl.Erf(),
            wl.AvgPool(3, stride=1, padding="same"),
            wl.Flatten(),
            wl.Dense(out, W_std=1.1),
        ),  # fmt: skip
        {"in_features": IMG6},
    ),
    Case(
        # pixel-pair layout: LayerNorm over channels, Dropout per example and pixel
        "layernorm-dropout-gap",
        lambda out: wl.Serial(
            wl.Conv(W_std=1.5, b_std=0.4),
            wl.LayerNorm(),
            wl.ReLU(),
            wl.Dropout(0.3),
            wl.Conv(kernel_size=2, W_std=1.2),
            wl.ReLU(),
            wl.GlobalAvgPool(),
            wl.Dense(out, W_std=1.2),
        ),  # fmt: skip
        {"in_features": IMG, "same_example_sensitive": True},
    ),
    Case(
        "residual-conv",
        lambda out: wl.Serial(
            wl.Conv(W_std=1.4, b_std=0.1),
            wl.Residual(wl.ReLU(), wl.Conv(W_std=1.2, b_std=0.1)),
            wl.Erf(),
            wl.Flatten(),
            wl.Dense(out, W_std=1.1),
        ),  # fmt: skip
        {"in_features": IMG},
    ),
    Case(
        "concat-conv1d-sumpool",
        lambda out: wl.Serial(
            wl.FanOut(2),
            wl.Parallel(
                wl.Serial(wl.Conv(kernel_size=3, W_std=1.3, b_std=0.2), wl.ReLU()),
                wl.Serial(wl.Conv(kernel_size=5, W_std=0.9), wl.Erf()),
            ),
            wl.FanInConcat(),
            wl.SumPool(2),
            wl.Flatten(),
            wl.Dense(out, W_std=1.5, b_std=0.1),
        ),  # fmt: skip
        {"in_features": SEQ},
    ),
    Case(
        # standard parametrization after a conv of finite width 12: the NTK counts its
        # 12 * 6 inputs per output; a conv readout (its pixels are outputs too).  One hidden
        # layer: the Monte Carlo mean is exactly unbiased although the width is only 12.
        "standard-conv-after-finite-width",
        lambda out: wl.Serial(
            wl.Conv(12, W_std=1.3, b_std=0.1),
            wl.ReLU(),
            wl.Conv(
                out,
                kernel_size=(2, 3),
                padding="circular",
                W_std=1.2,
                b_std=0.2,
                parametrization="standard",
            ),
            wl.Flatten(),
        ),  # fmt: skip
        {"in_features": IMG},
    ),
]

CASE_PARAMS = [c.param() for c in CASES]


@pytest.mark.parametrize("check", KernelContract.CHECKS)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_contract(case: Case, check: str):
    getattr(case.contract(), check)()


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_monte_carlo_nngp(case: Case):
    case.contract().check_monte_carlo_nngp()


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_monte_carlo_ntk(case: Case):
    case.contract().check_monte_carlo_ntk()


def test_contract_inputs_take_example_shapes():
    for shape in (IMG, SEQ):
        x1, x2 = KernelContract(lambda out: wl.Dense(out), in_features=shape).inputs()
        assert x1.shape == (5, *shape) and x2.shape == (4, *shape)
        torch.testing.assert_close(x1[3], -x1[0], rtol=0, atol=0)
        torch.testing.assert_close(x2[1], x1[2], rtol=0, atol=0)
    # an int keeps the flat inputs (and random draws) it always gave
    a = KernelContract(lambda out: wl.Dense(out), in_features=6).inputs()
    b = KernelContract(lambda out: wl.Dense(out), in_features=(6,)).inputs()
    assert a[0].shape == (5, 6)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="in_features must be"):
        KernelContract(lambda out: wl.Dense(out), in_features=(2, 0, 3)).inputs()


def test_count_finite_width_layers_counts_hidden_convs():
    case = next(c for c in CASES if c.id == "residual-conv")
    assert count_finite_width_layers(case.make(1)) == 2
    fixed = next(c for c in CASES if c.id == "standard-conv-after-finite-width")
    assert count_finite_width_layers(fixed.make(1)) == 0


# ---------------------------------------------------------------------------------------------
# Exact geometry: a linear network's NTK is its NNGP and does not depend on the weights


LINEAR_GEOMETRIES = [
    ((2, 5, 5), lambda: wl.Conv(1, kernel_size=(2, 3), padding="same", b_std=0.3)),
    ((2, 5, 5), lambda: wl.Conv(1, kernel_size=2, stride=2, padding="same")),
    ((2, 5, 6), lambda: wl.Conv(1, kernel_size=(3, 2), stride=(2, 1), padding="circular")),
    ((2, 6, 5), lambda: wl.Conv(1, kernel_size=(2, 3), stride=2, padding="valid", b_std=0.2)),
    ((2, 7), lambda: wl.Conv(1, kernel_size=4, padding="same", W_std=1.3)),
    ((2, 7), lambda: wl.Conv(1, kernel_size=3, stride=2, padding="circular")),
    ((2, 5, 5), lambda: wl.Serial(wl.Conv(1, 2), wl.AvgPool(2, stride=1, padding="same"))),
    ((2, 6, 6), lambda: wl.Serial(wl.Conv(1, 3), wl.AvgPool(2))),  # tiling windows
    ((2, 5, 5), lambda: wl.Serial(wl.Conv(1, 3), wl.AvgPool(3, stride=2, padding="circular"))),
    ((2, 7), lambda: wl.Serial(wl.Conv(1, 2), wl.SumPool(3, stride=2))),
    ((2, 7), lambda: wl.Serial(wl.Conv(1, 2, padding="valid"), wl.SumPool(2, padding="same"))),
    # images smaller than the window: circular taps wrap around several times (torch's F.pad
    # wraps at most once), "same" taps that read only zeros are dropped
    ((2, 1, 1), lambda: wl.Conv(1, 3, padding="circular", b_std=0.2)),
    ((2, 1, 4), lambda: wl.Conv(1, 3, padding="circular")),
    ((2, 2), lambda: wl.Conv(1, 7, padding="circular", W_std=1.2)),
    ((2, 3), lambda: wl.Conv(1, 10, stride=2, padding="circular")),
    ((2, 2, 3), lambda: wl.Conv(1, (5, 8), stride=(1, 2), padding="circular")),
    ((2, 3), lambda: wl.Conv(1, 9, padding="same")),
    ((2, 3, 2), lambda: wl.Conv(1, (8, 5), stride=(2, 1), padding="same")),
    ((2, 2, 3), lambda: wl.Serial(wl.Conv(1, 1), wl.AvgPool(5, stride=1, padding="circular"))),
    ((2, 3), lambda: wl.Serial(wl.Conv(1, 1), wl.SumPool(7, stride=2, padding="same"))),
]


@pytest.mark.parametrize("shape, make", LINEAR_GEOMETRIES)
def test_linear_network_kernel_equals_its_empirical_ntk(shape, make, monkeypatch):
    """Padding splits, strides, circular wrap and windows against torch's own convolutions."""
    _force_full_layout(monkeypatch)  # every pixel pair, pooled or not
    net = wl.Serial(make(), wl.Flatten())
    x1, x2 = _images(3, shape, seed=1), _images(2, shape, seed=2)
    k = make().kernel(x1, x2)  # (N1, N2, *S, *S)
    torch.testing.assert_close(k.ntk, k.nngp, rtol=1e-12, atol=1e-14)
    model = net.build(shape, 1, seed=0, dtype=torch.float64)
    emp = empirical_ntk(model, x1, x2, outputs="full")  # (N1, N2, P, P), pixels are outputs
    pixels = k.nngp.shape[2 : 2 + (k.nngp.ndim - 2) // 2]
    assert model(x1).shape == (3, int(np.prod(pixels)))
    torch.testing.assert_close(emp.reshape(k.nngp.shape), k.nngp, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Layouts and outputs with pixel axes


def _conv_flatten(out=1):
    return wl.Serial(
        wl.Conv(W_std=1.5, b_std=0.2), wl.ReLU(),
        wl.Conv(kernel_size=(3, 2), stride=2, W_std=1.4), wl.Erf(),
        wl.Conv(padding="circular", W_std=1.3, b_std=0.1), wl.ReLU(),
        wl.Flatten(), wl.Dense(out, W_std=1.2),
    )  # fmt: skip


def test_per_pixel_layout_equals_full_layout(monkeypatch):
    net = _conv_flatten()
    x1, x2 = _images(4, (2, 6, 5), seed=3), _images(3, (2, 6, 5), seed=4)
    assert compute._layout(net, x1) == "diagonal"
    auto = [net.kernel(x1), net.kernel(x1, x2), net.kernel(x1, diagonal=True)]
    _force_full_layout(monkeypatch)
    full = [net.kernel(x1), net.kernel(x1, x2), net.kernel(x1, diagonal=True)]
    for a, b in zip(auto, full, strict=True):
        for g in ("nngp", "ntk"):
            torch.testing.assert_close(getattr(a, g), getattr(b, g), rtol=1e-12, atol=1e-14)


SPATIAL_OUTPUT_NETS = {
    "diagonal": lambda: wl.Serial(wl.Conv(W_std=1.4, b_std=0.1), wl.ReLU(), wl.Conv(3, 2)),
    "full": lambda: wl.Serial(
        wl.Conv(W_std=1.4, b_std=0.1), wl.ReLU(), wl.AvgPool(2, stride=1), wl.Conv(3, 2)
    ),
}


@pytest.mark.parametrize("layout", ["diagonal", "full"])
def test_spatial_outputs(layout):
    net = SPATIAL_OUTPUT_NETS[layout]()
    x1, x2 = _images(5, (2, 5, 6), seed=5), _images(3, (2, 5, 6), seed=6)
    size = (5, 6) if layout == "diagonal" else (4, 5)
    pixels = size if layout == "diagonal" else size + size
    k12 = net.kernel(x1, x2)
    assert k12.nngp.shape == k12.ntk.shape == (5, 3, *pixels)
    assert net.kernel(x1, diagonal=True).nngp.shape == (5, *pixels)
    # K(x2, x1)[p, q] = K(x1, x2)[q, p]
    k21 = net.kernel(x2, x1)
    swap = (1, 0, 2, 3) if layout == "diagonal" else (1, 0, 4, 5, 2, 3)
    for g in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(k21, g), getattr(k12, g).permute(*swap))
    # x2=None mirrors its upper tiles; equal to x2=x1 (different examples, equal values)
    for tile in (None, 1, 2):
        k_none = net.kernel(x1, tile_size=tile)
        k_same = net.kernel(x1, x1.clone(), tile_size=tile)
        for g in ("nngp", "ntk"):
            a, b = getattr(k_none, g), getattr(k_same, g)
            assert a.shape == (5, 5, *pixels)
            # equal examples passed twice meet at correlation 1 - ulp: defined to ~1e-8 only
            # (see KernelContract.symmetry_tol); self-pairs of x2=None are exact
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
            torch.testing.assert_close(a, a.permute(*swap), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Translation invariance, and a task where it matters


def _circular_cnn(pool, out=1):
    return wl.Serial(
        wl.Conv(kernel_size=3, padding="circular", W_std=1.5, b_std=0.1), wl.ReLU(),
        wl.Conv(kernel_size=3, padding="circular", W_std=1.5), wl.ReLU(),
        pool, wl.Dense(out),
    )  # fmt: skip


def test_global_pooling_is_translation_invariant():
    x1, x2 = _images(3, (2, 6, 6), seed=7), _images(2, (2, 6, 6), seed=8)
    shifted = torch.roll(x2, shifts=(2, -1), dims=(2, 3))
    gap = _circular_cnn(wl.GlobalAvgPool())
    a, b = gap.kernel(x1, x2), gap.kernel(x1, shifted)
    for g in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(b, g), getattr(a, g), rtol=1e-12, atol=1e-14)
    flat = _circular_cnn(wl.Flatten())
    a, b = flat.kernel(x1, x2, get="nngp"), flat.kernel(x1, shifted, get="nngp")
    # the diagonals k(x, x) do not move (a circular shift of both arguments is a symmetry)
    torch.testing.assert_close(
        flat.kernel(shifted, diagonal=True, get="nngp"), flat.kernel(x2, diagonal=True, get="nngp")
    )
    assert float(((b - a).abs() / a.abs().max()).max()) > 0.05


def _pattern_task(n: int, length: int, seed: int, noise: float = 0.3):
    """Label +1 or -1 by which of two 3-step patterns sits at a random place in noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    x = noise * torch.randn(n, 1, length, generator=g, dtype=torch.float64)
    where = torch.randint(0, length - 2, (n,), generator=g)
    for i in range(n):
        x[i, 0, where[i] : where[i] + 3] += patterns[y[i]]
    return x, (2.0 * y - 1.0).double()[:, None]


def test_global_pooling_learns_a_translated_pattern():
    """NNGP regression with 40 examples: global pooling generalises the pattern to every place,
    Flatten must see it at each place.  Measured (this seed): 0.975 against 0.615."""
    x_train, y_train = _pattern_task(40, 16, seed=0)
    x_test, y_test = _pattern_task(200, 16, seed=100)
    accuracy = {}
    for name, pool in (("gap", wl.GlobalAvgPool()), ("flatten", wl.Flatten())):
        net = _circular_cnn(pool)
        predict = gp_inference(net.kernel(x_train, get="nngp"), y_train, diag_reg=1e-4)
        mean = predict("nngp", net.kernel(x_test, x_train, get="nngp"))
        accuracy[name] = float((mean.sign() == y_test).double().mean())
    assert accuracy["gap"] >= 0.9, accuracy
    assert accuracy["gap"] - accuracy["flatten"] >= 0.25, accuracy


# ---------------------------------------------------------------------------------------------
# The finite side


@pytest.mark.parametrize(
    "shape, conv, size",
    [
        ((2, 7, 6), wl.Conv(kernel_size=3, stride=2, padding="same"), (4, 3)),
        ((2, 7, 6), wl.Conv(kernel_size=(3, 2), padding="valid"), (5, 5)),
        ((2, 7, 6), wl.Conv(kernel_size=(2, 3), stride=(1, 2), padding="circular"), (7, 3)),
        ((2, 9), wl.Conv(kernel_size=4, stride=2, padding="valid"), (3,)),
        ((2, 9), wl.Conv(kernel_size=2, padding="same"), (9,)),
    ],
)
def test_built_conv_shapes(shape, conv, size):
    torch_conv = nn.Conv2d if len(shape) == 3 else nn.Conv1d
    ctx = BuildContext.make(5, None, seed=0, dtype=torch.float64)
    _, features = conv.build_module(SpatialFeatures(shape[0], shape[1:]), ctx)
    assert features == SpatialFeatures(5, size)
    model = wl.Serial(conv).build(shape, 5, seed=0, dtype=torch.float64)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert len(convs) == 1 and isinstance(convs[0], torch_conv)
    assert model(_images(3, shape)).shape == (3, 5, *size)
    # kernel pixels are the finite network's pixels
    assert conv.kernel(_images(2, shape), get="nngp").shape == (2, 2, *size)


def test_build_does_not_touch_torch_global_rng():
    state = torch.random.get_rng_state()
    model = _conv_flatten(3).build((2, 6, 5), 8, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = _conv_flatten(3).build((2, 6, 5), 8, seed=1)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_structured_empirical_ntk_on_built_conv_net():
    net = wl.Serial(
        wl.Conv(W_std=1.5, b_std=0.2), wl.ReLU(),
        wl.Conv(kernel_size=(2, 3), stride=2, W_std=1.3, b_std=0.1), wl.Erf(),
        wl.AvgPool(2, stride=1, padding="same"), wl.Flatten(), wl.Dense(3, b_std=0.1),
    )  # fmt: skip
    model = net.build((2, 5, 6), 6, seed=2, dtype=torch.float64)
    assert any(isinstance(m, SpatialPad) for m in model.modules())
    x = _images(4, (2, 5, 6), seed=9)
    for outputs in ("trace", "full"):
        structured = empirical_ntk(model, x, outputs=outputs, implementation="structured")
        jacobian = empirical_ntk(model, x, outputs=outputs, implementation="jacobian")
        torch.testing.assert_close(structured, jacobian, rtol=1e-9, atol=1e-12)
    cross = empirical_ntk(model, x, x[:2], implementation="structured")
    torch.testing.assert_close(cross, empirical_ntk(model, x, x[:2], implementation="jacobian"))
    # the structured path really factorizes the convolutions (no silent fallback)
    chosen = dict(model.named_parameters())
    s = StructuredNTK(model, chosen, dict(model.named_buffers()), x[:1], 3)
    assert s.covered_parameters() == sum(p.numel() for p in model.parameters())
    conv_params = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()
    )
    assert conv_params > 0


# ---------------------------------------------------------------------------------------------
# Myrtle


@pytest.mark.parametrize("depth, convs", [(5, 4), (7, 6), (10, 9)])
def test_myrtle_structure(depth, convs):
    net = wl.Myrtle(depth)
    assert sum(isinstance(layer, wl.Conv) for layer in net.children()) == convs
    model = net.build((3, 32, 32), 4, seed=0)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_myrtle_kernel_on_32x32():
    x = _images(2, (3, 32, 32), seed=10)
    k = wl.Myrtle(5).kernel(x)
    for g in ("nngp", "ntk"):
        t = getattr(k, g)
        assert t.shape == (2, 2) and bool(torch.isfinite(t).all())
        assert float(torch.linalg.eigvalsh(t).min()) >= -1e-10 * float(t.abs().max())


def test_myrtle_on_too_small_images():
    with pytest.raises(ValueError, match="window of 2 does not fit a spatial size of 1"):
        wl.Myrtle(5).kernel(_images(2, (3, 8, 8)))
    with pytest.raises(ValueError, match="window of 2 does not fit a spatial size of 1"):
        wl.Myrtle(5).build((3, 8, 8), 4, seed=0)
    with pytest.raises(ValueError, match="Myrtle depth must be one of"):
        wl.Myrtle(6)


# ---------------------------------------------------------------------------------------------
# Errors


FLAT = _images(3, (4,))


@pytest.mark.parametrize(
    "net, match",
    [
        (wl.Serial(wl.Conv(), wl.ReLU(), wl.Dense(1)), "Conv needs spatial inputs"),
        (wl.Serial(wl.Dense(), wl.GlobalAvgPool(), wl.Dense(1)), "GlobalAvgPool needs spatial"),
        (wl.Serial(wl.Dense(), wl.AvgPool(2), wl.Dense(1)), "AvgPool needs spatial inputs"),
        (wl.Serial(wl.Dense(), wl.SumPool(2), wl.Dense(1)), "SumPool needs spatial inputs"),
    ],
)
def test_spatial_layers_on_flat_inputs(net, match):
    with pytest.raises(ValueError, match=match):
        net.kernel(FLAT)
    with pytest.raises(ValueError, match="needs spatial inputs: build the network with"):
        net.build(4, 8, seed=0)


def test_window_of_wrong_length():
    net = wl.Serial(wl.Conv(kernel_size=(2, 3)), wl.Flatten(), wl.Dense(1))
    with pytest.raises(ValueError, match=r"kernel_size=\(2, 3\) does not fit inputs with 1"):
        net.kernel(_images(2, (2, 7)))
    with pytest.raises(ValueError, match=r"window=\(2, 2\) does not fit inputs with 1"):
        wl.Serial(wl.Conv(), wl.AvgPool((2, 2)), wl.Flatten()).kernel(_images(2, (2, 5)))
    with pytest.raises(ValueError, match=r"window=\(2, 0\) is not a window size"):
        wl.AvgPool((2, 0))
    with pytest.raises(ValueError, match="kernel_size=0"):
        wl.Conv(kernel_size=0)


def test_bad_padding():
    with pytest.raises(ValueError, match="padding must be one of"):
        wl.Conv(padding="bogus")
    with pytest.raises(ValueError, match="padding must be one of"):
        wl.AvgPool(2, padding="bogus")


def test_valid_window_larger_than_the_image():
    net = wl.Serial(wl.Conv(kernel_size=4, padding="valid"), wl.Flatten(), wl.Dense(1))
    with pytest.raises(ValueError, match="window of 4 does not fit a spatial size of 3"):
        net.kernel(_images(2, (2, 3, 5)))
    with pytest.raises(ValueError, match="window of 4 does not fit a spatial size of 3"):
        net.build((2, 3, 5), 4, seed=0)


def test_build_conv_with_flat_in_features():
    with pytest.raises(ValueError, match=r"in_features=\(C, H, W\)"):
        _conv_flatten().build(12, 8, seed=0)


def test_example_shapes_must_agree():
    net = _conv_flatten()
    with pytest.raises(ValueError, match="same example shape"):
        net.kernel(_images(2, (2, 6, 5)), _images(2, (2, 5, 6)))


def test_inputs_without_channels():
    with pytest.raises(ValueError, match=r"\(examples, C, H, W\)"):
        _conv_flatten().kernel(torch.randn(2, dtype=torch.float64))


def test_memory_budget_too_small_for_one_pair():
    net = _circular_cnn(wl.GlobalAvgPool())  # pixel pairs: 36^2 entries per pair of examples
    with pytest.raises(MemoryError, match="one pair of examples needs"):
        net.kernel(_images(2, (2, 6, 6)), memory_budget=1000)
