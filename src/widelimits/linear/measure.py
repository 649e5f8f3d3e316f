r"""Measurements on deep linear networks against their infinite-width limit.

(a) ``width_errors``: :math:`\lVert \beta_m(t) - \beta_\infty(t) \rVert_F` over widths and seeds,
    the fitted exponent of the seed-averaged error in m (log-log least squares; -1/2 expected)
    and the error times :math:`\sqrt m`.
(b) ``min_norm_convergence``: :math:`\lVert \beta_\infty(t) - Y X^+ \rVert_F` with the fitted
    exponential rate (least squares of log distance against t); ``row_space_residual``:
    :math:`\lVert \beta (I - X X^+) \rVert_F`.
(c) ``first_layer_law``: the rows of :math:`\sqrt m\, U_m(t)` against
    :math:`\mathcal N(0, U_\infty(t)^\top U_\infty(t))`: relative error of the empirical
    covariance :math:`U_m^\top U_m` and KS tests of a few standardized projections.
(d) ``tangent_kernel``: the tangent kernel of :math:`f = \beta X`, in the form
    :math:`df/dt = -\eta\, (f - Y)\, K` with
    :math:`K_{(a,i),(b,j)} = \frac{c\, a^2}{n} \sum_\theta \frac{\partial f_{ai}}{\partial \theta}
    \frac{\partial f_{bj}}{\partial \theta}`, whose infinite-width value at initialization is
    :math:`\delta_{ab} (q + 2) X^\top X / n`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .limit import LimitResult, infinite_width_limit
from .network import LinearNetwork, check_data, gradient_flow, init_network

__all__ = [
    "WidthErrors",
    "fit_power",
    "width_errors",
    "min_norm_solution",
    "min_norm_convergence",
    "row_space_residual",
    "first_layer_law",
    "tangent_kernel",
    "limit_tangent_kernel",
    "weight_changes",
]


def fit_power(widths: Sequence[float], values: Sequence[float]) -> float:
    """Slope of log(values) against log(widths) by least squares."""
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


@dataclass
class WidthErrors:
    r"""``errors[w, s, t]`` = :math:`\lVert \beta_m(t) - \beta_\infty(t) \rVert_F` for widths[w],
    seed s, times[t]; ``mean`` the seed average (W x T), ``slope`` the fitted exponent of the
    time-averaged mean error in m, ``slopes`` the exponent at each time (t > 0), ``scaled`` =
    ``mean`` :math:`\cdot \sqrt m`."""

    widths: np.ndarray
    times: np.ndarray
    errors: np.ndarray
    mean: np.ndarray
    slope: float
    slopes: np.ndarray
    scaled: np.ndarray
    limit: LimitResult


def width_errors(
    X,
    Y,
    q: int,
    eta: float,
    times: Sequence[float],
    widths: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2, 3),
    *,
    limit: LimitResult | None = None,
    method: str = "RK45",
    rtol: float = 1e-6,
    atol: float = 1e-8,
) -> WidthErrors:
    """(a) Finite networks (main scaling) at each width and seed against the limit."""
    X, Y = check_data(X, Y)
    if limit is None:
        limit = infinite_width_limit(X, Y, q, eta, times)
    times = limit.times
    d, k = X.shape[0], Y.shape[0]
    errors = np.empty((len(widths), len(seeds), len(times)))
    for w, m in enumerate(widths):
        for s, seed in enumerate(seeds):
            net = init_network(d, k, q, m, seed=seed)
            traj = gradient_flow(net, X, Y, eta, times, method=method, rtol=rtol, atol=atol)
            errors[w, s] = np.linalg.norm(traj.betas - limit.betas, axis=(1, 2))
    mean = errors.mean(axis=1)
    widths_arr = np.asarray(widths, dtype=np.float64)
    slope = fit_power(widths_arr, mean.mean(axis=1))
    slopes = np.array([fit_power(widths_arr, mean[:, t]) for t in range(len(times))])
    return WidthErrors(
        widths_arr, times, errors, mean, slope, slopes, mean * np.sqrt(widths_arr)[:, None], limit
    )


def min_norm_solution(X, Y) -> np.ndarray:
    r""":math:`\beta^* = Y X^+`, the minimum-Frobenius-norm minimizer of
    :math:`\lVert \beta X - Y \rVert`."""
    X, Y = check_data(X, Y)
    return Y @ np.linalg.pinv(X)


def min_norm_convergence(
    betas: np.ndarray, times: Sequence[float], X, Y, fit_from: float = 0.0
) -> tuple[np.ndarray, float]:
    r"""(b) Distances :math:`\lVert \beta(t) - Y X^+ \rVert_F` and the fitted rate r of
    :math:`\mathrm{dist} \approx C e^{-r t}` (least squares of log dist on the times >=
    ``fit_from`` with a nonzero distance)."""
    star = min_norm_solution(X, Y)
    times = np.asarray(times, dtype=np.float64)
    dist = np.linalg.norm(np.asarray(betas) - star, axis=(1, 2))
    use = (times >= fit_from) & (dist > 0)
    rate = -float(np.polyfit(times[use], np.log(dist[use]), 1)[0]) if use.sum() >= 2 else np.nan
    return dist, rate


def row_space_residual(beta: np.ndarray, X) -> float:
    r""":math:`\lVert \beta (I - X X^+) \rVert_F`: zero iff every row of :math:`\beta` lies in the
    span of the columns of X (the "row space of X" of the d x n data matrix: :math:`\beta` ignores
    input directions no example visits)."""
    X = np.asarray(X, dtype=np.float64)
    P = X @ np.linalg.pinv(X)
    return float(np.linalg.norm(beta - beta @ P))


def first_layer_law(
    U_m: np.ndarray, covariance: np.ndarray, n_projections: int = 4, seed: int = 0
) -> dict:
    r"""(c) Rows of :math:`\sqrt m\, U_m` against :math:`\mathcal N(0, \Sigma)`, :math:`\Sigma` =
    ``covariance`` (:math:`= U_\infty^\top U_\infty`).

    Returns ``cov_error`` = :math:`\lVert U_m^\top U_m - \Sigma \rVert_F / \lVert \Sigma \rVert_F`
    (:math:`O(m^{-1/2})` when the law holds: the empirical covariance of m rows), and ``ks_pvalues``
    of ``scipy.stats.kstest`` of the projections
    :math:`a^\top (\sqrt m\, u_i) / \sqrt{a^\top \Sigma a}` against :math:`\mathcal N(0, 1)` for
    random unit directions a (plus each coordinate direction's ``ks`` statistic in ``ks_stats``).
    """
    U_m = np.asarray(U_m, dtype=np.float64)
    m, d = U_m.shape
    if covariance.shape != (d, d):
        raise ValueError(f"covariance must be {d} x {d} to match U's {d} columns")
    rows = np.sqrt(m) * U_m
    emp = U_m.T @ U_m
    cov_error = float(np.linalg.norm(emp - covariance) / np.linalg.norm(covariance))
    rng = np.random.default_rng(seed)
    pvals, statistics = [], []
    for _ in range(n_projections):
        a = rng.standard_normal(d)
        a /= np.linalg.norm(a)
        z = rows @ a / np.sqrt(a @ covariance @ a)
        res = stats.kstest(z, "norm")
        pvals.append(res.pvalue)
        statistics.append(res.statistic)
    return {"cov_error": cov_error, "ks_pvalues": np.array(pvals), "ks_stats": np.array(statistics)}


def tangent_kernel(net: LinearNetwork, X) -> np.ndarray:
    r"""(d) The tangent kernel K (k, n, k, n) of :math:`f = \beta X` at the weights ``net``:

    .. math::

        K_{ai,bj} = \frac{c\, a^2}{n} \Big[ & (g_0^\top g_0)_{ab}\, x_i \cdot x_j \\
            & + \sum_l (g_l^\top g_l)_{ab}\, (h_{l-1} x_i) \cdot (h_{l-1} x_j) \\
            & + \delta_{ab}\, (h_q x_i) \cdot (h_q x_j) \Big],

    the contraction of the Jacobian of :math:`\beta X` with itself
    (:math:`df/dt = -\eta\, (f - Y)\, K` under gradient flow). Its infinite-width value at
    initialization is :math:`\delta_{ab} (q + 2) X^\top X / n`.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[1]
    hs, gs = net.forward(), net.backward()
    K = np.einsum("ab,ij->aibj", gs[0].T @ gs[0], X.T @ X)
    for j in range(1, net.q + 1):
        F = hs[j - 1] @ X
        K += np.einsum("ab,ij->aibj", gs[j].T @ gs[j], F.T @ F)
    F = hs[-1] @ X
    K += np.einsum("ab,ij->aibj", np.eye(net.k), F.T @ F)
    return K * (net.rate_scale * net.output_scale**2 / n)


def limit_tangent_kernel(X, k: int, q: int) -> np.ndarray:
    r""":math:`\delta_{ab} (q + 2) X^\top X / n`, shaped (k, n, k, n)."""
    X = np.asarray(X, dtype=np.float64)
    return np.einsum("ab,ij->aibj", np.eye(k), (q + 2) * X.T @ X / X.shape[1])


def weight_changes(start: LinearNetwork, end: LinearNetwork) -> np.ndarray:
    r""":math:`\lVert W(t) - W(0) \rVert_F` for each layer :math:`[U, M_1, \dots, M_q, V]`.

    The initial sizes are :math:`O(1)` whatever m: :math:`\lVert U(0) \rVert_F \approx \sqrt d`,
    :math:`\lVert V(0) \rVert_F \approx \sqrt k` and
    :math:`\lVert M_j(0) \rVert_\mathrm{op} \approx 2` (the change of an m x m matrix is low-rank,
    so its Frobenius norm is the right scale against the operator norm). In the main scaling the
    changes are :math:`O(1)` (the weights really move); in the NTK scaling :math:`O(m^{-1/2})` (lazy
    regime).
    """
    before = [start.U, *start.Ms, start.V]
    after = [end.U, *end.Ms, end.V]
    return np.array([np.linalg.norm(b - a) for a, b in zip(before, after, strict=True)])
