"""Wide finite networks trained by gradient descent track the infinite-width MSE prediction."""

import pytest
import torch

import widelimits as wl
from widelimits.predict import gradient_descent_mse, max_learning_rate

N_TRAIN, STEPS = 16, 50


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + 8, 8, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 8**0.5
    y = torch.sin(x[:N_TRAIN].sum(1, keepdim=True))
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(), wl.ReLU(), wl.Dense(1))
    k = net.kernel(x, get="ntk")
    k_dd, k_td = k[:N_TRAIN, :N_TRAIN], k[N_TRAIN:, :N_TRAIN]
    lr = 0.5 * max_learning_rate(k_dd, y.numel())
    return dict(x=x, y=y, net=net, k_dd=k_dd, k_td=k_td, lr=lr)


def _gap(s, width, seed):
    """max over the trajectory and train+test points of |f_net - f_infinite-width|."""
    x, y, lr = s["x"], s["y"], s["lr"]
    model = s["net"].build(8, width, seed=seed, dtype=torch.float64)
    traj = []
    for _ in range(STEPS):  # full-batch plain GD, theta <- theta - lr * grad
        model.zero_grad()
        out = model(x)  # train + test outputs in one pass; the loss uses the train rows only
        traj.append(out.detach())
        loss = ((out[:N_TRAIN] - y) ** 2).sum() / (2 * y.numel())
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    with torch.no_grad():
        traj.append(model(x))
    f0 = traj[0]
    predict = gradient_descent_mse(s["k_dd"], y, learning_rate=lr)
    ts = torch.arange(STEPS + 1.0)
    tr, te = predict(ts, f0[:N_TRAIN], f0[N_TRAIN:], s["k_td"], discrete=True)
    assert float(((tr[-1] - y) ** 2).mean()) < 1e-2 * float((y**2).mean())  # it does train
    return float((torch.stack(traj) - torch.cat([tr, te], 1)).abs().max())


@pytest.mark.slow
def test_finite_network_tracks_infinite_width_gd(setup):
    narrow = [_gap(setup, 256, seed) for seed in range(6)]
    wide = [_gap(setup, 4096, seed) for seed in range(3)]
    g_narrow, g_wide = sum(narrow) / len(narrow), sum(wide) / len(wide)
    # Starting from the network's own f0 removes the init fluctuation, so the gap comes from
    # the empirical NTK: its deviation from the infinite-width NTK at init and its drift during
    # training are both O(width^-1/2) (the drift of a linearized net is O(1/width) in the
    # parameters but the kernel's is O(width^-1/2)). Theory: gap(4096)/gap(256) ~
    # (256/4096)^(1/2) = 0.25. Measured 0.23 (mean gaps 0.229 and 0.053). The bounds leave a 2x
    # margin each way for seed noise; a width-independent gap (ratio ~1) or a slower
    # width^-1/4 (0.5) fails, as would a much faster decay that no longer looks like
    # width^-1/2 (< 0.1, e.g. 1/width = 0.0625).
    ratio = g_wide / g_narrow
    print(f"gaps: width 256 {narrow}, width 4096 {wide}, ratio {ratio:.3f}")
    assert 0.1 < ratio < 0.5, (narrow, wide, ratio)
    assert g_wide < 0.1
