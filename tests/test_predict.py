"""Tests of widelimits.predict: MSE dynamics, infinite ensembles, GP inference, solvers."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import widelimits as wl
import widelimits.predict  # noqa: F401
from widelimits import predict

REF = Path(__file__).resolve().parent / "data" / "neural_tangents_0.6.5.npz"
D64 = torch.float64


def fc_relu():
    return wl.Serial(wl.Dense(512), wl.ReLU(), wl.Dense(512), wl.ReLU(), wl.Dense(1))


@pytest.fixture(scope="module")
def ref():
    return np.load(REF)


@pytest.fixture(scope="module")
def problem():
    """Training/test inputs, targets and joint kernels of a small bias ReLU network."""
    g = torch.Generator().manual_seed(0)
    n, m = 6, 4
    x = torch.randn(n + m, 5, generator=g, dtype=D64)
    net = wl.Serial(
        wl.Dense(64, b_std=0.1), wl.ReLU(), wl.Dense(64, b_std=0.1), wl.ReLU(), wl.Dense(1)
    )
    k = net.kernel(x, get=("nngp", "ntk"))
    y = torch.randn(n, 2, generator=g, dtype=D64)
    return dict(net=net, x=x, n=n, m=m, y=y, K=k.nngp, T=k.ntk)


# ------------------------------------------------------------------------------------------
# neural-tangents 0.6.5 reference


@pytest.mark.parametrize("t", [None, 1.0])
@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_reference_ensemble_mean(ref, t, get):
    fn = predict.gradient_descent_mse_ensemble(fc_relu(), ref["x1_fc"], ref["y_train"])
    mean = fn(t, ref["x2_fc"], get=get)
    want = ref[f"predict_t{t}_{get}"]
    assert mean.dtype == D64 and mean.shape == want.shape
    np.testing.assert_allclose(mean.numpy(), want, rtol=1e-8, atol=1e-8 * np.abs(want).max())


def test_reference_ensemble_cov(ref):
    fn = predict.gradient_descent_mse_ensemble(fc_relu(), ref["x1_fc"], ref["y_train"])
    out = fn(None, ref["x2_fc"], get=("nngp", "ntk"), compute_cov=True)
    want = ref["predict_tNone_ntk_cov"]
    cov = out["ntk"].covariance.numpy()
    np.testing.assert_allclose(cov, want, rtol=1e-8, atol=1e-8 * np.abs(want).max())
    np.testing.assert_allclose(out["ntk"].mean.numpy(), ref["predict_tNone_ntk"], rtol=1e-8)


def test_reference_gp_inference(ref):
    net = fc_relu()
    x1, x2 = ref["x1_fc"], ref["x2_fc"]
    fn = predict.gp_inference(net.kernel(x1), ref["y_train"])
    out = fn(("nngp", "ntk"), net.kernel(x2, x1), net.kernel(x2))
    want = ref["predict_tNone_ntk_cov"]
    np.testing.assert_allclose(out["ntk"].covariance.numpy(), want, rtol=1e-8, atol=1e-10)
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(out[g].mean.numpy(), ref[f"predict_tNone_{g}"], rtol=1e-8)


# ------------------------------------------------------------------------------------------
# gradient_descent_mse


def _rk4(theta_all, n, y, f0, eta, t_end, steps):
    """Integrate df/dt = -eta' Theta(., X) (f(X) - y) on train + test points with RK4."""
    h = t_end / steps

    def rhs(f):
        return -eta * theta_all[:, :n] @ (f[:n] - y)

    f = f0.clone()
    for _ in range(steps):
        k1 = rhs(f)
        k2 = rhs(f + h / 2 * k1)
        k3 = rhs(f + h / 2 * k2)
        k4 = rhs(f + h * k3)
        f = f + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return f


