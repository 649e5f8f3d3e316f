r"""Runs of layers in one compiled pass over a fully connected or per-pixel tile.

Layer by layer, a depth-L network reads and writes each tile L times: an activation's closed
form is one compiled pass (`_jit`), but the tile (a few MiB) does not stay in the core's cache
from one layer to the next, and Dense's NTK update is another pass.  Every layer of a fully
connected network maps each entry :math:`(K_{ij}, \Theta_{ij})` on its own, given the two
examples' variances, and the variances follow their own recursion on the diagonal:

.. math::

    K^{l+1}_{ij} = f_l\bigl(K^l_{ij};\ K^l_{ii}, K^l_{jj}\bigr), \qquad
    \Theta^{l+1}_{ij} = g_l\bigl(K^l_{ij}, \Theta^l_{ij};\ K^l_{ii}, K^l_{jj}\bigr).

A network of convolutions ending in Flatten keeps one covariance per pixel (the per-pixel
layout, ``layout="diagonal"``), and there each pair of examples is a short vector
:math:`K_{ij}[p]`: activations and Dense act on each pixel alike, and a convolution (NTK
parametrization) is a linear map of the pixels, the same for every pair,

.. math::

    K'_{ij}[q] = \frac{\sigma_w^2}{k} \sum_{p} M_{pq} K_{ij}[p] + \sigma_b^2, \qquad
    \Theta'_{ij}[q] = K'_{ij}[q] + \frac{\sigma_w^2}{k} \sum_{p} M_{pq} \Theta_{ij}[p],

with :math:`M_{pq}` how often input pixel p is in output pixel q's window (`PixelMap`; from
`widelimits.layers.conv.window_map`), and Flatten the mean over the pixels, after which the run
goes on flat.

So `run` first takes the variances through the run of layers (the examples' self-covariances,
in the same loop: cheap), then hands the whole run to one compiled loop (`_jit_loops.chain`)
that takes a chunk of pairs through every layer while it sits in the cache.  The result is the
layer-by-layer one up to rounding (tests compare them to 1e-12 in float64).  A tile a call has
to itself is shared by its threads in bands of rows (`_bands`; the pairs are independent, so
the bits do not change).

A layer joins a run by answering `chain_op` with a `Step`: Dense, Conv and Flatten do on the
per-pixel layout (Dense also on flat tiles), and so do the activations with a compiled form
(`Activation.compiled_op`: the ReLU family and Erf); every other layer returns None and ends the
run.  Runs are used only for plain CPU tiles with no gradient needed, when numba is installed
and neither the fused nor the compiled maps are switched off; anything else goes layer by
layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .. import _threads
from ..kernel import Kernel
from . import _jit
from ._fused import can_fuse

__all__ = ["Step", "run"]

PIXEL_CHUNK = 8192
"""Entries of a chunk of a per-pixel run: its five buffers stay in the L2 cache."""
MIN_WIDTH = 32
"""Pairs in a chunk at the least: the loop's vector loops run over a chunk's pairs, and 8 of
them took 1.7x as long as 32 (21 convolutions on 32x32 images)."""
BANDS_PER_THREAD = 4
MIN_BAND_ENTRIES = 2**16
"""Tiles with fewer entries are never shared by threads (`_bands`)."""


class PixelMap(NamedTuple):
    """A linear map of the pixels, output pixel q = sum over e from ``ptr[q]`` to
    ``ptr[q + 1]`` of ``weight[e]`` times input pixel ``index[e]`` (a sparse matrix by rows),
    and the spatial shape of its output."""

    ptr: np.ndarray
    index: np.ndarray
    weight: np.ndarray
    size: tuple[int, ...]


class Step(NamedTuple):
    """One layer as a step of a compiled run (`widelimits.layers.base.Layer.chain_op`)."""

    op: tuple
    """The loop's row for the layer, ``(kind, x, y, n, 0, 0)`` (see `_jit_loops.chain`)."""
    changes: dict
    """What the layer does to the state's flags (`Kernel.replace` arguments)."""
    pixels: PixelMap | None = None
    """For a map of the pixels (kind `_jit.WINDOW`): the map."""


