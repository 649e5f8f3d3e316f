r"""The kernel state that flows through a network description.

A `Kernel` holds, for a batch of inputs ``x1`` (N1 examples) against ``x2`` (N2 examples), the
infinite-width covariances of the current layer's pre-activations or features:

- ``nngp``: the NNGP kernel :math:`K(x_{1i}, x_{2j})`, shape ``(N1, N2, *pixels)``;
- ``ntk``: the neural tangent kernel :math:`\Theta(x_{1i}, x_{2j})`, same shape, or ``None`` when
  not tracked;
- ``cov1`` and ``cov2``: the variances :math:`K(x_{1i}, x_{1i})` and :math:`K(x_{2j}, x_{2j})`,
  shapes ``(N1, *pixels)`` and ``(N2, *pixels)``; activations need them to normalise
  correlations.

``pixels`` is empty for fully connected inputs (``layout="none"``).  Spatial inputs (NCHW images,
NCL sequences, with spatial shape ``S`` = ``(H, W)`` or ``(L,)``) keep either

- one covariance per pixel, :math:`K(x_i, x'_j)_{pp}` (``layout="diagonal"``, pixels = ``S``):
  enough when the network ends in Flatten and never pools, or
- every pixel pair, :math:`K(x_i, x'_j)_{pq}` (``layout="full"``, pixels = ``(*S, *S)``: the first
  ``len(S)`` axes index p, the last ones q): needed by pooling layers.

In the full layout ``cov1`` and ``cov2`` hold every pixel pair of an example with itself,
``(N, *S, *S)``, because pooling mixes them; the per-pixel variances are their pixel diagonals.
Every layer acts per pair of examples, so a kernel can be computed tile by tile over examples:
that is how large inputs are handled.

With ``batch_diagonal=True`` the state holds only :math:`k(x_i, x_i)`: ``nngp`` equals ``cov1``.
With ``pairs=(I, J)`` (a tile of a symmetric kernel on the diagonal) ``nngp`` holds only the
pairs :math:`(x_{I_t}, x_{J_t})`, t = 0..T-1, :math:`I \le J`, on its first axis: ``(T, *pixels)``,
half the work of the (N, N) grid.
"""

from __future__ import annotations