def test_flow_matches_ode(problem):
    n, y, theta = problem["n"], problem["y"], problem["T"]
    g = torch.Generator().manual_seed(1)
    f0 = torch.randn(theta.shape[0], y.shape[1], generator=g, dtype=D64)
    lr = 2.0
    fn = predict.gradient_descent_mse(theta[:n, :n], y, learning_rate=lr)
    ts = torch.tensor([0.0, 0.5, 3.0], dtype=D64)
    tr, te = fn(ts, f0[:n], f0[n:], k_test_train=theta[n:, :n])
    assert tr.shape == (3, n, 2) and te.shape == (3, problem["m"], 2)
    for i, t in enumerate(ts.tolist()):
        want = _rk4(theta, n, y, f0, lr / y.numel(), t, max(int(200 * t), 1))
        torch.testing.assert_close(tr[i], want[:n], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(te[i], want[n:], rtol=1e-9, atol=1e-9)
    # a scalar t drops the time axis
    tr1, te1 = fn(3.0, f0[:n], f0[n:], k_test_train=theta[n:, :n])
    torch.testing.assert_close(tr1, tr[2])
    torch.testing.assert_close(te1, te[2])


def test_discrete_matches_gd_loop(problem):
    n, y, theta = problem["n"], problem["y"], problem["T"]
    eta = 0.9 * 2 / float(torch.linalg.eigvalsh(theta[:n, :n]).max())
    lr = eta * y.numel()
    assert lr < predict.max_learning_rate(theta[:n, :n], y.numel())
    fn = predict.gradient_descent_mse(theta[:n, :n], y, learning_rate=lr)
    f0 = torch.full((theta.shape[0], y.shape[1]), 0.3, dtype=D64)
    steps = [0, 1, 7, 40]
    tr, te = fn(steps, 0.3, 0.3, k_test_train=theta[n:, :n], discrete=True)
    f = f0.clone()
    for s in range(max(steps) + 1):
        if s in steps:
            i = steps.index(s)
            torch.testing.assert_close(tr[i], f[:n], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(te[i], f[n:], rtol=1e-10, atol=1e-10)
        f = f - eta * theta[:, :n] @ (f[:n] - y)
    with pytest.raises(ValueError, match="integers"):
        fn(1.5, discrete=True)


def test_max_learning_rate_is_the_stability_edge(problem):
    n, y, theta = problem["n"], problem["y"], problem["T"]
    lr_max = predict.max_learning_rate(theta[:n, :n], y.numel())
    lam = torch.linalg.eigvalsh(theta[:n, :n]).max()
    assert lr_max == pytest.approx(2 * y.numel() / float(lam), rel=1e-12)
    for factor, grows in ((0.98, False), (1.02, True)):
        fn = predict.gradient_descent_mse(theta[:n, :n], y, learning_rate=factor * lr_max)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            err = (fn(2000, 1.0, discrete=True) - y).abs().max()
        assert (err > 1.0) == grows
        unstable = [w for w in caught if issubclass(w.category, predict.UnstableDynamicsWarning)]
        assert len(unstable) == int(grows)
    fn = predict.gradient_descent_mse(theta[:n, :n], y, learning_rate=1.02 * lr_max)
    with pytest.raises(ValueError, match="learning_rate"):
        fn(None, discrete=True)


def test_infinite_time_is_kernel_regression(problem):
    n, y, theta = problem["n"], problem["y"], problem["T"]
    fn = predict.gradient_descent_mse(theta[:n, :n], y)
    tr, te = fn(None, k_test_train=theta[n:, :n])
    torch.testing.assert_close(tr, y, rtol=1e-10, atol=1e-10)
    want = theta[n:, :n] @ torch.linalg.solve(theta[:n, :n], y)
    torch.testing.assert_close(te, want, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(fn(math.inf, k_test_train=theta[n:, :n])[1], te)
    # discrete GD converges to the same point
    torch.testing.assert_close(fn(None, k_test_train=theta[n:, :n], discrete=True)[1], te)
    # with regularization: (Theta + r * mean(diag) * I)^{-1}
    r = 0.1
    fn = predict.gradient_descent_mse(theta[:n, :n], y, diag_reg=r)
    reg = theta[:n, :n] + r * theta[:n, :n].diagonal().mean() * torch.eye(n, dtype=D64)
    want = theta[n:, :n] @ torch.linalg.solve(reg, y)
    torch.testing.assert_close(fn(None, k_test_train=theta[n:, :n])[1], want)


def test_numpy_and_float32_inputs(problem):
    n, y, theta = problem["n"], problem["y"], problem["T"]
    out = predict.gradient_descent_mse(theta[:n, :n].numpy(), y[:, 0].numpy())(1.0)
    assert out.shape == (n,) and out.dtype == D64
    out32 = predict.gradient_descent_mse(theta[:n, :n].float(), y.float())(1.0)
    assert out32.dtype == torch.float32


# ------------------------------------------------------------------------------------------
# gradient_descent_mse_ensemble


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_ensemble_matches_sampling(problem, get):
    net, x, n, m, y = problem["net"], problem["x"], problem["n"], problem["m"], problem["y"]
    y1 = y[:, :1]
    k_all, dyn = problem["K"], problem[{"nngp": "K", "ntk": "T"}[get]]
    lr, t = 3.0, 0.7
    fn = predict.gradient_descent_mse_ensemble(net, x[:n], y1, learning_rate=lr)
    pred = fn(t, x[n:], get=get, compute_cov=True)
    # sample f0 ~ GP(0, K) jointly on train + test and propagate with the linear dynamics
    s = 4000
    g = torch.Generator().manual_seed(2)
    chol = torch.linalg.cholesky(k_all + 1e-12 * torch.eye(n + m, dtype=D64))
    f0 = chol @ torch.randn(n + m, s, generator=g, dtype=D64)
    eta = lr / y1.numel()
    a_t = torch.linalg.solve(
        dyn[:n, :n], torch.eye(n, dtype=D64) - torch.linalg.matrix_exp(-eta * t * dyn[:n, :n])
    )
    ft = f0[n:] + dyn[n:, :n] @ a_t @ (y1 - f0[:n])  # (m, s)
    mean, cov = ft.mean(1), torch.cov(ft)
    sd = cov.diagonal().sqrt()
    assert ((pred.mean[:, 0] - mean).abs() < 5 * sd / math.sqrt(s)).all()
    se_cov = ((pred.covariance.diagonal()[:, None] * pred.covariance.diagonal()[None]
               + pred.covariance**2) / s).sqrt()  # fmt: skip
    assert ((pred.covariance - cov).abs() < 5 * se_cov + 1e-12).all()
    # the exact formula from the same propagation, without sampling
    b = dyn[n:, :n] @ a_t
    exact = k_all[n:, n:] + b @ k_all[:n, :n] @ b.T - b @ k_all[:n, n:] - k_all[n:, :n] @ b.T
    torch.testing.assert_close(pred.covariance, exact, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pred.mean, b @ y1, rtol=1e-9, atol=1e-12)


def test_ensemble_times_and_limits(problem):
    net, x, n, y = problem["net"], problem["x"], problem["n"], problem["y"]
    fn = predict.gradient_descent_mse_ensemble(net, x[:n], y, diag_reg=1e-3)
    ts = [0.0, 1.0, math.inf]
    out = fn(ts, x[n:], compute_cov=True)
    for g in ("nngp", "ntk"):
        mean, cov = out[g]
        assert mean.shape == (3, problem["m"], 2) and cov.shape == (3, problem["m"], problem["m"])
        torch.testing.assert_close(mean[0], torch.zeros_like(mean[0]))
        torch.testing.assert_close(cov[0], problem["K"][n:, n:])
        single = fn(1.0, x[n:], get=g, compute_cov=True)
        torch.testing.assert_close(single.mean, mean[1])
        torch.testing.assert_close(single.covariance, cov[1])
    # t = inf equals gp_inference with the same regularization
    gp = predict.gp_inference(net.kernel(x[:n]), y, diag_reg=1e-3)
    want = gp(("nngp", "ntk"), net.kernel(x[n:], x[:n]), net.kernel(x[n:]))
    for g in ("nngp", "ntk"):
        torch.testing.assert_close(out[g].mean[2], want[g].mean, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out[g].covariance[2], want[g].covariance, rtol=1e-8, atol=1e-12)
    # x_test=None predicts on the training set; at t=inf without regularization it fits y
    fn0 = predict.gradient_descent_mse_ensemble(net, x[:n], y)
    torch.testing.assert_close(fn0(None, get="ntk"), y, rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------------------------------
# gp_inference


def test_gp_inference_formulas(problem):
    n, y, K, T = problem["n"], problem["y"], problem["K"], problem["T"]
    r = 0.05
    eye = torch.eye(n, dtype=D64)
    fn = predict.gp_inference(K[:n, :n], y, diag_reg=r)
    post = fn("nngp", K[n:, :n], K[n:, n:])
    kr = K[:n, :n] + r * K[:n, :n].diagonal().mean() * eye
    torch.testing.assert_close(post.mean, K[n:, :n] @ torch.linalg.solve(kr, y))
    torch.testing.assert_close(
        post.covariance, K[n:, n:] - K[n:, :n] @ torch.linalg.solve(kr, K[:n, n:])
    )
    assert torch.allclose(fn("nngp", K[n:, :n]), post.mean)
    fn = predict.gp_inference(T[:n, :n], y)
    post = fn("ntkgp", T[n:, :n], T[n:, n:])
    torch.testing.assert_close(
        post.covariance, T[n:, n:] - T[n:, :n] @ torch.linalg.solve(T[:n, :n], T[:n, n:])
    )
    with pytest.raises(ValueError, match="get must be"):
        fn("bogus", T[n:, :n])


# ------------------------------------------------------------------------------------------
# solvers


def test_cg_matches_cholesky(problem):
    K = problem["K"]
    b = torch.randn(K.shape[0], 3, generator=torch.Generator().manual_seed(3), dtype=D64)
    x_ch = predict.cholesky_solve(K, b, diag_reg=1e-2)
    x_cg, info = predict.cg_solve(K, b, diag_reg=1e-2, tol=1e-12)
    assert info.converged and info.residual <= 1e-12 and 0 < info.iterations <= 10 * K.shape[0]
    torch.testing.assert_close(x_cg, x_ch, rtol=1e-9, atol=1e-10)
    x1, _ = predict.cg_solve(K, b[:, 0], diag_reg=1e-2, tol=1e-12)
    assert x1.shape == (K.shape[0],)
    torch.testing.assert_close(x1, x_ch[:, 0], rtol=1e-9, atol=1e-10)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        _, info = predict.cg_solve(K, b, tol=1e-14, max_iter=1)
    assert not info.converged and info.iterations == 1


def test_solver_errors():
    good = torch.eye(3, dtype=D64)
    bad = good.clone()
    bad[0, 1] = math.nan
    for solve in (predict.cholesky_solve, predict.cg_solve):
        with pytest.raises(ValueError, match="NaN or inf"):
            solve(bad, torch.ones(3))
        with pytest.raises(ValueError, match="square"):
            solve(torch.ones(3, 2, dtype=D64), torch.ones(3))
        with pytest.raises(ValueError, match="symmetric"):
            solve(torch.triu(torch.ones(3, 3, dtype=D64)), torch.ones(3))
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=D64)
    singular = v.T @ v  # rank one
    with pytest.raises(ValueError, match="increase diag_reg"):
        predict.cholesky_solve(singular - 1e-9 * torch.eye(3, dtype=D64), torch.ones(3))
    x = predict.cholesky_solve(singular, torch.ones(3), diag_reg=1e-3)
    assert torch.isfinite(x).all()
    # numerically singular: a right-hand side in its range solves with a warning, one outside
    # it (no solution) raises
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        x = predict.cholesky_solve(singular + 1e-15 * torch.eye(3, dtype=D64), v[0])
    torch.testing.assert_close(singular @ x, v[0], rtol=1e-6, atol=1e-6)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="singular.*diag_reg"):
        predict.cholesky_solve(singular + 1e-15 * torch.eye(3, dtype=D64), torch.ones(3))
    with pytest.raises(ValueError, match="diag_reg"):
        predict.cholesky_solve(good, torch.ones(3), diag_reg=-1.0)
    # errors surface through the predictors too
    with pytest.raises(ValueError, match="NaN or inf"):
        predict.gradient_descent_mse(bad, torch.ones(3))
    with pytest.raises(ValueError, match="increase diag_reg"):
        predict.gp_inference(singular - 1e-9 * torch.eye(3, dtype=D64), torch.ones(3))(
            "nngp", torch.ones(1, 3, dtype=D64)
        )
    with pytest.raises(ValueError, match="diag_reg"):
        predict.gradient_descent_mse(torch.zeros(3, 3, dtype=D64), torch.ones(3))(None)


def test_ensemble_discrete_and_ill_conditioned_warning(problem):
    net, x, n, y, T = problem["net"], problem["x"], problem["n"], problem["y"], problem["T"]
    lr = 0.5 * predict.max_learning_rate(T[:n, :n], y.numel())
    ens = predict.gradient_descent_mse_ensemble(net, x[:n], y, learning_rate=lr)
    single = predict.gradient_descent_mse(T[:n, :n], y, learning_rate=lr)
    mean = ens([0, 5, 50], x[n:], get="ntk", discrete=True)
    _, want = single([0, 5, 50], k_test_train=T[n:, :n], discrete=True)
    torch.testing.assert_close(mean, want, rtol=1e-10, atol=1e-12)
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=D64)
    near_singular = v.T @ v + 1e-13 * torch.eye(3, dtype=D64)
    fn = predict.gradient_descent_mse(near_singular, v[0])  # targets in the kernel's range
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        fn(None, k_test_train=near_singular)
    fn = predict.gradient_descent_mse(near_singular, torch.ones(3, dtype=D64))  # no solution
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="singular.*diag_reg"):
        fn(None, k_test_train=near_singular)
