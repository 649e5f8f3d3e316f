r"""The infinite-width limit of a deep linear network as a deterministic finite network.

As the width m grows, the gradient flow of :mod:`widelimits.linear.network` (main scaling)
converges, with fluctuations :math:`O(m^{-1/2})`, to the SAME ODE run on a deterministic network
whose coordinates are the rooted paths of :mod:`widelimits.linear.paths` (truncated at R steps):
:math:`U(0), M_j(0), V(0)` are the path-basis matrices and :math:`\beta_\infty(0) = 0`.

* q = 0: width d + k, :math:`U(0) = [e_1, \dots, e_d]`, :math:`V(0) = [e_{d+1}, \dots, e_{d+k}]`
  (no truncation).
* q = 1: every root's paths form a chain; ordered along the chains
  :math:`M(0) = \operatorname{blockdiag}(B, \dots, B, B^\top, \dots, B^\top)` (d blocks B, k blocks
  :math:`B^\top`), B = I + superdiagonal.
* :math:`q \ge 2`: the number of paths grows exponentially in R (:math:`2^{R/2}` per root for
  q = 2).

Reduction to :math:`\operatorname{rank}(X) + \operatorname{rank}(Y)` roots (exact).  The limit is
equivariant under rotations of the input roots (O acting on the roots commutes with every
:math:`M_j(0)`, which acts on the words only), and :math:`E = (\beta X - Y) X^\top / n` vanishes
on the orthogonal complement of :math:`\operatorname{col}(X)`.  Hence, in coordinates
:math:`X = Q_x X_r` with :math:`Q_x` an orthonormal basis of :math:`\operatorname{col}(X)`, the
paths rooted at the complement never mix with the others: :math:`M_j(t)` stays block diagonal,
those roots keep their initial U columns, and :math:`\beta_\infty(t) (I - X X^+) = 0`.  The same
holds for the outputs with :math:`\operatorname{col}(Y)`.  The simulator therefore runs with
:math:`r_x = \operatorname{rank}(X)` input and :math:`r_y = \operatorname{rank}(Y)` output roots
and returns :math:`\beta_\infty = Q_y \beta_r Q_x^\top`, and
:math:`U_\infty(t)^\top U_\infty(t) = Q_x U_r^\top U_r Q_x^\top + (I - Q_x Q_x^\top)`.

The truncation: with R steps the matrices are exact for words of length < R, so
:math:`\beta^{(R)}(t)` agrees with the untruncated limit to a Taylor order that grows with R.
``infinite_width_limit`` raises R until two successive values give betas (over the whole time
grid) within ``tol`` relative to :math:`\max_t \lVert \beta(t) \rVert`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .network import LinearNetwork, _check_times, check_data, check_depth, gradient_flow
from .paths import PathBasis, path_basis

__all__ = ["LimitResult", "limit_network", "infinite_width_limit", "column_basis"]


def limit_network(basis: PathBasis) -> LinearNetwork:
    r"""The deterministic network :math:`U(0), M_j(0), V(0)` on a path basis (dense matrices)."""
    U0, Ms, V0 = basis.initial_matrices(dense=True)
    return LinearNetwork(U0, Ms, V0)


def column_basis(A: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (columns) of the column space of A (singular values > rtol * largest);
    at least one column, so that an all-zero A still gives a valid (if idle) root."""
    P, s, _ = np.linalg.svd(A, full_matrices=False)
    r = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    return P[:, : max(r, 1)]


@dataclass
class LimitResult:
    r""":math:`\beta_\infty` at ``times`` (``betas``, T x k x d), ``risks``, the truncation ``R``
    used and the last relative change ``last_change`` between successive R (None when R was given),
    ``history`` of (R, coordinates, change), the layer ``sizes`` of the reduced limit network, the
    reduced networks (``network`` at the last time, ``Us`` the reduced U at every time), and the
    bases ``Qx`` (:math:`d \times r_x`), ``Qy`` (:math:`k \times r_y`) of the reduction."""

    times: np.ndarray
    betas: np.ndarray
    risks: np.ndarray
    R: int
    last_change: float | None
    history: list[tuple[int, int, float | None]]
    sizes: list[int]
    network: LinearNetwork
    Us: list[np.ndarray]
    Qx: np.ndarray
    Qy: np.ndarray
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def input_gram(self, i: int = -1) -> np.ndarray:
        r""":math:`U_\infty(t)^\top U_\infty(t)` (d x d) at ``times[i]``: the covariance of the
        rows of :math:`\sqrt m\, U_m(t)` at large width."""
        U = self.Us[i]
        Qx = self.Qx
        return Qx @ (U.T @ U) @ Qx.T + (np.eye(Qx.shape[0]) - Qx @ Qx.T)


