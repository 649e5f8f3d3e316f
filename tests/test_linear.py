"""Deep linear networks: finite widths against the rooted-path infinite-width limit."""

import numpy as np
import pytest
from scipy.linalg import block_diag

from widelimits.linear import (
    first_layer_law,
    gradient_descent,
    gradient_flow,
    infinite_width_limit,
    init_network,
    limit_network,
    limit_tangent_kernel,
    min_norm_convergence,
    min_norm_solution,
    path_basis,
    row_space_residual,
    tangent_kernel,
    weight_changes,
    width_errors,
)

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # Small memory-bound matrix products: BLAS threads only add synchronisation.
    if threadpool_limits is None:
        yield
    else:
        with threadpool_limits(limits=1, user_api="blas"):
            yield


def data(d=4, k=2, n=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, n)) / np.sqrt(d) * np.sqrt(n)
    Y = rng.standard_normal((k, n))
    return X, Y


def q0_closed_form(C, eta, t):
    """q = 0 with whitened inputs (X X^T / n = I): along each singular triple (s, a, b) of
    C = Y X^T / n the limit keeps u = U b, v = V a in the plane of their orthonormal initial
    values; w = |u + v|^2 solves w' = -(eta/2)(w^2 - 4 s w - 4), w(0) = 2, so with
    w_pm = 2 s pm 2 sqrt(s^2 + 1) and z = (w - w+)/(w - w-) = z0 exp(-2 eta sqrt(s^2 + 1) t),
    sigma = u.v = (w - 4/w)/4 and beta(t) = sum sigma(t) a b^T."""
    A, S, Bt = np.linalg.svd(C, full_matrices=False)
    sig = []
    for s in S:
        r = np.sqrt(s * s + 1)
        wp, wm = 2 * s + 2 * r, 2 * s - 2 * r
        z = (2 - wp) / (2 - wm) * np.exp(-2 * eta * r * t)
        w = (wp - z * wm) / (1 - z)
        sig.append((w - 4 / w) / 4)
    return A @ np.diag(sig) @ Bt


def test_q0_matches_closed_form():
    rng = np.random.default_rng(1)
    d, k, n = 3, 2, 6
    Q, _ = np.linalg.qr(rng.standard_normal((n, d)))
    X = np.sqrt(n) * Q.T  # X X^T / n = I
    Y = rng.standard_normal((k, n))
    times = np.array([0.0, 0.3, 1.0, 3.0])
    lim = infinite_width_limit(X, Y, 0, 0.7, times)
    assert lim.sizes == [d + k] and lim.R == 0
    C = Y @ X.T / n
    for t, beta in zip(times, lim.betas, strict=True):
        np.testing.assert_allclose(beta, q0_closed_form(C, 0.7, t), atol=1e-8)


def test_q1_path_basis_is_chain_form():
    d, k, R = 2, 3, 7
    basis = path_basis(d, k, 1, R)
    U0, (M0,), V0 = basis.initial_matrices()
    L = (R + 1) // 2
    B = np.eye(L) + np.eye(L, k=1)
    np.testing.assert_array_equal(M0, block_diag(*([B] * d + [B.T] * k)))
    np.testing.assert_array_equal(U0, block_diag(*([np.eye(L)[:, :1]] * d), np.zeros((k * L, 0))))
    np.testing.assert_array_equal(
        V0, np.vstack([np.zeros((d * L, k)), np.kron(np.eye(k), np.eye(L)[:, :1])])
    )


def test_path_counts_and_q0_width():
    assert path_basis(3, 2, 0, 10).sizes == [5]  # q = 0: width d + k, no steps
    assert sum(path_basis(1, 0, 1, 9).sizes) == 10  # q = 1: one chain of R + 1 paths
    # q = 2 from an input root: a choice at every visit of layer 1 -> 2^(R/2) growth
    assert path_basis(1, 0, 2, 8).sizes == [1 + 1 + 2 + 4 + 8, 1 + 2 + 4 + 8, 1 + 2 + 4 + 8]


