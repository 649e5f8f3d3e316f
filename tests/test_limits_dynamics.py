"""The map of limits' width exponents checked on exact small cases.

Each prediction of `classify` (an exponent of rho = width / ref_width) is compared with the
slope between two widths of a quantity computed exactly by `widelimits.limits.dynamics`
(closed-form tangent kernel, whose formula is itself checked against autograd), averaged over
seeds. Widths 256 and 4096 (rho 2 and 32): a slope error of 0.1 is a factor 1.3 over the range.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from widelimits.limits import REGIONS, Scaling, classify
from widelimits.limits.dynamics import MLP, fit_exponent, run_dynamics
from widelimits.limits.models import init_exponents

REF = 128


def _data(n: int = 32, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    teacher = torch.randn(d, generator=gen, dtype=torch.float64)
    return x, (x @ teacher > 0).to(torch.float64)


def test_closed_form_kernel_equals_autograd():
    x, _ = _data(5, 6)
    for scaling in (Scaling.plane(-0.5, 0.5), Scaling.mup(2), Scaling.ntk(3)):
        net = MLP(scaling, 6, 40, seed=1, lr=0.3)
        ws = [w.detach().requires_grad_(True) for w in net.weights]
        grads = [torch.autograd.grad(net.forward(x[i : i + 1], ws)[-1].sum(), ws)
                 for i in range(len(x))]  # fmt: skip
        empirical = torch.tensor([
            [sum(rate * (a * b).sum() for rate, a, b in zip(net.rates, gi, gj, strict=True))
             for gj in grads] for gi in grads
        ], dtype=torch.float64)  # fmt: skip
        theta = net.kernel(x)
        torch.testing.assert_close(theta, empirical, rtol=1e-8, atol=1e-10 * float(theta.max()))


def _one_step(scaling, width, x, y, seeds, loss="bce", lr=0.02):
    """Mean over seeds of (hidden-weight change, logit change, last-feature change) in one step."""
    out = []
    for seed in range(seeds):
        net = MLP(scaling, x.shape[1], width, seed=seed, lr=lr)
        f0, h0 = net.logits(x), net.features(x)
        w0 = net.weights[0]
        net.step(x, y, loss)
        out.append((
            float((net.weights[0] - w0).norm() / w0.norm()),
            float((net.logits(x) - f0).norm()),
            float((net.features(x) - h0).norm() / h0.norm()),
        ))  # fmt: skip
    return [sum(v[i] for v in out) / seeds for i in range(3)]


@pytest.mark.parametrize(
    "region", [REGIONS[i] for i in (0, 1, 3, 5, 9, 11)], ids=lambda r: str(r.index)
)
def test_plane_one_step_exponents(region):
    """Relative weight change per step rho^s and logit change per step rho^kappa."""
    x, y = _data()
    c = classify(region.point)
    scaling = Scaling.plane(*region.point, ref_width=REF)
    small, big = (_one_step(scaling, w, x, y, seeds=3) for w in (256, 4096))
    slope = [math.log(b / a) / math.log(16) for a, b in zip(small, big, strict=True)]
    assert abs(slope[0] - float(c.weight_change_exponent)) < 0.1, slope
    assert abs(slope[1] - float(c.kernel_exponent)) < 0.1, slope


@pytest.mark.parametrize("name, depth", [("ntk", 2), ("standard", 2), ("mup", 2), ("mup", 3)])
def test_deep_abc_exponents(name, depth):
    """Logits and kernel at init and the feature update of one step, against classify's abc
    exponents (a second derivation in `init_exponents` for the first two)."""
    scaling = getattr(Scaling, name)(depth, REF)
    c = classify(scaling)
    assert (float(c.logits_exponent), float(c.kernel_exponent)) == init_exponents(scaling)
    x, y = _data(32, 8, seed=1)
    widths, seeds = (128, 2048), 4
    rows = []
    for w in widths:
        nets = [MLP(scaling, 8, w, seed=s) for s in range(seeds)]
        logits = sum(float(n.logits(x).pow(2).mean().sqrt()) for n in nets) / seeds
        kernel = sum(float(n.kernel(x).diagonal().mean()) for n in nets) / seeds
        rows.append((logits, kernel, _one_step(scaling, w, x, y, seeds)[2]))
    fitted = [fit_exponent(widths, [r[i] for r in rows], REF) for i in range(3)]
    predicted = [c.logits_exponent, c.kernel_exponent, c.feature_update_exponent]
    for f, p in zip(fitted, predicted, strict=True):
        assert abs(f - float(p)) < 0.1, (fitted, predicted)


def test_fixed_loss_weight_exponent():
    """Gradient descent to a fixed training loss moves the hidden weights by
    rho^(-1/2 - min(lambda, 0)): NTK -1/2, MF 0 and sym-default -1/2 (its rate small enough that
    no step overshoots at these widths). q_tilde only rescales time, so sym-default follows
    NTK's gradient-flow path: the same weight change at the same loss, up to the step size."""
    x, y = _data(32, 8, seed=2)
    moved = {}
    for point, lr in (((-0.5, 0.0), 0.1), ((-1.0, 1.0), 0.1), ((-0.5, 0.5), 0.01)):
        scaling = Scaling.plane(*point, ref_width=REF)
        for w in (256, 4096):
            runs = [run_dynamics(scaling, w, x, y, "bce", 4000, [], x[:4], lr=lr, seed=s,
                                 target_loss=0.2) for s in range(4)]  # fmt: skip
            assert all(r["reached"] for r in runs)
            moved[point, w] = sum(r["weight_change"][-1][0] for r in runs) / len(runs)
        fitted = fit_exponent((256, 4096), [moved[point, 256], moved[point, 4096]], REF)
        assert abs(fitted - float(classify(point).fixed_loss_weight_exponent)) < 0.1
    for w in (256, 4096):
        assert moved[(-0.5, 0.5), w] == pytest.approx(moved[(-0.5, 0.0), w], rel=0.05)


