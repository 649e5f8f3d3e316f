"""Linearization, Taylor models, and the Monte Carlo kernel machinery."""

import numpy as np
import pytest
import torch
from torch import nn

import widelimits as wl
from widelimits import finite


def _deep_linear(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 4, bias=False), nn.Linear(4, 5, bias=False), nn.Linear(5, 2, bias=False)
    ).double()


def _perturb(module: nn.Module, scale: float, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_taylor_model_of_a_cubic_is_exact_at_degree_three():
    """A 3-layer linear network is a cubic polynomial in its parameters: the degree-3 Taylor
    model equals it everywhere, the degree-2 one does not."""
    model = _deep_linear()
    x = torch.randn(6, 3, dtype=torch.float64)
    cubic, quadratic = finite.taylor_expand(model, 3), finite.taylor_expand(model, 2)
    for expansion in (cubic, quadratic):
        _perturb(expansion, 0.7)
    moved = _deep_linear()
    _perturb(moved, 0.7)  # the same parameters theta_0 + Delta as in the expansions
    torch.testing.assert_close(cubic(x), moved(x))
    assert (quadratic(x) - moved(x)).abs().max() > 1e-3


def test_linearization_error_is_second_order():
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    lin = finite.linearize(model)
    torch.testing.assert_close(lin(x), model(x))
    gaps = []
    for eps in (1e-2, 5e-3):
        lin_moved = finite.linearize(model)
        _perturb(lin_moved, eps)
        theta = {n.replace(":", "."): p.detach() for n, p in lin_moved.theta.items()}
        exact = torch.func.functional_call(model, theta, (x,))
        gaps.append(float((lin_moved(x).detach() - exact).abs().max()))
    assert 3.5 < gaps[0] / gaps[1] < 4.5, gaps


def test_linearized_module_trains_like_a_module():
    model = wl.Serial(wl.Dense(b_std=0.1), wl.ReLU(), wl.Dense(1)).build(4, 32, seed=0)
    lin = finite.linearize(model)
    assert sorted(lin.state_dict()) == sorted(
        [f"theta.{n.replace('.', ':')}" for n, _ in model.named_parameters()]
        + [f"base.{n}" for n, _ in model.named_parameters()]
    )
    assert sum(p.numel() for p in lin.parameters()) == sum(p.numel() for p in model.parameters())
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = ((lin(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    before = dict(model.named_parameters())
    for n, b in lin.base.named_buffers():
        torch.testing.assert_close(b, before[n].detach())  # theta_0 untouched
    only_readout = finite.linearize(model, params=lambda n, p: n.startswith("2."))
    assert sum(p.numel() for p in only_readout.parameters()) == 32  # W of Dense(1), no bias


def _train(module: nn.Module, x, y, steps: int, lr: float) -> None:
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((module(x) - y) ** 2).sum()).backward()
        opt.step()


@pytest.mark.slow
def test_linearized_training_tracks_wide_networks_better():
    """Trained side by side (full-batch SGD on MSE), the network and its linearization stay
    closer as the width grows.  The gap relative to the distance travelled falls like 1/width:
    the tangent kernel moves at rate O(1/width) during training (Dyer & Gur-Ari 2019), tighter
    than the O(width^(-1/2)) bound of Lee et al. 2019.  Least-squares slope over four widths."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    x_test = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    net = wl.Serial(wl.Dense(W_std=1.4, b_std=0.1), wl.Erf(), wl.Dense(W_std=1.4, b_std=0.1),
                    wl.Erf(), wl.Dense(1))  # fmt: skip
    widths, gaps = [64, 128, 256, 512], []
    for width in widths:
        rel = []
        for seed in range(6):
            model = net.build(4, width, seed=seed, dtype=torch.float64)
            lin = finite.linearize(model)
            with torch.no_grad():
                f0 = model(x_test)
            _train(model, x, y, steps=100, lr=0.05)
            _train(lin, x, y, steps=100, lr=0.05)
            with torch.no_grad():
                f_net, f_lin = model(x_test), lin(x_test)
            rel.append(float((f_net - f_lin).norm() / (f_lin - f0).norm()))
        gaps.append(np.mean(rel))
    slope = np.polyfit(np.log(widths), np.log(gaps), 1)[0]
    assert gaps[-1] < gaps[0], gaps
    assert -1.3 < slope < -0.7, (gaps, slope)


def test_taylor_errors():
    with pytest.raises(ValueError, match="positive integer"):
        finite.taylor_expand(_deep_linear(), 0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        finite.linearize(nn.ReLU())


def _torch_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()


def test_monte_carlo_running_estimates_are_plain_means():
    """Any factory seed -> module works; the k-th running estimate is the mean and standard
    error of the first k samples computed directly."""
    x1 = torch.randn(4, 3, dtype=torch.float64)
    x2 = torch.randn(2, 3, dtype=torch.float64)
    estimates = list(finite.monte_carlo_kernels(_torch_mlp, x1, x2, n_samples=5, seed=10))
    assert [e.n_samples for e in estimates] == [2, 3, 4, 5]
    ntks = torch.stack([finite.empirical_ntk(_torch_mlp(10 + s), x1, x2) for s in range(5)])
    with torch.no_grad():
        outs = [(_torch_mlp(10 + s)(x1), _torch_mlp(10 + s)(x2)) for s in range(5)]
    nngps = torch.stack([a @ b.T / 2 for a, b in outs])
    for e in estimates:
        k = e.n_samples
        torch.testing.assert_close(e.ntk, ntks[:k].mean(0))
        torch.testing.assert_close(e.nngp, nngps[:k].mean(0))
        torch.testing.assert_close(e.ntk_stderr, ntks[:k].std(0) / k**0.5)
    last = finite.monte_carlo_kernel(_torch_mlp, x1, x2, n_samples=5, seed=10)
    torch.testing.assert_close(last.ntk, estimates[-1].ntk)


def test_monte_carlo_arguments():
    x = torch.randn(3, 3)
    with pytest.raises(ValueError, match="at least 2"):
        finite.monte_carlo_kernel(wl.Dense(1), x, width=4, n_samples=1)
    with pytest.raises(ValueError, match="pass width"):
        finite.monte_carlo_kernel(wl.Dense(1), x, n_samples=2)
    with pytest.raises(ValueError, match="factory sets its own"):
        finite.monte_carlo_kernel(_torch_mlp, x, n_samples=2, width=8)
    with pytest.raises(ValueError, match="get must name"):
        finite.monte_carlo_kernel(wl.Dense(1), x, width=4, n_samples=2, get=("ntgp",))


class _ScalesInput(nn.Module):
    def __init__(self, seed: int, in_place: bool):
        super().__init__()
        self.net, self.in_place = _torch_mlp(seed), in_place

    def forward(self, x):
        x = x.mul_(2.0) if self.in_place else 2.0 * x
        return self.net(x)


def test_monte_carlo_leaves_inputs_untouched():
    """A factory model that scales its input in place neither changes the caller's tensors
    nor sees them changed between calls: same estimates as the out-of-place model."""
    x1 = torch.randn(4, 3, dtype=torch.float64)
    x2 = torch.randn(2, 3, dtype=torch.float64)
    kept = (x1.clone(), x2.clone())
    got = finite.monte_carlo_kernel(lambda s: _ScalesInput(s, True), x1, x2, n_samples=3)
    assert torch.equal(x1, kept[0]) and torch.equal(x2, kept[1])
    ref = finite.monte_carlo_kernel(lambda s: _ScalesInput(s, False), x1, x2, n_samples=3)
    torch.testing.assert_close(got.ntk, ref.ntk)
    torch.testing.assert_close(got.nngp, ref.nngp)