@pytest.mark.parametrize("q", [0, 1, 2])
def test_finite_width_error_shrinks_like_inverse_sqrt_width(q):
    X, Y = data()
    res = width_errors(X, Y, q, 1.0, [0.5, 1.5], widths=[32, 64, 128, 256], seeds=range(6))
    assert -0.8 <= res.slope <= -0.3, (res.slope, res.mean)
    # error * sqrt(m) roughly constant
    assert res.scaled.max() / res.scaled.min() < 3


def test_limit_converges_to_min_norm_solution_in_row_space():
    X, Y = data(d=5, k=2, n=3, seed=3)  # well conditioned: X^T X / n >= 0.4
    times = np.linspace(0, 12, 13)
    lim = infinite_width_limit(X, Y, 1, 1.0, times)
    dist, rate = min_norm_convergence(lim.betas, times, X, Y, fit_from=4)
    star = min_norm_solution(X, Y)
    assert dist[-1] < 1e-3 * np.linalg.norm(star)
    assert rate > 0.3
    # exponential: log distance close to linear on the tail
    tail = times >= 4
    fit = np.polyval(np.polyfit(times[tail], np.log(dist[tail]), 1), times[tail])
    assert np.max(np.abs(fit - np.log(dist[tail]))) < 0.5
    assert max(row_space_residual(b, X) for b in lim.betas) < 1e-10


def test_root_reduction_is_exact():
    # the simulator keeps rank(X) + rank(Y) roots; the full path basis gives the same beta and
    # (up to integration error) never leaves the column span of X
    X, Y = data(d=4, k=2, n=2, seed=3)
    times = np.array([0.5, 2.0])
    lim = infinite_width_limit(X, Y, 2, 1.0, times, R=5)
    assert lim.Qx.shape == (4, 2)
    full = gradient_flow(limit_network(path_basis(4, 2, 2, 5)), X, Y, 1.0, times)
    np.testing.assert_allclose(full.betas, lim.betas, atol=1e-7)
    assert row_space_residual(full.betas[-1], X) < 1e-7


def test_R_stability():
    X, Y = data(seed=4)
    times = np.array([0.5, 1.0, 2.0])
    lim = infinite_width_limit(X, Y, 2, 1.0, times, tol=1e-5)
    assert lim.last_change <= 1e-5 and lim.history[-1][0] == lim.R
    more = infinite_width_limit(X, Y, 2, 1.0, times, R=lim.R + 2)
    scale = np.abs(lim.betas).max()
    assert np.abs(more.betas - lim.betas).max() < 1e-4 * scale
    with pytest.warns(RuntimeWarning, match="R_max"):
        capped = infinite_width_limit(X, Y, 2, 1.0, times, tol=1e-14, R_max=7)
    assert capped.R == 7


def test_first_layer_rows_follow_predicted_gaussian():
    X, Y = data(d=3, k=2, n=2, seed=5)
    times = np.array([0.0, 2.0])
    lim = infinite_width_limit(X, Y, 1, 1.0, times)
    cov = lim.input_gram(-1)
    assert np.linalg.norm(cov - np.eye(3)) > 0.3  # the law really moved away from N(0, I)
    traj = gradient_flow(init_network(3, 2, 1, 400, seed=0), X, Y, 1.0, times, rtol=1e-6)
    law = first_layer_law(traj.Us[-1], cov)
    assert law["cov_error"] < 0.2
    assert law["ks_pvalues"].min() > 1e-3
    # the wrong law (the initial N(0, I)) is rejected by the covariance test
    assert first_layer_law(traj.Us[-1], np.eye(3))["cov_error"] > 2 * law["cov_error"]


def test_initial_tangent_kernel():
    X, Y = data(d=4, k=2, n=3, seed=6)
    for q in (0, 2):
        K = tangent_kernel(init_network(4, 2, q, 1024, seed=q), X)
        K_inf = limit_tangent_kernel(X, 2, q)
        assert np.linalg.norm(K - K_inf) < 0.15 * np.linalg.norm(K_inf)