import dataclasses
import math
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
    pairs: tuple[Tensor, Tensor] | None = None
    """Packed pairs (I, J) of a symmetric tile: ``nngp[t]`` is K(x_I[t], x_J[t])."""
    pattern: tuple[Tensor, Tensor] | None = None
    """Graph patterns ``(pattern1, pattern2)`` of the examples behind ``cov1`` and ``cov2``
    (``net.kernel(..., pattern=...)``, read by `widelimits.layers.Aggregate`); ``None`` when
    none were passed."""
    mask1: Tensor | None = None
    """Padded positions of the x1 examples, ``(N1, *S)`` booleans (True: padding), or ``None``;
    set by ``net.kernel(..., mask_constant=c)`` (`widelimits.layers.masking`)."""
    mask2: Tensor | None = None
    """Padded positions of the x2 examples, ``(N2, *S)``, like ``mask1``."""

    def replace(self, **changes) -> Kernel:
        """A copy with some fields changed (the state is immutable)."""
        return dataclasses.replace(self, **changes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.nngp.shape)

    @property
    def spatial_ndim(self) -> int:
        """Number of spatial axes of the inputs: 0 (fully connected), 1 (NCL) or 2 (NCHW)."""
        extra = self.cov1.ndim - 1
        return extra // 2 if self.layout == "full" else extra

    def pixel_variances(self, cov: Tensor) -> Tensor:
        """Per-pixel variances ``(N, *S)`` of a self-covariance ``cov`` (``cov1`` or ``cov2``)."""
        if self.layout != "full":
            return cov
        return pixel_diagonal(cov, self.spatial_ndim)

    def self_variances(self, cov: Tensor) -> tuple[Tensor, Tensor]:
        """``(v_p, v_q)`` matching each entry of a self-covariance ``cov``, broadcastable to it."""
        if self.layout != "full":
            return cov, cov
        v = self.pixel_variances(cov)
        ones = (1,) * self.spatial_ndim
        return v.reshape(*v.shape, *ones), v.reshape(v.shape[0], *ones, *v.shape[1:])

    def variances(self) -> tuple[Tensor, Tensor]:
        """``(k11, k22)``: the variances matching each entry of ``nngp``, broadcastable to it."""
        if self.batch_diagonal:
            return self.self_variances(self.cov1)
        v1, v2 = self.pixel_variances(self.cov1), self.pixel_variances(self.cov2)
        if self.pairs is not None:
            # index_select: several times faster than advanced indexing for 1-D indices
            v1, v2 = v1.index_select(0, self.pairs[0]), v2.index_select(0, self.pairs[1])
        else:
            v1, v2 = v1.unsqueeze(1), v2.unsqueeze(0)
        if self.layout != "full":
            return v1, v2
        d = self.spatial_ndim
        lead = v2.ndim - d
        ones = (1,) * d
        return v1.reshape(*v1.shape, *ones), v2.reshape(*v2.shape[:lead], *ones, *v2.shape[lead:])

    @property
    def pixel_shape(self) -> tuple[int, ...]:
        """The trailing pixel axes of ``nngp``: ``()``, ``S`` or ``(*S, *S)``."""
        lead = 1 if self.batch_diagonal or self.pairs is not None else 2
        return tuple(self.nngp.shape[lead:])

    def pixel_eye(self) -> Tensor | None:
        """Boolean mask (broadcastable to ``nngp``) of entries pairing a pixel with itself.

        ``None`` when every entry does (layouts ``"none"`` and ``"diagonal"``).
        """
        if self.layout != "full":
            return None
        spatial = self.cov1.shape[1 : 1 + self.spatial_ndim]
        n = math.prod(spatial)
        return torch.eye(n, dtype=torch.bool, device=self.nngp.device).reshape(*spatial, *spatial)

    def same_example_mask(self) -> Tensor | None:
        """Boolean mask (broadcastable to ``nngp``) of entries pairing an example with itself."""
        if self.batch_diagonal:
            return torch.ones((), dtype=torch.bool, device=self.nngp.device)
        if self.pairs is not None:
            mask = self.pairs[0] == self.pairs[1]
            return mask.reshape(-1, *([1] * (self.nngp.ndim - 1)))
        if not self.same_example_diagonal:
            return None
        n1, n2 = self.nngp.shape[:2]
        mask = torch.eye(n1, n2, dtype=torch.bool, device=self.nngp.device)
        return mask.reshape(n1, n2, *([1] * (self.nngp.ndim - 2)))

    def map_all(self, fn, ntk: bool = False) -> Kernel:
        """Apply ``fn`` to nngp, cov1 and cov2, and to ntk if ``ntk``: for linear maps.

        A 0-dimensional ntk (the zero NTK before the first trainable layer) is left as it is.
        """
        cov1 = fn(self.cov1)
        cov2 = cov1 if self.cov2 is self.cov1 else fn(self.cov2)
        out = self.replace(nngp=fn(self.nngp), cov1=cov1, cov2=cov2)
        if ntk and self.ntk is not None and self.ntk.ndim > 0:
            out = out.replace(ntk=fn(self.ntk))
        return out


def pixel_diagonal(t: Tensor, d: int) -> Tensor:
    """The entries K[..., p, p] of a pixel-pair tensor ``(..., *S, *S)`` with ``d`` spatial axes."""
    spatial = t.shape[t.ndim - d :]
    n = math.prod(spatial)
    lead = t.shape[: t.ndim - 2 * d]
    return t.reshape(*lead, n, n).diagonal(dim1=-2, dim2=-1).reshape(*lead, *spatial)
