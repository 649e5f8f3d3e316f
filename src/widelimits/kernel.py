"""The kernel state that flows through a network description.

A `Kernel` holds, for a batch of inputs ``x1`` (N1 examples) against ``x2`` (N2 examples), the
infinite-width covariances of the current layer's pre-activations or features:

- ``nngp``: the NNGP kernel K(x1_i, x2_j), shape ``(N1, N2, *pixels)``;
- ``ntk``: the neural tangent kernel Theta(x1_i, x2_j), same shape, or ``None`` when not tracked;
- ``cov1`` and ``cov2``: the variances K(x1_i, x1_i) and K(x2_j, x2_j), shapes ``(N1, *pixels)``
  and ``(N2, *pixels)``; activations need them to normalise correlations.

``pixels`` is empty for fully connected inputs.  Spatial inputs (images, sequences) keep either one
covariance per pixel (``layout="diagonal"``, pixels = ``(H, W)``: enough when the network ends in
Flatten) or all pixel pairs (``layout="full"``).  Every layer acts per pair of examples, so a kernel
can be computed tile by tile over examples: that is how large inputs are handled.

With ``batch_diagonal=True`` the state holds only k(x_i, x_i): ``nngp`` has shape ``(N1, *pixels)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Kernel"]


@dataclass(frozen=True)
class Kernel:
    """Infinite-width kernels of a batch pair; see the module docstring for the fields.

    Users get one back from ``net.kernel(x1, x2)`` and read ``.nngp`` and ``.ntk``
    (torch tensors of shape ``(N1, N2)``).  Layers map one `Kernel` to the next with
    `replace`.
    """

    nngp: Tensor
    ntk: Tensor | None
    cov1: Tensor
    cov2: Tensor
    is_gaussian: bool = False
    """True when the current values are centred Gaussian processes (after Dense, before an
    activation): only then do the closed-form activation maps apply."""
    width: int | None = None
    """Number of features of the current representation; ``None`` for an infinite hidden width."""
    layout: str = "none"
    """Pixel layout: ``"none"`` (fully connected), ``"diagonal"`` or ``"full"``."""
    batch_diagonal: bool = False
    """``nngp`` holds only k(x_i, x_i) (shape ``(N1, *pixels)``)."""
    same_example_diagonal: bool = False
    """``nngp[i, i]`` pairs an example with itself (a diagonal tile of a symmetric kernel)."""

    def replace(self, **changes) -> Kernel:
        """A copy with some fields changed (the state is immutable)."""
        return dataclasses.replace(self, **changes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.nngp.shape)

    def variances(self) -> tuple[Tensor, Tensor]:
        """``(k11, k22)``: the variances matching each entry of ``nngp``, broadcastable to it."""
        if self.batch_diagonal:
            return self.cov1, self.cov1
        if self.layout in ("none", "diagonal"):
            return self.cov1.unsqueeze(1), self.cov2.unsqueeze(0)
        raise NotImplementedError(f"layout {self.layout!r} is not supported yet")

    def same_example_mask(self) -> Tensor | None:
        """Boolean mask (broadcastable to ``nngp``) of entries pairing an example with itself."""
        if self.batch_diagonal:
            return torch.ones((), dtype=torch.bool, device=self.nngp.device)
        if not self.same_example_diagonal:
            return None
        n1, n2 = self.nngp.shape[:2]
        mask = torch.eye(n1, n2, dtype=torch.bool, device=self.nngp.device)
        return mask.reshape(n1, n2, *([1] * (self.nngp.ndim - 2)))

    def map_all(self, fn) -> Kernel:
        """Apply ``fn`` to nngp, cov1 and cov2 (ntk unchanged): a helper for linear rescalings."""
        cov1 = fn(self.cov1)
        cov2 = cov1 if self.cov2 is self.cov1 else fn(self.cov2)
        return self.replace(nngp=fn(self.nngp), cov1=cov1, cov2=cov2)