def _solve(X_r, Y_r, q, R, eta, times, method, rtol, atol):
    basis = path_basis(X_r.shape[0], Y_r.shape[0], q, R)
    traj = gradient_flow(
        limit_network(basis), X_r, Y_r, eta, times, method=method, rtol=rtol, atol=atol,
    )  # fmt: skip
    return basis, traj


def infinite_width_limit(
    X,
    Y,
    q: int,
    eta: float,
    times: Sequence[float],
    R: int | None = None,
    tol: float = 1e-5,
    *,
    R_start: int | None = None,
    R_max: int = 64,
    max_coordinates: int = 20000,
    method: str = "DOP853",
    rtol: float = 1e-9,
    atol: float = 1e-11,
) -> LimitResult:
    r""":math:`\beta_\infty(t)` of the infinite-width gradient flow with rate ``eta`` at ``times``.

    ``R=None`` chooses the truncation: start at ``R_start`` (default 2q + 1) and raise it (by 2
    for q >= 2, doubling for q = 1) until
    :math:`\max_t \lVert \beta^{(R)}(t) - \beta^{(R')}(t) \rVert \le \mathrm{tol} \cdot
    \max_t \lVert \beta^{(R')}(t) \rVert`, returning the larger :math:`R'`.  A ``RuntimeWarning``
    says so when ``R_max`` or ``max_coordinates`` (the total number of path coordinates, which
    bounds the dense matrices' memory, :math:`8 N_j N_{j-1}` bytes each) stops the search first.
    For q = 0 no truncation exists (R = 0).  Integration: ``solve_ivp`` with ``method``, ``rtol``,
    ``atol`` (see :func:`widelimits.linear.network.gradient_flow`).
    """
    import time

    X, Y = check_data(X, Y)
    q = check_depth(q)
    times = _check_times(times)
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a positive finite learning rate; got {eta}")
    if R is not None and R < 0:
        raise ValueError(f"R must be None (automatic) or an integer >= 0; got {R}")
    if tol <= 0:
        raise ValueError(f"tol must be > 0; got {tol}")
    start = time.perf_counter()
    Qx, Qy = column_basis(X), column_basis(Y)
    X_r, Y_r = Qx.T @ X, Qy.T @ Y

    def lift(betas):
        return np.einsum("ka,tab,db->tkd", Qy, betas, Qx)

    if q == 0 or R is not None:
        R_used = 0 if q == 0 else int(R)
        basis, traj = _solve(X_r, Y_r, q, R_used, eta, times, method, rtol, atol)
        history = [(R_used, sum(basis.sizes), None)]
        change = None
    else:
        R_used = 2 * q + 1 if R_start is None else int(R_start)
        basis, traj = _solve(X_r, Y_r, q, R_used, eta, times, method, rtol, atol)
        history = [(R_used, sum(basis.sizes), None)]
        change = math.inf
        while True:
            R_next = R_used + (2 if q >= 2 else max(R_used, 2))
            if R_next > R_max:
                warnings.warn(
                    f"infinite_width_limit: R_max={R_max} reached at R={R_used} with relative "
                    f"change {change:.2e} > tol={tol:.1e}; raise R_max or shorten the times",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            size_next = sum(
                len(p) for p in path_basis(X_r.shape[0], Y_r.shape[0], q, R_next).layers
            )
            if size_next > max_coordinates:
                warnings.warn(
                    f"infinite_width_limit: R={R_next} would need {size_next} path coordinates "
                    f"(> max_coordinates={max_coordinates}); stopping at R={R_used} with relative "
                    f"change {change:.2e} (tol={tol:.1e}); raise max_coordinates if memory allows",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            basis_n, traj_n = _solve(X_r, Y_r, q, R_next, eta, times, method, rtol, atol)
            scale = max(np.max(np.linalg.norm(traj_n.betas, axis=(1, 2))), 1e-300)
            change = float(np.max(np.linalg.norm(traj_n.betas - traj.betas, axis=(1, 2))) / scale)
            basis, traj, R_used = basis_n, traj_n, R_next
            history.append((R_used, sum(basis.sizes), change))
            if change <= tol:
                break
    return LimitResult(
        times=times,
        betas=lift(traj.betas),
        risks=traj.risks,
        R=R_used,
        last_change=change,
        history=history,
        sizes=basis.sizes,
        network=traj.final,
        Us=traj.Us,
        Qx=Qx,
        Qy=Qy,
        seconds=time.perf_counter() - start,
    )
