"""Scalings in finite networks: build, per-layer learning rates, the abc symmetry, IC-MF, and the
width exponents of logits and tangent kernel at initialization."""

import numpy as np
import pytest
import torch
from torch import nn

import widelimits as wl
from widelimits import finite
from widelimits.limits import Scaling, apply_scaling

NET = wl.Serial(wl.Dense(), wl.LeakyReLU(0.1), wl.Dense(1))
DEEP = wl.Serial(wl.Dense(b_std=0.1), wl.ReLU(), wl.Dense(b_std=0.1), wl.Erf(),
                 wl.Dense(1, b_std=0.1))  # fmt: skip


def _data(n=12, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return x, torch.sign(x[:, :1] + 0.3 * x[:, 1:2])


def _train(model, scaling, x, y, steps=25, lr=0.05, kind="sgd"):
    opt = wl.optimizer(model, lr, kind=kind)
    outs = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.softplus(-y * model(x)).mean()  # binary cross-entropy on logits
        loss.backward()
        opt.step()
        outs.append(model(x).detach())
    return torch.stack(outs)


@pytest.mark.parametrize(
    "scaling",
    [Scaling.mean_field(), Scaling.ntk(), Scaling.plane(-0.75, 0.5), Scaling.mup(1)],
    ids=str,
)
def test_abc_symmetry_gives_identical_sgd_trajectories(scaling):
    x, y = _data()
    shifted = scaling.shifted([0.3, -0.7])
    a = NET.build(6, 1024, parametrization=scaling, seed=4, dtype=torch.float64)
    b = NET.build(6, 1024, parametrization=shifted, seed=4, dtype=torch.float64)
    assert not torch.allclose(a[2].weight, b[2].weight)  # really another bookkeeping
    torch.testing.assert_close(_train(a, scaling, x, y), _train(b, shifted, x, y), rtol=1e-9,
                               atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("scaling", [Scaling.mup(2), Scaling.ntk(2), Scaling.standard(2)], ids=str)
def test_abc_symmetry_with_biases_and_depth(scaling):
    x, y = _data()
    shifted = scaling.shifted([-0.5, 0.25, 1.0])
    a = DEEP.build(6, 256, parametrization=scaling, seed=2, dtype=torch.float64)
    b = DEEP.build(6, 256, parametrization=shifted, seed=2, dtype=torch.float64)
    torch.testing.assert_close(_train(a, scaling, x, y), _train(b, shifted, x, y), rtol=1e-9,
                               atol=1e-12)  # fmt: skip


def test_every_scaling_is_the_reference_network_at_the_reference_width():
    x, _ = _data()
    outs = [NET.build(6, 128, parametrization=s, seed=1, dtype=torch.float64)(x)
            for s in (Scaling.ntk(), Scaling.mean_field(), Scaling.standard(), Scaling.mup(1),
                      Scaling.plane(2.0, -3.0))]  # fmt: skip
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])


def test_plane_coordinates_of_named_scalings():
    assert Scaling.mean_field().plane_coordinates() == (-1.0, 1.0)
    assert Scaling.ntk().plane_coordinates() == (-0.5, 0.0)
    assert Scaling.plane(-0.5, 0.5).shifted([0.2, 0.9]).plane_coordinates() == pytest.approx(
        (-0.5, 0.5)
    )
    assert Scaling.standard().plane_coordinates() is None  # the 1/width rate is off the plane
    assert Scaling.mup(1).plane_coordinates() == (-1.0, 1.0)  # muP is MF for one hidden layer


def test_init_corrected_mean_field():
    """At init f_IC equals the NTK-scaled network exactly; its gradients are the MF network's."""
    x, y = _data()
    ic = wl.InitCorrected.mean_field(NET, 6, 2048, seed=7, dtype=torch.float64)
    ntk_net = NET.build(6, 2048, parametrization=Scaling.ntk(), seed=7, dtype=torch.float64)
    mf_net = NET.build(6, 2048, parametrization=Scaling.mean_field(), seed=7, dtype=torch.float64)
    torch.testing.assert_close(ic(x), ntk_net(x), rtol=0, atol=0)
    loss_ic = nn.functional.softplus(-y * ic(x)).mean()
    grads_ic = torch.autograd.grad(loss_ic, list(ic.model.parameters()))
    # The MF network at the IC-MF logits: d loss / d theta = loss'(f_IC) df_MF / d theta.
    f_mf = mf_net(x)
    weights = torch.sigmoid(-y * ic(x)).detach() * -y / len(x)
    grads_mf = torch.autograd.grad((weights * f_mf).sum(), list(mf_net.parameters()))
    for g1, g2 in zip(grads_ic, grads_mf, strict=True):
        torch.testing.assert_close(g1, g2)
    assert sum(p.requires_grad for p in ic.parameters()) == len(grads_ic)
    # After training, the correction is unchanged: f_IC - f_MF is the frozen GP draw offset.
    before = (ic(x) - ic.model(x)).detach()
    _train(ic, None, x, y, steps=5)
    torch.testing.assert_close((ic(x) - ic.model(x)).detach(), before)


