"""Validation shared by every entry point where targets, kernels or step sizes come in.

One mechanism for the predictors (`gradient_descent_mse*`, `gp_inference`, `gradient_descent`),
the solvers, `widelimits.sklearn` and `widelimits.scale`, so that the same bad input gives the
same error everywhere, naming the argument:

- targets: an array with one row per training point, finite (the first bad row is named);
- learning rates: finite and > 0;
- spectra: a training kernel must be positive semi-definite up to rounding. With eigenvalues
  lambda_0 <= ... <= lambda_{N-1} of the matrix actually used (K + diag_reg * mean(diag K) * I),
  it is rejected when lambda_0 < -tol * max_i |lambda_i|, tol = `psd_tolerance` (1e-6 in
  float64, 1e-3 in float32; see there);
- solves of numerically singular systems whose solution does not reproduce the right-hand side
  (`check_solution`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "UnstableDynamicsWarning",
    "as_targets",
    "check_finite",
    "check_learning_rate",
    "check_solution",
    "check_spectrum",
    "first_nonfinite_row",
    "not_pd_error",
    "psd_tolerance",
]

FIX = "increase diag_reg (e.g. diag_reg=1e-6 or larger)"


class UnstableDynamicsWarning(RuntimeWarning):
    """Discrete gradient descent above its stable learning rate: the outputs diverge."""


def first_nonfinite_row(a) -> int | None:
    """Index of the first row (leading axis) of ``a`` holding a NaN or inf, or None."""
    if isinstance(a, Tensor):
        bad = ~torch.isfinite(a.detach())
        if a.ndim == 0:
            return 0 if bool(bad) else None
        rows = bad.reshape(a.shape[0], -1).any(1)
        return int(rows.nonzero()[0, 0]) if bool(rows.any()) else None
    a = np.asarray(a)
    if a.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(a)
    if a.ndim == 0:
        return 0 if bool(bad) else None
    rows = bad.reshape(a.shape[0], -1).any(1)
    return int(np.argmax(rows)) if rows.any() else None


def check_finite(a, name: str) -> None:
    """ValueError naming ``name`` and its first row with a NaN or inf, if there is one."""
    if not isinstance(a, Tensor):
        a = np.asarray(a)
    row = first_nonfinite_row(a)
    if row is not None:
        value = (a[row] if a.ndim else a).reshape(-1)
        value = value[~(torch.isfinite(value) if isinstance(value, Tensor) else np.isfinite(value))]
        raise ValueError(
            f"{name} contains NaN or inf (first at row {row}: {float(value[0])}); it must be "
            "finite: drop or impute that row"
        )


def as_targets(
    y,
    like: Tensor | None,
    name: str = "y_train",
    n: int | None = None,
    kernel: str = "k_train_train",
) -> tuple[Tensor, tuple[int, ...]]:
    """Targets as an (N, C) floating tensor (like ``like``) and their original shape.

    ``y`` has shape (N,) or (N, ...) with N = ``n`` (the kernel's size, when given). Raises a
    ValueError naming ``name`` for None, non-numeric arrays, scalars, a wrong N and NaN/inf.
    """
    if y is None:
        raise ValueError(f"{name} is None: pass the targets, an array of shape (N,) or (N, C)")
    if not isinstance(y, Tensor):
        arr = np.asarray(y)
        if arr.dtype.kind not in "biuf":
            raise ValueError(
                f"{name} must be a numeric array of shape (N,) or (N, C), got dtype {arr.dtype}"
                + (": encode class labels as one-hot rows first" if arr.dtype.kind in "OUS" else "")
            )
        y = torch.as_tensor(arr)
    elif y.is_complex():
        raise ValueError(f"{name} must be real, got dtype {y.dtype}")
    if like is not None:
        y = y.to(dtype=like.dtype, device=like.device)
    elif not y.is_floating_point():
        y = y.to(torch.get_default_dtype())
    if y.ndim == 0:
        raise ValueError(
            f"{name} is a scalar: it must have one row per training point, shape (N,) or (N, C)"
            + (f" with N = {n}" if n is not None else "")
        )
    if n is not None and y.shape[0] != n:
        raise ValueError(
            f"{name} has {y.shape[0]} rows but {kernel} is {n} x {n}: one target row per "
            "training point"
        )
    check_finite(y, name)
    return y.reshape(y.shape[0], -1), tuple(y.shape)


def check_learning_rate(learning_rate, name: str = "learning_rate") -> float:
    """``learning_rate`` as a float, or a ValueError unless it is a finite number > 0."""
    arrays = (Tensor, np.ndarray)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (numbers.Real, *arrays)):
        raise ValueError(f"{name} must be a finite number > 0, got {learning_rate!r}")
    if isinstance(learning_rate, arrays):
        size = learning_rate.numel() if isinstance(learning_rate, Tensor) else learning_rate.size
        if size != 1 or learning_rate.dtype in (torch.bool, np.bool_):
            raise ValueError(
                f"{name} must be a single finite number > 0, got an array of shape "
                f"{tuple(learning_rate.shape)} and dtype {learning_rate.dtype}"
            )
    lr = float(learning_rate)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {lr}")
    return lr


def psd_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for negative eigenvalues of a computed PSD kernel.

    A kernel computed in floating point carries relative errors of order delta per entry
    (self-pair values computed by different routes differ by ~3e-9 in float64 and up to ~1e-3
    in float32 for deep networks), and a backward-stable eigensolver adds ~N eps ||K||. So a
    PSD kernel can show lambda_min ~ -delta * lambda_max, never much more: 1e-6 in float64
    leaves a factor 300 above the float64 delta, and max(1e-6, 1e4 eps) = 1.2e-3 in float32
    sits at its worst observed delta. Anything more negative is not rounding.
    """
    return max(1e-6, 1e4 * torch.finfo(dtype).eps)


def check_spectrum(evals: Tensor, name: str, diag_reg: float = 0.0, mean_diag: float = 0.0):
    """ValueError if ascending ``evals`` (of K + diag_reg * mean_diag * I) show K is not PSD.

    Names the offending eigenvalue (index in ascending order and value) and the ``diag_reg``
    that would lift it to zero when the kernel's diagonal is positive.
    """
    if evals.numel() == 0:
        return
    lam_min, scale = float(evals[0]), float(evals.abs().max())
    tol = psd_tolerance(evals.dtype)
    if lam_min >= -tol * scale:
        return
    raise ValueError(_spectrum_message(name, evals, diag_reg, mean_diag))


def _spectrum_message(name: str, evals: Tensor, diag_reg: float, mean_diag: float) -> str:
    lam_min, lam_max = float(evals[0]), float(evals[-1])
    n_neg = int((evals < -psd_tolerance(evals.dtype) * float(evals.abs().max())).sum())
    msg = (
        f"{name} is not positive semi-definite: eigenvalue 0 of {evals.numel()} (ascending) is "
        f"{lam_min:.6g} against a largest eigenvalue {lam_max:.6g} ({n_neg} below -"
        f"{psd_tolerance(evals.dtype):.0e} x max |eigenvalue|, the rounding tolerance in "
        f"{evals.dtype})"
    )
    if diag_reg:
        msg += f" with diag_reg={diag_reg}"
    if mean_diag > 0:
        need = diag_reg - lam_min / mean_diag
        msg += (
            f"; a kernel must be PSD: check how it was computed, or if the negative part is "
            f"noise pass diag_reg > {need:.3g} (diag_reg adds diag_reg * mean(diag K) = "
            f"diag_reg * {mean_diag:.3g} to every eigenvalue)"
        )
    else:
        msg += "; its mean diagonal is not positive either: it is not a kernel matrix"
    return msg


def not_pd_error(k_reg: Tensor, name: str, diag_reg: float) -> ValueError:
    """The error for a failed Cholesky factorization of ``k_reg``, naming its lowest eigenvalue.

    Only called on failure, so the O(N^3) eigenvalue computation is paid on the error path only.
    """
    evals = torch.linalg.eigvalsh(k_reg.to(torch.float64))
    n = k_reg.shape[0]
    mean_diag = float(torch.diagonal(k_reg).mean()) if n else 0.0
    shift = diag_reg / (1.0 + diag_reg) * mean_diag if diag_reg else 0.0
    mean_k = mean_diag - shift  # mean(diag K) of the unregularized kernel
    if float(evals[0]) < -psd_tolerance(k_reg.dtype) * float(evals.abs().max()):
        return ValueError(_spectrum_message(name, evals, diag_reg, mean_k))
    return ValueError(
        f"Cholesky factorization of {name} (+ diag_reg={diag_reg} * mean diagonal) failed: it is "
        f"singular to working precision (lowest eigenvalue {float(evals[0]):.3g}, largest "
        f"{float(evals[-1]):.3g}, in {k_reg.dtype}; e.g. duplicate training points); {FIX}"
    )


def check_solution(
    matmul: Callable[[Tensor], Tensor],
    x: Tensor,
    b: Tensor,
    cond: float,
    threshold: float,
    name: str,
    bname: str,
) -> None:
    """Refuse a solve of a numerically singular system that does not reproduce its right side.

    ``matmul(v)`` is ``K_reg @ v`` (called only past the threshold).

    A system is numerically singular when its condition number (estimate ``cond``) exceeds
    ``threshold`` = 1 / (100 eps): its smallest eigenvalues are then rounding noise. If also the
    solution fails to satisfy it, max_i |(K_reg x - b)_i| > sqrt(eps) max_i |b_i|, then ``b``
    has a component in the numerical null space (e.g. duplicate training points with different
    targets), no solution exists, and ``x`` is noise of size ~1 / eps. Well-posed systems pass
    for free (the residual is computed only past the threshold); a singular but consistent
    system (duplicates with equal targets) passes with the usual ill-conditioning warning.
    """
    if not cond > threshold or b.numel() == 0:
        return
    r = matmul(x.reshape(b.shape[0], -1)) - b.reshape(b.shape[0], -1)
    scale = float(b.abs().max())
    res = float(r.abs().max()) / max(scale, torch.finfo(b.dtype).tiny)
    if not math.isfinite(res) or res > math.sqrt(torch.finfo(b.dtype).eps):
        raise ValueError(
            f"{name} is singular to working precision (condition number >= {cond:.3g}) and "
            f"{bname} is not in its range: no solution fits (relative residual {res:.3g}; e.g. "
            f"duplicate training points with different targets); {FIX}"
        )
