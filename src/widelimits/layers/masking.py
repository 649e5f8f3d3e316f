r"""Padded positions of variable-length sequences (``net.kernel(x1, x2, mask_constant=c)``).

Sequences of different lengths are batched by padding them to one length ``L``.  With
``mask_constant=c``, every input entry equal to ``c`` (``c = nan`` matches NaN entries) is
replaced by zero, and a position (a sequence step, or a pixel of an image) whose channels all
equal ``c`` is *padded*.  The kernel state carries the padded positions of both batches
(`widelimits.Kernel` fields ``mask1`` and ``mask2``, ``(N, *S)`` booleans), and the layers that
gather over positions ignore them:

- `GlobalSelfAttention` gives padded keys no attention weight
  (:math:`-\infty` before a softmax, 0 for the other mechanisms);
- `GlobalAvgPool` averages over the unpadded positions only,
  :math:`K'(x, x') = \frac{1}{n n'} \sum_{p \notin M, q \notin M'} K_{pq}(x, x')`.

Position-wise layers (`Dense`, activations, `LayerNorm`, sums and products of branches) compute
values at padded positions too, but nothing downstream reads them.  Layers that read neighbouring
positions without knowing about padding (`Conv`, `AvgPool`, `SumPool`, `Flatten`) would mix
padding into real positions, so a network containing one refuses ``mask_constant``; so does any
layer not known to be safe, unless it declares ``supports_mask = True``.  The result is what the
same network gives on each example cut to its own length (for attention and global pooling).

The finite modules built by ``net.build`` take no mask: run them on unpadded batches (e.g. one
batch per length).  This follows neural-tangents' ``mask_constant`` (channel-uniform masks, as its
infinite-width layers require); its kernels also zero the covariances of padded positions after
some layers, which changes nothing in the layers supported here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..kernel import Kernel

__all__ = ["input_mask", "check_supports_mask", "masked_global_pool"]


def input_mask(x, mask_constant: float, name: str) -> tuple[Tensor, Tensor]:
    """``(x with entries equal to mask_constant zeroed, padded positions (N, *S))``.

    Raises if ``x`` is not a spatial batch (N, C, *S) or if an example is padding throughout.
    """
    if isinstance(mask_constant, bool) or not isinstance(mask_constant, int | float):
        raise TypeError(
            f"mask_constant must be a number (the value that marks padding), got "
            f"{mask_constant!r}"
        )
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError):
            return x, None  # as_input explains what is wrong with it
    if x.ndim not in (3, 4):
        raise ValueError(
            f"mask_constant marks padded positions of sequences (N, C, L) or images (N, C, H, "
            f"W), but {name} has shape {tuple(x.shape)}: flat features have no positions"
        )
    c = float(mask_constant)
    entries = x.isnan() if math.isnan(c) else x == c
    padded = entries.all(dim=1)
    empty = padded.reshape(len(x), -1).all(dim=1)
    if bool(empty.any()):
        i = int(empty.nonzero()[0])
        raise ValueError(
            f"example {i} of {name} is padding at every position (all entries equal "
            f"mask_constant={mask_constant!r}): attention and pooling over it are undefined; "
            "drop it or check mask_constant"
        )
    return x.masked_fill(entries, 0.0), padded


def _safe_layers() -> tuple[type, ...]:
    from .activations import Activation
    from .attention import GlobalSelfAttention
    from .combinators import FanInConcat, FanInProd, FanInSum, FanOut, Parallel, Serial
    from .dense import Dense
    from .normalization import Dropout, LayerNorm
    from .pooling import GlobalAvgPool
    from .scale import Scale

    return (
        Activation, Dense, LayerNorm, Dropout, Scale, Serial, Parallel, FanOut, FanInSum,
        FanInProd, FanInConcat, GlobalAvgPool, GlobalSelfAttention,
    )  # fmt: skip


def check_supports_mask(layer) -> None:
    """Raise unless every layer of the network handles padded positions (module docstring)."""
    safe = _safe_layers()
    todo = [layer]
    while todo:
        current = todo.pop()
        across_positions = getattr(current, "axis", 1) not in (1, (1,))  # LayerNorm, FanInConcat
        if getattr(current, "supports_mask", False) or (
            isinstance(current, safe) and not across_positions
        ):
            todo.extend(current.children())
            continue
        raise ValueError(
            f"mask_constant: {type(current).__name__} reads neighbouring positions without "
            "knowing which are padding, so padded positions would leak into real ones; use "
            "attention and GlobalAvgPool to gather over positions, or drop mask_constant and "
            "batch sequences of one length"
        )


def _weights(mask: Tensor, d: int, dtype) -> Tensor:
    """``1 / n`` at the unpadded positions of each example, 0 at padded ones: ``(N, *S)``."""
    keep = (~mask).to(dtype)
    count = keep.reshape(len(mask), -1).sum(dim=1)
    return keep / count.reshape(-1, *(1,) * d)


def masked_global_pool(k: Kernel, average: bool = True) -> Kernel:
    r"""Global pooling of a full-layout state over its unpadded positions only.

    :math:`K'(x, x') = \sum_{p, q} w_p(x) w_q(x') K_{pq}(x, x')` with :math:`w_p(x) = 1/n(x)`
    at the :math:`n(x)` unpadded positions of :math:`x` (``average``) or 1 (sum), and 0 at
    padded ones; the same for the NTK and the variances.
    """
    d = k.spatial_ndim
    m1 = k.mask1
    m2 = k.mask2 if k.mask2 is not None else m1

    def weights(m: Tensor) -> Tensor:
        if average:
            return _weights(m, d, k.nngp.dtype)
        return (~m).to(k.nngp.dtype)

    w1, w2 = weights(m1), weights(m2)
    p = math.prod(w1.shape[1:])
    w1, w2 = w1.reshape(len(w1), p), w2.reshape(len(w2), p)

    def pool(t: Tensor, a: Tensor, b: Tensor) -> Tensor:  # a, b broadcast over t's lead axes
        lead = t.shape[: t.ndim - 2 * d]
        flat = t.reshape(*lead, p, p)
        return ((a.unsqueeze(-1) * flat).sum(-2) * b).sum(-1)

    cov1 = pool(k.cov1, w1, w1)
    cov2 = cov1 if k.cov2 is k.cov1 else pool(k.cov2, w2, w2)
    if k.batch_diagonal:
        a, b = w1, w1
    elif k.pairs is not None:
        a, b = w1.index_select(0, k.pairs[0]), w2.index_select(0, k.pairs[1])
    else:
        a, b = w1[:, None], w2[None, :]
    nngp = pool(k.nngp, a, b)
    ntk = k.ntk
    if ntk is not None and ntk.ndim > 0:
        ntk = pool(ntk, a, b)
    return k.replace(
        nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, layout="none", mask1=None, mask2=None
    )
