"""Finite-width measurements: the empirical NTK of a torch module and Monte Carlo kernels.

These are the straightforward versions (``torch.func`` Jacobians, a loop over random networks);
they are the yardstick the closed-form kernels are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

__all__ = ["empirical_ntk", "monte_carlo_kernel", "MonteCarloKernel", "relative_error"]


def _jacobian(model: nn.Module, x: Tensor, chunk_size: int) -> list[Tensor]:
    """Per-example Jacobians of the outputs w.r.t. each parameter: list of (N, O, P_k)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters, so its NTK is undefined")
    buffers = dict(model.named_buffers())

    def f(p: dict, xb: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (xb,))
        if not isinstance(out, Tensor):
            raise TypeError(f"the model must return a tensor, got {type(out).__name__}")
        return out.reshape(xb.shape[0], -1)

    pieces = []
    for start in range(0, x.shape[0], chunk_size):
        jac = jacrev(f)(params, x[start : start + chunk_size])
        pieces.append([j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()])
    return [torch.cat(parts) for parts in zip(*pieces, strict=True)]


def _check_jacobian_memory(model: nn.Module, x1: Tensor, x2: Tensor | None) -> None:
    """Refuse up front what would not fit: this version stores the (N, O, P) Jacobians."""
    from ._compute import available_memory

    with torch.no_grad():
        n_out = model(x1[:1]).reshape(1, -1).shape[1]
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n = len(x1) + (0 if x2 is None else len(x2))
    needed = n * n_out * n_params * x1.element_size()
    if needed > available_memory(x1.device) // 2:
        raise MemoryError(
            f"the Jacobians of {n} inputs x {n_out} outputs x {n_params} parameters need "
            f"{needed / 2**30:.1f} GiB; use fewer inputs at a time, a narrower network, or a "
            "readout with fewer outputs"
        )


def empirical_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None = None, chunk_size: int = 64):
    r"""Empirical NTK traced over outputs, shape (N1, N2).

    Theta(x, x') = (1 / O) sum_o sum_p df_o(x)/dp df_o(x')/dp over all trainable parameters p,
    the per-output NTK averaged over the O outputs (what the analytic NTK of a readout is).
    """
    _check_jacobian_memory(model, x1, x2)
    j1 = _jacobian(model, x1, chunk_size)
    j2 = j1 if x2 is None else _jacobian(model, x2, chunk_size)
    n_out = j1[0].shape[1]
    return sum(torch.einsum("iop,jop->ij", a, b) for a, b in zip(j1, j2, strict=True)) / n_out


@dataclass(frozen=True)
class MonteCarloKernel:
    """Averages over ``n_samples`` random finite networks and their standard errors."""

    nngp: Tensor
    ntk: Tensor | None
    nngp_stderr: Tensor
    ntk_stderr: Tensor | None
    n_samples: int


class _Running:
    """Welford running mean and variance of a tensor-valued sample."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, x: Tensor) -> None:
        self.n += 1
        if self.mean is None:
            self.mean, self.m2 = x.clone(), torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def stderr(self) -> Tensor:
        return torch.sqrt(self.m2 / max(self.n - 1, 1) / self.n)


def monte_carlo_kernel(
    net,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    width: int,
    n_samples: int,
    get: tuple[str, ...] = ("nngp", "ntk"),
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> MonteCarloKernel:
    """Average the output covariance (NNGP) and empirical NTK of ``n_samples`` finite networks
    built from the description ``net`` at hidden width ``width``, with standard errors.

    One sample of the NNGP is f(x1) f(x2)^T / O for a network with O outputs.
    """
    if n_samples < 2:
        raise ValueError("n_samples must be at least 2 to estimate a standard error")
    dtype = dtype or x1.dtype
    nngp, ntk = _Running(), _Running()
    for s in range(n_samples):
        model = net.build(x1.shape[1], width, seed=seed + s, dtype=dtype)
        if "nngp" in get:
            with torch.no_grad():
                f1 = model(x1)
                f2 = f1 if x2 is None else model(x2)
            f1, f2 = f1.reshape(len(f1), -1), f2.reshape(len(f2), -1)
            nngp.add(f1 @ f2.T / f1.shape[1])
        if "ntk" in get:
            ntk.add(empirical_ntk(model, x1, x2))
    has_ntk = "ntk" in get
    return MonteCarloKernel(
        nngp=nngp.mean,
        ntk=ntk.mean if has_ntk else None,
        nngp_stderr=nngp.stderr() if nngp.n else None,
        ntk_stderr=ntk.stderr() if has_ntk else None,
        n_samples=n_samples,
    )


def relative_error(a: Tensor, b: Tensor) -> float:
    """Frobenius relative error ||a - b|| / ||b||."""
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))
