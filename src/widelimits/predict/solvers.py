"""Linear solvers for kernel systems (K + reg * I) X = B.

Regularization follows the neural-tangents convention: ``diag_reg`` is *relative*,

    K_reg = K + diag_reg * mean(diag K) * I,

so the same ``diag_reg`` means the same thing whatever the scale of the kernel.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CGInfo",
    "add_diagonal_regularizer",
    "cg_solve",
    "solve",
    "check_kernel",
    "cholesky_factor",
    "cholesky_solve",
]

_FIX = "increase diag_reg (e.g. diag_reg=1e-6 or larger)"


def _to_tensor(x, like: Tensor | None = None) -> Tensor:
    """``x`` (tensor, numpy array or number) as a floating tensor, matching ``like`` if given."""
    if like is not None:
        if not isinstance(x, Tensor):  # python floats straight to like.dtype (no float32 hop)
            return torch.as_tensor(np.asarray(x), device=like.device).to(like.dtype)
        return x.to(dtype=like.dtype, device=like.device)
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def check_kernel(k, name: str = "kernel") -> Tensor:
    """``k`` as a square, symmetric, finite floating tensor, or a clear ValueError."""
    k = _to_tensor(k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise ValueError(
            f"{name} contains NaN or inf: check the network and inputs (a kernel that overflows "
            "or a degenerate input), then recompute it"
        )
    scale = float(k.abs().max()) if k.numel() else 0.0
    tol = 1000 * torch.finfo(k.dtype).eps * max(scale, 1e-300)
    if k.numel() and float((k - k.T).abs().max()) > tol:
        raise ValueError(f"{name} is not symmetric (max |K - K^T| > {tol:.3g})")
    return k


def add_diagonal_regularizer(k: Tensor, diag_reg: float = 0.0) -> Tensor:
    """``K + diag_reg * mean(diag K) * I`` (relative regularization, as in neural-tangents)."""
    diag_reg = float(diag_reg)
    if not math.isfinite(diag_reg) or diag_reg < 0:
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg}")
    if diag_reg == 0.0 or k.shape[0] == 0:
        return k
    scale = torch.diagonal(k).mean()
    return k + diag_reg * scale * torch.eye(k.shape[0], dtype=k.dtype, device=k.device)


def _cond_threshold(dtype: torch.dtype) -> float:
    return 1.0 / (100.0 * torch.finfo(dtype).eps)


def cholesky_factor(k, diag_reg: float = 0.0, name: str = "kernel") -> Tensor:
    """Lower Cholesky factor L of ``K_reg = K + diag_reg * mean(diag K) * I`` (``L L^T = K_reg``).

    Raises a ValueError naming the fix (increase ``diag_reg``) when K_reg is not positive
    definite, and warns when its condition number (estimated as (max L_ii / min L_ii)^2, a lower
    bound) exceeds 1 / (100 eps) of the dtype.
    """
    k = add_diagonal_regularizer(check_kernel(k, name), diag_reg)
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) != 0:
        raise ValueError(
            f"Cholesky factorization of {name} (+ diag_reg={diag_reg} * mean diagonal) failed: "
            f"the matrix is not positive definite (leading minor {int(info)}); {_FIX}"
        )
    d = torch.diagonal(chol).abs()
    if d.numel():
        cond = float((d.max() / d.min()) ** 2)
        if not math.isfinite(cond) or cond > _cond_threshold(k.dtype):
            warnings.warn(
                f"{name} is ill-conditioned (condition number >= {cond:.3g} in {k.dtype}); "
                f"results may be inaccurate: {_FIX}, or use float64",
                RuntimeWarning,
                stacklevel=3,
            )
    return chol


def cholesky_solve(k, b, diag_reg: float = 0.0) -> Tensor:
    """Solve ``(K + diag_reg * mean(diag K) * I) X = B`` by Cholesky factorization.

    ``b`` has shape (N,) or (N, C); the result has the same shape. See `cholesky_factor` for
    the errors and the ill-conditioning warning.
    """
    chol = cholesky_factor(k, diag_reg)
    b = _to_tensor(b, chol)
    if b.shape[:1] != chol.shape[:1]:
        raise ValueError(f"right-hand side has {b.shape[0]} rows, kernel has {chol.shape[0]}")
    x = torch.cholesky_solve(b.reshape(b.shape[0], -1), chol)
    return x.reshape(b.shape)


@dataclass(frozen=True)
class CGInfo:
    """Outcome of `cg_solve`: the convergence report.

    ``residual`` is the final relative residual max_c ||b_c - K_reg x_c|| / ||b_c||, and
    ``residuals`` its value after each iteration (index 0: the starting point).
    """

    iterations: int
    residual: float
    converged: bool
    residuals: tuple[float, ...] = ()
    seconds: float = 0.0
    preconditioner: str = "jacobi"
    rank: int = 0

    def __str__(self) -> str:
        what = "converged" if self.converged else "did NOT converge"
        pre = self.preconditioner + (f" of rank {self.rank}" if self.rank else "")
        return (
            f"CG {what}: {self.iterations} iterations, relative residual {self.residual:.3g}, "
            f"{self.seconds:.2f} s, preconditioner {pre}"
        )


def cg_solve(
    k,
    b,
    diag_reg: float = 0.0,
    tol: float = 1e-10,
    max_iter: int | None = None,
    x0=None,
    preconditioner: str = "jacobi",
    rank: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Tensor, CGInfo]:
    """Solve ``K_reg X = B`` (K_reg = K + diag_reg * mean(diag K) * I) by preconditioned CG.

    Args:
        k: an (N, N) kernel, or any `widelimits.predict.operators.KernelOperator` (a kernel on
            disk or recomputed tile by tile: see `widelimits.scale`), read only through
            products, its diagonal and columns.
        b: right-hand sides (N,) or (N, C); each column is solved independently (batched) until
            every column has ||B - K_reg X|| <= tol * ||B||, or ``max_iter`` (default 10 N)
            iterations.
        preconditioner: ``"jacobi"`` (diag(K_reg)), ``"pivoted_cholesky"`` or ``"nystrom"``
            (rank-``rank`` approximations L L^T + s I applied by Woodbury; need diag_reg > 0), or
            ``"none"``.  See `widelimits.predict.operators`.
        rank: rank of a low-rank preconditioner (default 100).
        seed: landmark choice of the Nystrom preconditioner.
        progress: show a progress bar over iterations.

    The iterations run in float64 (products with K in the kernel's own dtype), so a float32
    kernel converges as far as its own rounding allows.  Returns ``(X, CGInfo)``, X in the
    kernel's dtype; warns if it did not converge.
    """
    import time

    from .operators import as_operator, make_preconditioner

    start = time.perf_counter()
    op = as_operator(k)
    diag_reg = float(diag_reg)
    if not math.isfinite(diag_reg) or diag_reg < 0:
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg}")
    n = op.shape[0]
    # Recurrences and preconditioner in float64 (products with K in its own dtype): a float32
    # kernel still reaches small residuals, and a low-rank Woodbury solve stays accurate.
    like = torch.empty(0, dtype=torch.float64, device=op.device)
    b = _to_tensor(b, like)
    shape = b.shape
    if shape[:1] != (n,):
        raise ValueError(f"right-hand side has {shape[0] if shape else 0} rows, kernel has {n}")
    b = b.reshape(n, -1)
    shift = diag_reg * float(op.diagonal().mean()) if n else 0.0
    apply = make_preconditioner(op, preconditioner, shift, rank, seed, dtype=like.dtype)
    max_iter = 10 * max(n, 1) if max_iter is None else int(max_iter)

    def kmul(v: Tensor) -> Tensor:
        out = op.matmul(v.to(op.dtype)).to(v.dtype)
        return out + shift * v if shift else out

    x = torch.zeros_like(b) if x0 is None else _to_tensor(x0, like).reshape(b.shape).clone()
    bnorm = torch.linalg.vector_norm(b, dim=0)
    bnorm = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    r = b - kmul(x) if x0 is not None else b.clone()
    z = r if apply is None else apply(r)
    p = z.clone()
    rz = (r * z).sum(0)
    res = float((torch.linalg.vector_norm(r, dim=0) / bnorm).max()) if b.numel() else 0.0
    history = [res]
    from tqdm.auto import tqdm

    bar = tqdm(total=max_iter, desc="conjugate gradients", disable=not progress, leave=False)
    it = 0
    while res > tol and it < max_iter:
        kp = kmul(p)
        pkp = (p * kp).sum(0)
        if bool((pkp <= 0).any()):
            raise ValueError(f"conjugate gradients met p^T K p <= 0: kernel is not PD; {_FIX}")
        alpha = rz / pkp
        x = x + alpha * p
        r = r - alpha * kp
        z = r if apply is None else apply(r)
        rz_new = (r * z).sum(0)
        beta = rz_new / torch.where(rz != 0, rz, torch.ones_like(rz))
        p = z + beta * p
        rz = rz_new
        it += 1
        res = float((torch.linalg.vector_norm(r, dim=0) / bnorm).max())
        history.append(res)
        bar.update()
        bar.set_postfix(residual=f"{res:.2e}")
    bar.close()
    converged = res <= tol
    info = CGInfo(
        iterations=it, residual=res, converged=converged, residuals=tuple(history),
        seconds=time.perf_counter() - start, preconditioner=preconditioner,
        rank=getattr(apply, "rank", 0),
    )  # fmt: skip
    if not converged:
        warnings.warn(
            f"conjugate gradients did not reach tol={tol} in {it} iterations (relative residual "
            f"{res:.3g}): raise max_iter, loosen tol, use a stronger preconditioner, or {_FIX}",
            RuntimeWarning,
            stacklevel=2,
        )
    return x.reshape(shape).to(op.dtype), info


SOLVERS = ("cholesky", "cg")


def solve(k, b, diag_reg: float = 0.0, solver: str = "cholesky", tol: float = 1e-10) -> Tensor:
    """Solve ``(K + diag_reg * mean(diag K) * I) X = B`` with the named solver.

    ``"cholesky"`` (exact, O(N^3) time and O(N^2) extra memory) or ``"cg"`` (preconditioned
    conjugate gradients to relative residual ``tol``: O(N^2) per iteration, no factorization,
    for sizes where a dense factorization is too slow or too large).
    """
    if solver == "cholesky":
        return cholesky_solve(k, b, diag_reg)
    if solver == "cg":
        return cg_solve(k, b, diag_reg, tol=tol)[0]
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
