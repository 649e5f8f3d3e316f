"""From inputs to kernels: input checks, the input kernel, and tiling under a memory budget.

Every layer acts on pairs of examples independently, so the kernel of a (N1, N2) batch pair is
assembled from tiles (rows of x1 against rows of x2), each pushed through the whole network.
Small tiles stay in the processor's cache, which makes the elementwise recursion cheap, and the
working memory is bounded by the tile size rather than by N1 * N2 * depth.  For x2=None only the
tiles on and above the diagonal are computed and mirrored, and the diagonal tiles themselves carry
only their pairs i <= j (`Kernel.pairs`).

Spatial inputs (N, C, *S) carry P = prod(S) entries per pair of examples in the per-pixel layout
and P^2 in the full layout (chosen when a layer pools, see `widelimits.Kernel`); tiles hold the
same number of kernel entries whatever the layout, so their edge in examples shrinks with P.

The same point gets the same value wherever it appears.  Each variance K0(x_i, x_i) is computed
from its example alone, and every pair of rows with equal values (an example with itself, x2 rows
repeating x1 rows, duplicates; `widelimits._inputs.point_ids`) starts from its variance instead of
a Gram product, whose rounding would put the correlation at 1 - O(eps), which activations turn into
O(sqrt(eps)) (3e-4 relative in float32).  Such pairs then go through the same elementwise maps
as an example with itself, whatever tile or batch they fall in.  (Which pairs are the same
*example*, e.g. for `Dropout`'s masks, is another matter: only the diagonal of ``x2=None``.)

On the CPU the tiles are spread over a pool of threads, each tile on one torch thread
(`widelimits._threads`): the result is the same bit for bit whatever the number of threads.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterable

import torch
from torch import Tensor

from ._inputs import LayoutWarning, as_input, check_kernel_options, point_ids
from ._patterns import check_patterns, joint_point_ids
from ._progress import progress_bar
from ._threads import check_threads, run_parallel
from .kernel import Kernel

__all__ = ["compute_kernel", "as_input", "available_memory", "LayoutWarning"]

GETS = ("nngp", "ntk")
DEFAULT_TILE_ENTRIES = {"cpu": 512**2, "cuda": 8192**2}
PER_PIXEL_TILE_ENTRIES = {"cpu": 2**20, "cuda": 8192**2}
"""Tiles of the per-pixel layout (P entries per pair) hold 4x more entries on the CPU: each tile
costs its layers' Python and per-operation overhead, and its maps are single passes (measured,
a 2-conv Flatten CNN on 3x8x8 images: 28 ms for 200 images with 128-example tiles, 47 ms with
the 64-example tiles of the fully connected size)."""
MIN_SPATIAL_EDGE = 8
SMALL_CHANNELS = 8
TEMPORARIES_PER_TILE = 16  # live tile-sized tensors in the worst layer map, with margin
PROGRESS_MIN_ENTRIES = 2**26


def available_memory(device: torch.device) -> int:
    """Bytes of memory currently available on ``device`` (RAM for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _tile_edge(
    tile_size: int | None, memory_budget: int | None, device, itemsize: int, pair_entries: int,
    layout: str = "none",
) -> int:  # fmt: skip
    """Edge in examples of the square tiles, from ``pair_entries`` kernel entries per pair."""
    if tile_size is not None:
        if tile_size < 1:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        return int(tile_size)
    budget = memory_budget if memory_budget is not None else available_memory(device) // 4
    per_pair = itemsize * TEMPORARIES_PER_TILE * pair_entries
    by_budget = math.isqrt(max(budget, 0) // per_pair)
    if by_budget < 1:
        raise MemoryError(
            f"one pair of examples needs about {per_pair / 2**20:.3g} MiB of working memory "
            f"({pair_entries} kernel entries per pair), more than the budget of "
            f"{budget / 2**20:.3g} MiB: raise memory_budget, use smaller inputs, or end the "
            "network in Flatten without pooling (per-pixel layout, P instead of P^2 entries)"
        )
    entries = PER_PIXEL_TILE_ENTRIES if layout == "diagonal" else DEFAULT_TILE_ENTRIES
    default = math.isqrt(entries.get(device.type, 512**2) // pair_entries)
    if pair_entries > 1:
        # Each tile also pushes its examples' own pixel-pair covariances through the network
        # (2 / edge of the work): past the cache size, larger tiles are cheaper.
        default = max(default, MIN_SPATIAL_EDGE)
    return max(1, min(default, by_budget))


def _blocks(n: int, edge: int) -> list[tuple[int, int]]:
    return [(i, min(i + edge, n)) for i in range(0, n, edge)]


def _layout(layer, x: Tensor) -> str:
    if x.ndim == 2:
        return "none"
    return "full" if layer.any_mixes_pixels() else "diagonal"


def _pair_entries(x: Tensor, layout: str) -> int:
    pixels = math.prod(x.shape[2:])
    return {"none": 1, "diagonal": pixels, "full": pixels**2}[layout]


def _swap_pixels(t: Tensor, lead: int) -> Tensor:
    """Swap the pixels p and q of a full-layout tensor with ``lead`` example axes."""
    d = (t.ndim - lead) // 2
    return t.permute(*range(lead), *range(lead + d, lead + 2 * d), *range(lead, lead + d))


def _swap(t: Tensor, layout: str, lead: int = 2) -> Tensor:
    """K(x2, x1) from K(x1, x2): swap the example axes (and the pixels p, q of the full layout).

    ``lead=1`` for packed pairs (one example axis): only the pixels are swapped.
    """
    if lead == 2:
        t = t.transpose(0, 1)
    return _swap_pixels(t, lead) if layout == "full" else t


def _symmetric_pixels(t: Tensor, same: Tensor | None, layout: str, lead: int) -> Tensor:
    """Entries of same-point pairs (``same``, over the example axes) made symmetric in p, q.

    Pooling sums pixel pairs in an order that is not symmetric to the last bit; an example with
    itself has K[p, q] = K[q, p] exactly, so its entry is averaged with its pixel transpose.
    """
    if layout != "full" or same is None:
        return t
    mask = same.reshape(*same.shape, *([1] * (t.ndim - same.ndim)))
    return torch.where(mask, (t + _swap_pixels(t, lead)) / 2, t)


SMALL_GRAM_CHANNELS = 16
"""Up to this many channels, the pixel-pair input covariances are a compiled loop over the
channels (`layers._jit_pixels`, when numba is installed) instead of a batched product."""


def _pixel_loops(a: Tensor, b: Tensor):
    """The compiled loops of `layers._jit_pixels` when they apply to inputs ``a`` and ``b``
    (a few channels, plain CPU floats, no gradient), else None."""
    from .layers import _jit  # here: the layers import this module

    if (
        a.shape[1] > SMALL_GRAM_CHANNELS
        or a.device.type != "cpu"
        or a.dtype not in (torch.float32, torch.float64)
        or b.dtype != a.dtype
        or (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))
        or not _jit.compiled_enabled()
    ):
        return None
    return _jit.load_locked("_jit_pixels")


def _pixel_gram(a: Tensor, b: Tensor, diagonal: bool) -> Tensor | None:
    """The pixel-pair products of `layers._jit_pixels` (``(N, M, P, P)``, or ``(N, 1, P, P)``
    with ``diagonal``), or None where the compiled loop does not apply."""
    if (loops := _pixel_loops(a, b)) is None:
        return None
    c = a.shape[1]
    fa, fb = a.reshape(len(a), c, -1).contiguous(), b.reshape(len(b), c, -1).contiguous()
    p = fa.shape[2]
    out = a.new_empty((len(a), 1 if diagonal else len(b), p, p))
    loops.pixel_gram(fa.numpy(), fb.numpy(), out.numpy(), diagonal)
    return out


def _pixel_pairs(a: Tensor, b: Tensor | None) -> Tensor | None:
    """The per-pixel products of `layers._jit_pixels` (``(N, M, P)``, or ``(T, P)`` for the
    pairs i <= j of ``a`` when ``b`` is None), or None where the compiled loop does not
    apply."""
    if (loops := _pixel_loops(a, a if b is None else b)) is None:
        return None
    n, c = a.shape[:2]
    fa = a.reshape(n, c, -1).contiguous()
    fb = fa if b is None else b.reshape(len(b), c, -1).contiguous()
    shape = (n * (n + 1) // 2,) if b is None else (n, len(b))
    out = a.new_empty((*shape, fa.shape[2]))
    loops.pixel_pairs(fa.numpy(), fb.numpy(), out.reshape(-1, fa.shape[2]).numpy(), b is None)
    return out


def _triangle(a: Tensor, layout: str) -> Tensor:
    """K0(a_i, a_j) * C for the pairs i <= j in row-major order (`torch.triu_indices`), per
    pixel for spatial inputs: ``(T, *S)``, or ``(T, *S, *S)`` in the full layout."""
    out = _pixel_pairs(a, None) if layout == "diagonal" else None
    if out is None:
        i, j = torch.triu_indices(len(a), len(a), device=a.device)
        return _cross(a, a, layout)[i, j]
    return out.reshape(len(out), *a.shape[2:])


def _variances(x: Tensor, layout: str) -> Tensor:
    """K0(x, x) for each example: |x|^2 / d, per pixel (N, *S), or per pixel pair (N, *S, *S)."""
    if layout != "full":
        return (x * x).sum(1) / x.shape[1]
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    g = _pixel_gram(x, x, diagonal=True)
    if g is not None:  # symmetric bit for bit by construction
        return g.div_(c).reshape(n, *spatial, *spatial)
    f = x.reshape(n, c, -1)
    g = torch.bmm(f.transpose(1, 2), f)
    # Symmetric bit for bit, so that pixel pairs (p, q) and (q, p) stay equal through the layers.
    g = g.add_(g.transpose(1, 2).clone()).div_(2 * c)
    return g.reshape(n, *spatial, *spatial)


def _cross(a: Tensor, b: Tensor, layout: str) -> Tensor:
    """K0(a_i, b_j) = a_i . b_j / C, per pixel or per pixel pair for spatial inputs."""
    if layout == "none":
        return torch.mm(a, b.T)
    spatial = a.shape[2:]
    fa, fb = a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)
    if layout == "diagonal":
        if (out := _pixel_pairs(a, b)) is not None:  # compiled: the bits of `_triangle`
            return out.reshape(len(a), len(b), *spatial)
        if a.shape[1] <= SMALL_CHANNELS:  # a few channels: products beat a batched matmul
            out = fa[:, None, 0] * fb[None, :, 0]
            for c in range(1, a.shape[1]):
                out.addcmul_(fa[:, None, c], fb[None, :, c])
        else:
            out = torch.einsum("ncp,mcp->nmp", fa, fb)
        return out.reshape(len(a), len(b), *spatial)
    g = _pixel_gram(a, b, diagonal=False)
    if g is None:
        g = torch.einsum("ncp,mcq->nmpq", fa, fb)
    return g.reshape(len(a), len(b), *spatial, *spatial)


def _input_state(
    a: Tensor,
    b: Tensor | None,
    var_a: Tensor,
    var_b: Tensor | None,
    need_ntk: bool,
    layout: str = "none",
    same: Tensor | None = None,
    masks: tuple[Tensor | None, Tensor | None] = (None, None),
) -> Kernel:
    """The kernel of the raw inputs: K0(x, x') = x . x' / d (d features or C channels), Theta0 = 0.

    ``b=None`` marks a tile of a symmetric kernel on the diagonal: the same examples on both
    sides.  Only the pairs i <= j are kept (``Kernel.pairs``: half the work), and the
    self-pairs get exactly their variances (correlation exactly 1).
    ``var_b=None`` (with ``b=None``) asks for the batch diagonal k(x, x) only.
    ``same`` (N_a, N_b) marks other pairs of equal rows; they get their variance as well, as
    (var_a + var_b) / 2: exactly the variance, and gradients reach both sides.
    ``masks`` are the padded positions of ``a`` and ``b`` (`widelimits.layers.masking`).
    """
    d = a.shape[1]
    ntk = torch.zeros((), dtype=a.dtype, device=a.device) if need_ntk else None
    common = dict(width=d, layout=layout, mask1=masks[0])
    common["mask2"] = masks[0] if b is None else masks[1]
    if b is None and var_b is None:
        return Kernel(var_a, ntk, var_a, var_a, batch_diagonal=True, **common)
    if b is None:
        i, j = torch.triu_indices(len(a), len(a), device=a.device)
        nngp = _triangle(a, layout).div_(d)
        nngp[i == j] = var_a
        if same is not None:
            t = (same[i, j] & (i != j)).nonzero().squeeze(1)
            nngp[t] = (var_a[i[t]] + var_a[j[t]]) / 2
        return Kernel(nngp, ntk, var_a, var_a, pairs=(i, j), **common)
    nngp = _cross(a, b, layout).div_(d)
    if same is not None:
        ii, jj = same.nonzero(as_tuple=True)
        nngp[ii, jj] = (var_a[ii] + var_b[jj]) / 2
    return Kernel(nngp, ntk, var_a, var_b, **common)


def _check_finite(name: str, t: Tensor) -> None:
    # A sum is cheaper than an elementwise test and propagates NaN and inf; only a sum that
    # overflows without any bad entry needs the full test.
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise FloatingPointError(
            f"the {name} kernel has non-finite values (overflow in a deep or wide-variance "
            "network?); use float64 inputs, smaller W_std, or fewer layers"
        )


def _run(layer, state: Kernel) -> Kernel:
    out = layer.kernel_fn(state)
    if not isinstance(out, Kernel):
        raise ValueError(
            "the network ends with several unmerged branches; end it with FanInSum, "
            "FanInConcat or FanInProd"
        )
    for name in ("nngp", "ntk"):
        if getattr(out, name) is not None:
            _check_finite(name, getattr(out, name))
    if out.ntk is not None and out.ntk.shape != out.nngp.shape:
        out = out.replace(ntk=out.ntk.expand(out.nngp.shape))
    return out


def _normalize_get(get) -> tuple[tuple[str, ...], bool]:
    """``(names, single)`` for a ``get`` argument (validated)."""
    return check_kernel_options(get, False, None, None, None, GETS)


def compute_kernel(
    layer,
    x1,
    x2=None,
    get: str | Iterable[str] = GETS,
    *,
    diagonal: bool = False,
    tile_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool | None = None,
    threads: int | None = None,
    pattern=None,
    mask_constant: float | None = None,
) -> Kernel | Tensor:
    """See `widelimits.Layer.kernel`."""
    gets, single = check_kernel_options(get, diagonal, tile_size, memory_budget, progress, GETS)
    threads = check_threads(threads)
    need_ntk = "ntk" in gets
    if need_ntk and not layer.any_parameters():
        raise ValueError(
            "this network has no trainable layer, so it has no NTK; add a Dense layer or ask "
            "get='nngp'"
        )
    masks = None
    if mask_constant is not None:
        from .layers.masking import check_supports_mask, input_mask

        check_supports_mask(layer)
        x1, m1 = input_mask(x1, mask_constant, "x1")
        x2, m2 = (None, None) if x2 is None else input_mask(x2, mask_constant, "x2")
        masks = (m1, m2)
    x1 = as_input(x1, "x1", stacklevel=3)
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True computes k(x, x) for x in x1: pass x2=None")
    if x2 is not None:
        x1, x2 = _pair_inputs(x1, x2)
    patterns = check_patterns(pattern, layer, x1, x2)

    needs_grad = torch.is_grad_enabled() and (
        x1.requires_grad
        or (x2 is not None and x2.requires_grad)
        or any(t.requires_grad for t in layer.hyperparameter_tensors())
        or (patterns is not None and any(p.requires_grad for p in patterns))
    )
    layout = _layout(layer, x1)
    if x1.device.type != "cpu":
        threads = 1  # the device parallelises inside each (large) tile
    with contextlib.nullcontext() if needs_grad else torch.no_grad():
        pair_entries = _pair_entries(x1, layout)
        edge = _tile_edge(
            tile_size, memory_budget, x1.device, x1.element_size(), pair_entries, layout
        )
        # As many tiles in flight as the budget holds; the tiles themselves never depend on
        # the thread count (nor, then, the bits of the result).
        budget = memory_budget if memory_budget is not None else available_memory(x1.device) // 4
        per_tile = x1.element_size() * TEMPORARIES_PER_TILE * pair_entries * edge * edge
        threads = max(1, min(threads, budget // per_tile))
        if diagonal:
            out = _batch_diagonal(layer, x1, need_ntk, layout, edge, threads, patterns, masks)
        else:
            out = _tiled(
                layer, x1, x2, need_ntk, layout, edge, progress, threads, needs_grad, patterns,
                masks,
            )
    if masks is not None and out.layout != "none":
        out = out.replace(mask1=masks[0], mask2=masks[0] if x2 is None else masks[1])
    if not need_ntk:
        out = out.replace(ntk=None)
    if single:
        return getattr(out, gets[0])
    return out if "nngp" in gets else out.replace(nngp=None)


def _pair_inputs(x1: Tensor, x2) -> tuple[Tensor, Tensor]:
    """``x1`` and ``x2`` checked against each other and promoted to a common dtype."""
    x2 = as_input(x2, "x2", stacklevel=4)
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x1 examples have shape {tuple(x1.shape[1:])} but x2 examples "
            f"{tuple(x2.shape[1:])}: both batches must have the same example shape (the same "
            "number of features, or of channels and pixels)"
        )
    if x2.device != x1.device:
        raise ValueError(f"x1 is on {x1.device} but x2 is on {x2.device}: move them together")
    dtype = torch.promote_types(x1.dtype, x2.dtype)
    return x1.to(dtype), x2.to(dtype)


def _with_patterns(state: Kernel, patterns, rows: tuple[int, int], cols: tuple[int, int]):
    """The tile's slices of the graph patterns (`widelimits._patterns`), if any."""
    if patterns is None:
        return state
    return state.replace(pattern=(patterns[0][slice(*rows)], patterns[1][slice(*cols)]))


def _rows(masks, i: int, r0: int, r1: int) -> Tensor | None:
    """Rows r0:r1 of the padded positions of batch ``i`` (0: x1, 1: x2), if any."""
    return None if masks is None or masks[i] is None else masks[i][r0:r1]


def _tagged(x1: Tensor, x2: Tensor | None, masks) -> tuple[Tensor, Tensor | None]:
    """The inputs with their padded positions as one more channel: a padded sequence and one
    with zeros there are different points (`point_ids`)."""
    if masks is None:
        return x1, x2

    def tag(x: Tensor, m: Tensor) -> Tensor:
        return torch.cat([x, m.unsqueeze(1).to(x.dtype)], dim=1)

    return tag(x1, masks[0]), None if x2 is None else tag(x2, masks[1])


def _batch_diagonal(
    layer,
    x: Tensor,
    need_ntk: bool,
    layout: str,
    edge: int,
    threads: int,
    patterns=None,
    masks=None,
):
    """k(x_i, x_i) for every example, in blocks of as many examples as a tile has pairs."""
    blocks = _blocks(x.shape[0], edge * edge)
    outs: list[Kernel | None] = [None] * len(blocks)

    def block(k: int) -> None:
        r0, r1 = blocks[k]
        var = _variances(x[r0:r1], layout)
        m = (_rows(masks, 0, r0, r1), None)
        state = _input_state(x[r0:r1], None, var, None, need_ntk, layout, None, m)
        outs[k] = _run(layer, _with_patterns(state, patterns, blocks[k], blocks[k]))

    run_parallel(block, len(blocks), threads)
    nngps, ntks = [], []
    for (r0, r1), out in zip(blocks, outs, strict=True):
        every = torch.ones(r1 - r0, dtype=torch.bool, device=x.device)
        nngps.append(_symmetric_pixels(out.cov1, every, out.layout, lead=1))
        if need_ntk:
            ntks.append(_symmetric_pixels(out.ntk, every, out.layout, lead=1))
    cov = torch.cat(nngps)
    ntk = torch.cat(ntks) if need_ntk else None
    return outs[-1].replace(nngp=cov, ntk=ntk, cov1=cov, cov2=cov, pattern=None)


def _tiled(
    layer, x1, x2, need_ntk, layout, edge, progress, threads, needs_grad, patterns=None,
    masks=None,
) -> Kernel:
    """The kernel tile by tile, the tiles spread over ``threads`` threads (`run_parallel`).

    Each tile writes its own block of the result (and, for ``x2=None``, its mirror image), so
    the order in which tiles finish does not matter.  Each row block's ``cov1`` (column
    block's ``cov2``) is taken from a fixed tile, the last of its row (column) in row-major
    order.
    """
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    rows, cols = _blocks(n1, edge), _blocks(n2, edge)
    tiles = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not symmetric or j >= i]
    # The packed diagonal tiles (half the work) last: they fill in while the last full tiles run.
    tiles.sort(key=lambda t: symmetric and t[0] == t[1])
    entries = n1 * n2 * _pair_entries(x1, layout)
    _check_fits((n1, n2), need_ntk, x1.element_size(), x1.device)  # before any work
    ids = joint_point_ids(point_ids(*_tagged(x1, x2, masks)), patterns)
    last_tile = (len(rows) - 1, len(cols) - 1)
    owner = {(i, j): k for k, (i, j) in enumerate(tiles)}
    row_owner = {i: owner[i, last_tile[1]] for i in range(len(rows))}  # last tile of the row
    col_owner = {j: owner[j if symmetric else last_tile[0], j] for j in range(len(cols))}
    cov1, cov2 = [None] * len(rows), [None] * len(cols)
    # Each block's input variances once, by the first tile that needs them, not once per tile
    # (a pass over the block's inputs each); pixel-pair variances (P^2 per example) are
    # computed per tile instead, and kept only there.
    var_cache: dict[tuple[int, int], Tensor] = {}
    var_locks = {k: threading.Lock() for k in set(rows) | set(cols)}

    def variances(x: Tensor, block: tuple[int, int]) -> Tensor:
        if layout == "full":
            return _variances(x[slice(*block)], layout)
        key = block if x is x1 or symmetric else (-1 - block[0], block[1])
        with var_locks[block]:
            if key not in var_cache:
                var_cache[key] = _variances(x[slice(*block)], layout)
        return var_cache[key]

    results: list[Tensor | None] = []  # [nngp, ntk], allocated by the first tile to finish
    last: list[Kernel] = []
    allocating = threading.Lock()
    # Autograd records in-place writes into the results: one tile writes at a time then.
    writing = threading.Lock() if needs_grad else contextlib.nullcontext()

    def tile(k: int) -> None:
        i, j = tiles[k]
        (r0, r1), (c0, c1) = rows[i], cols[j]
        on_diagonal = symmetric and i == j
        same = None if ids is None else ids[0][r0:r1, None] == ids[1][None, c0:c1]
        if same is not None and not on_diagonal and not bool(same.any()):
            same = None
        var_a = variances(x1, rows[i])
        var_b = var_a if on_diagonal else variances(xb, cols[j])
        b = None if on_diagonal else xb[c0:c1]
        m = (_rows(masks, 0, r0, r1), _rows(masks, 0 if symmetric else 1, c0, c1))
        state = _input_state(x1[r0:r1], b, var_a, var_b, need_ntk, layout, same, m)
        out = _run(layer, _with_patterns(state, patterns, rows[i], cols[j]))
        with allocating:
            if not results:  # the output's pixel axes are known after the first tile
                results.extend(_allocate(out, n1, n2, need_ntk))
        if row_owner[i] == k:
            cov1[i] = out.cov1
        if col_owner[j] == k:
            cov2[j] = out.cov2
        if (i, j) == last_tile:
            last.append(out)
        if out.pairs is not None:  # a packed diagonal tile: pairs (I, J), I <= J
            rows_i, cols_j = out.pairs[0] + r0, out.pairs[1] + r0
            same_pair = rows_i == cols_j if same is None else same[out.pairs]
        for target, part in zip(results, (out.nngp, out.ntk), strict=True):
            if target is None:
                continue
            with writing:
                if out.pairs is None:
                    part = _symmetric_pixels(part, same, out.layout, lead=2)
                    target[r0:r1, c0:c1] = part
                    if symmetric and i != j:
                        target[c0:c1, r0:r1] = _swap(part, out.layout)
                    continue
                part = _symmetric_pixels(part, same_pair, out.layout, lead=1)
                # Entries (I, J) and their mirror (J, I) by position in the flattened example
                # axes: index_copy_ is 3x faster than indexing with two index tensors.
                flat = target.view(n1 * n2, *target.shape[2:])
                flat.index_copy_(0, rows_i * n2 + cols_j, part)
                flat.index_copy_(0, cols_j * n2 + rows_i, _swap(part, out.layout, lead=1))

    with progress_bar(
        total=len(tiles), desc="kernel tiles", unit="tile", leave=False,
        progress=progress, default=entries >= PROGRESS_MIN_ENTRIES,
    ) as bar:  # fmt: skip
        run_parallel(tile, len(tiles), threads, done=bar.update)
    nngp, ntk = results
    cov1_all = torch.cat(cov1)
    cov2_all = cov1_all if symmetric else torch.cat(cov2)
    return last[0].replace(
        nngp=nngp,
        ntk=ntk,
        cov1=cov1_all,
        cov2=cov2_all,
        same_example_diagonal=symmetric,
        pairs=None,
        pattern=None,
    )


def _check_fits(shape: tuple[int, ...], need_ntk: bool, itemsize: int, device) -> None:
    """Raise MemoryError if results of ``shape`` (nngp, and ntk if needed) cannot fit."""
    needed = (2 if need_ntk else 1) * math.prod(shape) * itemsize
    if needed > available_memory(device):
        raise MemoryError(
            f"the {shape} kernel needs {needed / 2**30:.1f} GiB, more than is available; "
            "compute it in row blocks (x1[i:j] against x2), ask get='nngp' only, or use "
            "diagonal=True if only k(x, x) is needed"
        )


def _allocate(tile: Kernel, n1: int, n2: int, need_ntk: bool) -> tuple[Tensor, Tensor | None]:
    """Empty (N1, N2, *pixels) results shaped like the first tile's output, if they fit."""
    shape = (n1, n2, *tile.pixel_shape)
    _check_fits(shape, need_ntk, tile.nngp.element_size(), tile.nngp.device)
    nngp = torch.empty(shape, dtype=tile.nngp.dtype, device=tile.nngp.device)
    return nngp, torch.empty_like(nngp) if need_ntk else None
