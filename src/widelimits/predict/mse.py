"""Closed-form mean-squared-error training dynamics of infinitely wide networks.

Conventions (neural-tangents, background.md section 2): loss ||f(X) - Y||^2 / (2 * Y.size) and
eta' = learning_rate / Y.size. With the training NTK Theta = Theta(X, X) (regularized,
Theta + diag_reg * mean(diag Theta) * I) = V diag(lambda) V^T, computed once:

- gradient flow:   f_t(X) = Y + exp(-eta' Theta t) (f_0(X) - Y),
                   f_t(x) = f_0(x) + Theta(x, X) A_t (Y - f_0(X)),
                   A_t = Theta^{-1} (I - exp(-eta' Theta t))
                       = V diag((1 - e^{-eta' lambda t}) / lambda) V^T;
- gradient descent (t counts steps): exp(-eta' Theta t) -> (I - eta' Theta)^t,
  stable iff eta' < 2 / lambda_max;
- t = inf: A_inf = Theta^{-1} (kernel regression).

Infinite ensemble (f_0 ~ GP(0, K)): mean mu_t(x) = Theta(x, X) A_t Y and covariance
Sigma_t(x, x') = K(x, x') + Theta(x, X) A_t K(X, X) A_t Theta(X, x')
                 - [Theta(x, X) A_t K(X, x') + Theta(x', X) A_t K(X, x)];
training only the readout ("nngp") puts K in place of Theta.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .solvers import _FIX, _cond_threshold, _to_tensor, add_diagonal_regularizer, check_kernel

__all__ = [
    "Gaussian",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "max_learning_rate",
]


class Gaussian(NamedTuple):
    """Mean and covariance of a Gaussian prediction (covariance over test points)."""

    mean: Tensor
    covariance: Tensor


def max_learning_rate(k_train_train, y_train_size: int, diag_reg: float = 0.0) -> float:
    """Largest stable gradient-descent learning rate, ``2 * y_train_size / lambda_max(Theta)``.

    With eta' = learning_rate / y.size, GD is stable iff eta' < 2 / lambda_max (neural-tangents
    convention); the regularized kernel is used when ``diag_reg > 0``.
    """
    k = add_diagonal_regularizer(check_kernel(k_train_train, "k_train_train"), diag_reg)
    lam_max = float(torch.linalg.eigvalsh(k).max())
    if lam_max <= 0:
        return math.inf
    return 2.0 * int(y_train_size) / lam_max


def _times(t, like: Tensor) -> tuple[Tensor, bool]:
    """``t`` as a 1-D tensor of times and whether the caller passed a scalar/None."""
    if t is None:
        return torch.tensor([math.inf], dtype=like.dtype, device=like.device), True
    tt = _to_tensor(t, like)
    if tt.ndim > 1:
        raise ValueError(f"t must be None, a scalar or a 1-D array of times, got shape {tt.shape}")
    if bool(torch.isnan(tt).any()) or bool((tt < 0).any()):
        raise ValueError("times t must be >= 0 (inf or None for infinite time)")
    return tt.reshape(-1), tt.ndim == 0


class _Eigen:
    """Eigendecomposition of a (regularized) training kernel, made once and reused."""

    def __init__(self, k: Tensor, eta: float) -> None:
        self.evals, self.evecs = torch.linalg.eigh(k)
        self.eta = eta
        self.warned = False

    def decay_and_coef(self, ts: Tensor, discrete: bool) -> tuple[Tensor, Tensor]:
        """(T, N) factors: decay d(lambda, t) and coef = (1 - d) / lambda (A_t's eigenvalues).

        flow: d = exp(-eta' lambda t); discrete: d = (1 - eta' lambda)^t. coef -> eta' t as
        lambda -> 0 (and 1 / lambda at t = inf).
        """
        lam = self.evals[None, :]
        t = ts[:, None]
        eta = self.eta
        inf_t = torch.isinf(t)
        if discrete:
            if bool((~inf_t & (t != torch.round(t))).any()):
                raise ValueError("with discrete=True, t counts steps and must be integers")
            base = 1.0 - eta * lam
            if bool(inf_t.any()) and bool((base.abs() >= 1).any()):
                raise ValueError(
                    "gradient descent diverges or does not converge at this learning rate "
                    f"(need learning_rate < max_learning_rate); cannot take t=inf; {_FIX}"
                )
            pos = base > 0
            logb = torch.log1p(-eta * lam).where(pos, torch.zeros_like(lam))
            d = torch.where(pos, torch.exp(t * logb), torch.pow(base, t))
            d = torch.where(inf_t, torch.zeros_like(d), d)
            one_minus = torch.where(pos & ~inf_t, -torch.expm1(t * logb), 1.0 - d)
        else:
            d = torch.exp(-eta * lam * t)
            one_minus = -torch.expm1(-eta * lam * t)
        small = lam.abs() <= torch.finfo(lam.dtype).tiny
        coef = torch.where(
            small, eta * t, one_minus / torch.where(small, torch.ones_like(lam), lam)
        )
        if bool(inf_t.any()):
            if bool((lam <= 0).any()):
                raise ValueError(f"the training kernel is singular, so t=inf is undefined; {_FIX}")
            cond = float(lam.max() / lam.min())
            if cond > _cond_threshold(lam.dtype) and not self.warned:
                self.warned = True
                warnings.warn(
                    f"the training kernel is ill-conditioned (condition number {cond:.3g} in "
                    f"{lam.dtype}); t=inf predictions may be inaccurate: {_FIX}, or use float64",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return d, coef

    def apply(self, factors: Tensor, b: Tensor) -> Tensor:
        """V diag(factors) V^T b for each time: (T, N) x (N, C) -> (T, N, C)."""
        proj = self.evecs.T @ b
        return torch.einsum("ij,tj,jc->tic", self.evecs, factors, proj)


def _as_2d_targets(y_train, like: Tensor | None = None) -> tuple[Tensor, tuple[int, ...]]:
    y = _to_tensor(y_train, like)
    if y.ndim == 0:
        raise ValueError("y_train must have a leading training-point axis")
    return y.reshape(y.shape[0], -1), tuple(y.shape)


def gradient_descent_mse(
    k_train_train, y_train, learning_rate: float = 1.0, diag_reg: float = 0.0
) -> Callable:
    """Predictor of the outputs of a network trained with MSE loss in the linearized regime.

    ``k_train_train`` is the (N, N) NTK Theta(X, X) (or the NNGP for readout-only training);
    ``y_train`` has shape (N,) or (N, C). The eigendecomposition of the regularized kernel is
    computed once, here. Returns

        predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None, discrete=False)

    where ``t`` is None/inf (infinite time), a scalar or a 1-D array of times (outputs then get
    a leading time axis), ``discrete=True`` makes t count gradient-descent steps, and
    ``k_test_train`` is Theta(x_test, X) of shape (M, N). It returns fx_train_t, or
    (fx_train_t, fx_test_t) when ``k_test_train`` is given; ``fx_test_0=None`` means 0:

        fx_train_t = Y + exp(-eta' Theta t) (fx_train_0 - Y)
        fx_test_t = fx_test_0
                    + Theta(x_test, X) Theta^{-1} (I - exp(-eta' Theta t)) (Y - fx_train_0)
    """
    k = check_kernel(k_train_train, "k_train_train")
    y, y_shape = _as_2d_targets(y_train, k)
    if y.shape[0] != k.shape[0]:
        raise ValueError(f"y_train has {y.shape[0]} points but k_train_train has {k.shape[0]}")
    eta = float(learning_rate) / y.numel()
    eig = _Eigen(add_diagonal_regularizer(k, diag_reg), eta)

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None, discrete=False):
        ts, scalar = _times(t, k)
        f0 = torch.broadcast_to(_to_tensor(fx_train_0, k), y_shape).reshape(y.shape)
        d, coef = eig.decay_and_coef(ts, discrete)
        fx_train = y + eig.apply(d, f0 - y)
        fx_train = fx_train.reshape(len(ts), *y_shape)
        if scalar:
            fx_train = fx_train[0]
        if k_test_train is None:
            return fx_train
        fx_test = outputs_on_test(k, k_test_train, fx_test_0, y_shape, eig.apply(coef, y - f0))
        return fx_train, fx_test[0] if scalar else fx_test

    return predict_fn


def outputs_on_test(k: Tensor, k_test_train, fx_test_0, y_shape: tuple, weights: Tensor) -> Tensor:
    """f_test(t) = f_test(0) + Theta(test, train) w(t) for train-side weights w of shape
    (T, N, C): the form every function-space predictor takes on test points."""
    ktd = _to_tensor(k_test_train, k)
    if ktd.ndim != 2 or ktd.shape[1] != k.shape[0]:
        raise ValueError(f"k_test_train must have shape (M, {k.shape[0]}), got {ktd.shape}")
    m = ktd.shape[0]
    out_shape = (m, *y_shape[1:])
    ft0 = 0.0 if fx_test_0 is None else fx_test_0
    ft0 = torch.broadcast_to(_to_tensor(ft0, k), out_shape).reshape(m, -1)
    return (ft0 + ktd @ weights).reshape(weights.shape[0], *out_shape)


def _canonical_get(get) -> tuple[tuple[str, ...], bool]:
    single = isinstance(get, str)
    gets = (get,) if single else tuple(get)
    for g in gets:
        if g not in ("nngp", "ntk"):
            raise ValueError(f"get must be 'nngp', 'ntk' or a tuple of them, got {g!r}")
    return gets, single


def gradient_descent_mse_ensemble(
    net, x_train, y_train, learning_rate: float = 1.0, diag_reg: float = 0.0
) -> Callable:
    """Mean (and covariance) of an infinite ensemble of infinitely wide networks trained on MSE.

    ``net`` is a widelimits layer (its kernels come from ``net.kernel``); training kernels and
    their eigendecompositions are computed once and reused. Returns

        predict_fn(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False, discrete=False)

    ``get="ntk"``: all layers trained (dynamics by Theta, initial outputs f_0 ~ GP(0, K));
    ``get="nngp"``: only the readout trained (K in place of Theta). With A_t as in the module
    docstring (regularized kernels K_reg, Theta_reg on the training set),

        mean  = Theta(x, X) A_t Y
        cov   = K(x, x') + Theta(x, X) A_t K_reg A_t Theta(X, x')
                - [Theta(x, X) A_t K(X, x') + Theta(x', X) A_t K(X, x)]

    so t = inf reproduces `gp_inference` exactly. ``x_test=None`` predicts on ``x_train``.
    Returns, for a string ``get``, the mean (shape ([T,] M, C)) or a `Gaussian` (mean,
    covariance of shape ([T,] M, M), shared by all outputs) when ``compute_cov``; for a tuple
    ``get``, a dict from each entry to that.
    """
    k_dd = net.kernel(x_train, None, get=("nngp", "ntk"))
    kern = {
        g: check_kernel(getattr(k_dd, g), f"k_train_train.{g}").detach() for g in ("nngp", "ntk")
    }
    ref = kern["nngp"]
    y, y_shape = _as_2d_targets(y_train, ref)
    if y.shape[0] != ref.shape[0]:
        raise ValueError(f"y_train has {y.shape[0]} points but x_train has {ref.shape[0]}")
    eta = float(learning_rate) / y.numel()
    reg = {g: add_diagonal_regularizer(kern[g], diag_reg) for g in kern}
    eigs: dict[str, _Eigen] = {}

    def eigen(g: str) -> _Eigen:
        if g not in eigs:
            eigs[g] = _Eigen(reg[g], eta)
        return eigs[g]

    def predict_fn(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False, discrete=False):
        gets, single = _canonical_get(get)
        ts, scalar = _times(t, ref)
        if x_test is None:
            k_td, k_tt = {g: kern[g] for g in kern}, kern["nngp"]
        else:
            kt = net.kernel(x_test, x_train, get=("nngp", "ntk"))
            k_td = {g: _to_tensor(getattr(kt, g), ref).detach() for g in ("nngp", "ntk")}
            if compute_cov:
                k_tt = _to_tensor(net.kernel(x_test, None, get="nngp"), ref).detach()
        out = {}
        for g in gets:
            eig = eigen(g)
            _, coef = eig.decay_and_coef(ts, discrete)
            theta_td = k_td[g]
            mean = theta_td @ eig.apply(coef, y)  # (T, M, C)
            mean = mean.reshape(len(ts), theta_td.shape[0], *y_shape[1:])
            if not compute_cov:
                out[g] = mean[0] if scalar else mean
                continue
            # B_t = Theta(x, X) A_t, shape (T, M, N).
            bt = torch.einsum("mn,tn,kn->tmk", theta_td @ eig.evecs, coef, eig.evecs)
            cross = bt @ k_td["nngp"].T
            cov = k_tt + bt @ reg["nngp"] @ bt.transpose(-1, -2) - cross - cross.transpose(-1, -2)
            out[g] = Gaussian(mean[0], cov[0]) if scalar else Gaussian(mean, cov)
        return out[gets[0]] if single else out

    return predict_fn
