r"""Graph aggregation: every node's features replaced by a weighted sum over its predecessors.

Graph neural tangent kernels (Du et al. 2019, "Graph Neural Tangent Kernel") are built from
`Aggregate` layers between Dense / Conv(kernel_size=1) layers and activations.  Each example is a
graph: node features ``(C, *S)`` (the spatial axes ``S`` index the nodes, usually one axis of V
nodes) and a pattern, the graph's weighted adjacency, passed along with the examples:

- to the kernel: ``net.kernel(x1, x2, pattern=(pattern1, pattern2))`` (``pattern=pattern1`` when
  ``x2`` is ``None``); the tiles slice the patterns with the examples (`Kernel.pattern`);
- to the finite network: ``model(x, pattern=pattern)``.

Every `Aggregate` in a network reads the same pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..kernel import Kernel
from ._concat import per_branch
from .base import BuildContext, Layer, SpatialFeatures

__all__ = ["Aggregate"]

IMPLEMENTATIONS = ("dense", "sparse")


@dataclass(frozen=True)
class Graphs:
    """The patterns of a batch of examples, decoded: a dense (N, P, P) adjacency ``matrix``, or
    edge lists ``tails``, ``heads`` (N, E) of flat node indices with ``weights`` (0 for padding).
    """

    matrix: Tensor | None = None
    tails: Tensor | None = None
    heads: Tensor | None = None
    weights: Tensor | None = None

    def select(self, index: Tensor) -> Graphs:
        """The graphs of the examples ``index`` (the packed pairs of a diagonal tile)."""
        if self.matrix is not None:
            return Graphs(matrix=self.matrix.index_select(0, index))
        t, h, w = (v.index_select(0, index) for v in (self.tails, self.heads, self.weights))
        return Graphs(tails=t, heads=h, weights=w)

    def broadcast(self, shape: tuple[int, ...]) -> Graphs:
        """The example axis reshaped to ``shape`` (e.g. (N1, 1) or (1, N2)) for broadcasting."""
        if self.matrix is not None:
            return Graphs(matrix=self.matrix.reshape(*shape, *self.matrix.shape[1:]))
        edges = (self.tails, self.heads, self.weights)
        t, h, w = (v.reshape(*shape, 1, v.shape[-1]) for v in edges)
        return Graphs(tails=t, heads=h, weights=w)

    def right(self, t: Tensor) -> Tensor:
        """``t @ A`` over the last axis of ``t`` (..., P), A broadcast over the leading axes."""
        if self.matrix is not None:
            return t @ self.matrix.to(t.dtype)
        tails, heads = self.tails, self.heads
        if tails.ndim == 2:  # one example axis (N, E): the rows of t (..., rows, P) broadcast
            tails, heads, weights = tails[:, None], heads[:, None], self.weights[:, None]
        else:
            weights = self.weights
        shape = (*torch.broadcast_shapes(t.shape[:-1], tails.shape[:-1]), tails.shape[-1])
        messages = t.expand(*shape[:-1], t.shape[-1]).gather(-1, tails.expand(shape))
        messages = messages * weights.to(t.dtype)
        out = torch.zeros(*shape[:-1], t.shape[-1], dtype=t.dtype, device=t.device)
        return out.scatter_add(-1, heads.expand(shape), messages)

    def sandwich(self, t: Tensor, other: Graphs) -> Tensor:
        """``A^T t B`` over the last two axes (..., P, P) of ``t``, A = self, B = other."""
        t = other.right(t)
        if self.matrix is not None:
            return self.matrix.to(t.dtype).transpose(-1, -2) @ t
        return self.right(t.transpose(-1, -2)).transpose(-1, -2)


def decode(pattern: Tensor, spatial: tuple[int, ...], implementation: str, name: str) -> Graphs:
    """Check a batch of patterns against the node axes ``spatial`` and decode it."""
    d, p = len(spatial), math.prod(spatial)
    if implementation == "dense":
        if tuple(pattern.shape[1:]) != (*spatial, *spatial):
            raise ValueError(
                f"{name}: a dense Aggregate pattern must have shape (N, *S, *S) = "
                f"(N, {', '.join(map(str, (*spatial, *spatial)))}) for nodes S = {spatial}, got "
                f"{tuple(pattern.shape)}"
            )
        if pattern.is_complex():
            raise TypeError(f"{name} must be real (edge weights), got {pattern.dtype}")
        return Graphs(matrix=pattern.reshape(len(pattern), p, p))
    if pattern.is_floating_point() or pattern.is_complex() or pattern.dtype == torch.bool:
        raise TypeError(
            f"{name}: a sparse Aggregate pattern is an integer edge list (N, E, 2) of (tail, "
            f"head) node indices, got dtype {pattern.dtype}"
        )
    if d == 1 and pattern.ndim == 3:
        pattern = pattern.unsqueeze(2)
    if pattern.ndim != 4 or pattern.shape[2] != d or pattern.shape[3] != 2:
        raise ValueError(
            f"{name}: a sparse Aggregate pattern must have shape (N, E, {d}, 2) (or (N, E, 2) "
            f"for one node axis): E edges of (tail, head) node coordinates, got "
            f"{tuple(pattern.shape)}"
        )
    pattern = pattern.long()
    valid = (pattern >= 0).all(dim=2)  # (N, E, 2): a negative coordinate marks padding
    bounds = torch.tensor(spatial, device=pattern.device).reshape(1, 1, d, 1)
    if bool((pattern >= bounds).any()):
        raise ValueError(
            f"{name} has node coordinates past the node axes {spatial}: every coordinate must "
            "be below its axis size (negative ones mark padding edges)"
        )
    strides = torch.tensor(
        [math.prod(spatial[i + 1 :]) for i in range(d)], device=pattern.device
    ).reshape(1, 1, d, 1)
    flat = (pattern.clamp_min(0) * strides).sum(dim=2)  # (N, E, 2)
    weights = (valid[..., 0] & valid[..., 1]).long()
    return Graphs(tails=flat[..., 0], heads=flat[..., 1], weights=weights)


def _self_pairs(k: Kernel, nngp: Tensor, cov1: Tensor) -> Tensor:
    """``nngp`` with the entries of an example paired with itself taken from ``cov1``.

    Matrix products over batches of different shapes round differently, and a correlation of
    1 - O(eps) at a self-pair turns into O(sqrt(eps)) after an activation; the self-pairs get
    exactly their variances instead, as the input kernel does.
    """
    if k.pairs is not None:
        t = (k.pairs[0] == k.pairs[1]).nonzero().squeeze(1)
        return nngp.index_put((t,), cov1.index_select(0, k.pairs[0][t]))
    if k.same_example_diagonal:
        i = torch.arange(min(nngp.shape[:2]), device=nngp.device)
        return nngp.index_put((i, i), cov1[i])
    return nngp


def _densify(g: Graphs, p: int) -> Graphs:
    n = len(g.tails)
    matrix = torch.zeros(n, p * p, dtype=torch.float64, device=g.tails.device)
    matrix.scatter_add_(1, g.tails * p + g.heads, g.weights.double())
    return Graphs(matrix=matrix.reshape(n, p, p))


class Aggregate(Layer):
    r"""Aggregation over a graph: ``x_j <- sum_i A_{ij} x_i`` for every node j and channel.

    Inputs are ``(N, C, *S)`` node features, the spatial axes ``S`` indexing the P nodes of
    each example's graph; each example n has its own pattern: the weighted adjacency
    :math:`A^{(n)}`, where :math:`A_{ij}` is the weight of the edge (arc) from tail i to head j.
    Then

    .. math::

        z_j(x) = \sum_i A_{ij}\, x_i, \qquad
        K'_{jl}(x, x') = \sum_{i, k} A_{ij}\, K_{ik}(x, x')\, A'_{kl}
                       = (A^\top K A')_{jl},

    with :math:`A` the pattern of :math:`x` and :math:`A'` that of :math:`x'`, and the same for
    :math:`\Theta` (no parameters).  Gaussian inputs stay Gaussian.  The map reads every pair of
    nodes, so networks with `Aggregate` use the full pixel-pair layout (tiled under the memory
    budget like pooling).

    Args:
        implementation: the form of the patterns.  ``"dense"``: a real tensor ``(N, *S, *S)`` of
            edge weights, ``pattern[n, i, j]`` for the arc i -> j (i and j run over the node
            axes).  ``"sparse"``: an integer edge list (N, E, d, 2) (or (N, E, 2) for d = 1 node
            axis) of (tail, head) node coordinates, weight 1 per edge, repeated edges adding up;
            an edge with a negative coordinate is padding (so examples with fewer edges fit one
            tensor).  The kernel map of an edge list costs :math:`O(P E)` per pair of examples
            instead of :math:`O(P^3)`; it uses the dense product when :math:`E > P`.

    Passing patterns: ``net.kernel(x1, x2, pattern=(pattern1, pattern2))``, or
    ``net.kernel(x1, pattern=pattern1)``; the finite module built by ``net.build`` takes
    ``model(x, pattern=pattern)``.  Every `Aggregate` of a network reads the same pattern.
    The finite side multiplies the features by the adjacency (or scatter-adds the messages
    along the edges), per example.

    Two examples are the same point only if their features and graphs are equal.  An example
    paired with itself (``x2=None``, ``diagonal=True``) keeps a correlation of exactly 1; a row
    of ``x2`` equal to one of ``x1`` (with the same graph) agrees with it to rounding only, since
    batched matrix products round differently in batches of different shapes.
    """

    mixes_pixels = True
    takes_pattern = True

    def __init__(self, implementation: str = "dense") -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"Aggregate(implementation=...) must be 'dense' (adjacency tensors) or 'sparse' "
                f"(edge lists), got {implementation!r}"
            )
        self.implementation = implementation

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("Aggregate got several branches; merge them first")
        if k.layout == "none":
            raise ValueError(
                "Aggregate needs node features (N, C, nodes) or (N, C, *S), but got flat "
                "features; keep the node axis (aggregate before Flatten or global pooling)"
            )
        if k.pattern is None:
            raise ValueError(
                "Aggregate needs the examples' graphs: pass them as "
                "net.kernel(x1, x2, pattern=(pattern1, pattern2)) (or pattern=pattern1 with "
                "x2=None)"
            )
        return per_branch(k, self._aggregate)

    def _graphs(self, k: Kernel) -> tuple[Graphs, Graphs]:
        d = k.spatial_ndim
        spatial = tuple(k.cov1.shape[1 : 1 + d])
        p = math.prod(spatial)
        p1, p2 = k.pattern
        g1 = decode(p1, spatial, self.implementation, "pattern")
        g2 = g1 if p2 is p1 else decode(p2, spatial, self.implementation, "pattern")
        if g1.tails is not None and max(g1.tails.shape[1], g2.tails.shape[1]) > p:
            g1 = _densify(g1, p)
            g2 = g1 if p2 is p1 else _densify(g2, p)
        return g1, g2

    def _aggregate(self, k: Kernel) -> Kernel:
        d = k.spatial_ndim
        g1, g2 = self._graphs(k)

        def apply(t: Tensor, a: Graphs, b: Graphs, lead: int) -> Tensor:
            shape = t.shape
            p = math.prod(shape[lead : lead + d])
            return a.sandwich(t.reshape(*shape[:lead], p, p), b).reshape(shape)

        cov1 = apply(k.cov1, g1, g1, 1)
        cov2 = cov1 if k.cov2 is k.cov1 else apply(k.cov2, g2, g2, 1)
        if k.batch_diagonal:
            pair = (g1, g1, 1)
        elif k.pairs is not None:
            pair = (g1.select(k.pairs[0]), g2.select(k.pairs[1]), 1)
        else:
            n1, n2 = k.nngp.shape[:2]
            pair = (g1.broadcast((n1, 1)), g2.broadcast((1, n2)), 2)
        nngp = cov1 if k.nngp is k.cov1 else _self_pairs(k, apply(k.nngp, *pair), cov1)
        ntk = k.ntk
        if ntk is not None and ntk.ndim > 0:
            ntk = apply(ntk, *pair)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                "Aggregate needs node features: build the network with in_features=(C, nodes) "
                "(or (C, *S)), the shape of one example"
            )
        return AggregateModule(self.implementation), in_features


class AggregateModule(nn.Module):
    """The finite aggregation: ``forward(x, pattern)`` with x (N, C, *S), one graph per example."""

    takes_pattern = True

    def __init__(self, implementation: str) -> None:
        super().__init__()
        self.implementation = implementation

    def forward(self, x: Tensor, pattern: Tensor | None = None) -> Tensor:
        if pattern is None:
            raise ValueError(
                "Aggregate needs the examples' graphs: call the network as model(x, "
                "pattern=pattern)"
            )
        if not isinstance(pattern, Tensor):
            raise TypeError(f"pattern must be a tensor, got {type(pattern).__name__}")
        if pattern.shape[0] != x.shape[0]:
            raise ValueError(
                f"pattern must have one graph per example ({x.shape[0]}), got shape "
                f"{tuple(pattern.shape)}"
            )
        spatial = tuple(x.shape[2:])
        g = decode(pattern.to(x.device), spatial, self.implementation, "pattern")
        return g.right(x.reshape(*x.shape[:2], -1)).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"implementation={self.implementation!r}"
