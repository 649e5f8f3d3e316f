r"""Kernels as linear operators, and preconditioners for solving with them iteratively.

A `KernelOperator` is a symmetric positive semi-definite N x N kernel that is only accessed
through products :math:`K V`, its diagonal and some of its columns.  That is all conjugate gradients
and its preconditioners need, so a kernel can live in memory (`DenseKernel`), in an on-disk tile
store, or be recomputed tile by tile on the fly (`widelimits.scale`).

Preconditioners approximate :math:`K_\text{reg} = K + s I` (s the regularization) by
:math:`P = L L^\top + D` with a low-rank factor L (:math:`N \times r`) and the diagonal
:math:`D = \operatorname{diag}(K - L L^\top) + s` of what L misses, applied through the Woodbury
identity

.. math::

    P^{-1} v = D^{-1} v - D^{-1} L\, (I_r + L^\top D^{-1} L)^{-1} L^\top D^{-1} v

Keeping the residual diagonal matters for kernels with a flat spectral tail (high-dimensional
inputs): :math:`L L^\top + s I` alone would leave the tail at s and make CG slower than no
preconditioner at all.

- pivoted Cholesky: greedy partial Cholesky, each step pivoting on the largest remaining
  diagonal entry of :math:`K - L L^\top` (taken in blocks of columns, so an operator is read a
  few times);
- Nystrom: r uniformly chosen landmark columns :math:`C = K_{:, S}`,
  :math:`L = C \operatorname{chol}(K_{S, S})^{-\top}`;
- Jacobi: :math:`P = \operatorname{diag}(K_\text{reg})` (no factor; cheap and often enough for
  well-conditioned kernels).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "KernelOperator",
    "DenseKernel",
    "as_operator",
    "PRECONDITIONERS",
    "LowRankPreconditioner",
    "pivoted_cholesky",
    "nystrom",
    "make_preconditioner",
]

PRECONDITIONERS = ("jacobi", "pivoted_cholesky", "nystrom", "none")


class KernelOperator:
    """A symmetric PSD N x N kernel accessed through products, its diagonal and its columns."""

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device
    column_block: int = 64
    """Columns worth fetching at once (an on-disk kernel reads whole chunks: ask for more)."""

    def matmul(self, v: Tensor) -> Tensor:
        """``K @ v`` for v of shape (N, C)."""
        raise NotImplementedError

    def diagonal(self) -> Tensor:
        """The diagonal of K, shape (N,)."""
        raise NotImplementedError

    def columns(self, index: Tensor) -> Tensor:
        """``K[:, index]``, shape (N, len(index))."""
        raise NotImplementedError


class DenseKernel(KernelOperator):
    """A kernel held in memory as an (N, N) tensor."""

    def __init__(self, k: Tensor) -> None:
        self.k = k
        self.shape = tuple(k.shape)
        self.dtype, self.device = k.dtype, k.device

    def matmul(self, v: Tensor) -> Tensor:
        return self.k @ v

    def diagonal(self) -> Tensor:
        return torch.diagonal(self.k)

    def columns(self, index: Tensor) -> Tensor:
        return self.k[:, index]


def as_operator(k) -> KernelOperator:
    """``k`` itself if it is a `KernelOperator`, else a checked dense kernel."""
    if isinstance(k, KernelOperator):
        return k
    from .solvers import check_kernel

    return DenseKernel(check_kernel(k))


class LowRankPreconditioner:
    """``P = L L^T + D`` (D diagonal, positive), applied with the Woodbury identity."""

    def __init__(self, factor: Tensor, diagonal: Tensor) -> None:
        if not bool((diagonal > 0).all()):
            raise ValueError(
                "the preconditioner's diagonal diag(K - L L^T) + s has non-positive entries (an "
                "exactly low-rank kernel without regularization): pass diag_reg > 0"
            )
        self.factor = factor
        self.inverse_diagonal = (1.0 / diagonal)[:, None]
        scaled = factor * self.inverse_diagonal
        r = factor.shape[1]
        inner = factor.T @ scaled + torch.eye(r, dtype=factor.dtype, device=factor.device)
        self._scaled = scaled
        self._chol = torch.linalg.cholesky(inner)

    @property
    def rank(self) -> int:
        return self.factor.shape[1]

    def __call__(self, v: Tensor) -> Tensor:
        w = torch.cholesky_solve(self._scaled.T @ v, self._chol)
        return self.inverse_diagonal * v - self._scaled @ w


def pivoted_cholesky(
    op: KernelOperator, rank: int, block: int | None = None, rel_tol: float = 1e-10
) -> Tensor:
    """Partial pivoted Cholesky factor L (N x r', r' <= rank, float64) with K ~ L L^T.

    Greedy pivoting on the largest residual diagonal ``diag(K - L L^T)``; columns are fetched
    ``block`` at a time (the candidates with the largest residuals), then factored one by one
    within the block, each re-checked against the updated residual.  Stops early once the
    residual trace falls below ``rel_tol`` times the kernel's trace.  ``block`` defaults to the
    operator's ``column_block``.

    A fetched block is first reduced by the factor built before it in one GEMM
    (``C - L_{:m0} L_{S,:m0}^T``), then only by the columns added within the block; the factor
    is kept as rows of L^T, so each of those updates reads contiguous memory.
    """
    n = op.shape[0]
    rank = min(int(rank), n)
    block = block or op.column_block
    diag = op.diagonal().to(torch.float64).clone()
    total = float(diag.sum())
    lt = torch.zeros(rank, n, dtype=torch.float64, device=op.device)  # L^T, one row per column
    m = 0
    while m < rank:
        if float(diag.clamp_min(0).sum()) <= rel_tol * total:
            break
        candidates = torch.topk(diag, min(block, rank - m, n)).indices
        cols = op.columns(candidates).to(torch.float64).T.contiguous()  # one row per candidate
        m0 = m
        if m0:
            cols -= lt[:m0, candidates].T @ lt[:m0]
        for c in range(len(candidates)):
            j = int(candidates[c])
            pivot = float(diag[j])
            if pivot <= rel_tol * total / n:
                continue
            row = cols[c] - lt[m0:m, j] @ lt[m0:m] if m > m0 else cols[c]
            lt[m] = row / math.sqrt(pivot)
            diag -= lt[m] ** 2
            diag[j] = 0.0  # exactly pivoted
            m += 1
            if m == rank:
                break
        else:
            if not bool((diag > rel_tol * total / n).any()):
                break
    return lt[:m].T.contiguous()


def nystrom(op: KernelOperator, rank: int, seed: int = 0, jitter: float = 1e-10) -> Tensor:
    """Nystrom factor L = C chol(W)^{-T} (float64), ``rank`` uniform landmarks S, C = K[:, S]."""
    n = op.shape[0]
    gen = torch.Generator().manual_seed(seed)
    landmarks = torch.randperm(n, generator=gen)[: min(int(rank), n)].to(op.device)
    cols = op.columns(landmarks).to(torch.float64)
    w = cols[landmarks]
    w = (w + w.T) / 2
    scale = float(torch.diagonal(w).mean())
    eye = torch.eye(len(landmarks), dtype=torch.float64, device=op.device)
    chol = torch.linalg.cholesky(w + jitter * max(scale, 1e-300) * eye)
    return torch.linalg.solve_triangular(chol, cols.T, upper=False).T


def make_preconditioner(
    op: KernelOperator,
    kind: str,
    shift: float,
    rank: int | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
):
    """A callable ``v -> P^{-1} v`` for ``K + shift I``, or ``None`` for ``kind="none"``.

    Built and applied in ``dtype`` (default: the operator's): float64 keeps the Woodbury solve
    accurate when s is small against the kernel's scale.
    """
    dtype = dtype or op.dtype
    if kind not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "jacobi":
        diag = op.diagonal().to(dtype) + shift
        if bool((diag <= 0).any()):
            raise ValueError(
                "the kernel has a non-positive diagonal entry; increase diag_reg (e.g. 1e-6)"
            )
        inverse = (1.0 / diag)[:, None]
        return lambda v: inverse * v
    if not shift > 0:
        raise ValueError(
            f"the {kind} preconditioner needs a positive regularization (diag_reg > 0): without "
            "it, pivoted rows are fitted exactly and P is singular; pass diag_reg > 0, or "
            "preconditioner='jacobi'"
        )
    rank = min(op.shape[0], 100 if rank is None else int(rank))
    if rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank}")
    factor = pivoted_cholesky(op, rank) if kind == "pivoted_cholesky" else nystrom(op, rank, seed)
    factor = factor.to(dtype)
    missed = (op.diagonal().to(dtype) - (factor**2).sum(1)).clamp_min(0)
    return LowRankPreconditioner(factor, missed + shift)
