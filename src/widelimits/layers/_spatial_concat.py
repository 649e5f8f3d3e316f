"""Concatenation of branches along a spatial axis (`FanInConcat(axis=2, ...)`).

The pixels of branch b follow those of branches 0..b-1 along the axis.  Branches that each end in
their own Dense or Conv layer are independent, so the covariance between a pixel of branch b and
one of branch b' != b is zero: the pixel-pair kernel is block diagonal, and the per-pixel kernel
is the concatenation of the branches' per-pixel kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..kernel import Kernel
from .base import SpatialFeatures

__all__ = ["resolve_axis", "concatenate_spatial", "spatial_concat_features"]


def resolve_axis(axis: int, d: int) -> int:
    """``axis`` of (N, C, *S) features with ``d`` spatial axes, as a non-negative index >= 1."""
    ndim = 2 + d
    resolved = axis + ndim if axis < 0 else axis
    if not 1 <= resolved < ndim:
        raise ValueError(
            f"FanInConcat(axis={axis}) is out of range for features with {d} spatial axes "
            f"(axes 1..{ndim - 1}, or -1..-{ndim - 1}; axis 0 runs over the examples)"
        )
    return resolved


def _cat(tensors: Sequence[Tensor], lead: int, axis: int, d: int, full: bool) -> Tensor:
    """Per-pixel tensors concatenated along ``axis``; pixel-pair ones block-diagonally."""
    if not full:
        return torch.cat(list(tensors), dim=lead + axis)
    p_axis, q_axis = lead + axis, lead + d + axis
    sizes = [t.shape[p_axis] for t in tensors]
    shape = list(tensors[0].shape)
    shape[p_axis] = shape[q_axis] = sum(sizes)
    out = tensors[0].new_zeros(shape)
    start = 0
    for t, n in zip(tensors, sizes, strict=True):
        index = [slice(None)] * len(shape)
        index[p_axis] = index[q_axis] = slice(start, start + n)
        out[tuple(index)] = t
        start += n
    return out


def concatenate_spatial(ks: Sequence[Kernel], axis: int) -> Kernel:
    """The state of the concatenation of independent Gaussian branches along spatial ``axis``."""
    if not isinstance(ks, tuple) or len(ks) < 2 or not all(isinstance(k, Kernel) for k in ks):
        raise TypeError("FanInConcat merges branches: put FanOut(n) (and Parallel) before it")
    first = ks[0]
    d, full = first.spatial_ndim, first.layout == "full"
    if not all(k.is_gaussian and type(k) is Kernel for k in ks):
        raise ValueError(
            "FanInConcat(axis=...) along a spatial axis needs Gaussian branches, each ending in "
            "its own Dense or Conv layer (their pixels are then independent across branches); "
            "put a Conv(kernel_size=1) at the end of each branch"
        )
    widths = {k.width for k in ks}
    if len(widths) > 1:
        raise ValueError(
            f"FanInConcat(axis=...) along a spatial axis needs branches with the same number of "
            f"channels, got widths {sorted(map(str, widths))}"
        )
    shapes = set()
    for k in ks:
        spatial = list(k.cov1.shape[1 : 1 + d])
        spatial[axis] = -1
        shapes.add((k.layout, tuple(spatial)))
    if len(shapes) > 1:
        raise ValueError(
            "FanInConcat(axis=...) branches must have the same sizes along every other spatial "
            f"axis (and layout), got {sorted(shapes)}"
        )
    lead = 1 if first.batch_diagonal or first.pairs is not None else 2

    def cat(field: str, lead: int) -> Tensor:
        return _cat([getattr(k, field) for k in ks], lead, axis, d, full)

    cov1 = cat("cov1", 1)
    same = all(k.cov2 is k.cov1 for k in ks)
    cov2 = cov1 if same else cat("cov2", 1)
    nngp = cov1 if all(k.nngp is k.cov1 for k in ks) else cat("nngp", lead)
    ntk = None
    if first.ntk is not None:
        parts = [k.ntk if k.ntk.ndim > 0 else k.ntk.expand(k.nngp.shape) for k in ks]
        ntk = _cat(parts, lead, axis, d, full)
    return first.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=True)


def spatial_concat_features(features: Sequence, axis: int) -> SpatialFeatures:
    """The finite side's features after concatenating ``features`` along spatial ``axis``."""
    if not all(isinstance(f, SpatialFeatures) for f in features):
        raise ValueError(
            "FanInConcat(axis=...) along a spatial axis needs spatial branches (N, C, *S)"
        )
    channels = {f.channels for f in features}
    others = {f.size[:axis] + f.size[axis + 1 :] for f in features}
    if len(channels) > 1 or len(others) > 1:
        raise ValueError(
            "FanInConcat(axis=...) branches must have the same channels and the same sizes "
            f"along the other spatial axes, got {[(f.channels, f.size) for f in features]}"
        )
    first = features[0]
    size = list(first.size)
    size[axis] = sum(f.size[axis] for f in features)
    return SpatialFeatures(first.channels, tuple(size))
