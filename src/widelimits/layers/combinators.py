"""Combinators: chains, branches and merges of layers.

Branches carry tuples of kernel states (infinite side) or of tensors (finite side).  Merging by
sum assumes the branches are uncorrelated, which holds exactly when all but at most one branch
end in a layer with fresh zero-mean weights (Dense, Conv) — as in residual blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._patterns import reads_patterns
from ..kernel import Kernel
from . import _chain, _reuse
from ._concat import align_branches, concatenate
from ._spatial_concat import concatenate_spatial, resolve_axis, spatial_concat_features
from .base import BuildContext, Layer, SpatialFeatures

__all__ = [
    "Serial", "Parallel", "FanOut", "FanInSum", "FanInConcat", "FanInProd", "Residual", "Repeat",
]  # fmt: skip


MAX_BRANCHES = 1024
"""Most branches a `FanOut` makes: every branch's kernel is computed separately."""


def _as_layers(layers: Sequence) -> tuple[Layer, ...]:
    for layer in layers:
        if not isinstance(layer, Layer):
            hint = (
                " (did you forget the parentheses, e.g. ReLU()?)" if isinstance(layer, type) else ""
            )
            raise TypeError(f"expected widelimits layers, got {layer!r}{hint}")
    return tuple(layers)


def _branches(k, name: str) -> tuple:
    if not isinstance(k, tuple) or len(k) < 2:
        raise TypeError(f"{name} merges branches: put FanOut(n) (and Parallel) before it")
    if all(isinstance(ki, Kernel) for ki in k):
        shapes = {(ki.layout, ki.pixel_shape) for ki in k}
        if len(shapes) > 1:
            raise ValueError(
                f"{name} branches have different spatial sizes or layouts {sorted(shapes)}: "
                "give them the same strides and padding"
            )
    return k


class Serial(Layer):
    """Layers applied one after another: the kernel map is the composition of theirs."""

    def __init__(self, *layers: Layer) -> None:
        self.layers = _as_layers(layers)

    def children(self):
        return self.layers

    def kernel_fn(self, k):
        # layers in turn, reusing buffers (`_reuse`), and each run of Dense layers and
        # compiled activations in one compiled pass where it applies (`_chain`)
        return _reuse.chain(self.flat_layers(), k, owner=self, runs=_chain.run)

    def flat_layers(self) -> list[Layer]:
        """The layers in order, nested `Serial` layers expanded (the same composition)."""
        return [x for layer in self.layers for x in (
            layer.flat_layers() if isinstance(layer, Serial) else [layer]
        )]  # fmt: skip

    def build_module(self, in_features, ctx: BuildContext):
        modules = []
        for layer in self.layers:
            module, in_features = layer.build_module(in_features, ctx)
            modules.append(module)
        # Networks with graph layers pass the pattern on: model(x, pattern=...).
        sequential = PatternSequential if reads_patterns(self) else nn.Sequential
        return sequential(*modules), in_features

    def __repr__(self) -> str:
        return f"Serial({', '.join(map(repr, self.layers))})"


def call(module: nn.Module, x, pattern):
    """``module(x)``, with the graph ``pattern`` for modules that read it (see `Aggregate`)."""
    if pattern is not None and getattr(module, "takes_pattern", False):
        return module(x, pattern=pattern)
    return module(x)


class PatternSequential(nn.Sequential):
    """``nn.Sequential`` that hands ``pattern`` to the modules that read it (`Aggregate`)."""

    takes_pattern = True

    def forward(self, x, pattern=None):
        for module in self:
            x = call(module, x, pattern)
        return x


