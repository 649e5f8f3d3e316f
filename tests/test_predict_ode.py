"""Infinite-width training under any loss: `widelimits.predict.gradient_descent`."""

import pytest
import torch

import widelimits as wl
from widelimits.predict import gradient_descent, gradient_descent_mse


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64)
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(1))
    k = net.kernel(x, get="ntk")
    n, c = 7, 3
    labels = torch.randint(0, c, (n,), generator=g)
    return dict(
        T=k[:n, :n],
        Tt=k[n:, :n],
        y=torch.randn(n, c, generator=g, dtype=torch.float64),
        onehot=torch.nn.functional.one_hot(labels, c).to(torch.float64),
        bits=(torch.rand(n, c, generator=g) > 0.5).to(torch.float64),
        f0=0.3 * torch.randn(n, c, generator=g, dtype=torch.float64),
        ft0=0.3 * torch.randn(3, c, generator=g, dtype=torch.float64),
    )


def _rk4(grad, T, Tt, f0, ft0, lr, t_end, steps):
    """Independent reference: classic RK4 on (f_train, f_test) jointly, in torch."""
    h = t_end / steps

    def rhs(f):
        g = -lr * grad(f)
        return T @ g, Tt @ g

    f, ft = f0.clone(), ft0.clone()
    for _ in range(steps):
        a, at = rhs(f)
        b, bt = rhs(f + h / 2 * a)
        c, ct = rhs(f + h / 2 * b)
        d, dt = rhs(f + h * c)
        f = f + h / 6 * (a + 2 * b + 2 * c + d)
        ft = ft + h / 6 * (at + 2 * bt + 2 * ct + dt)
    return f, ft


def test_mse_ode_equals_closed_form(problem):
    p, lr, ts = problem, 2.0, torch.tensor([0.0, 1.5, 10.0, 60.0])
    ode = gradient_descent("mse", p["T"], p["y"], learning_rate=lr)
    closed = gradient_descent_mse(p["T"], p["y"], learning_rate=lr)
    got = ode(ts, p["f0"], p["ft0"], p["Tt"])
    want = closed(ts, p["f0"], p["ft0"], p["Tt"])
    assert got[0].shape == (4, 7, 3) and got[1].shape == (4, 3, 3)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # scalar t: no time axis; unsorted / repeated times are fine.
    torch.testing.assert_close(ode(10.0, p["f0"]), want[0][2], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ode([10.0, 0.0, 10.0], p["f0"])[0], want[0][2])


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_classification_losses_match_rk4(problem, loss):
    p, lr, t_end = problem, 3.0, 20.0
    y = p["onehot"] if loss == "cross_entropy" else p["bits"]
    n = y.numel()
    if loss == "cross_entropy":
        grad = lambda f: (torch.softmax(f, -1) - y) / n  # noqa: E731
    else:
        grad = lambda f: (torch.sigmoid(f) - y) / n  # noqa: E731
    want = _rk4(grad, p["T"], p["Tt"], p["f0"], p["ft0"], lr, t_end, 400)
    got = gradient_descent(loss, p["T"], y, learning_rate=lr)(t_end, p["f0"], p["ft0"], p["Tt"])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_callable_loss_equals_builtin(problem):
    p, ts = problem, [0.5, 5.0, 30.0]

    def mse(fx, y):
        return 0.5 * torch.mean((fx - y) ** 2)

    got = gradient_descent(mse, p["T"], p["y"])(ts, p["f0"], None, p["Tt"])
    want = gradient_descent("mse", p["T"], p["y"])(ts, p["f0"], None, p["Tt"])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    def ce(fx, y):  # a user's cross-entropy gives the built-in's dynamics too
        return -torch.mean(torch.log_softmax(fx, -1) * y)

    y = p["onehot"]
    got = gradient_descent(ce, p["T"], y)(ts, p["f0"])
    want = gradient_descent("cross_entropy", p["T"], y)(ts, p["f0"])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_momentum_to_zero_recovers_gradient_flow(problem):
    p, ts = problem, [2.0, 20.0]
    flow = gradient_descent("cross_entropy", p["T"], p["onehot"])(ts, p["f0"])
    errs = []
    for m in (1e-1, 1e-2, 1e-3):
        fn = gradient_descent("cross_entropy", p["T"], p["onehot"], momentum=m)
        errs.append(float((fn(ts, p["f0"]) - flow).abs().max()))
    # m f'' + (1 - m) f' = F: the deviation from flow is O(m).
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3 * float(flow.abs().max())
    torch.testing.assert_close(
        gradient_descent("mse", p["T"], p["y"], momentum=0.0)(ts, p["f0"]),
        gradient_descent_mse(p["T"], p["y"])(torch.tensor(ts), p["f0"]),
        rtol=1e-6,
        atol=1e-7,
    )


def test_momentum_matches_second_order_rk4(problem):
    # m f'' + (1 - m) f' = -lr Theta dL/df, f'(0) = 0, integrated as a first-order system.
    p, lr, m, t_end, steps = problem, 2.0, 0.9, 30.0, 600
    y, n = p["onehot"], p["onehot"].numel()
    h = t_end / steps

    def rhs(s):
        f, v = s
        return v, (-lr * p["T"] @ ((torch.softmax(f, -1) - y) / n) - (1 - m) * v) / m

    s = (p["f0"].clone(), torch.zeros_like(p["f0"]))
    for _ in range(steps):
        a = rhs(s)
        b = rhs(tuple(x + h / 2 * d for x, d in zip(s, a, strict=True)))
        c = rhs(tuple(x + h / 2 * d for x, d in zip(s, b, strict=True)))
        d_ = rhs(tuple(x + h * d for x, d in zip(s, c, strict=True)))
        s = tuple(
            x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            for x, k1, k2, k3, k4 in zip(s, a, b, c, d_, strict=True)
        )
    got = gradient_descent("cross_entropy", p["T"], y, learning_rate=lr, momentum=m)(t_end, p["f0"])
    torch.testing.assert_close(got, s[0], rtol=1e-5, atol=1e-6)


def test_cross_entropy_training_loss_decreases(problem):
    p = problem
    ts = torch.linspace(0, 200, 41)
    f = gradient_descent("cross_entropy", p["T"], p["onehot"], learning_rate=2.0)(ts, p["f0"])
    losses = -(torch.log_softmax(f, -1) * p["onehot"]).sum((-1, -2))
    assert bool((losses[1:] < losses[:-1]).all()), losses
    assert float(losses[-1]) < 0.5 * float(losses[0])


def test_bad_arguments_raise_clear_errors(problem):
    p = problem
    with pytest.raises(ValueError, match="loss must be one of"):
        gradient_descent("hinge", p["T"], p["y"])
    with pytest.raises(ValueError, match="loss must be one of"):
        gradient_descent(3, p["T"], p["y"])
    with pytest.raises(ValueError, match="classes"):
        gradient_descent("cross_entropy", p["T"], p["y"][:, 0])
    with pytest.raises(ValueError, match="momentum"):
        gradient_descent("mse", p["T"], p["y"], momentum=1.0)
    with pytest.raises(ValueError, match="y_train has 3 rows"):
        gradient_descent("mse", p["T"], p["y"][:3])
    fn = gradient_descent("mse", p["T"], p["y"])
    with pytest.raises(ValueError, match="finite"):
        fn(float("inf"))
    with pytest.raises(ValueError, match="k_test_train"):
        fn(1.0, 0.0, None, p["Tt"].T)
    with pytest.raises(ValueError, match="scalar tensor"):
        gradient_descent(lambda fx, y: (fx - y) ** 2, p["T"], p["y"])(1.0)
