"""Gradients of the closed-form kernels: ``torch.autograd.gradcheck`` (float64, finite differences
as the independent reference) w.r.t. the inputs and the hyperparameters W_std and b_std, and
finite gradients at correlation exactly +1 (x2 == x1) and -1 (x2 == -x1).
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import widelimits as wl

# one line per activation: (class name, factory); missing classes are skipped
ACTIVATIONS = [
    ("ReLU", lambda: wl.ReLU()),
    ("LeakyReLU", lambda: wl.LeakyReLU(0.2)),
    ("Abs", lambda: wl.Abs()),
    ("Erf", lambda: wl.Erf(a=1.2, b=0.8, c=0.1)),
    ("GELU", lambda: wl.GELU()),
    ("Sin", lambda: wl.Sin()),
    ("Cos", lambda: wl.Cos()),
    ("Sign", lambda: wl.Sign()),
    ("Exp", lambda: wl.Exp()),
    ("Gaussian", lambda: wl.Gaussian()),
    ("RBF", lambda: wl.RBF()),
    ("Monomial", lambda: wl.Monomial(3)),
    ("RectifiedMonomial", lambda: wl.RectifiedMonomial(2)),
    ("Polynomial", lambda: wl.Polynomial([0.1, 0.6, 0.3])),
    ("Hermite", lambda: wl.Hermite(2)),
    ("Elementwise", lambda: wl.Elementwise(torch.tanh)),
]


def _act_params():
    return [pytest.param(make, id=name) for name, make in ACTIVATIONS]


def _deep(make_act, w=1.0):
    return wl.Serial(
        wl.Dense(W_std=1.3 * w, b_std=0.2 * w),
        make_act(),
        wl.Dense(W_std=1.2 * w, b_std=0.1 * w),
        make_act(),
        wl.Dense(1, W_std=1.1, b_std=0.3),
    )


def _inputs(seed=0, n1=3, n2=2, d=4):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n1, d, generator=g, dtype=torch.float64)
    x2 = torch.randn(n2, d, generator=g, dtype=torch.float64)
    return x1.requires_grad_(True), x2.requires_grad_(True)


GETS = ["nngp", "ntk"]


@pytest.mark.parametrize("get", GETS)
@pytest.mark.parametrize("make_act", _act_params())
def test_gradcheck_inputs(make_act, get):
    net = _deep(make_act, w=0.8)
    x1, x2 = _inputs()
    assert gradcheck(lambda a, b: net.kernel(a, b, get=get), (x1, x2))


@pytest.mark.parametrize("get", GETS)
@pytest.mark.parametrize("make_act", _act_params())
def test_gradcheck_symmetric_and_diagonal(make_act, get):
    # x2=None: the diagonal pairs each input with itself (correlation exactly 1 along the
    # perturbation too), so the derivative of k(x, x) is well defined and checked here
    net = _deep(make_act, w=0.8)
    x1, _ = _inputs(1)
    assert gradcheck(lambda a: net.kernel(a, get=get), (x1,))
    assert gradcheck(lambda a: net.kernel(a, get=get, diagonal=True), (x1,))


STRUCTURES = {
    "residual": lambda: wl.Serial(
        wl.Dense(W_std=1.2, b_std=0.1),
        wl.Residual(wl.ReLU(), wl.Dense(W_std=0.9, b_std=0.1)),
        wl.Erf(),
        wl.Dense(1),
    ),
    "concat-prod": lambda: wl.Serial(
        wl.FanOut(2),
        wl.Parallel(
            wl.Serial(wl.Dense(W_std=1.2), wl.ReLU()),
            wl.Serial(wl.Dense(W_std=0.8, b_std=0.3), wl.Erf()),
        ),
        wl.FanInConcat(),
        wl.Dense(b_std=0.1),
        wl.FanOut(2),
        wl.Parallel(wl.Dense(W_std=1.1), wl.Dense(W_std=0.9, b_std=0.2)),
        wl.FanInProd(),
        wl.Dense(1),
    ),
    "layernorm-dropout": lambda: wl.Serial(
        wl.Dense(W_std=1.4, b_std=0.3),
        wl.LayerNorm(),
        wl.LeakyReLU(0.1),
        wl.Dropout(0.2),
        wl.Dense(1),
    ),
    "standard": lambda: wl.Serial(
        wl.Dense(W_std=1.3, b_std=0.2, parametrization="standard"),
        wl.ReLU(),
        wl.Dense(7, W_std=1.1, parametrization="ntk"),
        wl.Erf(),
        wl.Dense(1, W_std=0.9, b_std=0.1, parametrization="standard"),
    ),
}


@pytest.mark.parametrize("get", GETS)
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_gradcheck_structures(name, get):
    net = STRUCTURES[name]()
    x1, x2 = _inputs(2)
    assert gradcheck(lambda a, b: net.kernel(a, b, get=get), (x1, x2))


@pytest.mark.parametrize(
    "name, get",
    [(n, g) for n in STRUCTURES for g in GETS],
)
def test_gradcheck_structures_symmetric(name, get):
    net = STRUCTURES[name]()
    x1, _ = _inputs(2)
    assert gradcheck(lambda a: net.kernel(a, get=get), (x1,))


def _hyper_net(w1, b1, w2, b2, act, parametrization="ntk"):
    return wl.Serial(
        wl.Dense(W_std=w1, b_std=b1, parametrization=parametrization),
        act,
        wl.Dense(W_std=w2, b_std=b2),
        act,
        wl.Dense(1, W_std=w2, b_std=b1),
    )


def _hypers():
    return tuple(
        torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (1.5, 0.2, 1.1, 0.4)
    )


@pytest.mark.parametrize("get", GETS)
@pytest.mark.parametrize("act", [wl.ReLU(), wl.Erf(), wl.Abs()], ids=["relu", "erf", "abs"])
def test_gradcheck_hyperparameters(act, get):
    x1, x2 = (x.detach() for x in _inputs(3))
    hypers = _hypers()
    assert gradcheck(lambda *h: _hyper_net(*h, act).kernel(x1, x2, get=get), hypers)
    assert gradcheck(lambda *h: _hyper_net(*h, act).kernel(x1, get=get), hypers)


def test_gradcheck_hyperparameters_and_inputs_together():
    x1, x2 = _inputs(4)
    hypers = _hypers()
    assert gradcheck(
        lambda a, b, *h: _hyper_net(*h, wl.ReLU()).kernel(a, b, get="ntk"), (x1, x2, *hypers)
    )


def test_gradcheck_hyperparameters_standard_first_layer():
    x1, x2 = (x.detach() for x in _inputs(5))
    hypers = _hypers()
    assert gradcheck(
        lambda *h: _hyper_net(*h, wl.Erf(), "standard").kernel(x1, x2, get="ntk"), hypers
    )


def test_hyperparameter_gradient_matches_closed_form():
    # One Dense layer: K = W^2 x.x'/d + b^2, Theta = K  =>  dK/dW = 2 W x.x'/d, dK/db = 2 b
    x1, x2 = (x.detach() for x in _inputs(6))
    w, b = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (1.7, 0.3))
    k = wl.Dense(1, W_std=w, b_std=b).kernel(x1, x2, get="nngp")
    k.sum().backward()
    dot = x1 @ x2.T / x1.shape[1]
    torch.testing.assert_close(w.grad, 2 * 1.7 * dot.sum())
    torch.testing.assert_close(b.grad, torch.tensor(2 * 0.3 * dot.numel(), dtype=torch.float64))


def test_no_graph_without_requires_grad():
    x1, x2 = (x.detach() for x in _inputs())
    k = _deep(wl.ReLU).kernel(x1, x2)
    assert not k.nngp.requires_grad and not k.ntk.requires_grad


# ---------------------------------------------------------------------------------------------
# Correlation exactly +-1: arccos and sqrt(1 - rho^2) have infinite derivatives there; the
# kernels' gradients must stay finite (``widelimits._numerics``)


def _grads(net, x1, x2, get):
    x1 = x1.detach().clone().requires_grad_(True)
    x2 = None if x2 is None else x2.detach().clone().requires_grad_(True)
    k = net.kernel(x1, x2, get=get)
    assert bool(torch.isfinite(k).all()), f"{get} is not finite"
    inputs = (x1,) if x2 is None else (x1, x2)
    return torch.autograd.grad(k.sum(), inputs)


@pytest.mark.parametrize("get", GETS)
@pytest.mark.parametrize("relation", ["x2=x1", "x2=-x1", "x2=None", "scaled"])
@pytest.mark.parametrize("make_act", _act_params())
def test_finite_gradient_at_correlation_one(make_act, relation, get):
    net = _deep(make_act, w=0.8)
    x1, _ = _inputs(7)
    # "scaled": correlation exactly 1 between inputs of different norms (k11 != k22)
    x2 = {"x2=x1": x1, "x2=-x1": -x1, "x2=None": None, "scaled": 1.5 * x1}[relation]
    for g in _grads(net, x1, x2, get):
        assert bool(torch.isfinite(g).all()), f"non-finite gradient for {relation}: {g}"


@pytest.mark.parametrize("get", GETS)
def test_finite_hyperparameter_gradient_at_correlation_one(get):
    x1, _ = _inputs(8)
    x1 = x1.detach()
    for x2 in (x1, -x1, None):
        hypers = _hypers()
        k = _hyper_net(*hypers, wl.ReLU()).kernel(x1, x2, get=get)
        grads = torch.autograd.grad(k.sum(), hypers)
        assert all(bool(torch.isfinite(g).all()) for g in grads)


# T(rho) of Sign is (2 / pi) arcsin(rho) (and RectifiedMonomial(0) the step's kernel): its
# derivative is infinite at rho = 1, so the gradient at x2 == x1 is a convention, not a limit
NOT_C1_AT_CORRELATION_ONE = {"Sign"}


@pytest.mark.parametrize(
    "make_act",
    [p for p in _act_params() if p.id not in NOT_C1_AT_CORRELATION_ONE],
)
def test_gradient_at_correlation_one_is_the_limit(make_act):
    # d/dx1 of sum_j k(x1_i, x2_j) at x2 == x1 is the limit of the gradient at x2 = x1 + eps * v
    # when T is continuously differentiable up to rho = 1 (true of ReLU: dT/drho = Tdot sqrt(k11
    # k22), finite): compare the NNGP gradients at eps = 0 and eps = 1e-6
    net = _deep(make_act, w=0.8)
    x1, _ = _inputs(9)
    v = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (g0,) = _grads(net, x1, x1, "nngp")[:1]
    (g1,) = _grads(net, x1, x1 + 1e-6 * v, "nngp")[:1]
    torch.testing.assert_close(g0, g1, rtol=1e-3, atol=1e-4)
