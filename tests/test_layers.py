"""Every layer kind through the kernel contract (`widelimits.testing.KernelContract`), plus
`build` and the combinators' error messages.

Each case only says how to make a network that uses the layer; the contract checks shapes,
symmetry, PSD, x2=None vs x2=x1, diagonal vs full, float32 vs float64, tiling, and agreement with
Monte Carlo over finite networks built from the same description (tolerances from the standard
error, see the contract's docstring).  Adding an activation is one line in ``ACTIVATIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

import widelimits as wl
from widelimits.finite import empirical_ntk
from widelimits.layers.dense import DenseModule
from widelimits.testing import KernelContract, KernelContractTests


@dataclass
class Case:
    """A network to run through the contract: ``make(out)`` and options for `KernelContract`."""

    id: str
    make: Callable
    options: dict = field(default_factory=dict)

    def contract(self) -> KernelContract:
        return KernelContract(self.make, **self.options)

    def param(self):
        return pytest.param(self, id=self.id)


# ---------------------------------------------------------------------------------------------
# Activations: one line each, (class name, factory, options).  The network around each is
# Dense -> activation -> Dense(out): one hidden layer, whose Monte Carlo mean is exactly unbiased
# at any width (the hidden pre-activations are exactly Gaussian), so only the standard error
# sets the tolerance.  ``w`` scales the pre-activation variance down for fast-growing functions.

ACTIVATIONS = [
    ("ReLU", lambda: wl.ReLU(), {}),
    ("LeakyReLU", lambda: wl.LeakyReLU(0.2), {}),
    ("Abs", lambda: wl.Abs(), {}),
    ("ABReLU", lambda: wl.ABReLU(-0.4, 1.3), {}),
    ("Erf", lambda: wl.Erf(), {}),
    ("Erf", lambda: wl.Erf(a=1.4, b=0.6, c=0.3), {"id": "Erf-abc"}),
    ("Identity", lambda: wl.Identity(), {}),
    ("GELU", lambda: wl.GELU(), {}),
    ("Sin", lambda: wl.Sin(), {}),
    ("Cos", lambda: wl.Cos(), {}),
    ("Sign", lambda: wl.Sign(), {}),
    ("Exp", lambda: wl.Exp(), {"w": 0.5}),
    ("Gaussian", lambda: wl.Gaussian(), {}),
    ("RBF", lambda: wl.RBF(), {}),
    ("Monomial", lambda: wl.Monomial(2), {"w": 0.7}),
    ("RectifiedMonomial", lambda: wl.RectifiedMonomial(2), {"w": 0.7}),
    ("Polynomial", lambda: wl.Polynomial([0.1, 0.6, 0.3]), {"w": 0.7}),
    ("Hermite", lambda: wl.Hermite(3), {"w": 0.7}),
    # quadrature: keep the pre-activation variances <= 2, where it is accurate to ~1e-6 (see
    # test_elementwise_quadrature_vs_closed_form), so the contract tests the layer, not the rule
    ("Elementwise", lambda: wl.Elementwise(torch.tanh), {"id": "tanh", "w": 0.6}),
]


def _activation_case(name, make_act, opts) -> Case:
    opts = dict(opts)
    case_id = opts.pop("id", name)
    w = opts.pop("w", 1.0)

    def make(out, make_act=make_act, w=w):
        return wl.Serial(
            wl.Dense(W_std=1.4 * w, b_std=0.3 * w), make_act(), wl.Dense(out, W_std=1.2, b_std=0.2)
        )

    return Case(case_id, make, opts)


ACTIVATION_CASES = [_activation_case(*a) for a in ACTIVATIONS]


# ---------------------------------------------------------------------------------------------
# Dense, combinators, normalisation, deep networks

DEEP_NTK = {"ntk_width": 1024, "ntk_samples": 16}  # nets with (width x width) layers: costlier

STRUCTURE_CASES = [
    Case("Dense-ntk-bias", lambda out: wl.Dense(out, W_std=1.7, b_std=0.4)),
    Case("Dense-ntk-nobias", lambda out: wl.Dense(out, W_std=0.8)),
    Case(
        "Dense-relu-nobias",
        lambda out: wl.Serial(wl.Dense(W_std=2.0), wl.ReLU(), wl.Dense(out, W_std=0.7)),
    ),
    Case(
        # standard parametrization from the inputs (finite width d) into an infinite layer
        "Dense-standard-first",
        lambda out: wl.Serial(
            wl.Dense(W_std=1.4, b_std=0.2, parametrization="standard"),
            wl.ReLU(),
            wl.Dense(out, W_std=1.2, b_std=0.1),
        ),
    ),
    Case(
        # standard parametrization throughout, fixed hidden width: the NTK grows with it
        "Dense-standard-fixed-width",
        lambda out: wl.Serial(
            wl.Dense(512, W_std=1.4, b_std=0.2, parametrization="standard"),
            wl.Erf(),
            wl.Dense(out, W_std=1.2, b_std=0.1, parametrization="standard"),
        ),
    ),
    Case(
        "FanInSum",
        lambda out: wl.Serial(
            wl.FanOut(2),
            wl.Parallel(wl.Dense(W_std=1.2), wl.Dense(W_std=0.8, b_std=0.5)),
            wl.FanInSum(),
            wl.ReLU(),
            wl.Dense(out, W_std=1.3),
        ),
    ),
    Case(
        "Residual",
        lambda out: wl.Serial(
            wl.Dense(W_std=1.4, b_std=0.1),
            wl.Residual(wl.ReLU(), wl.Dense(W_std=1.2, b_std=0.1)),
            wl.Erf(),
            wl.Dense(out, W_std=1.1),
        ),
        DEEP_NTK,
    ),
    Case(
        "Residual-dense-shortcut",
        lambda out: wl.Serial(
            wl.Dense(W_std=1.4, b_std=0.1),
            wl.ReLU(),
            wl.Residual(wl.Dense(W_std=1.2), wl.ReLU(), shortcut=wl.Dense(W_std=0.6, b_std=0.3)),
            wl.Dense(out, W_std=1.1),
        ),
        DEEP_NTK,
    ),
    Case(
        "FanInConcat",
        lambda out: wl.Serial(
            wl.FanOut(2),
            wl.Parallel(
                wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), wl.ReLU()),
                wl.Serial(wl.Dense(W_std=0.9), wl.Erf()),
            ),
            wl.FanInConcat(),
            wl.Dense(out, W_std=1.5, b_std=0.1),
        ),
    ),
    Case(
        # fixed-width branches: the readout sees 3 + 5 features, weighted 3/8 and 5/8
        "FanInConcat-fixed-widths",
        lambda out: wl.Serial(
            wl.FanOut(2),
            wl.Parallel(wl.Dense(3, W_std=1.2), wl.Dense(5, W_std=0.7, b_std=0.4)),
            wl.FanInConcat(),
            wl.Dense(out, W_std=1.5, b_std=0.1),
        ),
    ),
    Case(
        "FanInProd",
        lambda out: wl.Serial(
            wl.FanOut(2),
            wl.Parallel(wl.Dense(W_std=1.2, b_std=0.3), wl.Dense(W_std=0.9, b_std=0.2)),
            wl.FanInProd(),
            wl.Dense(out, W_std=1.1),
        ),
    ),
    Case(
        "LayerNorm",
        lambda out: wl.Serial(
            wl.Dense(W_std=1.5, b_std=0.5), wl.LayerNorm(), wl.ReLU(), wl.Dense(out, W_std=1.2)
        ),
    ),
    Case(
        "Dropout",
        lambda out: wl.Serial(
            wl.Dense(W_std=1.5, b_std=0.1), wl.ReLU(), wl.Dropout(0.3), wl.Dense(out, W_std=1.2)
        ),
        {"same_example_sensitive": True},
    ),
    Case(
        "deep-relu",
        lambda out: wl.Serial(
            *[wl.Dense(W_std=1.4, b_std=0.1), wl.ReLU()] * 3, wl.Dense(out, W_std=1.4, b_std=0.1)
        ),
        DEEP_NTK,
    ),
    Case(
        "deep-mixed-layernorm",
        lambda out: wl.Serial(
            wl.Dense(W_std=1.3, b_std=0.2),
            wl.Erf(),
            wl.Dense(W_std=1.6, b_std=0.1),
            wl.LayerNorm(),
            wl.LeakyReLU(0.1),
            wl.Dense(W_std=1.2),
            wl.Abs(),
            wl.Dense(out, W_std=1.1, b_std=0.3),
        ),
        DEEP_NTK,
    ),
]

CASES = [c.param() for c in ACTIVATION_CASES + STRUCTURE_CASES]


@pytest.mark.parametrize("check", KernelContract.CHECKS)
@pytest.mark.parametrize("case", CASES)
def test_contract(case: Case, check: str):
    getattr(case.contract(), check)()


@pytest.mark.parametrize("case", CASES)
def test_monte_carlo_nngp(case: Case):
    case.contract().check_monte_carlo_nngp()


@pytest.mark.parametrize("case", CASES)
def test_monte_carlo_ntk(case: Case):
    case.contract().check_monte_carlo_ntk()


class TestContractMixin(KernelContractTests):
    """The pytest mixin form of the contract (what downstream layer authors would subclass)."""

    def make_contract(self):
        return KernelContract(
            lambda out: wl.Serial(wl.Dense(W_std=1.1, b_std=0.6), wl.Erf(), wl.Dense(out)),
            seed=7,
        )


# ---------------------------------------------------------------------------------------------
# Identities between layers (an independent check of the closed forms)


def _x(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _mlp(act, out=1):
    return wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), act, wl.Dense(out, W_std=1.1, b_std=0.3))


@pytest.mark.parametrize(
    "a, b",
    [
        (wl.LeakyReLU(0.0), wl.ReLU()),
        (wl.ABReLU(0.0, 1.0), wl.ReLU()),
        (wl.ABReLU(-1.0, 1.0), wl.Abs()),
        (wl.LeakyReLU(1.0), wl.Identity()),
    ],
    ids=["leaky0=relu", "abrelu01=relu", "abrelu-11=abs", "leaky1=identity"],
)
def test_activation_identities(a, b):
    x = _x()
    ka, kb = _mlp(a).kernel(x), _mlp(b).kernel(x)
    torch.testing.assert_close(ka.nngp, kb.nngp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ka.ntk, kb.ntk, rtol=1e-12, atol=1e-12)


def test_scaled_identity_moves_into_the_readout():
    # phi(x) = 0.5 x before Dense(W_std=w) is the identity before Dense(W_std=0.5 w)
    x = _x()
    first = wl.Dense(W_std=1.3, b_std=0.2)
    a = wl.Serial(first, wl.ABReLU(0.5, 0.5), wl.Dense(1, W_std=1.1, b_std=0.3)).kernel(x)
    b = wl.Serial(first, wl.Identity(), wl.Dense(1, W_std=0.55, b_std=0.3)).kernel(x)
    torch.testing.assert_close(a.nngp, b.nngp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.ntk, b.ntk, rtol=1e-12, atol=1e-12)


def test_relu_is_half_abs_plus_half_identity_in_function_space():
    # phi(x) = (|x| + x) / 2: for a centred Gaussian pair, E[|u| v] = 0, so
    # T_relu = (T_abs + T_id) / 4 and Tdot_relu = (Tdot_abs + Tdot_id) / 4 (cross terms vanish)
    x = _x()
    k = {
        name: wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), act).kernel(x)
        for name, act in (("relu", wl.ReLU()), ("abs", wl.Abs()), ("id", wl.Identity()))
    }
    torch.testing.assert_close(k["relu"].nngp, (k["abs"].nngp + k["id"].nngp) / 4)
    torch.testing.assert_close(k["relu"].ntk, (k["abs"].ntk + k["id"].ntk) / 4)


def test_dropout_zero_is_identity():
    x = _x()
    base = _mlp(wl.ReLU()).kernel(x)
    net = wl.Serial(
        wl.Dense(W_std=1.3, b_std=0.2),
        wl.ReLU(),
        wl.Dropout(0.0),
        wl.Dense(1, W_std=1.1, b_std=0.3),
    )
    k = net.kernel(x)
    torch.testing.assert_close(k.nngp, base.nngp, rtol=1e-14, atol=0)
    torch.testing.assert_close(k.ntk, base.ntk, rtol=1e-14, atol=0)


def test_dropout_scales_only_same_example_pairs():
    x = _x()
    p = 0.25
    k0 = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), wl.ReLU()).kernel(x)
    k = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), wl.ReLU(), wl.Dropout(p)).kernel(x)
    eye = torch.eye(len(x), dtype=torch.bool)
    torch.testing.assert_close(k.nngp[~eye], k0.nngp[~eye])
    torch.testing.assert_close(k.nngp[eye], k0.nngp[eye] / (1 - p))
    torch.testing.assert_close(k.ntk[eye], k0.ntk[eye] / (1 - p))
    # the same inputs passed as x2 are different examples (independent masks): no factor
    k_pair = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), wl.ReLU(), wl.Dropout(p)).kernel(x, x)
    torch.testing.assert_close(k_pair.nngp, k0.nngp)


def test_residual_equals_fanout_parallel_faninsum():
    x = _x()
    block = (wl.ReLU(), wl.Dense(W_std=1.2, b_std=0.1))
    a = wl.Serial(wl.Dense(W_std=1.4), wl.Residual(*block), wl.ReLU(), wl.Dense(1))
    b = wl.Serial(
        wl.Dense(W_std=1.4),
        wl.FanOut(2),
        wl.Parallel(wl.Serial(*block), wl.Identity()),
        wl.FanInSum(),
        wl.ReLU(),
        wl.Dense(1),
    )
    ka, kb = a.kernel(x), b.kernel(x)
    torch.testing.assert_close(ka.nngp, kb.nngp, rtol=1e-14, atol=0)
    torch.testing.assert_close(ka.ntk, kb.ntk, rtol=1e-14, atol=0)


def test_faninconcat_of_equal_branches_is_one_branch():
    x = _x()
    branch = (wl.Dense(W_std=1.3, b_std=0.2), wl.ReLU())
    one = wl.Serial(*branch, wl.Dense(1)).kernel(x)
    cat = wl.Serial(
        wl.FanOut(3),
        wl.Parallel(wl.Serial(*branch), wl.Serial(*branch), wl.Serial(*branch)),
        wl.FanInConcat(),
        wl.Dense(1),
    ).kernel(x)
    torch.testing.assert_close(cat.nngp, one.nngp)
    torch.testing.assert_close(cat.ntk, one.ntk)


def test_layernorm_gives_unit_variance():
    x = _x() * torch.linspace(0.3, 3.0, 6, dtype=torch.float64)[:, None]
    k = wl.Serial(wl.Dense(W_std=1.5, b_std=0.5), wl.LayerNorm(eps=0.0)).kernel(x, get="nngp")
    torch.testing.assert_close(k.diagonal(), torch.ones(6, dtype=torch.float64))


def test_layernorm_self_pairs_are_exact():
    # diagonal=True and the diagonal of the full kernel are both self-pairs (correlation exactly
    # 1): they agree to rounding for every other layer (the contract's check_diagonal, 1e-10);
    # seed 1's inputs exposed a LayerNorm rounding discrepancy (2e-9 relative) before its fix
    net = next(c for c in STRUCTURE_CASES if c.id == "LayerNorm")
    KernelContract(net.make, seed=1).check_diagonal()


def _inputs_with_variances(vmax: float, n: int = 8, d: int = 5) -> torch.Tensor:
    """Inputs whose Dense(W_std=1) pre-activation variances spread over [0.1, vmax], with a
    pair at correlation exactly 1 (different norms) and one at -1."""
    x = _x(n, d)
    v = torch.linspace(0.1, vmax, n, dtype=torch.float64)
    x = x * (v / x.pow(2).mean(1)).sqrt()[:, None]
    x[-3] = x[0] * (vmax / 0.1) ** 0.5  # x[0]'s direction at the largest variance
    x[-1] = -x[-2] * (0.25 / x[-2].pow(2).mean()).sqrt()  # opposite to x[-2], variance 0.25
    return x


# Elementwise's documented accuracy at its default degree for erf (largest error relative to
# sqrt(T(x, x) T(x', x')), T and Tdot), by the largest pre-activation variance
ELEMENTWISE_ERF_ACCURACY = [(1.0, 3e-13, 9e-12), (2.0, 3e-8, 1e-6), (5.0, 2e-4, 4e-3)]


@pytest.mark.parametrize("vmax, tol_t, tol_tdot", ELEMENTWISE_ERF_ACCURACY)
def test_elementwise_quadrature_vs_closed_form(vmax, tol_t, tol_tdot):
    """Elementwise(torch.erf) by Gauss-Hermite quadrature against the closed-form Erf, through a
    network (the readout passes T to the NNGP and T, Tdot to the NTK), within twice the
    documented accuracy (the table's maxima are over a grid; points between may exceed them a
    little: 3.3e-8 against 3e-8 was seen)."""
    x = _inputs_with_variances(vmax)
    closed = wl.Serial(wl.Dense(), wl.Erf(), wl.Dense(1)).kernel(x)
    numeric = wl.Serial(wl.Dense(), wl.Elementwise(torch.erf), wl.Dense(1)).kernel(x)
    for name, tol in (("nngp", tol_t), ("ntk", max(tol_t, tol_tdot))):
        a, b = getattr(closed, name), getattr(numeric, name)
        scale = torch.sqrt(a.diagonal()[:, None] * a.diagonal()[None, :])
        err = float(((b - a).abs() / scale).max())
        assert err <= 2 * tol, f"{name}: relative error {err:.2g} > 2 * {tol:g}"


# ---------------------------------------------------------------------------------------------
# build


def _two_hidden(out=3):
    return wl.Serial(
        wl.Dense(W_std=1.5, b_std=0.1), wl.ReLU(), wl.Dense(W_std=1.5), wl.Erf(), wl.Dense(out)
    )


def _dense_modules(model):
    return [m for m in model.modules() if isinstance(m, DenseModule)]


def test_build_widths_per_layer():
    model = _two_hidden().build(7, [16, 32], seed=0)
    shapes = [tuple(m.weight.shape) for m in _dense_modules(model)]
    assert shapes == [(16, 7), (32, 16), (3, 32)]
    assert model(torch.randn(4, 7)).shape == (4, 3)


def test_build_single_width():
    model = _two_hidden().build(7, 10, seed=0)
    assert [tuple(m.weight.shape) for m in _dense_modules(model)] == [(10, 7), (10, 10), (3, 10)]


def test_build_dtype():
    model = _two_hidden().build(7, 8, seed=0, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(_x(3, 7)).dtype == torch.float64


def test_build_seed_reproducible():
    net = _two_hidden()
    a, b, c = (net.build(7, 12, seed=s) for s in (5, 5, 6))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(
        torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )
    x = torch.randn(4, 7)
    assert torch.equal(a(x), b(x))


def test_build_parametrization_override():
    net = _two_hidden()
    ntk_model = net.build(7, 64, seed=3, dtype=torch.float64)
    std_model = net.build(7, 64, parametrization="standard", seed=3, dtype=torch.float64)
    assert all(m.parametrization == "ntk" for m in _dense_modules(ntk_model))
    assert all(m.parametrization == "standard" for m in _dense_modules(std_model))
    # same random draw, same function at initialisation: only the gradients' scales differ
    x = _x(5, 7)
    torch.testing.assert_close(std_model(x), ntk_model(x), rtol=1e-12, atol=1e-12)
    # the standard weights carry W_std / sqrt(n_in) in their values
    first_ntk, first_std = _dense_modules(ntk_model)[0], _dense_modules(std_model)[0]
    torch.testing.assert_close(first_std.weight, first_ntk.weight * 1.5 / 7**0.5)
    # ... so the empirical NTKs differ (standard: the readout term grows with the width)
    assert not torch.allclose(empirical_ntk(std_model, x), empirical_ntk(ntk_model, x), rtol=0.1)


def test_build_standard_description_matches_standard_override():
    std_net = wl.Serial(
        wl.Dense(W_std=1.5, b_std=0.1, parametrization="standard"), wl.ReLU(), wl.Dense(2)
    )
    a = std_net.build(7, 32, seed=1)
    b = wl.Serial(wl.Dense(W_std=1.5, b_std=0.1), wl.ReLU(), wl.Dense(2)).build(
        7, 32, parametrization="standard", seed=1
    )
    assert _dense_modules(a)[0].parametrization == "standard"
    assert _dense_modules(a)[1].parametrization == "ntk"
    assert all(m.parametrization == "standard" for m in _dense_modules(b))


@pytest.mark.parametrize(
    "width, match",
    [([16], "fewer hidden widths"), ([16, 16, 16], "more widths"), ([], "fewer hidden widths")],
)
def test_build_wrong_number_of_widths(width, match):
    with pytest.raises(ValueError, match=match):
        _two_hidden().build(7, width, seed=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width must be a positive"),
        ({"width": [8, 0]}, "every hidden width must be positive"),
        ({"width": 8, "parametrization": "mup"}, "parametrization"),
        ({"width": 8, "in_features": 0}, "in_features"),
    ],
)
def test_build_bad_arguments(kwargs, match):
    kwargs = {"in_features": 7, **kwargs}
    with pytest.raises(ValueError, match=match):
        _two_hidden().build(**kwargs)


def test_build_fixed_width_network_ignores_width_list_length_zero():
    net = wl.Serial(wl.Dense(4), wl.ReLU(), wl.Dense(2))  # no hidden (infinite) layer
    model = net.build(3, [], seed=0)
    assert [tuple(m.weight.shape) for m in _dense_modules(model)] == [(4, 3), (2, 4)]
    with pytest.raises(ValueError, match="more widths"):
        net.build(3, [5], seed=0)


# ---------------------------------------------------------------------------------------------
# Combinator errors: kernel and build both refuse, with a message that says what to do


X = _x(3, 4)


@pytest.mark.parametrize("side", ["kernel", "build"])
def test_faninsum_without_fanout(side):
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.FanInSum(), wl.Dense(1))
    with pytest.raises(TypeError, match=r"FanInSum merges branches: put FanOut"):
        net.kernel(X) if side == "kernel" else net.build(4, 8, seed=0)


@pytest.mark.parametrize("merge", [wl.FanInConcat, wl.FanInProd])
def test_other_merges_without_fanout(merge):
    net = wl.Serial(wl.Dense(), merge(), wl.Dense(1))
    with pytest.raises(TypeError, match=rf"{merge.__name__} merges branches"):
        net.kernel(X)


@pytest.mark.parametrize("side", ["kernel", "build"])
@pytest.mark.parametrize("fan", [3, 1])
def test_parallel_wrong_branch_count(side, fan):
    net = wl.Serial(wl.FanOut(fan), wl.Parallel(wl.Dense(), wl.Dense()), wl.FanInSum(), wl.Dense(1))
    if fan == 1:  # FanOut(1) yields a one-branch tuple
        match = r"Parallel with 2 layers got 1 branch\(es\); put FanOut\(2\) before it"
    else:
        match = r"Parallel with 2 layers got 3 branch\(es\); put FanOut\(2\) before it"
    with pytest.raises(TypeError, match=match):
        net.kernel(X) if side == "kernel" else net.build(4, 8, seed=0)


@pytest.mark.parametrize("side", ["kernel", "build"])
def test_parallel_without_fanout(side):
    net = wl.Serial(wl.Dense(), wl.Parallel(wl.Dense(), wl.Dense()), wl.FanInSum(), wl.Dense(1))
    with pytest.raises(TypeError, match=r"got 1 branch\(es\); put FanOut\(2\)"):
        net.kernel(X) if side == "kernel" else net.build(4, 8, seed=0)


@pytest.mark.parametrize("side", ["kernel", "build"])
def test_network_ending_in_unmerged_branches(side):
    net = wl.Serial(wl.Dense(), wl.FanOut(2), wl.Parallel(wl.Dense(1), wl.Dense(1)))
    with pytest.raises(ValueError, match="unmerged branches.*FanIn"):
        net.kernel(X) if side == "kernel" else net.build(4, 8, seed=0)


def test_layer_on_branches_needs_merge():
    net = wl.Serial(wl.FanOut(2), wl.Dense(1))
    with pytest.raises(TypeError, match="Dense got several branches; merge them first"):
        net.kernel(X)
    with pytest.raises(TypeError, match="ReLU got several branches"):
        wl.Serial(wl.Dense(), wl.FanOut(2), wl.ReLU()).kernel(X)


def test_faninsum_width_mismatch():
    net = wl.Serial(wl.FanOut(2), wl.Parallel(wl.Dense(3), wl.Dense(5)), wl.FanInSum())
    with pytest.raises(ValueError, match="FanInSum branches have different widths"):
        net.kernel(X)
    with pytest.raises(ValueError, match="FanInSum branches have different widths"):
        net.build(4, 8, seed=0)


def test_activation_needs_gaussian_input():
    with pytest.raises(ValueError, match="put a Dense layer before it"):
        wl.Serial(wl.Dense(), wl.ReLU(), wl.Erf(), wl.Dense(1)).kernel(X)
    with pytest.raises(ValueError, match="put a Dense layer before it"):
        wl.Serial(wl.ReLU(), wl.Dense(1)).kernel(X)


def test_layer_class_instead_of_instance():
    with pytest.raises(TypeError, match="forget the parentheses"):
        wl.Serial(wl.Dense(), wl.ReLU, wl.Dense(1))


def test_no_parameters_no_ntk():
    with pytest.raises(ValueError, match="no trainable layer"):
        wl.Serial(wl.Identity()).kernel(X)