class Parallel(Layer):
    """Applies layer i to branch i of a tuple of inputs (after `FanOut`)."""

    def __init__(self, *layers: Layer) -> None:
        self.layers = _as_layers(layers)

    def children(self):
        return self.layers

    def _check(self, k) -> None:
        if not isinstance(k, tuple) or len(k) != len(self.layers):
            got = len(k) if isinstance(k, tuple) else 1
            raise TypeError(
                f"Parallel with {len(self.layers)} layers got {got} branch(es); "
                f"put FanOut({len(self.layers)}) before it"
            )

    def kernel_fn(self, k):
        self._check(k)
        return tuple(layer.kernel_fn(ki) for layer, ki in zip(self.layers, k, strict=True))

    def build_module(self, in_features, ctx: BuildContext):
        self._check(in_features)
        built = [
            layer.build_module(f, ctx) for layer, f in zip(self.layers, in_features, strict=True)
        ]
        module = ParallelModule([m for m, _ in built])
        module.takes_pattern = reads_patterns(self)
        return module, tuple(f for _, f in built)

    def __repr__(self) -> str:
        return f"Parallel({', '.join(map(repr, self.layers))})"


class ParallelModule(nn.Module):
    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(modules)

    takes_pattern = False

    def forward(self, xs: tuple[Tensor, ...], pattern=None) -> tuple[Tensor, ...]:
        return tuple(call(m, x, pattern) for m, x in zip(self.branches, xs, strict=True))


class FanOut(Layer):
    """Copies its input into ``n`` identical branches."""

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BRANCHES:
            raise ValueError(
                f"FanOut(n) needs a positive integer number of branches n of at most "
                f"{MAX_BRANCHES} (each branch is computed separately), got {n!r}"
            )
        self.n = n

    def kernel_fn(self, k):
        if not isinstance(k, Kernel):
            raise TypeError("FanOut got several branches already; merge them first")
        return (k,) * self.n

    def build_module(self, in_features, ctx: BuildContext):
        return FanOutModule(self.n), (in_features,) * self.n


