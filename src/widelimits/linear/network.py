r"""Deep linear networks in normalized coordinates, their gradient flow and gradient descent.

Setting.  Data X (:math:`d \times n`), targets Y (:math:`k \times n`), q middle layers.  The
weights are U (:math:`N_0 \times d`), :math:`M_j` (:math:`N_j \times N_{j-1}`) for j = 1..q and V
(:math:`N_q \times k`); a finite network of width m has :math:`N_j = m` and all entries iid
:math:`\mathcal N(0, 1/m)` at initialization, the deterministic infinite-width network of
:mod:`widelimits.linear.limit` has the sizes of its path basis.  With the output multiplier a
(1 in the main scaling, :math:`\sqrt m` in the NTK scaling)

.. math::

    \beta &= a\, V^\top M_q \cdots M_1 U \quad (k \times d), \qquad
    R = \lVert \beta X - Y \rVert_F^2 / (2n), \qquad
    E = (\beta X - Y) X^\top / n \quad (k \times d), \\
    h_0 &= U, \quad h_j = M_j h_{j-1}; \qquad g_q = V, \quad g_{j-1} = M_j^\top g_j

and gradient flow with rate :math:`\eta` times a per-parameter factor c (1 main, 1/m NTK):

.. math::

    \frac{dU}{dt} = -\eta c a\, g_0 E, \qquad
    \frac{dM_j}{dt} = -\eta c a\, g_j E h_{j-1}^\top, \qquad
    \frac{dV}{dt} = -\eta c a\, h_q E^\top.

Main scaling (a = 1, c = 1): plain gradient flow on the normalized parameters, i.e. raw
parameters :math:`W_1 = \sqrt m\, U`, :math:`Z_j = \sqrt m\, M_j`,
:math:`W_\text{out} = \sqrt m\, V^\top \sim \mathcal N(0, 1)`,
:math:`\beta = m^{-(q+2)/2} W_\text{out} Z \cdots W_1`, trained with raw rate :math:`\eta m`.
:math:`\beta(0) = O(m^{-1/2})` and the weights move by :math:`O(1)`:
:math:`\lVert U(t) - U(0) \rVert_F` and :math:`\lVert V(t) - V(0) \rVert_F` are :math:`O(1)` like
:math:`U(0), V(0)`, and :math:`M_j` moves by an :math:`O(1)` low-rank matrix
(:math:`\lVert M_j(0) \rVert_\mathrm{op} \approx 2`).

NTK scaling (:math:`a = \sqrt m`, c = 1/m): the standard NTK parametrization
:math:`\beta = m^{-(q+1)/2} W_\text{out} Z \cdots W_1` trained with raw rate :math:`\eta`.
:math:`\beta(0)` is an :math:`O(1)` Gaussian matrix (the initial function is not zero), the
tangent kernel is the same :math:`(q + 2) X^\top X / n` at initialization, and every layer moves
by :math:`O(\eta t / \sqrt m)` on the same scales: the lazy regime
(``measure.weight_changes``; tested with slope -1/2 in m).
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import solve_ivp

__all__ = [
    "LinearNetwork",
    "Trajectory",
    "init_network",
    "check_data",
    "gradient_flow",
    "gradient_descent",
]

SCALINGS = ("main", "ntk")


def check_data(X, Y) -> tuple[np.ndarray, np.ndarray]:
    """Return ``X`` (d x n) and ``Y`` (k x n) as float64 arrays after checking shapes and values."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[None, :]
    if X.ndim != 2:
        raise ValueError(
            f"X must be a (d, n) matrix with one column per example; got shape {X.shape}"
        )
    if Y.ndim != 2:
        raise ValueError(
            f"Y must be a (k, n) matrix with one column per example; got shape {Y.shape}"
        )
    d, n = X.shape
    if Y.shape[1] != n:
        raise ValueError(
            f"X has {n} examples (columns) but Y has {Y.shape[1]}: pass X as (d, n) and Y as "
            "(k, n) with the same n (transpose row-per-example data)"
        )
    if d == 0 or Y.shape[0] == 0 or n == 0:
        raise ValueError(
            f"need d >= 1 input features, k >= 1 outputs and n >= 1 examples; got d={d}, "
            f"k={Y.shape[0]}, n={n}"
        )
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("X and Y must be finite: remove or impute NaN/inf entries first")
    return X, Y


