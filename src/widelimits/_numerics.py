"""Numerically safe building blocks for the dual activation maps.

The closed forms involve sqrt(k11 k22 - k12^2) and arccos(rho), whose derivatives blow up at
correlation rho = +-1 (the same input twice).  `safe_sqrt` returns the symmetric subgradient 0 at 0,
so kernels keep finite gradients there: near rho = 1 the angle behaves like |epsilon| in any input
perturbation epsilon, whose symmetric subgradient is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _SafeSqrt(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.sqrt(torch.clamp(x, min=0))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        positive = y > 0
        return torch.where(positive, grad / (2 * torch.where(positive, y, 1)), 0)


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(max(x, 0)) with gradient 0 (instead of inf) where x <= 0."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SafeSqrt.apply(x)
    return torch.clamp(x, min=0).sqrt_()


def correlation(k11: Tensor, k22: Tensor, k12: Tensor) -> tuple[Tensor, Tensor]:
    """``(rho, sqrt(k11 k22))`` with rho = k12 / sqrt(k11 k22) clamped into [-1, 1] (0 where a
    variance is 0).

    sqrt(k11 k22) rather than sqrt(k11) sqrt(k22): for an example paired with itself
    (k11 = k22 = k12 = c) it gives exactly c, so rho is exactly 1.
    """
    prod = safe_sqrt(k11 * k22)
    # A zero-variance input (e.g. a zero row and no bias) has k12 = 0 too: its correlation is
    # immaterial, and the floor on the denominator keeps 0/0 from turning into NaN.
    rho = (k12 / prod.clamp(min=torch.finfo(prod.dtype).tiny)).clamp_(-1.0, 1.0)
    return rho, prod


def sine(rho: Tensor) -> Tensor:
    """sin(theta) = sqrt(1 - rho^2) for theta = arccos(rho), finite gradient at rho = +-1."""
    return safe_sqrt((1 - rho) * (1 + rho))


def angle(rho: Tensor, sin: Tensor | None = None) -> Tensor:
    """theta = arccos(rho) in [0, pi], computed as atan2(sin theta, rho) so that its gradient stays
    finite at rho = +-1.  Pass ``sin = sine(rho)`` when it is already computed."""
    return torch.atan2(sine(rho) if sin is None else sin, rho)
