"""Linear solvers for kernel systems (K + reg * I) X = B.

Regularization follows the neural-tangents convention: ``diag_reg`` is *relative*,

    K_reg = K + diag_reg * mean(diag K) * I,

so the same ``diag_reg`` means the same thing whatever the scale of the kernel.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._progress import progress_bar
from ._checks import FIX, as_targets, check_finite, check_solution, not_pd_error

__all__ = [
    "CGInfo",
    "add_diagonal_regularizer",
    "cg_solve",
    "solve",
    "check_kernel",
    "cholesky_factor",
    "cholesky_solve",
]

_FIX = FIX


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
    if k.numel():
        asym = (k - k.T).abs()
        worst = int(asym.argmax())
        if float(asym.reshape(-1)[worst]) > tol:
            i, j = divmod(worst, k.shape[0])
            raise ValueError(
                f"{name} is not symmetric: |K[{i}, {j}] - K[{j}, {i}]| = "
                f"{float(asym[i, j]):.3g} > {tol:.3g} (1000 eps x max |K|): a kernel matrix "
                "K(X, X) is symmetric; pass the train-train kernel, or (K + K.T) / 2 if the "
                "asymmetry is rounding"
            )
    return k


def add_diagonal_regularizer(k: Tensor, diag_reg: float = 0.0) -> Tensor:
    r""":math:`K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I` with :math:`\lambda` =
    ``diag_reg`` (as in neural-tangents)."""
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
    r"""Lower Cholesky factor :math:`L` of the regularized kernel: :math:`L L^\top = K_\text{reg}`.

    :math:`K_\text{reg} = K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I`
    (:math:`\lambda` = ``diag_reg``). Raises a ValueError naming the fix (increase ``diag_reg``)
    when :math:`K_\text{reg}` is not positive definite (naming its lowest eigenvalue, computed on
    this error path only), and warns when its condition number (estimated as
    :math:`(\max_i L_{ii} / \min_i L_{ii})^2`, a lower bound) exceeds :math:`1 / (100 \epsilon)` of
    the dtype.
    """
    k = add_diagonal_regularizer(check_kernel(k, name), diag_reg)
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) != 0:
        raise not_pd_error(k, name, float(diag_reg))
    if chol.numel():
        cond = cholesky_condition(chol)
        if not math.isfinite(cond) or cond > _cond_threshold(k.dtype):
            warnings.warn(
                f"{name} is ill-conditioned (condition number >= {cond:.3g} in {k.dtype}); "
                f"results may be inaccurate: {_FIX}, or use float64",
                RuntimeWarning,
                stacklevel=3,
            )
    return chol


def cholesky_condition(chol: Tensor) -> float:
    """Lower bound (max L_ii / min L_ii)^2 on the condition number of L L^T."""
    d = torch.diagonal(chol).abs()
    return float((d.max() / d.min()) ** 2) if d.numel() else 1.0


def checked_cholesky_solve(
    chol: Tensor, k: Tensor, diag_reg: float, b: Tensor, name: str = "kernel", bname: str = "b"
) -> Tensor:
    """``K_reg^{-1} b`` from the Cholesky factor of K_reg, refusing a singular inconsistent system.

    ``k`` is the unregularized K. See `widelimits.predict._checks.check_solution`: past the
    ill-conditioning threshold the residual is checked (one extra product), below it nothing
    extra is done.
    """
    x = torch.cholesky_solve(b, chol)
    cond = cholesky_condition(chol)
    shift = float(diag_reg) * float(torch.diagonal(k).mean()) if k.numel() else 0.0

    def matmul(v: Tensor) -> Tensor:
        return k @ v + shift * v

    check_solution(matmul, x, b, cond, _cond_threshold(chol.dtype), name, bname)
    return x


def cholesky_solve(k, b, diag_reg: float = 0.0, name: str = "kernel", bname: str = "b") -> Tensor:
    r"""Solve :math:`K_\text{reg} X = B` by Cholesky factorization.

    :math:`K_\text{reg} = K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I`
    (:math:`\lambda` = ``diag_reg``). ``b`` has shape (N,) or (N, C) and must be finite; the result
    has the same shape. See `cholesky_factor` for the errors and the ill-conditioning warning; a
    numerically singular system that ``b`` does not fit (e.g. duplicate points with different
    targets) raises a ValueError (`checked_cholesky_solve`).
    """
    k = check_kernel(k, name)
    b2, shape = as_targets(b, k, bname, k.shape[0], name)
    chol = cholesky_factor(k, diag_reg, name)
    x = checked_cholesky_solve(chol, k, diag_reg, b2, name, bname)
    return x.reshape(shape)


@dataclass(frozen=True)
class CGInfo:
    r"""Outcome of `cg_solve`: the convergence report.

    ``residual`` is the final relative residual
    :math:`\max_c \lVert b_c - K_\text{reg} x_c \rVert / \lVert b_c \rVert`, and
    ``residuals`` its value after each iteration (index 0: the starting point).  ``seconds`` is
    the whole solve, ``setup_seconds`` its part before the first iteration (the preconditioner).
    """

    iterations: int
    residual: float
    converged: bool
    residuals: tuple[float, ...] = ()
    seconds: float = 0.0
    preconditioner: str = "jacobi"
    rank: int = 0
    setup_seconds: float = 0.0

    def __str__(self) -> str:
        what = "converged" if self.converged else "did NOT converge"
        pre = self.preconditioner + (f" of rank {self.rank}" if self.rank else "")
        per = (self.seconds - self.setup_seconds) / max(self.iterations, 1)
        return (
            f"CG {what}: {self.iterations} iterations, relative residual {self.residual:.3g}, "
            f"{self.seconds:.2f} s ({self.setup_seconds:.2f} s setup, {per:.3g} s per "
            f"iteration), preconditioner {pre}"
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
    r"""Solve :math:`K_\text{reg} X = B` by preconditioned conjugate gradients.

    :math:`K_\text{reg} = K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I`
    (:math:`\lambda` = ``diag_reg``).

    Args:
        k: an (N, N) kernel, or any `widelimits.predict.operators.KernelOperator` (a kernel on
            disk or recomputed tile by tile: see `widelimits.scale`), read only through
            products, its diagonal and columns.
        b: right-hand sides (N,) or (N, C); each column is solved independently (batched CG:
            its own step sizes, one product ``K P`` with all C columns per iteration, so one
            pass over the kernel serves every column) until every column has
            :math:`\lVert B - K_\text{reg} X \rVert \le \mathrm{tol} \cdot \lVert B \rVert`, or
            ``max_iter`` (default 10 N) iterations.  A column
            solved exactly (e.g. a zero column) stays put while the others go on.
        preconditioner: ``"jacobi"`` (:math:`\operatorname{diag} K_\text{reg}`),
            ``"pivoted_cholesky"`` or ``"nystrom"`` (rank-``rank`` approximations
            :math:`L L^\top + s I` applied by Woodbury; need ``diag_reg > 0``), or ``"none"``. See
            `widelimits.predict.operators`.
        rank: rank of a low-rank preconditioner (default 100).
        seed: landmark choice of the Nystrom preconditioner.
        progress: show a progress bar over iterations.

    The iterations run in float64 (products with K in the kernel's own dtype), so a float32
    kernel converges as far as its own rounding allows.  Returns ``(X, CGInfo)``, X in the
    kernel's dtype; warns if it did not converge.  Raises a ValueError for a non-finite ``b``
    (naming its first bad row), a non-finite kernel diagonal, a non-PD kernel met on the way
    (:math:`p^\top K p \le 0`) and non-finite iterates (a NaN or inf anywhere in the kernel): it
    never returns a NaN solution.
    """
    import time

    from .operators import as_operator, make_preconditioner

    start = time.perf_counter()
    op = as_operator(k)
    diag_reg = float(diag_reg)
    if not math.isfinite(diag_reg) or diag_reg < 0:
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg}")
    _check_cg_options(tol, max_iter, rank)
    n = op.shape[0]
    # Recurrences and preconditioner in float64 (products with K in its own dtype): a float32
    # kernel still reaches small residuals, and a low-rank Woodbury solve stays accurate.
    like = torch.empty(0, dtype=torch.float64, device=op.device)
    b, shape = as_targets(b, like, "b", n, "the kernel")
    diagonal = op.diagonal()
    if not bool(torch.isfinite(diagonal).all()):
        i = int((~torch.isfinite(diagonal)).nonzero()[0, 0])
        raise ValueError(
            f"the kernel's diagonal holds NaN or inf (first at row {i}): recompute the kernel "
            "(a damaged store, or a network that overflows)"
        )
    shift = diag_reg * float(diagonal.mean()) if n else 0.0
    apply = make_preconditioner(op, preconditioner, shift, rank, seed, dtype=like.dtype)
    max_iter = 10 * max(n, 1) if max_iter is None else max_iter

    def kmul(v: Tensor) -> Tensor:
        out = op.matmul(v.to(op.dtype)).to(v.dtype)
        return out + shift * v if shift else out

    if x0 is not None:
        check_finite(_to_tensor(x0), "x0")
    x = torch.zeros_like(b) if x0 is None else _to_tensor(x0, like).reshape(b.shape).clone()
    bnorm = torch.linalg.vector_norm(b, dim=0)
    bnorm = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    r = b - kmul(x) if x0 is not None else b.clone()
    z = r if apply is None else apply(r)
    p = z.clone()
    rz = (r * z).sum(0)
    res = float((torch.linalg.vector_norm(r, dim=0) / bnorm).max()) if b.numel() else 0.0
    history = [res]
    setup = time.perf_counter() - start
    bar = progress_bar(total=max_iter, desc="conjugate gradients", progress=progress, leave=False)
    it = 0
    while res > tol and it < max_iter:
        kp = kmul(p)
        pkp = (p * kp).sum(0)
        moving = (p != 0).any(0)  # p = 0: that column is solved exactly (its r = 0)
        if bool((moving & (pkp <= 0)).any()):
            raise ValueError(f"conjugate gradients met p^T K p <= 0: kernel is not PD; {_FIX}")
        alpha = rz / torch.where(moving, pkp, torch.ones_like(pkp))
        x = x + alpha * p
        r = r - alpha * kp
        z = r if apply is None else apply(r)
        rz_new = (r * z).sum(0)
        beta = rz_new / torch.where(rz != 0, rz, torch.ones_like(rz))
        p = z + beta * p
        rz = rz_new
        it += 1
        res = float((torch.linalg.vector_norm(r, dim=0) / bnorm).max())
        if not math.isfinite(res):
            bar.close()
            raise ValueError(
                f"conjugate gradients produced non-finite iterates at iteration {it}: the kernel "
                "holds NaN or inf entries (a damaged store, or a network that overflows) or "
                f"its products overflow; check and recompute the kernel (nothing was returned)"
            )
        history.append(res)
        bar.update()
        bar.set_postfix(residual=f"{res:.2e}")
    bar.close()
    converged = res <= tol
    info = CGInfo(
        iterations=it, residual=res, converged=converged, residuals=tuple(history),
        seconds=time.perf_counter() - start, preconditioner=preconditioner,
        rank=getattr(apply, "rank", 0), setup_seconds=setup,
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
    r"""Solve :math:`(K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I)\, X = B`.

    :math:`\lambda` = ``diag_reg``; ``solver`` is ``"cholesky"`` (exact, :math:`O(N^3)` time and
    :math:`O(N^2)` extra memory) or ``"cg"`` (preconditioned conjugate gradients to relative
    residual ``tol``: :math:`O(N^2)` per iteration, no factorization, for sizes where a dense
    factorization is too slow or too large).
    """
    if solver == "cholesky":
        return cholesky_solve(k, b, diag_reg)
    if solver == "cg":
        return cg_solve(k, b, diag_reg, tol=tol)[0]
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")


def _check_cg_options(tol, max_iter, rank) -> None:
    """CG's stopping rule and preconditioner size, refused before any kernel product."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        raise ValueError(
            f"tol must be a relative residual between 0 and 1 (e.g. 1e-6), got {tol!r}"
        )
    for name, value in (("max_iter", max_iter), ("rank", rank)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