def check_depth(q) -> int:
    """Validate the number of middle layers q (an integer >= 0)."""
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 0:
        raise ValueError(
            f"q (the number of middle m x m layers) must be an integer >= 0; got {q!r}"
        )
    return int(q)


@dataclass
class LinearNetwork:
    r"""Weights of a deep linear network: ``U`` (:math:`N_0 \times d`), ``Ms[j-1]`` =
    :math:`M_j` (:math:`N_j \times N_{j-1}`), ``V`` (:math:`N_q \times k`);
    :math:`\beta = a\, V^\top M_q \cdots M_1 U` with :math:`a` = ``output_scale``.
    ``rate_scale`` (the factor :math:`c`) multiplies the learning rate of every parameter."""

    U: np.ndarray
    Ms: list[np.ndarray]
    V: np.ndarray
    output_scale: float = 1.0
    rate_scale: float = 1.0
    shapes: list[tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self):
        self.U = np.asarray(self.U, dtype=np.float64)
        self.V = np.asarray(self.V, dtype=np.float64)
        self.Ms = [np.asarray(M, dtype=np.float64) for M in self.Ms]
        rows = self.U.shape[0]
        for j, M in enumerate(self.Ms, 1):
            if M.shape[1] != rows:
                raise ValueError(
                    f"M_{j} has {M.shape[1]} columns but layer {j - 1} has {rows} rows"
                )
            rows = M.shape[0]
        if self.V.shape[0] != rows:
            raise ValueError(f"V has {self.V.shape[0]} rows but the last layer has {rows}")
        self.shapes = [self.U.shape, *(M.shape for M in self.Ms), self.V.shape]

    @property
    def q(self) -> int:
        return len(self.Ms)

    @property
    def d(self) -> int:
        return self.U.shape[1]

    @property
    def k(self) -> int:
        return self.V.shape[1]

    def copy(self) -> LinearNetwork:
        return LinearNetwork(
            self.U.copy(), [M.copy() for M in self.Ms], self.V.copy(), self.output_scale,
            self.rate_scale,
        )  # fmt: skip

    def forward(self) -> list[np.ndarray]:
        r""":math:`h_0 = U`, :math:`h_j = M_j h_{j-1}` (j = 1..q)."""
        hs = [self.U]
        for M in self.Ms:
            hs.append(M @ hs[-1])
        return hs

    def backward(self) -> list[np.ndarray]:
        r""":math:`g_q = V`, :math:`g_{j-1} = M_j^\top g_j`; returned as
        :math:`[g_0, \dots, g_q]`."""
        gs = [self.V]
        for M in reversed(self.Ms):
            gs.append(M.T @ gs[-1])
        return gs[::-1]

    def beta(self) -> np.ndarray:
        r""":math:`\beta = a\, V^\top M_q \cdots M_1 U` (k x d)."""
        return self.output_scale * (self.V.T @ self.forward()[-1])

    def risk(self, X, Y) -> float:
        r""":math:`R = \lVert \beta X - Y \rVert^2 / (2n)`."""
        X, Y = check_data(X, Y)
        return _risk(self.beta(), X, Y)

    def gradients(self, X: np.ndarray, Y: np.ndarray) -> list[np.ndarray]:
        r"""Gradients of R w.r.t. :math:`[U, M_1, \dots, M_q, V]`: :math:`a g_0 E`,
        :math:`a g_j E h_{j-1}^\top`, :math:`a h_q E^\top`.

        :math:`E = a (\beta X - Y) X^\top / n` has rank :math:`\le \min(k, d)`, so the products are
        ordered to cost :math:`O(N^2 \min(k, d))` per layer: for :math:`k \le d` the forward pass
        propagates :math:`f_j = h_j E^\top` (:math:`N_j \times k`) instead of :math:`h_j`, and
        :math:`\beta = a g_0^\top U` comes from the backward pass.
        """
        gs = self.backward()
        a = self.output_scale
        beta = a * (gs[0].T @ self.U)
        n = X.shape[1]
        E = a * ((beta @ X - Y) @ X.T) / n
        grads = [gs[0] @ E]
        if self.k <= self.d:
            f = self.U @ E.T  # f_j = h_j E^T
            for j, M in enumerate(self.Ms, 1):
                grads.append(gs[j] @ f.T)
                f = M @ f
            grads.append(f)
        else:
            h = self.U
            for j, M in enumerate(self.Ms, 1):
                grads.append((gs[j] @ E) @ h.T)
                h = M @ h
            grads.append(h @ E.T)
        return grads

    def flatten(self) -> np.ndarray:
        return np.concatenate([self.U.ravel(), *(M.ravel() for M in self.Ms), self.V.ravel()])

    def with_flat(self, y: np.ndarray) -> LinearNetwork:
        """A network of the same shapes and scales holding the flat parameter vector ``y``."""
        arrays, start = [], 0
        for r, c in self.shapes:
            arrays.append(y[start : start + r * c].reshape(r, c))
            start += r * c
        return LinearNetwork(
            arrays[0], arrays[1:-1], arrays[-1], self.output_scale, self.rate_scale
        )


