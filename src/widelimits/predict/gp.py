r"""Exact Gaussian-process inference with NNGP / NTK kernels.

With :math:`K_\text{reg} = K(X, X) + \lambda \operatorname{mean}(\operatorname{diag} K)\, I`
(:math:`\lambda` = ``diag_reg``; likewise :math:`\Theta_\text{reg}`):

- ``"nngp"``: Bayesian posterior of the infinitely wide network (NNGP prior), mean
  :math:`K(x, X) K_\text{reg}^{-1} Y`, covariance
  :math:`K(x, x') - K(x, X) K_\text{reg}^{-1} K(X, x')`;
- ``"ntk"``: as neural-tangents' ``gp_inference(get="ntk")``: the :math:`t = \infty` distribution
  of the infinite ensemble trained by gradient flow (:math:`\Theta` for the dynamics,
  :math:`f_0 \sim \mathcal{GP}(0, K)`), mean :math:`\Theta(x, X) \Theta_\text{reg}^{-1} Y`,
  covariance

  .. math::

      K(x, x') + \Theta(x, X) \Theta_\text{reg}^{-1} K \Theta_\text{reg}^{-1} \Theta(X, x')
      - \Theta(x, X) \Theta_\text{reg}^{-1} K(X, x') - \Theta(x', X) \Theta_\text{reg}^{-1} K(X, x),

  with the unregularized :math:`K = K(X, X)` in the middle (the covariance of :math:`f_0(X)`):
  ``diag_reg`` enters only the inverted matrix, as in neural-tangents;
- ``"ntkgp"``: the posterior of a GP whose prior covariance is the NTK (He et al. 2020), mean
  :math:`\Theta(x, X) \Theta_\text{reg}^{-1} Y`, covariance
  :math:`\Theta(x, x') - \Theta(x, X) \Theta_\text{reg}^{-1} \Theta(X, x')`.

Kernels are passed as a `widelimits.Kernel` (anything with ``.nngp`` / ``.ntk``) or a plain
(N, N) matrix, which then serves as both the NNGP and the NTK. Targets must be finite with one
row per training point; ``k_test_train`` must be (M, N) and ``k_test_test`` (M, M), finite.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import as_targets, check_finite
from .mse import Gaussian, check_test_train
from .solvers import _to_tensor, check_kernel, checked_cholesky_solve, cholesky_factor

__all__ = ["gp_inference"]

_GETS = ("nngp", "ntk", "ntkgp")


def _part(k, g: str, like: Tensor | None = None) -> Tensor:
    """The NNGP (``g="nngp"``) or NTK (``"ntk"``) part of a Kernel, or ``k`` itself if a matrix."""
    if hasattr(k, "nngp"):
        v = getattr(k, g)
        if v is None:
            raise ValueError(f"the kernel has no {g!r} part: compute it with get=(..., {g!r})")
        return _to_tensor(v, like)
    return _to_tensor(k, like)


def _test_test(k_test_test, g: str, like: Tensor, m: int) -> Tensor:
    """The ``g`` part of ``k_test_test``, checked to be a finite (M, M) matrix."""
    ktt = _part(k_test_test, g, like)
    if ktt.ndim != 2 or ktt.shape != (m, m):
        raise ValueError(
            f"k_test_test must be the ({m}, {m}) kernel of the {m} test points (k_test_train has "
            f"{m} rows), got shape {tuple(ktt.shape)}"
        )
    check_finite(ktt, "k_test_test")
    return ktt


def gp_inference(k_train_train, y_train, diag_reg: float = 0.0) -> Callable:
    r"""GP posterior predictor from training kernels.

    With :math:`K_\text{reg} = K(X, X) + \lambda\, \overline{\operatorname{diag} K}\, I`
    (:math:`\lambda` = ``diag_reg``; likewise :math:`\Theta_\text{reg}`) and :math:`K = K(X, X)`
    unregularized:

    - ``"nngp"``: the Bayesian posterior of the infinitely wide network (NNGP prior),

      .. math::

          \mu(x) &= K(x, X) K_\text{reg}^{-1} Y, \\
          \Sigma(x, x') &= K(x, x') - K(x, X) K_\text{reg}^{-1} K(X, x');

    - ``"ntk"``: as neural-tangents' ``gp_inference(get="ntk")``, the :math:`t = \infty`
      distribution of the infinite ensemble trained by gradient flow (:math:`\Theta` for the
      dynamics, :math:`f_0 \sim \mathcal{GP}(0, K)`),

      .. math::

          \mu(x) &= \Theta(x, X) \Theta_\text{reg}^{-1} Y, \\
          \Sigma(x, x') &= K(x, x') + \Theta(x, X) \Theta_\text{reg}^{-1} K
              \Theta_\text{reg}^{-1} \Theta(X, x') \\
          &\quad - \Theta(x, X) \Theta_\text{reg}^{-1} K(X, x') \\
          &\quad - \Theta(x', X) \Theta_\text{reg}^{-1} K(X, x);

    - ``"ntkgp"``: the posterior of a GP whose prior covariance is the NTK (He et al. 2020),

      .. math::

          \mu(x) &= \Theta(x, X) \Theta_\text{reg}^{-1} Y, \\
          \Sigma(x, x') &= \Theta(x, x') - \Theta(x, X) \Theta_\text{reg}^{-1} \Theta(X, x').

    Returns ``predict_fn(get, k_test_train, k_test_test=None)``: ``get`` is "nngp", "ntk",
    "ntkgp" or a tuple of them; ``k_test_train`` is the (M, N) kernel between test and training
    points, ``k_test_test`` the (M, M) test kernel. Gives the posterior mean (shape (M, C)), or a
    `Gaussian` (mean, covariance (M, M)) when ``k_test_test`` is given; for a tuple ``get``, a
    dict from each entry to that. Cholesky factors are computed once per kernel and cached.
    """
    ref = check_kernel(_part(k_train_train, "nngp"), "k_train_train.nngp")
    y, y_shape = as_targets(y_train, ref, "y_train", ref.shape[0])
    chols: dict[str, Tensor] = {}
    alphas: dict[str, Tensor] = {}

    def chol(g: str) -> Tensor:
        if g not in chols:
            kg = check_kernel(_part(k_train_train, g, ref), f"k_train_train.{g}")
            chols[g] = cholesky_factor(kg, diag_reg, f"k_train_train.{g}")
            alphas[g] = checked_cholesky_solve(
                chols[g], kg, diag_reg, y, f"k_train_train.{g}", "y_train"
            )
        return chols[g]

    def predict_fn(get, k_test_train, k_test_test=None):
        single = isinstance(get, str)
        gets = (get,) if single else tuple(get)
        out = {}
        for g in gets:
            if g not in _GETS:
                raise ValueError(f"get must be one of {_GETS} or a tuple of them, got {g!r}")
            kind = "nngp" if g == "nngp" else "ntk"
            ktd = check_test_train(_part(k_test_train, kind, ref), ref, f"k_test_train.{kind}")
            lg = chol(kind)
            mean = ktd @ alphas[kind]
            mean = mean.reshape(ktd.shape[0], *y_shape[1:])
            if k_test_test is None:
                out[g] = mean
                continue
            bt = torch.cholesky_solve(ktd.T, lg).T  # k_td K_reg^{-1}, (M, N)
            if g == "ntk":
                kn = check_test_train(_part(k_test_train, "nngp", ref), ref, "k_test_train.nngp")
                k_dd = check_kernel(_part(k_train_train, "nngp", ref), "k_train_train.nngp")
                cross = bt @ kn.T
                ktt = _test_test(k_test_test, "nngp", ref, ktd.shape[0])
                cov = ktt + bt @ k_dd @ bt.T - cross - cross.T
            else:
                ktt = _test_test(k_test_test, kind, ref, ktd.shape[0])
                cov = ktt - bt @ ktd.T
            out[g] = Gaussian(mean, cov)
        return out[gets[0]] if single else out

    return predict_fn