def _exponents(scaling, widths, x, seeds=4):
    logits, kernels = [], []
    for width in widths:
        lg, kr = [], []
        for seed in range(seeds):
            model = NET.build(x.shape[1], width, parametrization=scaling, seed=seed,
                              dtype=torch.float64)  # fmt: skip
            with torch.no_grad():
                lg.append(float(model(x).abs().mean()))
            # the learning-rate-weighted tangent kernel that drives SGD in function space
            k = sum(m.lr_scale * finite.empirical_ntk(model, x, params=[m], diagonal=True)
                    for m in model if hasattr(m, "lr_scale"))  # fmt: skip
            kr.append(float(k.mean()))
        logits.append(np.mean(lg))
        kernels.append(np.mean(kr))
    fit = lambda v: np.polyfit(np.log(np.asarray(widths) / 128), np.log(v), 1)[0]  # noqa: E731
    return fit(logits), fit(kernels)


@pytest.mark.parametrize("point", [(-0.5, 0.0), (-1.0, 1.0), (-0.5, 0.5)], ids=str)
def test_measured_exponents_at_init_match_the_prediction(point):
    """logits ~ rho^(q_sigma + 1/2), tangent kernel ~ rho^(q_tilde + 2 q_sigma + 1), fitted over
    widths 128 ... 4096 within +-0.1."""
    x, _ = _data(n=16)
    q_sigma, q_tilde = point
    logit_exp, kernel_exp = _exponents(Scaling.plane(*point), [128, 512, 2048, 4096], x)
    assert abs(logit_exp - (q_sigma + 0.5)) < 0.1, logit_exp
    assert abs(kernel_exp - (q_tilde + 2 * q_sigma + 1)) < 0.1, kernel_exp


def test_optimizer_learning_rates():
    mf = NET.build(6, 512, parametrization=Scaling.mean_field(), seed=0)
    opt = wl.optimizer(mf, 0.1)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.4])  # rho = 4, c = -1
    plane = NET.build(6, 512, parametrization=Scaling.plane(-0.5, 0.5), seed=0)
    lrs = sorted(g["lr"] for g in wl.optimizer(plane, 0.1, kind="adam").param_groups)
    assert lrs == pytest.approx([0.05, 0.2])  # eta_a = rho^(q~ + 2 q_sigma), eta_w = rho^q~
    with pytest.raises(ValueError, match="kind"):
        wl.optimizer(mf, 0.1, kind="lbfgs")


def test_apply_scaling_to_a_plain_torch_mlp():
    """A torch MLP under a scaling: right initial scales, multipliers seen by autograd (the abc
    symmetry holds for it too), learning rates for the optimizer, and empirical NTKs agree."""
    x, y = _data()

    def mlp(scaling):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 1024), nn.LeakyReLU(0.1), nn.Linear(1024, 1)).double()
        return apply_scaling(model, scaling, seed=3)

    mf = Scaling.mean_field()
    a, b = mlp(mf), mlp(mf.shifted([0.0, -1.0]))
    # rho = 8: readout std 1 / sqrt(fan-in at the reference width, 128), times rho^-a = 1/8
    assert float(a[2].weight.detach().std()) == pytest.approx(128**-0.5 / 8, rel=0.05)
    torch.testing.assert_close(_train(a, mf, x, y, steps=10), _train(b, None, x, y, steps=10))
    lrs = sorted(g["lr"] for g in wl.optimizer(mlp(mf), 0.1, parametrization=mf).param_groups)
    assert lrs == pytest.approx([0.8])
    model = mlp(mf)
    torch.testing.assert_close(
        finite.empirical_ntk(model, x, implementation="structured"),
        finite.empirical_ntk(model, x, implementation="jacobian"),
    )


def test_scaling_errors():
    with pytest.raises(ValueError, match="3 entries but the scaling has 2"):
        Scaling((0, 0), (0, 0, 0), (0, 0))
    with pytest.raises(ValueError, match="finite"):
        Scaling.abc([0, float("nan")], [0, 0], 0)
    with pytest.raises(ValueError, match="mup"):
        Scaling.mean_field(2)
    with pytest.raises(ValueError, match="3 layers but the network has 2"):
        NET.build(6, 64, parametrization=Scaling.ntk(2))
    with pytest.raises(ValueError, match="Scaling"):
        NET.build(6, 64, parametrization="mf")
    with pytest.raises(ValueError, match="Linear layers"):
        apply_scaling(nn.Sequential(nn.Linear(3, 4)), Scaling.ntk())