def _applies(k) -> bool:
    if type(k) is not Kernel:  # branches (a tuple), or concatenated features
        return False
    t = k.nngp
    lead = 1 if k.pairs is not None or k.batch_diagonal else 2
    return (
        k.layout in ("none", "diagonal")
        and t.ndim == lead + k.spatial_ndim
        and t.dtype in (torch.float32, torch.float64)
        and t.device.type == "cpu"
        and t.is_contiguous()
        and k.cov1.dtype == t.dtype == k.cov2.dtype
        and k.cov1.is_contiguous()
        and k.cov2.is_contiguous()
        and (k.ntk is None or k.ntk.ndim == 0 or (k.ntk.shape == t.shape and k.ntk.is_contiguous()))
        and (k.ntk is None or k.ntk.ndim > 0 or float(k.ntk) == 0.0)
        and (k.pairs is None or _triangle(k))
        and can_fuse(t, k.ntk, k.cov1, k.cov2)
        and _jit.compiled_enabled()
    )


def _triangle(k: Kernel) -> bool:
    """Whether the packed pairs are every pair i <= j of the examples in row-major order, as
    `torch.triu_indices` gives them (what the loop's TRIANGLE mode walks through)."""
    n, (i, j) = len(k.cov1), k.pairs
    if k.cov2 is not k.cov1 or len(i) != n * (n + 1) // 2:
        return False
    ends = (i[0], j[0], i[-1], j[-1]) + ((i[1], j[1]) if n > 1 else (0, 1))
    return [int(v) for v in ends] == [0, 0, n - 1, n - 1, 0, 1]


def _bands(rows: int, mode: int, entries: int, threads: int) -> list[tuple[int, int]]:
    """Row ranges of a tile for ``threads`` threads to share (a tile a call has to itself,
    `widelimits._threads.piece_threads`): a few per thread, so that a thread slowed by another
    process delays only its own; as many pairs in each (the rows of a TRIANGLE get shorter).
    One band for small tiles and one thread.  Each pair is computed alone, so the bands do not
    change a bit of the result."""
    count = min(rows, BANDS_PER_THREAD * threads) if entries >= MIN_BAND_ENTRIES else 1
    if count <= 1:
        return [(0, rows)]
    r = np.arange(rows + 1)
    before = r * rows - (r * (r - 1)) // 2 if mode == _jit.TRIANGLE else r * rows  # pairs
    cuts = np.searchsorted(before, np.linspace(0, before[-1], count + 1)[1:-1])
    edges = [0, *sorted(set(int(c) for c in cuts) - {0, rows}), rows]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _steps(layers: Sequence, k: Kernel):
    """The longest leading run of ``layers`` that chains: the loop's ops, its pixel maps
    joined (arrays ``ptr, index, weight``), the state's flags after the run, the spatial shape
    after it, and the largest pixel count an activation sees."""
    size = tuple(k.cov1.shape[1:])
    ops, maps, state, most, first = [], [], k, 1, 0
    for layer in layers:
        step = layer.chain_op(state, size)
        if step is None:
            break
        op = list(step.op)
        if _jit.RELU <= op[0] < _jit.WINDOW:
            most = max(most, math.prod(size))
        if step.pixels is not None:
            size = step.pixels.size
            op[4], op[5] = len(step.pixels.ptr) - 1, first  # output pixels, first pointer
            maps.append(step.pixels)
            first += len(step.pixels.ptr)
        ops.append(op)
        state = state.replace(**step.changes)
    # each map's pointers shifted to its entries' place in the joined arrays
    starts = np.cumsum([0] + [len(m.index) for m in maps])[:-1]
    shifted = [m.ptr + s for m, s in zip(maps, starts, strict=True)]
    ptr = np.concatenate([np.zeros(0, np.int64)] + shifted)
    index = np.concatenate([np.zeros(0, np.int64)] + [m.index for m in maps])
    weight = np.concatenate([np.zeros(0)] + [m.weight for m in maps])
    return ops, (ptr, index, weight), state, size, most


