r"""Closed-form mean-squared-error training dynamics of infinitely wide networks.

Conventions (those of neural-tangents): loss :math:`\lVert f(X) - Y \rVert^2 / (2 |Y|)` and
:math:`\eta' = \eta / |Y|` (:math:`\eta` = ``learning_rate``, :math:`|Y|` = ``Y.size``).  With
the training NTK :math:`\Theta = \Theta(X, X)`, regularized by ``diag_reg`` as in
`widelimits.predict`, and its eigendecomposition :math:`\Theta = V \operatorname{diag}(\lambda_i)
V^\top`, computed once:

- gradient flow:

  .. math::

      f_t(X) &= Y + e^{-\eta' \Theta t} (f_0(X) - Y), \qquad
      f_t(x) = f_0(x) + \Theta(x, X) A_t (Y - f_0(X)), \\
      A_t &= \Theta^{-1} (I - e^{-\eta' \Theta t})
          = V \operatorname{diag}\left((1 - e^{-\eta' \lambda_i t}) / \lambda_i\right) V^\top;

- gradient descent (t counts steps): :math:`e^{-\eta' \Theta t}` becomes
  :math:`(I - \eta' \Theta)^t`, stable iff :math:`\eta' < 2 / \lambda_\max`, i.e.
  ``learning_rate`` < `max_learning_rate` :math:`= 2 |Y| / \lambda_\max`.  Above it the outputs
  grow like :math:`|1 - \eta' \lambda_\max|^t`: an `UnstableDynamicsWarning` names the bound, and
  a ValueError is raised instead when the outputs overflow (or for :math:`t = \infty`);
- :math:`t = \infty`: :math:`A_\infty = \Theta^{-1}` (kernel regression).

Infinite ensemble (:math:`f_0 \sim \mathcal{GP}(0, K)`): mean
:math:`\mu_t(x) = \Theta(x, X) A_t Y` and covariance

.. math::

    \Sigma_t(x, x') = K(x, x') + \Theta(x, X) A_t K(X, X) A_t \Theta(X, x')
        - \left[\Theta(x, X) A_t K(X, x') + \Theta(x', X) A_t K(X, x)\right],

with the *unregularized* :math:`K(X, X)` in the middle term (it is the covariance of
:math:`f_0(X)`); ``diag_reg`` enters only the matrix that is inverted (:math:`A_t`), as in
neural-tangents.  Training only the readout ("nngp") puts :math:`K` in place of :math:`\Theta`,
and there (as in neural-tangents) the middle term is :math:`K_\text{reg}`, which makes the
covariance :math:`K(x, x') - K(x, X)\, V \operatorname{diag}(
(1 - e^{-2 \eta' \lambda_i t}) / \lambda_i) V^\top K(X, x')`, the GP posterior at
:math:`t = \infty`.

The training kernel must be PSD: the eigendecomposition is checked for eigenvalues below
:math:`-\mathrm{tol} \cdot \max_i |\lambda_i|` (tol from
`widelimits.predict._checks.psd_tolerance`), named in the error.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import (
    UnstableDynamicsWarning,
    as_targets,
    check_finite,
    check_learning_rate,
    check_solution,
    check_spectrum,
)
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
    r"""Largest stable gradient-descent learning rate, :math:`2\, |y| / \lambda_\max(\Theta)`.

    With :math:`\eta' = \eta / |y|` (:math:`\eta` = ``learning_rate``, :math:`|y|` = ``y.size``),
    GD is stable iff :math:`\eta' < 2 / \lambda_\max` (neural-tangents convention); the
    regularized kernel is used when ``diag_reg > 0``. A kernel that is not PSD (e.g. negative
    definite) raises a ValueError naming its lowest eigenvalue; the zero kernel (no dynamics at
    all) gives inf.
    """
    if (
        isinstance(y_train_size, bool)
        or not isinstance(y_train_size, numbers.Integral)
        or y_train_size < 1
    ):
        raise ValueError(f"y_train_size must be a positive integer (y.size), got {y_train_size!r}")
    k0 = check_kernel(k_train_train, "k_train_train")
    k = add_diagonal_regularizer(k0, diag_reg)
    evals = torch.linalg.eigvalsh(k)
    mean_diag = float(torch.diagonal(k0).mean()) if k0.numel() else 0.0
    check_spectrum(evals, "k_train_train", float(diag_reg), mean_diag)
    lam_max = float(evals.max()) if evals.numel() else 0.0
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
    """Eigendecomposition of a (regularized) training kernel, made once and reused.

    ``k`` is the unregularized kernel (N, N), ``eta`` = learning_rate / y.size; the
    decomposition is checked for a PSD spectrum (free: the eigenvalues are at hand).
    """

    def __init__(self, k: Tensor, eta: float, diag_reg: float, name: str, y_size: int) -> None:
        self.k, self.diag_reg, self.name = k, float(diag_reg), name
        self.mean_diag = float(torch.diagonal(k).mean()) if k.numel() else 0.0
        self.evals, self.evecs = torch.linalg.eigh(add_diagonal_regularizer(k, diag_reg))
        check_spectrum(self.evals, name, self.diag_reg, self.mean_diag)
        self.eta = eta
        self.y_size = y_size
        self.warned = False
        self.cond = 1.0
        self.unstable = False

    def stable_bound(self) -> str:
        """The stable learning rate 2 * y.size / lambda_max, in words."""
        lam_max = float(self.evals[-1])
        return (
            f"learning_rate={self.eta * self.y_size:.6g} is above the stable bound "
            f"max_learning_rate = 2 * y.size / lambda_max = 2 * {self.y_size} / {lam_max:.6g} "
            f"= {2 * self.y_size / lam_max:.6g} for discrete gradient descent"
        )

    def check_finite(self, out: Tensor, what: str) -> Tensor:
        """``out``, or a ValueError if it overflowed (naming the learning rate if unstable)."""
        if bool(torch.isfinite(out).all()):
            return out
        if self.unstable:
            raise ValueError(
                f"{self.stable_bound()}: the {what} overflow (NaN or inf after these steps); "
                "lower learning_rate below the bound"
            )
        raise ValueError(f"the {what} overflowed (NaN or inf); {_FIX}, or use float64")

    def check_inf(self, ts: Tensor, weights: Tensor, b: Tensor, bname: str) -> None:
        """At t = inf, refuse weights that do not solve K_reg w = b for a singular K_reg."""
        inf = torch.isinf(ts)
        if not bool(inf.any()):
            return
        i = int(inf.nonzero()[0, 0])
        shift = self.diag_reg * self.mean_diag

        def matmul(v: Tensor) -> Tensor:
            return self.k @ v + shift * v

        check_solution(matmul, weights[i], b, self.cond, _cond_threshold(b.dtype), self.name, bname)

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
                    "gradient descent diverges or does not converge at this learning rate: "
                    f"{self.stable_bound()}; cannot take t=inf: lower learning_rate below the "
                    f"bound (or, for a singular kernel, {_FIX})"
                )
            self.unstable = float(eta * self.evals[-1]) > 2.0 and bool((t > 0).any())
            pos = base > 0
            logb = torch.log1p(-eta * lam).where(pos, torch.zeros_like(lam))
            d = torch.where(pos, torch.exp(t * logb), torch.pow(base, t))
            d = torch.where(inf_t, torch.zeros_like(d), d)
            one_minus = torch.where(pos & ~inf_t, -torch.expm1(t * logb), 1.0 - d)
        else:
            self.unstable = False
            d = torch.exp(-eta * lam * t)
            one_minus = -torch.expm1(-eta * lam * t)
        small = lam.abs() <= torch.finfo(lam.dtype).tiny
        coef = torch.where(
            small, eta * t, one_minus / torch.where(small, torch.ones_like(lam), lam)
        )
        if self.unstable:
            if not (bool(torch.isfinite(d).all()) and bool(torch.isfinite(coef).all())):
                raise ValueError(
                    f"{self.stable_bound()}: the outputs overflow (|1 - eta' lambda_max|^t is "
                    "not representable after these steps); lower learning_rate below the bound"
                )
            warnings.warn(
                f"{self.stable_bound()}: the outputs diverge (they grow like "
                f"|1 - eta' lambda_max|^t = {float((1 - eta * self.evals[-1]).abs()):.4g}^t)",
                UnstableDynamicsWarning,
                stacklevel=3,
            )
        if bool(inf_t.any()):
            if bool((lam <= 0).any()):
                raise ValueError(f"the training kernel is singular, so t=inf is undefined; {_FIX}")
            cond = float(lam.max() / lam.min())
            self.cond = cond
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


def initial_outputs(f0, shape: tuple[int, ...], like: Tensor, name: str) -> Tensor:
    """Initial outputs ``f0`` (a number or an array) broadcast to ``shape``, checked finite."""
    f = _to_tensor(f0, like)
    try:
        f = torch.broadcast_to(f, shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(f.shape)} does not broadcast to the outputs' shape {shape}"
        ) from None
    check_finite(f, name)
    return f


def gradient_descent_mse(
    k_train_train, y_train, learning_rate: float = 1.0, diag_reg: float = 0.0
) -> Callable:
    r"""Predictor of the outputs of a network trained with MSE loss in the linearized regime.

    ``k_train_train`` is the (N, N) NTK :math:`\Theta(X, X)` (or the NNGP for readout-only
    training);
    ``y_train`` has shape (N,) or (N, C). The eigendecomposition of the regularized kernel is
    computed once, here. Returns::

        predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None, discrete=False)

    where ``t`` is None/inf (infinite time), a scalar or a 1-D array of times (outputs then get
    a leading time axis), ``discrete=True`` makes t count gradient-descent steps, and
    ``k_test_train`` is :math:`\Theta(x_\text{test}, X)` of shape (M, N). It returns fx_train_t,
    or (fx_train_t, fx_test_t) when ``k_test_train`` is given; ``fx_test_0=None`` means 0. With
    :math:`\eta' = \eta / |Y|` and :math:`\Theta = \Theta(X, X)` (regularized):

    .. math::

        f_t(X) &= Y + e^{-\eta' \Theta t} (f_0(X) - Y), \\
        f_t(x) &= f_0(x) + \Theta(x, X)\, \Theta^{-1} (I - e^{-\eta' \Theta t})\, (Y - f_0(X)),

    with :math:`e^{-\eta' \Theta t}` replaced by :math:`(I - \eta' \Theta)^t` for gradient
    descent.
    """
    k = check_kernel(k_train_train, "k_train_train")
    y, y_shape = as_targets(y_train, k, "y_train", k.shape[0])
    eta = check_learning_rate(learning_rate) / y.numel()
    eig = _Eigen(k, eta, diag_reg, "k_train_train", y.numel())

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None, discrete=False):
        ts, scalar = _times(t, k)
        f0 = initial_outputs(fx_train_0, y_shape, k, "fx_train_0").reshape(y.shape)
        d, coef = eig.decay_and_coef(ts, discrete)
        fx_train = eig.check_finite(y + eig.apply(d, f0 - y), "training outputs")
        fx_train = fx_train.reshape(len(ts), *y_shape)
        if scalar:
            fx_train = fx_train[0]
        if k_test_train is None:
            return fx_train
        weights = eig.apply(coef, y - f0)
        eig.check_inf(ts, weights, y - f0, "y_train - fx_train_0")
        fx_test = outputs_on_test(k, k_test_train, fx_test_0, y_shape, weights)
        fx_test = eig.check_finite(fx_test, "test outputs")
        return fx_train, fx_test[0] if scalar else fx_test

    return predict_fn


def outputs_on_test(k: Tensor, k_test_train, fx_test_0, y_shape: tuple, weights: Tensor) -> Tensor:
    """f_test(t) = f_test(0) + Theta(test, train) w(t) for train-side weights w of shape
    (T, N, C): the form every function-space predictor takes on test points."""
    ktd = check_test_train(k_test_train, k)
    m = ktd.shape[0]
    out_shape = (m, *y_shape[1:])
    ft0 = 0.0 if fx_test_0 is None else fx_test_0
    ft0 = initial_outputs(ft0, out_shape, k, "fx_test_0").reshape(m, -1)
    return (ft0 + ktd @ weights).reshape(weights.shape[0], *out_shape)


def check_test_train(k_test_train, k: Tensor, name: str = "k_test_train") -> Tensor:
    """``k_test_train`` as a finite (M, N) tensor like the (N, N) training kernel ``k``."""
    if k_test_train is None:
        raise ValueError(f"{name} is None: pass the (M, {k.shape[0]}) test-train kernel")
    ktd = _to_tensor(k_test_train, k)
    if ktd.ndim != 2 or ktd.shape[1] != k.shape[0]:
        raise ValueError(
            f"{name} must have shape (M, {k.shape[0]}) (test points x training points), got "
            f"{tuple(ktd.shape)}"
        )
    check_finite(ktd, name)
    return ktd


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
    r"""Mean (and covariance) of an infinite ensemble of infinitely wide networks trained on MSE.

    ``net`` is a widelimits layer (its kernels come from ``net.kernel``); training kernels and
    their eigendecompositions are computed once and reused. Returns::

        predict_fn(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False, discrete=False)

    ``get="ntk"``: all layers trained (dynamics by :math:`\Theta`, initial outputs
    :math:`f_0 \sim \mathcal{GP}(0, K)`); ``get="nngp"``: only the readout trained (:math:`K` in
    place of :math:`\Theta`). With
    :math:`A_t = \Theta_\text{reg}^{-1} (I - e^{-\eta' \Theta_\text{reg} t})` (resp.
    :math:`K_\text{reg}`, on the training set; :math:`(I - \eta' \Theta_\text{reg})^t` for
    gradient descent), the moments are

    .. math::

        \mu_t(x) &= \Theta(x, X) A_t Y, \\
        \Sigma_t(x, x') &= K(x, x') + \Theta(x, X) A_t K(X, X) A_t \Theta(X, x') \\
        &\quad - \left[\Theta(x, X) A_t K(X, x') + \Theta(x', X) A_t K(X, x)\right]

    with the unregularized :math:`K(X, X)` in the middle for "ntk" (the covariance of
    :math:`f_0(X)`; ``diag_reg`` only in :math:`A_t`) and :math:`K_\text{reg}` for "nngp", both as
    in neural-tangents; :math:`t = \infty` reproduces
    `gp_inference` exactly. ``x_test=None`` predicts on ``x_train``.
    Returns, for a string ``get``, the mean (shape ([T,] M, C)) or a `Gaussian` (mean,
    covariance of shape ([T,] M, M), shared by all outputs) when ``compute_cov``; for a tuple
    ``get``, a dict from each entry to that.
    """
    lr = check_learning_rate(learning_rate)
    k_dd = net.kernel(x_train, None, get=("nngp", "ntk"))
    kern = {
        g: check_kernel(getattr(k_dd, g), f"k_train_train.{g}").detach() for g in ("nngp", "ntk")
    }
    ref = kern["nngp"]
    y, y_shape = as_targets(y_train, ref, "y_train", ref.shape[0], "K(x_train, x_train)")
    eta = lr / y.numel()
    middle = {"nngp": add_diagonal_regularizer(kern["nngp"], diag_reg), "ntk": kern["nngp"]}
    eigs: dict[str, _Eigen] = {}

    def eigen(g: str) -> _Eigen:
        if g not in eigs:
            eigs[g] = _Eigen(kern[g], eta, diag_reg, f"k_train_train.{g}", y.numel())
        return eigs[g]

    def predict_fn(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False, discrete=False):
        gets, single = _canonical_get(get)
        ts, scalar = _times(t, ref)
        if x_test is None:
            k_td, k_tt = {g: kern[g] for g in kern}, kern["nngp"]
        else:
            kt = net.kernel(x_test, x_train, get=("nngp", "ntk"))
            k_td = {
                g: check_test_train(getattr(kt, g), ref, f"K(x_test, x_train).{g}").detach()
                for g in ("nngp", "ntk")
            }
            if compute_cov:
                k_tt = _to_tensor(net.kernel(x_test, None, get="nngp"), ref).detach()
                check_finite(k_tt, "K(x_test, x_test)")
        out = {}
        for g in gets:
            eig = eigen(g)
            _, coef = eig.decay_and_coef(ts, discrete)
            theta_td = k_td[g]
            weights = eig.apply(coef, y)
            eig.check_inf(ts, weights, y, "y_train")
            mean = eig.check_finite(theta_td @ weights, "predicted means")  # (T, M, C)
            mean = mean.reshape(len(ts), theta_td.shape[0], *y_shape[1:])
            if not compute_cov:
                out[g] = mean[0] if scalar else mean
                continue
            # B_t = Theta(x, X) A_t, shape (T, M, N).
            bt = torch.einsum("mn,tn,kn->tmk", theta_td @ eig.evecs, coef, eig.evecs)
            cross = bt @ k_td["nngp"].T
            cov = k_tt + bt @ middle[g] @ bt.transpose(-1, -2) - cross - cross.transpose(-1, -2)
            cov = eig.check_finite(cov, "predicted covariances")
            out[g] = Gaussian(mean[0], cov[0]) if scalar else Gaussian(mean, cov)
        return out[gets[0]] if single else out

    return predict_fn