def _risk(beta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
    return float(np.sum((beta @ X - Y) ** 2) / (2 * X.shape[1]))


def init_network(
    d: int, k: int, q: int, width: int, seed: int | None = 0, scaling: str = "main"
) -> LinearNetwork:
    r"""A random network of width m = ``width``: all entries of U, :math:`M_j`, V iid
    :math:`\mathcal N(0, 1/m)`.

    ``scaling="main"``: :math:`\beta = V^\top M \cdots U`, rate factor 1.
    ``scaling="ntk"``: :math:`\beta = \sqrt m\, V^\top M \cdots U`, rate factor :math:`1/m` (lazy
    regime)."""
    q = check_depth(q)
    if d < 1 or k < 1:
        raise ValueError(f"need d >= 1 inputs and k >= 1 outputs; got d={d}, k={k}")
    if width < 1:
        raise ValueError(f"width must be a positive integer; got {width}")
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}; got {scaling!r}")
    rng = np.random.default_rng(seed)
    s = 1 / math.sqrt(width)
    U = rng.standard_normal((width, d)) * s
    Ms = [rng.standard_normal((width, width)) * s for _ in range(q)]
    V = rng.standard_normal((width, k)) * s
    if scaling == "ntk":
        return LinearNetwork(U, Ms, V, output_scale=math.sqrt(width), rate_scale=1 / width)
    return LinearNetwork(U, Ms, V)


@dataclass
class Trajectory:
    """Gradient flow/descent output: ``times`` (T,), ``betas`` (T, k, d), ``risks`` (T,), the first
    layer ``Us`` at every time, the network at the last time (``final``) and, when requested, the
    networks at all times (``networks``); ``nfev`` counts right-hand-side evaluations (steps for
    gradient descent)."""

    times: np.ndarray
    betas: np.ndarray
    risks: np.ndarray
    networks: list[LinearNetwork] | None = None
    nfev: int = 0
    Us: list[np.ndarray] | None = None
    final: LinearNetwork | None = None


