"""Exact Gaussian-process inference with NNGP / NTK kernels.

With K_reg = K(X, X) + diag_reg * mean(diag K) * I (and likewise Theta_reg):

- ``"nngp"``: Bayesian posterior of the infinitely wide network (NNGP prior),
      mean = K(x, X) K_reg^{-1} Y,   cov = K(x, x') - K(x, X) K_reg^{-1} K(X, x');
- ``"ntk"``: as neural-tangents' ``gp_inference(get="ntk")``: the t = inf distribution of the
  infinite ensemble trained by gradient flow (Theta for the dynamics, f_0 ~ GP(0, K)),
      mean = Theta(x, X) Theta_reg^{-1} Y,
      cov  = K(x, x') + Theta(x, X) Theta_reg^{-1} K_reg Theta_reg^{-1} Theta(X, x')
             - [Theta(x, X) Theta_reg^{-1} K(X, x') + Theta(x', X) Theta_reg^{-1} K(X, x)];
- ``"ntkgp"``: the posterior of a GP whose prior covariance is the NTK (He et al. 2020),
      mean = Theta(x, X) Theta_reg^{-1} Y,
      cov  = Theta(x, x') - Theta(x, X) Theta_reg^{-1} Theta(X, x').

Kernels are passed as a `widelimits.Kernel` (anything with ``.nngp`` / ``.ntk``) or a plain
(N, N) matrix, which then serves as both the NNGP and the NTK.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .mse import Gaussian
from .solvers import _to_tensor, check_kernel, cholesky_factor

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


def gp_inference(k_train_train, y_train, diag_reg: float = 0.0) -> Callable:
    """GP posterior predictor from training kernels (see the module docstring for formulas).

    Returns ``predict_fn(get, k_test_train, k_test_test=None)``: ``get`` is "nngp", "ntk",
    "ntkgp" or a tuple of them; ``k_test_train`` is the (M, N) kernel between test and training
    points, ``k_test_test`` the (M, M) test kernel. Gives the posterior mean (shape (M, C)), or a
    `Gaussian` (mean, covariance (M, M)) when ``k_test_test`` is given; for a tuple ``get``, a
    dict from each entry to that. Cholesky factors are computed once per kernel and cached.
    """
    ref = check_kernel(_part(k_train_train, "nngp"), "k_train_train.nngp")
    y = _to_tensor(y_train, ref)
    y_shape = tuple(y.shape)
    y = y.reshape(y.shape[0], -1)
    if y.shape[0] != ref.shape[0]:
        raise ValueError(f"y_train has {y.shape[0]} points but k_train_train has {ref.shape[0]}")
    chols: dict[str, Tensor] = {}

    def chol(g: str) -> Tensor:
        if g not in chols:
            chols[g] = cholesky_factor(_part(k_train_train, g, ref), diag_reg, f"k_train_train.{g}")
        return chols[g]

    def predict_fn(get, k_test_train, k_test_test=None):
        single = isinstance(get, str)
        gets = (get,) if single else tuple(get)
        out = {}
        for g in gets:
            if g not in _GETS:
                raise ValueError(f"get must be one of {_GETS} or a tuple of them, got {g!r}")
            kind = "nngp" if g == "nngp" else "ntk"
            ktd = _part(k_test_train, kind, ref)
            if ktd.ndim != 2 or ktd.shape[1] != ref.shape[0]:
                raise ValueError(f"k_test_train must be (M, {ref.shape[0]}), got {ktd.shape}")
            lg = chol(kind)
            mean = ktd @ torch.cholesky_solve(y, lg)
            mean = mean.reshape(ktd.shape[0], *y_shape[1:])
            if k_test_test is None:
                out[g] = mean
                continue
            bt = torch.cholesky_solve(ktd.T, lg).T  # k_td K_reg^{-1}, (M, N)
            if g == "ntk":
                kn = _part(k_test_train, "nngp", ref)
                l_n = chol("nngp")
                k_reg = l_n @ l_n.T
                cross = bt @ kn.T
                ktt = _part(k_test_test, "nngp", ref)
                cov = ktt + bt @ k_reg @ bt.T - cross - cross.T
            else:
                ktt = _part(k_test_test, kind, ref)
                cov = ktt - bt @ ktd.T
            out[g] = Gaussian(mean, cov)
        return out[gets[0]] if single else out

    return predict_fn