def run(layers: Sequence, k: Kernel) -> tuple[Kernel, int] | None:
    """The state after the longest leading run of ``layers`` that chains (see the module
    docstring), and the run's length; None when no run with an activation or a pixel map in
    it applies."""
    if not _applies(k) or (loops := _jit.loops()) is None:
        return None
    ops, (ptr, index, weight), state, size, most = _steps(layers, k)
    activations = sum(_jit.RELU <= op[0] < _jit.WINDOW for op in ops)
    if not activations and not len(ptr):
        return None
    consts, tiny = _jit.constants(k.nngp.dtype)
    ops_array = np.array(ops, dtype=consts.dtype)
    maps = (ptr.astype(np.int64), index.astype(np.int64), weight.astype(consts.dtype))
    pixels = math.prod(k.cov1.shape[1:])
    biggest = max([pixels] + [int(op[4]) for op in ops if op[0] == _jit.WINDOW])
    width = max(MIN_WIDTH, (_jit.CHUNK if biggest == 1 else PIXEL_CHUNK) // biggest)

    def call(k12, ntk, t, theta, v1, v2, ntk_kind, mode, rows=None):
        def flat(x):
            return x.numpy().reshape(-1)

        loops.chain(
            flat(k12), flat(ntk), flat(t), flat(theta), ops_array, v1.numpy(), v2.numpy(),
            v1.numpy(), consts, tiny, ntk_kind, mode, len(k.cov1), *maps, pixels, width,
            *(rows or (0, len(k.cov1))),
        )  # fmt: skip

    ntk_kind = 0 if k.ntk is None else (1 if k.ntk.ndim > 0 else 2)
    if k.batch_diagonal:  # k(x_i, x_i) only: the examples' own variances, and their NTK
        out = k.nngp.new_empty((len(k.nngp), *size))
        theta = None if k.ntk is None else torch.empty_like(out)
        var = out.new_empty((activations, most, len(out)))
        ntk = k.ntk if ntk_kind == 1 else out
        call(k.nngp, ntk, out, out if theta is None else theta, var, var, ntk_kind, _jit.SELF)
        return state.replace(nngp=out, ntk=theta, cov1=out, cov2=out), len(ops)
    # The examples' own variances through the run (SELF mode), each activation's inputs kept.
    own = []
    for cov in (k.cov1,) if k.cov2 is k.cov1 else (k.cov1, k.cov2):
        out = cov.new_empty((len(cov), *size))
        var = cov.new_empty((activations, most, len(cov)))
        call(cov, out, out, out, var, var, 0, _jit.SELF)
        own.append((out, var))
    (cov1, var1), (cov2, var2) = own[0], own[-1]
    lead = k.nngp.shape[: 1 if k.pairs is not None else 2]
    t = k.nngp.new_empty((*lead, *size))
    theta = None if k.ntk is None else torch.empty_like(t)
    mode = _jit.OUTER if k.pairs is None else _jit.TRIANGLE
    bands = _bands(len(k.cov1), mode, k.nngp.numel(), _threads.piece_threads())

    def band(b: int) -> None:
        call(
            k.nngp, k.ntk if ntk_kind == 1 else t, t, t if theta is None else theta, var1, var2,
            ntk_kind, mode, bands[b],
        )  # fmt: skip

    if len(bands) == 1:
        band(0)
    else:
        _threads.run_parallel(band, len(bands), _threads.piece_threads())
    return state.replace(nngp=t, ntk=theta, cov1=cov1, cov2=cov2), len(ops)
