"""Kernel regression past the size of a dense factorization: CG over stored or recomputed kernels.

The train kernel is a `KernelOperator`: from a `KernelStore`, loaded once into memory when it fits
(else read a band of rows at a time with read-ahead: `widelimits.scale.bands`), or recomputed tile
by tile from the network at every product (`RecomputedKernel`: no storage at all, on the GPU when
there is one).  All right-hand sides (target columns) share each pass over the kernel.
`kernel_regression` solves

    (K + diag_reg * mean(diag K) I) alpha = Y

by preconditioned conjugate gradients (`widelimits.predict.cg_solve`) and predicts
``f(x*) = K(x*, X) alpha``.  With the NTK this is the mean of the infinitely wide network trained
to convergence (t = infinity) from a zero-mean initialization, and with the NNGP the Bayesian
posterior mean: the t = infinity predictions of `widelimits.predict`, at any size.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .._compute import as_input
from ..predict._checks import as_targets
from ..predict.operators import KernelOperator
from ..predict.solvers import CGInfo, cg_solve
from .bands import store_operator
from .store import KernelStore

__all__ = ["RecomputedKernel", "kernel_regression"]

PREDICT_ROWS = 2048  # test rows per recomputed test-train band


class RecomputedKernel(KernelOperator):
    """The kernel of ``net`` on ``x`` recomputed in bands of ``block_rows`` rows at each use."""

    def __init__(
        self, net, x, get: str = "ntk", block_rows: int = 2048, device: str | None = None
    ) -> None:
        if get not in ("nngp", "ntk"):
            raise ValueError(f"get must be 'nngp' or 'ntk', got {get!r}")
        self.net, self.get = net, get
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.x = as_input(x, "x").to(device)
        n = self.x.shape[0]
        self.shape = (n, n)
        self.dtype, self.device = self.x.dtype, self.x.device
        self.block_rows = int(block_rows)
        self._diagonal = None

    def _band(self, r0: int, r1: int) -> Tensor:
        """Rows r0:r1; the diagonal block is computed as a symmetric kernel, so that every
        example meets itself at correlation exactly 1 (as in ``net.kernel(x)``)."""
        rows, n = self.x[r0:r1], self.shape[0]
        parts = [self.net.kernel(rows, None, get=self.get, progress=False)]
        if r0 > 0:
            parts.insert(0, self.net.kernel(rows, self.x[:r0], get=self.get, progress=False))
        if r1 < n:
            parts.append(self.net.kernel(rows, self.x[r1:], get=self.get, progress=False))
        return torch.cat(parts, dim=1)

    def matmul(self, v: Tensor) -> Tensor:
        v = v.to(self.device)
        out = torch.empty(self.shape[0], v.shape[1], dtype=v.dtype, device=self.device)
        for r0 in range(0, self.shape[0], self.block_rows):
            r1 = min(r0 + self.block_rows, self.shape[0])
            out[r0:r1] = self._band(r0, r1).to(v.dtype) @ v
        return out

    def diagonal(self) -> Tensor:
        if self._diagonal is None:
            self._diagonal = self.net.kernel(self.x, get=self.get, diagonal=True)
        return self._diagonal

    def columns(self, index: Tensor) -> Tensor:
        index = index.to(self.device)
        cols = self.net.kernel(self.x, self.x[index], get=self.get, progress=False)
        # Self-pairs exactly as in the symmetric kernel (see _band).
        cols[index, torch.arange(len(index), device=self.device)] = self.diagonal()[index]
        return cols


def _train_operator(train, get: str, net, x_train, **how) -> KernelOperator:
    if isinstance(train, KernelOperator):
        return train
    if isinstance(train, str | os.PathLike):
        train = KernelStore.open(train)
    if isinstance(train, KernelStore):
        return store_operator(train, get, **how)
    if train is None:
        if net is None or x_train is None:
            raise ValueError("give a train kernel (store, operator or tensor) or net and x_train")
        return RecomputedKernel(net, x_train, get)
    return train  # a dense kernel: cg_solve checks it


def kernel_regression(
    train=None,
    y=None,
    *,
    get: str = "ntk",
    cross=None,
    net=None,
    x_train=None,
    x_test=None,
    diag_reg: float = 1e-4,
    tol: float = 1e-6,
    max_iter: int | None = None,
    preconditioner: str = "pivoted_cholesky",
    rank: int = 500,
    in_memory="auto",
    memory_budget: float | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor | None, CGInfo]:
    r"""Fit :math:`\alpha = K_\text{reg}^{-1} Y` by preconditioned CG, predict
    :math:`K(x_*, X) \alpha`.

    :math:`K_\text{reg} = K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I` with
    :math:`\lambda` = ``diag_reg``.

    Args:
        train: the (N, N) train kernel: a `KernelStore` (or its path), any `KernelOperator`, a
            dense tensor, or ``None`` to recompute it from ``net`` and ``x_train``.
        y: targets (N,) or (N, C).
        get: which kernel, ``"ntk"`` (trained-network mean) or ``"nngp"`` (posterior mean).
        cross: test-train kernel (M, N): a store computed with x1=x_test, x2=x_train, or a
            tensor; or ``None`` to recompute it from ``net``, ``x_test`` and ``x_train``; no
            prediction if neither is given.
        diag_reg: relative regularization (times the mean of diag K).
        tol: relative residual at which CG stops.
        preconditioner, rank: see `widelimits.predict.cg_solve` (default: pivoted Cholesky of
            rank 500).
        in_memory, memory_budget: for a stored train kernel: ``"auto"`` loads it into memory
            (once, verified) if its :math:`N^2` entries fit ``memory_budget`` bytes (default: 60% of
            the memory available now), else streams it from disk with read-ahead at every CG
            iteration; True or False forces either (see `widelimits.scale.bands`).

    Returns:
        ``(alpha, predictions or None, info)``; ``print(info)`` is the convergence report.

    Raises a ValueError for targets that are not a finite (N,) or (N, C) array (naming the
    first NaN/inf row), and when CG meets a non-PD kernel or produces non-finite iterates (a
    kernel holding NaN or inf): no NaN or zero alpha is ever returned.
    """
    if y is None:
        raise ValueError("kernel_regression needs targets y")
    rows = as_targets(y, None, "y")[0].shape[0]  # checked before any kernel is read
    op = _train_operator(
        train, get, net, x_train, in_memory=in_memory, memory_budget=memory_budget,
        progress=progress,
    )  # fmt: skip
    if tuple(op.shape)[:1] != (rows,):
        raise ValueError(
            f"y has {rows} rows but the train kernel has shape {tuple(op.shape)}: one target row "
            "per training point"
        )
    alpha, info = cg_solve(
        op, y, diag_reg=diag_reg, tol=tol, max_iter=max_iter, preconditioner=preconditioner,
        rank=rank, progress=progress,
    )  # fmt: skip
    predictions = _predict(alpha, get, cross, net, x_train, x_test, op)
    return alpha, predictions, info


def _predict(alpha: Tensor, get, cross, net, x_train, x_test, op) -> Tensor | None:
    a = alpha.reshape(alpha.shape[0], -1)
    if isinstance(cross, str | os.PathLike):
        cross = KernelStore.open(cross)
    if isinstance(cross, KernelStore):
        m = cross.shape[0]
        out = torch.empty(m, a.shape[1], dtype=a.dtype)
        step = cross.tile
        for r0 in range(0, m, step):
            band = cross.read(get, slice(r0, min(r0 + step, m)))
            out[r0 : r0 + band.shape[0]] = band.to(a.dtype) @ a.cpu()
    elif cross is not None:
        out = torch.as_tensor(cross).to(a.dtype).to(a.device) @ a
    elif net is not None and x_test is not None:
        if x_train is None:
            raise ValueError("predicting from net and x_test needs x_train as well")
        device = getattr(op, "device", a.device)
        xt, xs = as_input(x_test, "x_test").to(device), as_input(x_train, "x_train").to(device)
        step = PREDICT_ROWS
        parts = [
            net.kernel(xt[r0 : r0 + step], xs, get=get, progress=False).to(a.dtype) @ a.to(device)
            for r0 in range(0, xt.shape[0], step)
        ]
        out = torch.cat(parts)
    else:
        return None
    return out.reshape(out.shape[0], *alpha.shape[1:])