@contextlib.contextmanager
def blas_threads(net: LinearNetwork) -> Iterator[None]:
    """One BLAS thread while the largest weight matrix has at most 2^20 entries (width 1024).

    The flow multiplies N x N matrices by N x min(k, d) blocks: memory-bound products for which
    OpenBLAS's thread synchronisation costs more than it saves (measured 4x slower with 2 threads
    on a busy 2-core machine; the demo's widths 64-1024 took 7.1 s on one thread and 8.0 s on two
    on the idle one, where width 2048 is faster on two).  Uses ``threadpoolctl`` when it is
    installed, else does nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    if max(r * c for r, c in net.shapes) <= 2**20:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    else:
        yield


def _check_times(times) -> np.ndarray:
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if times.ndim != 1 or not np.isfinite(times).all() or (times < 0).any():
        raise ValueError("times must be a 1-d array of finite times >= 0")
    if (np.diff(times) < 0).any():
        raise ValueError("times must be sorted in increasing order")
    return times


def gradient_flow(
    net: LinearNetwork,
    X,
    Y,
    eta: float,
    times: Sequence[float],
    *,
    method: str = "DOP853",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    keep_networks: bool = False,
) -> Trajectory:
    r"""Integrate :math:`d\theta/dt = -\eta c \nabla R(\theta)` from ``net`` (time 0), report at
    ``times``.

    All matrices are flattened into one vector and passed to ``scipy.integrate.solve_ivp``; the
    default is the explicit 8th-order Runge-Kutta ``DOP853`` with rtol 1e-8 and atol 1e-10 (the
    weights are :math:`O(1)` in the main scaling), which is far below the :math:`O(m^{-1/2})`
    fluctuations this module studies.  The flow is not stiff at the learning rates of interest (its
    fastest rate is :math:`\eta` times the top eigenvalue of the tangent kernel), so an explicit
    method is right; use ``method="RK45"`` with looser tolerances for very large widths (it keeps
    7 instead of 12 stage vectors of the parameter size).  Each interval between reported times is
    a separate ``solve_ivp`` call, so memory is a few parameter vectors whatever the number of
    times.
    """
    X, Y = check_data(X, Y)
    if X.shape[0] != net.d or Y.shape[0] != net.k:
        raise ValueError(
            f"the network maps d={net.d} inputs to k={net.k} outputs but X is {X.shape} and Y is "
            f"{Y.shape}"
        )
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a positive finite learning rate; got {eta}")
    times = _check_times(times)
    rate = eta * net.rate_scale

    def rhs(_t, y):
        grads = net.with_flat(y).gradients(X, Y)
        return -rate * np.concatenate([g.ravel() for g in grads])

    # One solve_ivp call per interval [t_i, t_(i+1)] (restarting the step-size control costs a few
    # evaluations) so that memory stays a few parameter vectors instead of one per reported time.
    y, t_now, nfev = net.flatten(), 0.0, 0
    betas, Us, nets = [], [], []
    for t in times:
        if t > t_now:
            with blas_threads(net):  # t_eval: store only the end point, not every step
                sol = solve_ivp(
                    rhs,
                    (t_now, float(t)),
                    y,
                    method=method,
                    t_eval=[float(t)],
                    rtol=rtol,
                    atol=atol,
                )
            if not sol.success:
                raise RuntimeError(f"gradient flow integration failed: {sol.message}")
            y, t_now, nfev = sol.y[:, -1].copy(), float(t), nfev + sol.nfev
            # scipy's solver object sits in a reference cycle (its fun wrapper closes over it),
            # so its stage vectors would otherwise wait for the cyclic collector: at width 4096
            # each interval left ~3 GB behind.  (A full collection costs ~0.1 s: only for big
            # states.)
            del sol
            if y.size >= 2**22:
                gc.collect()
        current = net.with_flat(y)
        betas.append(current.beta())
        Us.append(current.U.copy())
        if keep_networks:
            nets.append(current.copy())
    betas = np.stack(betas)
    risks = np.array([_risk(b, X, Y) for b in betas])
    return Trajectory(
        times, betas, risks, nets if keep_networks else None, nfev, Us, net.with_flat(y)
    )


def gradient_descent(
    net: LinearNetwork,
    X,
    Y,
    eta: float,
    steps: int,
    *,
    record_every: int = 1,
    keep_networks: bool = False,
) -> Trajectory:
    r"""``steps`` steps :math:`\theta \leftarrow \theta - \eta c \nabla R(\theta)` (all layers
    updated from the same iterate). Step s is reported at time s (flow time of gradient flow with
    rate :math:`\eta`); records are taken every ``record_every`` steps and at the end."""
    X, Y = check_data(X, Y)
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a positive finite step size; got {eta}")
    if steps < 0 or record_every < 1:
        raise ValueError("steps must be >= 0 and record_every >= 1")
    net = net.copy()
    rate = eta * net.rate_scale
    times, betas, nets, Us = [], [], [], []

    def record(s):
        times.append(float(s))
        betas.append(net.beta())
        Us.append(net.U.copy())
        if keep_networks:
            nets.append(net.copy())

    record(0)
    for s in range(1, steps + 1):
        with blas_threads(net):
            grads = net.gradients(X, Y)
        net.U -= rate * grads[0]
        for M, G in zip(net.Ms, grads[1:-1], strict=True):
            M -= rate * G
        net.V -= rate * grads[-1]
        if s % record_every == 0 or s == steps:
            record(s)
    betas_arr = np.stack(betas)
    risks = np.array([_risk(b, X, Y) for b in betas_arr])
    return Trajectory(
        np.array(times), betas_arr, risks, nets if keep_networks else None, steps, Us, net
    )