def test_mse_diverges_where_the_kernel_diverges():
    """At sym-default (kappa = 1/2) one step of MSE moves the logits by rho^(1/2): past the
    width where eta Theta > 2 gradient descent on MSE blows up; NTK (kappa = 0) does not."""
    x, y = _data(32, 8, seed=3)
    assert classify((-0.5, 0.5)).mse_verdict == "diverging"
    assert classify((-0.5, 0.0)).mse_verdict == "stable"
    for point, blows_up in (((-0.5, 0.5), True), ((-0.5, 0.0), False)):
        run = run_dynamics(Scaling.plane(*point, ref_width=REF), 2**14, x, y, "mse", 6,
                           kernel_x=x[:2], lr=0.05)  # fmt: skip
        assert (run["loss"][-1] > 10 * run["loss"][0]) == blows_up, run["loss"]


def _props(point):
    c = classify(point)
    return {"logits": c.logits, "kernel": c.kernel, "evolves": c.kernel_evolves,
            "init": c.init_logits_matter}  # fmt: skip


def test_neighbours_name_exactly_the_changed_properties():
    names = {"logits": "logits", "kernel": "kernel", "evolves": "kernel (evolving|frozen)",
             "init": "initial logits"}  # fmt: skip
    for region in REGIONS:
        c = classify(region.point)
        here = _props(region.point)
        for part in c.neighbours.split("; "):
            m = re.match(r"(left|right|up|down): region (\d+) \((.*)\)$", part)
            if m is None:
                assert re.match(r"(up|down): (diverging|stagnating)", part), part
                continue
            there = _props(REGIONS[int(m.group(2)) - 1].point)
            changed = {k for k in here if here[k] != there[k]}
            assert changed, part
            for k, pattern in names.items():
                mentioned = re.search(rf"(^|, ){pattern} ", m.group(3)) is not None
                if k == "kernel":
                    mentioned = re.search(r"(^|, )kernel (vanish|bounded|diverge)", m.group(3))
                assert bool(mentioned) == (k in changed), (region.index, part)


def test_notes_where_time_scales_disagree():
    sym, mf, ntk = classify((-0.5, 0.5)), classify((-1, 1)), classify((-0.5, 0))
    assert sym.kernel_evolves and not sym.kernel_evolves_at_fixed_loss and sym.step_overshoots
    assert "fixed training loss" in sym.note and "MSE diverges" in sym.note
    assert mf.note is None and mf.kernel_evolves_at_fixed_loss
    assert ntk.note is None and not ntk.kernel_evolves_at_fixed_loss
    assert classify((1, 1)).note is None and classify((1, 1)).neighbours is None
