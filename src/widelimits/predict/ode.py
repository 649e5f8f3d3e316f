r"""Infinite-width training under any loss: the function-space ODE, integrated numerically.

Conventions (those of neural-tangents): ``loss`` is the *mean* loss :math:`L` (a sum over all
outputs divided by ``y.size``), time t counts gradient-descent steps of size :math:`\eta` =
``learning_rate``, and with the training NTK :math:`\Theta = \Theta(X, X)` the outputs follow

.. math::

    \frac{df(x)}{dt} = -\eta\, \Theta(x, X)\, \frac{\partial L}{\partial f(X)}

(for MSE, :math:`L = \lVert f - y \rVert^2 / (2 |y|)`, this is :math:`-\eta' \Theta (f - y)` with
:math:`\eta' = \eta / |y|`, the flow `gradient_descent_mse` solves in closed form).

Momentum (heavy ball). The discrete update, in parameter space, is

.. math::

    v_{k+1} = m v_k - \eta \nabla L(\theta_k), \qquad \theta_{k+1} = \theta_k + v_{k+1},

i.e. :math:`(\theta_{k+1} - \theta_k) - m (\theta_k - \theta_{k-1}) = -\eta \nabla L`.  With a
time step of one gradient step, :math:`\theta_{k+1} - \theta_k \approx \theta'` and
:math:`\theta_k - \theta_{k-1} \approx \theta' - \theta''`, giving the damped second-order ODE

.. math::

    m \theta'' + (1 - m) \theta' = -\eta \nabla L, \qquad \theta(0) = \theta_0,\ \theta'(0) = 0.

In the linearized (infinite-width) regime :math:`f' = J \theta'` with a constant Jacobian J, so

.. math::

    m f'' + (1 - m) f' = -\eta\, \Theta(x, X)\, \frac{\partial L}{\partial f(X)}, \qquad f'(0) = 0.

:math:`m = 0` is exactly gradient flow, and for slowly varying gradients the velocity settles to
the familiar effective learning rate :math:`\eta / (1 - m)`.  (neural-tangents writes the same
equation with :math:`\theta'' = -(1 - m) \theta' - \eta \nabla L` in time units of
:math:`\sqrt\eta`; the two agree to first order in the learning rate.)

The ODE is linear in :math:`\Theta`, so only the training outputs are integrated: with z solving
:math:`m z'' + (1 - m) z' = -\eta\, \partial L / \partial f(f_\text{train})`,
:math:`z(0) = z'(0) = 0`, every output is :math:`f(x) = f_0(x) + \Theta(x, X) z`, and test
predictions cost one matrix product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ._checks import as_targets, check_learning_rate
from .mse import initial_outputs, outputs_on_test
from .solvers import _to_tensor, check_kernel

__all__ = ["gradient_descent"]

_LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")


def _loss_grad(loss, y: Tensor, y_shape: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    """dL/df as a function of the (N, C) training outputs, for the mean loss ``loss``."""
    n = y.numel()
    yy = y.reshape(y_shape)
    if callable(loss):

        def grad(f: Tensor) -> Tensor:
            fx = f.detach().reshape(y_shape).requires_grad_(True)
            with torch.enable_grad():
                value = loss(fx, yy)
                if not isinstance(value, Tensor) or value.numel() != 1:
                    raise ValueError(
                        "a callable loss must return a scalar tensor (the mean loss), got "
                        f"{type(value).__name__}"
                        + (f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else "")
                    )
                (g,) = torch.autograd.grad(value.reshape(()), fx, allow_unused=True)
            return torch.zeros_like(f) if g is None else g.reshape(f.shape)

        return grad
    if not isinstance(loss, str) or loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES} or a callable loss(fx, y), got {loss!r}")
    if loss == "mse":  # L = ||f - y||^2 / (2 n)
        return lambda f: (f - y) / n
    if loss == "binary_cross_entropy":  # L = sum(softplus(f) - y f) / n, logits f
        return lambda f: (torch.sigmoid(f) - y) / n
    # cross_entropy: L = -sum(y * log_softmax(f, -1)) / n, softmax over y's last axis.
    if len(y_shape) < 2:
        raise ValueError(
            f"loss='cross_entropy' needs y_train of shape (N, ..., classes) (one-hot or "
            f"probabilities), got shape {tuple(y_shape)}"
        )
    mass = yy.sum(-1, keepdim=True)

    def ce_grad(f: Tensor) -> Tensor:
        p = torch.softmax(f.reshape(y_shape), dim=-1)
        return ((p * mass - yy) / n).reshape(f.shape)

    return ce_grad


def gradient_descent(
    loss,
    k_train_train,
    y_train,
    learning_rate: float = 1.0,
    momentum: float | None = None,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    method: str | None = None,
) -> Callable:
    r"""Predictor of infinitely wide networks trained by gradient descent under any loss.

    Integrates the function-space ODE (:math:`\eta` = ``learning_rate``, :math:`L` the mean loss,
    t in gradient-descent steps)

    .. math::

        \frac{df(x)}{dt} = -\eta\, \Theta(x, X)\, \frac{\partial L}{\partial f(X)}

    with ``scipy.integrate.solve_ivp`` (tolerances ``rtol``/``atol``; ``method`` defaults to "RK45"
    without momentum and the stiffness-switching "LSODA" with it).

    Args:
        loss: ``"mse"`` (:math:`\lVert f - y \rVert^2 / (2 |y|)`, :math:`|y|` = ``y.size``),
            ``"cross_entropy"`` (softmax over the last axis,
            :math:`-\sum y \log \operatorname{softmax}(f) / |y|`; targets one-hot or
            probabilities), ``"binary_cross_entropy"`` (logits f, targets in :math:`\{0, 1\}`,
            :math:`\sum (\operatorname{softplus}(f) - y f) / |y|`), or a callable
            ``loss(fx, y)`` returning the scalar mean loss as a torch tensor (its gradient comes
            from autograd).
        k_train_train: the (N, N) NTK :math:`\Theta(X, X)` (or the NNGP for readout-only
            training).
        y_train: targets of shape (N,) or (N, ..., C).
        learning_rate: gradient-descent learning rate; ``t`` counts steps of this size.
        momentum: heavy-ball momentum ``m`` in :math:`[0, 1)`; ``None`` or 0 is plain gradient
            flow.  With :math:`m > 0` the outputs solve
            :math:`m f'' + (1 - m) f' = -\eta\, \Theta\, \partial L / \partial f`,
            :math:`f'(0) = 0`.

    Returns:
        ``predict_fn(t, fx_train_0=0.0, fx_test_0=None, k_test_train=None)`` with ``t`` a
        finite scalar or 1-D array of times >= 0 (outputs then get a leading time axis). It
        returns fx_train_t, or (fx_train_t, fx_test_t) when ``k_test_train``
        (:math:`\Theta(x_\text{test}, X)`, shape (M, N)) is given; ``fx_test_0=None`` means 0.
    """
    k = check_kernel(k_train_train, "k_train_train").detach()
    y, y_shape = as_targets(y_train, k, "y_train", k.shape[0])
    y = y.detach()
    grad = _loss_grad(loss, y, y_shape)
    lr = check_learning_rate(learning_rate)
    m = 0.0 if momentum is None else float(momentum)
    if not 0.0 <= m < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if method is None:
        method = "LSODA" if m > 0 else "RK45"
    from scipy.integrate import solve_ivp  # imported on use: scipy loads slowly

    kd = k.to(torch.float64).cpu()
    shape2 = tuple(y.shape)
    size = y.numel()

    def integrate(ts: np.ndarray, f0: Tensor) -> Tensor:
        """z at the times ``ts`` (shape (T, N, C)), for initial training outputs ``f0``."""
        out = np.zeros((len(ts), size))
        tmax = float(ts.max()) if len(ts) else 0.0
        if tmax == 0.0:
            return torch.from_numpy(out.reshape(len(ts), *shape2))
        f0d = f0.to(torch.float64).cpu()

        def force(z: np.ndarray) -> Tensor:  # -learning_rate * dL/df at f = f0 + Theta z
            f = f0d + kd @ torch.from_numpy(z).reshape(shape2)
            g = grad(f.to(dtype=y.dtype, device=y.device))
            return -lr * g.detach().to(torch.float64).cpu()

        if m == 0.0:

            def rhs(_t, z):
                return force(z).reshape(-1).numpy()

            state0 = np.zeros(size)
        else:

            def rhs(_t, s):
                z, u = s[:size], s[size:]
                du = (force(z).reshape(-1).numpy() - (1.0 - m) * u) / m
                return np.concatenate([u, du])

            state0 = np.zeros(2 * size)
        t_eval = np.unique(ts)
        sol = solve_ivp(
            rhs, (0.0, tmax), state0, method=method, t_eval=t_eval, rtol=rtol, atol=atol
        )
        if not sol.success:
            raise RuntimeError(
                f"ODE integration failed: {sol.message} (inputs were finite: the dynamics are "
                "too stiff or a callable loss returns non-finite gradients; try method='LSODA' "
                "or looser rtol/atol)"
            )
        zs = sol.y[:size].T  # (len(t_eval), size)
        out = zs[np.searchsorted(t_eval, ts)]
        return torch.from_numpy(np.ascontiguousarray(out).reshape(len(ts), *shape2))

    def predict_fn(t, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        tt = _to_tensor(t, k)
        if tt.ndim > 1:
            raise ValueError(f"t must be a scalar or a 1-D array of times, got shape {tt.shape}")
        if not bool(torch.isfinite(tt).all()) or bool((tt < 0).any()):
            raise ValueError("times t must be finite and >= 0 (the ODE is integrated up to t)")
        scalar = tt.ndim == 0
        ts = tt.reshape(-1).detach().cpu().to(torch.float64).numpy()
        f0 = initial_outputs(fx_train_0, y_shape, k, "fx_train_0").reshape(shape2)
        z = integrate(ts, f0).to(dtype=k.dtype, device=k.device)  # (T, N, C)
        fx_train = (f0 + k @ z).reshape(len(ts), *y_shape)
        if scalar:
            fx_train = fx_train[0]
        if k_test_train is None:
            return fx_train
        fx_test = outputs_on_test(k, k_test_train, fx_test_0, y_shape, z)
        return fx_train, fx_test[0] if scalar else fx_test

    return predict_fn
