r"""Fixed linear maps of the pixels: `Index` (select positions) and `DotGeneral` (multiply by a
fixed tensor along spatial axes).

Both act on every channel the same way and have no parameters, so Gaussian inputs stay Gaussian
and the kernel maps are the same linear maps applied on both sides of each pixel pair.  Neither
may touch the examples (axis 0) or the channels (axis 1, infinite at infinite width).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor, nn

from ..kernel import Kernel
from ._concat import per_branch
from .base import BuildContext, Layer, SpatialFeatures

__all__ = ["Index", "Slice", "DotGeneral"]


class _SliceMaker:
    """Builds indices for `Index`: ``Slice[1:3, 2]`` is ``(slice(1, 3), 2)``."""

    def __getitem__(self, idx):
        return idx

    def __repr__(self) -> str:
        return "Slice"


Slice = _SliceMaker()
"""Builds indices for `Index`, as in ``Index(Slice[:, :, 2:7])``."""

_ALL = slice(None)


def _entries(idx, d: int) -> list[int | range]:
    """Per spatial axis of (N, C, *S): an int (the axis is dropped) or a range of positions."""
    entries = list(idx) if isinstance(idx, tuple) else [idx]
    if sum(e is Ellipsis for e in entries) > 1:
        raise ValueError(f"Index(idx=...) may hold at most one Ellipsis, got {idx!r}")
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        entries[at : at + 1] = [_ALL] * (2 + d - (len(entries) - 1))
    if len(entries) > 2 + d:
        raise ValueError(
            f"Index(idx={idx!r}) has {len(entries)} entries, more than the {2 + d} axes of "
            f"(N, C, *S) features with {d} spatial axes"
        )
    entries += [_ALL] * (2 + d - len(entries))
    for name, e in zip(("examples (axis 0)", "channels (axis 1)"), entries[:2], strict=True):
        if e != _ALL:
            raise ValueError(
                f"Index(idx={idx!r}) indexes the {name}; only the spatial axes can be indexed "
                "(use ':' for the first two entries, e.g. Slice[:, :, 3])"
            )
    return entries[2:]


def _check_entry(e, n: int, idx) -> int | range:
    if isinstance(e, numbers.Integral) and not isinstance(e, bool):
        if not -n <= int(e) < n:
            raise ValueError(f"Index(idx={idx!r}): position {e} is out of range for size {n}")
        return int(e) % n
    if isinstance(e, slice):
        positions = range(*e.indices(n))
        if len(positions) == 0:
            raise ValueError(f"Index(idx={idx!r}) selects no position of an axis of size {n}")
        return positions
    raise TypeError(
        f"Index(idx=...) entries must be ints, slices or one Ellipsis, got {e!r} "
        f"({type(e).__name__})"
    )


def _take(t: Tensor, axis: int, e: int | range) -> Tensor:
    """Positions ``e`` of ``t`` along ``axis``, keeping the axis (size 1 for an int)."""
    if isinstance(e, int):
        return t.narrow(axis, e, 1)
    if e.step == 1:
        return t.narrow(axis, e.start, len(e))
    return t.index_select(axis, torch.tensor(list(e), device=t.device))


class Index(Layer):
    r"""Selects positions along the spatial axes, as ``x[idx]`` on ``(N, C, *S)`` features.

    Args:
        idx: an index of the ``(N, C, *S)`` features, built with `Slice`: ``Slice[:, :, 3]`` (the
            4th position; the axis is dropped), ``Slice[:, :, ::2, 1:-1]``, ``Slice[..., 0]``.
            Entries are ints, slices (any step, also negative) and one Ellipsis; the first two
            must be ``:`` (examples and channels cannot be indexed).

    A selection :math:`S` of positions (a fixed 0/1 linear map of the pixels) gives

    .. math::

        K'_{pq}(x, x') = K_{S(p) S(q)}(x, x'), \qquad
        \Theta'_{pq}(x, x') = \Theta_{S(p) S(q)}(x, x').

    Dropping every spatial axis (e.g. ``Slice[:, :, 0]`` on sequences, picking one token) gives
    flat features.  The finite side indexes the features the same way.
    """

    def __init__(self, idx) -> None:
        _entries(idx, 8)  # the shape of idx; sizes are checked against the inputs when used
        self.idx = idx

    def _resolve(self, spatial: tuple[int, ...]) -> list[int | range]:
        entries = _entries(self.idx, len(spatial))
        return [_check_entry(e, n, self.idx) for e, n in zip(entries, spatial, strict=True)]

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("Index got several branches; merge them first")
        if k.layout == "none":
            raise ValueError(
                "Index selects spatial positions, but got flat features; put it before "
                "Flatten or global pooling"
            )
        return per_branch(k, self._index_kernel)

    def _index_kernel(self, k: Kernel) -> Kernel:
        d, full = k.spatial_ndim, k.layout == "full"
        entries = self._resolve(tuple(k.cov1.shape[1 : 1 + d]))
        dropped = [a for a, e in enumerate(entries) if isinstance(e, int)]

        def index(t: Tensor) -> Tensor:
            lead = t.ndim - (2 * d if full else d)
            for a, e in enumerate(entries):
                t = _take(t, lead + a, e)
                if full:
                    t = _take(t, lead + d + a, e)
            drop = [lead + a for a in dropped]
            if full:
                drop += [lead + d + a for a in dropped]
            return t.squeeze(drop) if drop else t

        out = k.map_all(index, ntk=True)
        if len(dropped) == d:
            out = out.replace(layout="none")
        return out

    def build_module(self, in_features, ctx: BuildContext):
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                "Index selects spatial positions: build the network with in_features=(C, H, W) "
                "or (C, L), the shape of one example"
            )
        entries = self._resolve(in_features.size)
        size = tuple(len(e) for e in entries if not isinstance(e, int))
        out = SpatialFeatures(in_features.channels, size) if size else in_features.channels
        return IndexModule(entries), out


class IndexModule(nn.Module):
    """``x[:, :, *entries]`` with resolved entries (ints drop their axis)."""

    def __init__(self, entries: list[int | range]) -> None:
        super().__init__()
        self.entries = entries

    def forward(self, x: Tensor) -> Tensor:
        for a, e in enumerate(self.entries):
            x = _take(x, 2 + a, e)
        drop = [2 + a for a, e in enumerate(self.entries) if isinstance(e, int)]
        return x.squeeze(drop) if drop else x

    def extra_repr(self) -> str:
        return f"entries={self.entries}"


def _as_tensor(rhs) -> Tensor | float:
    if isinstance(rhs, numbers.Real) and not isinstance(rhs, bool):
        if not math.isfinite(float(rhs)):
            raise ValueError(f"DotGeneral(rhs=...) must be finite, got {rhs}")
        return float(rhs)
    if isinstance(rhs, np.ndarray):
        rhs = torch.from_numpy(rhs)
    if not isinstance(rhs, Tensor) or not (rhs.is_floating_point() or rhs.ndim == 0):
        raise TypeError(
            f"DotGeneral(rhs=...) must be a number or a real floating tensor, got {rhs!r}"
        )
    if rhs.ndim == 0:
        return float(rhs)
    if not bool(torch.isfinite(rhs).all()):
        raise ValueError("DotGeneral(rhs=...) has non-finite entries")
    return rhs.detach()


class DotGeneral(Layer):
    r"""Multiplication by a fixed (untrained) number or tensor along spatial axes.

    Args:
        rhs: a number c (every feature multiplied by c), or a tensor contracted with the
            spatial axes ``axes``: of shape ``(*S_in, *S_out)`` where ``S_in`` are the sizes of
            those axes, which the output replaces, in place, by the axes ``S_out`` (as many).
        axes: the spatial axes of the ``(N, C, *S)`` features to contract (2, 3, ... or negative
            from the end), an int or a tuple; ``None`` (default) for all of them.

    Writing :math:`M_{ij}` for ``rhs`` with the contracted input positions flattened into i and
    the output ones into j, :math:`z_j = \sum_i x_i M_{ij}` per channel and

    .. math::

        K'_{jl}(x, x') = \sum_{i, k} M_{ij}\, K_{ik}(x, x')\, M_{kl} = (M^\top K M)_{jl},
        \qquad K' = c^2 K \text{ for a number } c,

    and the same for :math:`\Theta`.  A tensor ``rhs`` mixes pixels, so the network uses the full
    pixel-pair layout; a number does not.  Contracting channels or examples is not possible (the
    channels are the infinite axis).  The finite side applies the same product.
    """

    def __init__(self, rhs, axes: int | tuple[int, ...] | None = None) -> None:
        self.rhs = _as_tensor(rhs)
        if axes is not None:
            single = isinstance(axes, int) and not isinstance(axes, bool)
            axes_t = (axes,) if single else axes
            if (
                not isinstance(axes_t, tuple)
                or not all(
                    isinstance(a, int) and not isinstance(a, bool) and a not in (0, 1)
                    for a in axes_t
                )
                or len(set(axes_t)) != len(axes_t)
            ):
                raise ValueError(
                    f"DotGeneral(axes=...) must be distinct spatial axes of the (N, C, *S) "
                    f"features (2, 3, ... or negative; not 0, the examples, nor 1, the channels), "
                    f"got {axes!r}"
                )
        self.axes = axes
        self.mixes_pixels = isinstance(self.rhs, Tensor)
        if isinstance(self.rhs, Tensor) and axes is not None and self.rhs.ndim != 2 * len(axes_t):
            raise ValueError(
                f"DotGeneral(rhs=...) must have shape (*S_in, *S_out) with one input and one "
                f"output size per contracted axis ({len(axes_t)} axes), got shape "
                f"{tuple(self.rhs.shape)}"
            )

    def _geometry(self, spatial: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The contracted axes (0-based in S, in rhs's order) and the output spatial shape."""
        d = len(spatial)
        axes = (
            range(2, 2 + d)
            if self.axes is None
            else ((self.axes,) if isinstance(self.axes, int) else self.axes)
        )
        resolved = tuple(a + d if a < 0 else a - 2 for a in axes)
        if not all(0 <= a < d for a in resolved) or len(set(resolved)) != len(resolved):
            raise ValueError(
                f"DotGeneral(axes={self.axes!r}) is out of range for features with {d} spatial axes"
            )
        m = len(resolved)
        shape = tuple(self.rhs.shape)
        if len(shape) != 2 * m or shape[:m] != tuple(spatial[a] for a in resolved):
            raise ValueError(
                f"DotGeneral(rhs=...) of shape {shape} does not fit the contracted axes of "
                f"sizes {tuple(spatial[a] for a in resolved)}: rhs must have shape "
                "(*S_in, *S_out)"
            )
        out = list(spatial)
        for a, n in zip(resolved, shape[m:], strict=True):
            out[a] = n
        return resolved, tuple(out)

    def _apply(self, t: Tensor, lead: int, axes: tuple[int, ...]) -> Tensor:
        """``t`` contracted with rhs along spatial ``axes`` starting after ``lead`` axes."""
        m = len(axes)
        moved = t.movedim(tuple(lead + a for a in axes), tuple(range(t.ndim - m, t.ndim)))
        rhs = self.rhs.to(dtype=t.dtype, device=t.device)
        n_in = math.prod(rhs.shape[:m])
        out = moved.reshape(*moved.shape[: moved.ndim - m], n_in) @ rhs.reshape(n_in, -1)
        out = out.reshape(*moved.shape[: moved.ndim - m], *rhs.shape[m:])
        return out.movedim(tuple(range(t.ndim - m, t.ndim)), tuple(lead + a for a in axes))

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("DotGeneral got several branches; merge them first")
        if not isinstance(self.rhs, Tensor):
            c2 = self.rhs**2
            return per_branch(k, lambda b: b.map_all(lambda t: t * c2, ntk=True))
        if k.layout == "none":
            raise ValueError(
                "DotGeneral with a tensor rhs contracts spatial axes, but got flat features "
                "(the channels cannot be contracted at infinite width)"
            )
        return per_branch(k, self._tensor_kernel)

    def _tensor_kernel(self, k: Kernel) -> Kernel:
        d = k.spatial_ndim
        axes, _ = self._geometry(tuple(k.cov1.shape[1 : 1 + d]))

        def both(t: Tensor) -> Tensor:  # full layout: p axes, then q axes
            lead = t.ndim - 2 * d
            return self._apply(self._apply(t, lead, axes), lead + d, axes)

        return k.map_all(both, ntk=True)

    def build_module(self, in_features, ctx: BuildContext):
        if not isinstance(self.rhs, Tensor):
            return DotGeneralModule(self, ()), in_features
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                "DotGeneral with a tensor rhs contracts spatial axes: build the network with "
                "in_features=(C, H, W) or (C, L), the shape of one example"
            )
        axes, size = self._geometry(in_features.size)
        return DotGeneralModule(self, axes), SpatialFeatures(in_features.channels, size)

    def __repr__(self) -> str:
        rhs = self.rhs if not isinstance(self.rhs, Tensor) else f"<tensor {tuple(self.rhs.shape)}>"
        return f"DotGeneral(rhs={rhs}, axes={self.axes!r})"


class DotGeneralModule(nn.Module):
    """The finite side of `DotGeneral`: the same fixed product on the features."""

    def __init__(self, layer: DotGeneral, axes: tuple[int, ...]) -> None:
        super().__init__()
        self.layer, self.axes = layer, axes

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(self.layer.rhs, Tensor):
            return x * self.layer.rhs
        return self.layer._apply(x, 2, self.axes)