class FanOutModule(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return (x,) * self.n


def _merge_flags(ks: tuple[Kernel, ...], **changes) -> Kernel:
    return ks[0].replace(is_gaussian=all(k.is_gaussian for k in ks), **changes)


def _sum_ntk(ks: tuple[Kernel, ...], weights: Sequence[float]):
    if ks[0].ntk is None:
        return None
    return sum(w * k.ntk for w, k in zip(weights, ks, strict=True))


def _weighted(ks: tuple[Kernel, ...], weights: Sequence[float], **changes) -> Kernel:
    def combine(field: str) -> Tensor:
        return sum(w * getattr(k, field) for w, k in zip(weights, ks, strict=True))

    cov2 = None if ks[0].cov2 is ks[0].cov1 else combine("cov2")
    cov1 = combine("cov1")
    return _merge_flags(
        ks,
        nngp=combine("nngp"),
        ntk=_sum_ntk(ks, weights),
        cov1=cov1,
        cov2=cov1 if cov2 is None else cov2,
        **changes,
    )


class FanInSum(Layer):
    """Sums branches: kernels add (branches are assumed uncorrelated, see the module docstring)."""

    def kernel_fn(self, k):
        ks = _branches(k, "FanInSum")
        widths = {ki.width for ki in ks}
        if len(widths) > 1:
            raise ValueError(f"FanInSum branches have different widths {sorted(map(str, widths))}")
        pieces = align_branches(ks, "FanInSum")
        if pieces is not None:  # a concatenation: sum piece by piece (see _concat)
            return concatenate([_weighted(p, [1.0] * len(p)) for p in pieces])
        return _weighted(ks, [1.0] * len(ks))

    def build_module(self, in_features, ctx: BuildContext):
        _branches(in_features, "FanInSum")
        if len(set(in_features)) > 1:
            raise ValueError(f"FanInSum branches have different widths {in_features}")
        return FanInSumModule(), in_features[0]


class FanInSumModule(nn.Module):
    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        return sum(xs[1:], xs[0])


class FanInConcat(Layer):
    r"""Concatenates branches along the channel axis (default) or along a spatial axis.

    Args:
        axis: the axis of the ``(N, C, *S)`` (or ``(N, C)``) features to concatenate along, as
            in ``torch.cat``: 1 (channels, the default) or a spatial axis 2, 3, ...; negative
            values count from the end (-1 is the last spatial axis of spatial features, the
            channels of flat ones).

    Along the channels, feature i of the result comes from one branch b, so a layer that reads
    a linear combination of all features (Dense, Conv) sees the average of the branches'
    kernels weighted by their shares :math:`w_b` of the features: equal for infinite hidden
    branches (built with the same width), proportional to ``out`` for fixed-width ones (as
    neural-tangents weighs by channel counts):

    .. math::

        K' = \sum_b w_b K_b, \qquad \Theta' = \sum_b w_b \Theta_b.

    The concatenation is not one Gaussian process with that average, so the state remembers
    the branches (`widelimits.layers._concat.Concatenated`): an activation (or pooling,
    Flatten, a FanInSum with the block's shortcut) after it acts on each branch separately,
    :math:`T = \sum_b w_b T_\phi(K_b)`, exactly as on the finite network.

    Along a spatial axis the pixels of branch b follow those of branches 0..b-1, and every
    branch must be Gaussian with the same channel count (each ending in its own Dense or Conv
    layer, so that different branches are independent, as `FanInSum` assumes): the kernel is
    block diagonal over the branches,

    .. math::

        K'_{pq} = K^{(b)}_{pq} \text{ if pixels } p, q \text{ both lie in branch } b,
        \qquad K'_{pq} = 0 \text{ otherwise,}

    and the same for :math:`\Theta` (in the per-pixel layout the per-pixel kernels are simply
    concatenated).  The finite side is ``torch.cat(xs, dim=axis)``.
    """

    def __init__(self, axis: int = 1) -> None:
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(
                f"FanInConcat(axis=...) must be a nonzero integer axis of the (N, C, *S) "
                f"features (1: channels, 2...: spatial axes, negative from the end), got "
                f"{axis!r}; examples cannot be concatenated"
            )
        self.axis = axis

    def kernel_fn(self, k):
        if not isinstance(k, tuple) or len(k) < 2 or not all(isinstance(b, Kernel) for b in k):
            _branches(k, "FanInConcat")
        axis = resolve_axis(self.axis, k[0].spatial_ndim if isinstance(k[0], Kernel) else 0)
        if axis == 1:
            return concatenate(_branches(k, "FanInConcat"))
        return concatenate_spatial(k, axis - 2)

    def build_module(self, in_features, ctx: BuildContext):
        if not isinstance(in_features, tuple) or len(in_features) < 2:
            _branches(in_features, "FanInConcat")
        first = in_features[0]
        axis = resolve_axis(self.axis, len(first.size) if isinstance(first, SpatialFeatures) else 0)
        if axis != 1:
            return FanInConcatModule(axis), spatial_concat_features(in_features, axis - 2)
        _branches(in_features, "FanInConcat")
        if not any(isinstance(f, SpatialFeatures) for f in in_features):
            return FanInConcatModule(), sum(in_features)
        sizes = {getattr(f, "size", ()) for f in in_features}
        if len(sizes) > 1:
            raise ValueError(f"FanInConcat branches have different spatial sizes {sorted(sizes)}")
        return FanInConcatModule(), SpatialFeatures(sum(f.channels for f in in_features), *sizes)


class FanInConcatModule(nn.Module):
    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        return torch.cat(xs, dim=self.axis)


class FanInProd(Layer):
    r"""Elementwise product of independent branches.

    :math:`K = \prod_b K_b`, :math:`\Theta = \sum_b \Theta_b \prod_{c \ne b} K_c`.  The result is
    not Gaussian.
    """

    def kernel_fn(self, k):
        ks = _branches(k, "FanInProd")
        pieces = align_branches(ks, "FanInProd")
        if pieces is not None:  # a concatenation: multiply piece by piece (see _concat)
            return concatenate([self.kernel_fn(p) for p in pieces])

        def prod(field: str, skip: int = -1) -> Tensor:
            out = None
            for i, ki in enumerate(ks):
                if i != skip:
                    out = getattr(ki, field) if out is None else out * getattr(ki, field)
            return out

        ntk = None
        if ks[0].ntk is not None:
            ntk = sum(ki.ntk * prod("nngp", skip=i) for i, ki in enumerate(ks))
        cov1 = prod("cov1")
        cov2 = cov1 if ks[0].cov2 is ks[0].cov1 else prod("cov2")
        out = _merge_flags(ks, nngp=prod("nngp"), ntk=ntk, cov1=cov1, cov2=cov2)
        return out.replace(is_gaussian=False)

    def build_module(self, in_features, ctx: BuildContext):
        _branches(in_features, "FanInProd")
        if len(set(in_features)) > 1:
            raise ValueError(f"FanInProd branches have different widths {in_features}")
        return FanInProdModule(), in_features[0]


class FanInProdModule(nn.Module):
    def forward(self, xs: tuple[Tensor, ...]) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


def Residual(*block: Layer, shortcut: Layer | None = None) -> Serial:
    """``x -> block(x) + shortcut(x)`` (shortcut: identity by default).

    Built from ``FanOut(2)``, ``Parallel`` and ``FanInSum``; end the block in a Dense layer so the
    two summands are uncorrelated and the kernels add.
    """
    from .activations import Identity

    if shortcut is not None and not isinstance(shortcut, Layer):
        raise TypeError(f"shortcut must be a widelimits layer or None, got {shortcut!r}")
    return Serial(FanOut(2), Parallel(Serial(*block), shortcut or Identity()), FanInSum())


class Repeat(Layer):
    r"""``layer`` applied ``n`` times in a row: ``Serial(layer, layer, ..., layer)``.

    As neural-tangents' ``stax.repeat``, each repetition has its **own** weights (drawn
    independently in the finite network), so the kernel map is the layer's map composed n
    times:

    .. math::

        K^{(t+1)} = \mathcal{T}(K^{(t)}), \quad t = 0, \dots, n - 1

    (:math:`\mathcal{T}` the layer's NNGP/NTK map); a weight-tied stack (one set of weights
    reused n times) has the same NNGP but a different NTK and is not this layer.  The layer
    must keep the shape of its input (features, or channels and pixels).  ``n = 0`` is the
    identity.
    """

    def __init__(self, layer: Layer, n: int) -> None:
        (self.layer,) = _as_layers((layer,))
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Repeat(n=...) must be a non-negative integer, got {n!r}")
        self.n = n

    def children(self):
        return (self.layer,) * self.n  # n uses: walkers (e.g. counting hidden layers) see each

    def kernel_fn(self, k):
        return _reuse.chain((self.layer,) * self.n, k, owner=self, check=_check_same_shape)

    def build_module(self, in_features, ctx: BuildContext):
        modules = []
        for _ in range(self.n):
            module, out = self.layer.build_module(in_features, ctx)
            if out != in_features:
                raise ValueError(
                    f"Repeat(n={self.n}) needs a layer that keeps the shape of its input, but "
                    f"{self.layer!r} maps {in_features} to {out}; use Serial with the layers "
                    "written out"
                )
            modules.append(module)
        sequential = PatternSequential if reads_patterns(self) else nn.Sequential
        return sequential(*modules), in_features


def _check_same_shape(k, out) -> None:
    def shape(s):
        if isinstance(s, tuple):
            return tuple(shape(b) for b in s)
        return (s.layout, s.pixel_shape, s.width)

    if shape(k) != shape(out):
        raise ValueError(
            "Repeat(n=...) needs a layer that keeps the shape of its input (layout, pixels, "
            f"width), but it maps {shape(k)} to {shape(out)}; use Serial with the layers "
            "written out"
        )