def test_tangent_kernel_matches_jacobian():
    torch = pytest.importorskip("torch")
    X, _ = data(d=3, k=2, n=4, seed=7)
    net = init_network(3, 2, 2, 6, seed=1, scaling="ntk")
    params = [torch.tensor(w) for w in [net.U, *net.Ms, net.V]]

    def f(*ws):
        h = ws[0]
        for M in ws[1:-1]:
            h = M @ h
        return (net.output_scale * ws[-1].T @ h @ torch.tensor(X)).reshape(-1)

    J = torch.cat(
        [j.reshape(j.shape[0], -1) for j in torch.autograd.functional.jacobian(f, tuple(params))], 1
    )
    K = (J @ J.T).numpy() * net.rate_scale / X.shape[1]
    np.testing.assert_allclose(tangent_kernel(net, X).reshape(K.shape), K, rtol=1e-10)


def test_ntk_scaling_is_lazy_main_scaling_is_not():
    # NTK scaling (beta = sqrt(m) V^T M U, rate eta/m per normalized parameter): every layer
    # moves by O(m^{-1/2}); main scaling: O(1) (the same at every width)
    X, Y = data(seed=8)
    widths = [128, 256, 512]
    lazy, rich = [], []
    for m in widths:
        for scaling, out in (("ntk", lazy), ("main", rich)):
            changes = []
            for seed in range(3):
                net = init_network(4, 2, 1, m, seed=seed, scaling=scaling)
                traj = gradient_flow(net, X, Y, 1.0, [1.0], rtol=1e-5, atol=1e-7, method="RK23")
                changes.append(weight_changes(net, traj.final))
            out.append(np.mean(changes, axis=0))
    lazy, rich = np.array(lazy), np.array(rich)
    for layer in range(3):
        assert -0.7 < np.polyfit(np.log(widths), np.log(lazy[:, layer]), 1)[0] < -0.3
        assert abs(np.polyfit(np.log(widths), np.log(rich[:, layer]), 1)[0]) < 0.1
    assert rich.min() > 0.3


def test_gradient_descent_approaches_gradient_flow():
    X, Y = data(seed=9)
    net = init_network(4, 2, 1, 32, seed=0)
    flow = gradient_flow(net, X, Y, 1.0, [1.0])
    errs = []
    for steps in (20, 40):
        gd = gradient_descent(net, X, Y, 1.0 / steps, steps, record_every=steps)
        errs.append(np.linalg.norm(gd.betas[-1] - flow.betas[-1]))
    assert errs[1] < 0.02 * np.linalg.norm(flow.betas[-1])
    assert 1.6 < errs[0] / errs[1] < 2.4  # first order in the step


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda X, Y: infinite_width_limit(X, Y, -1, 1.0, [1.0]), "q"),
        (lambda X, Y: infinite_width_limit(X, Y[:, :2], 1, 1.0, [1.0]), "same n"),
        (lambda X, Y: infinite_width_limit(X[:0], Y, 1, 1.0, [1.0]), "d >= 1"),
        (lambda X, Y: infinite_width_limit(X, Y[:0], 1, 1.0, [1.0]), "k >= 1"),
        (lambda X, Y: infinite_width_limit(X * np.nan, Y, 1, 1.0, [1.0]), "finite"),
        (lambda X, Y: infinite_width_limit(X, Y, 1, -1.0, [1.0]), "eta"),
        (lambda X, Y: infinite_width_limit(X, Y, 1, 1.0, [2.0, 1.0]), "sorted"),
        (lambda X, Y: init_network(4, 2, 1.5, 8), "q"),
        (lambda X, Y: init_network(0, 2, 1, 8), "d="),
        (lambda X, Y: init_network(4, 2, 1, 8, scaling="mf"), "scaling"),
        (lambda X, Y: gradient_flow(init_network(5, 2, 1, 8), X, Y, 1.0, [1.0]), "d=5"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    X, Y = data()
    with pytest.raises(ValueError, match=match):
        call(X, Y)
