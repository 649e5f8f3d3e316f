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
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from .kernel import Kernel

__all__ = ["compute_kernel", "as_input", "available_memory"]

GETS = ("nngp", "ntk")
DEFAULT_TILE_ENTRIES = {"cpu": 512**2, "cuda": 8192**2}
MIN_SPATIAL_EDGE = 8
SMALL_CHANNELS = 8
TEMPORARIES_PER_TILE = 16  # live tile-sized tensors in the worst layer map, with margin
PROGRESS_MIN_ENTRIES = 2**26


def as_input(x, name: str) -> Tensor:
    """Check an input batch and return it as a floating tensor (dtype and device kept)."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x)}") from err
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; kernels need floating inputs: convert with "
            f"{name}.float() (float32) or {name}.double() (float64)"
        )
    if x.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"{name} has dtype {x.dtype}, too imprecise for kernel recursions; "
            "use float32 or float64"
        )
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name} must have shape (examples, features), (examples, C, L) or (examples, C, H, "
            f"W), got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(x.shape)}): pass at least one example"
        )
    if 0 in x.shape[1:]:
        raise ValueError(f"{name} has zero features (shape {tuple(x.shape)})")
    # The sum is a cheap first test (NaN and inf propagate); count exactly only if it fails.
    if not bool(torch.isfinite(x.sum())) and (bad := int((~torch.isfinite(x)).sum())):
        raise ValueError(
            f"{name} contains {bad} NaN or infinite value(s); clean or impute them before "
            "computing kernels"
        )
    return x


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
    tile_size: int | None, memory_budget: int | None, device, itemsize: int, pair_entries: int
) -> int:
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
            f"one pair of examples needs about {per_pair / 2**20:.0f} MiB of working memory "
            f"({pair_entries} kernel entries per pair), more than the budget of "
            f"{budget / 2**20:.0f} MiB: raise memory_budget, use smaller inputs, or end the "
            "network in Flatten without pooling (per-pixel layout, P instead of P^2 entries)"
        )
    default = math.isqrt(DEFAULT_TILE_ENTRIES.get(device.type, 512**2) // pair_entries)
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


def _swap(t: Tensor, layout: str, lead: int = 2) -> Tensor:
    """K(x2, x1) from K(x1, x2): swap the example axes (and the pixels p, q of the full layout).

    ``lead=1`` for packed pairs (one example axis): only the pixels are swapped.
    """
    examples = (1, 0) if lead == 2 else (0,)
    if layout != "full":
        return t.permute(*examples, *range(lead, t.ndim))
    d = (t.ndim - lead) // 2
    return t.permute(*examples, *range(lead + d, lead + 2 * d), *range(lead, lead + d))


def _variances(x: Tensor, layout: str) -> Tensor:
    """K0(x, x) for each example: |x|^2 / d, per pixel (N, *S), or per pixel pair (N, *S, *S)."""
    if layout != "full":
        return (x * x).sum(1) / x.shape[1]
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
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
        if a.shape[1] <= SMALL_CHANNELS:  # a few channels: products beat a batched matmul
            out = fa[:, None, 0] * fb[None, :, 0]
            for c in range(1, a.shape[1]):
                out.addcmul_(fa[:, None, c], fb[None, :, c])
        else:
            out = torch.einsum("ncp,mcp->nmp", fa, fb)
        return out.reshape(len(a), len(b), *spatial)
    return torch.einsum("ncp,mcq->nmpq", fa, fb).reshape(len(a), len(b), *spatial, *spatial)


def _input_state(
    a: Tensor,
    b: Tensor | None,
    var_a: Tensor,
    var_b: Tensor | None,
    need_ntk: bool,
    layout: str = "none",
) -> Kernel:
    """The kernel of the raw inputs: K0(x, x') = x . x' / d (d features or C channels), Theta0 = 0.

    ``b=None`` marks a tile of a symmetric kernel on the diagonal: the same examples on both
    sides.  Only the pairs i <= j are kept (``Kernel.pairs``: half the work), and the
    self-pairs get exactly their variances (correlation exactly 1).
    ``var_b=None`` (with ``b=None``) asks for the batch diagonal k(x, x) only.
    """
    d = a.shape[1]
    ntk = torch.zeros((), dtype=a.dtype, device=a.device) if need_ntk else None
    common = dict(width=d, layout=layout)
    if b is None and var_b is None:
        return Kernel(var_a, ntk, var_a, var_a, batch_diagonal=True, **common)
    if b is None:
        i, j = torch.triu_indices(len(a), len(a), device=a.device)
        nngp = _cross(a, a, layout)[i, j].div_(d)
        nngp[i == j] = var_a
        return Kernel(nngp, ntk, var_a, var_a, pairs=(i, j), **common)
    return Kernel(_cross(a, b, layout).div_(d), ntk, var_a, var_b, **common)


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
    single = isinstance(get, str)
    gets = (get,) if single else tuple(get)
    unknown = [g for g in gets if g not in GETS]
    if unknown or not gets:
        raise ValueError(f"get must name kernels among {GETS}, got {get!r}")
    return gets, single


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
) -> Kernel | Tensor:
    """See `widelimits.Layer.kernel`."""
    gets, single = _normalize_get(get)
    need_ntk = "ntk" in gets
    if need_ntk and not layer.any_parameters():
        raise ValueError(
            "this network has no trainable layer, so it has no NTK; add a Dense layer or ask "
            "get='nngp'"
        )
    x1 = as_input(x1, "x1")
    if x2 is not None:
        x2 = as_input(x2, "x2")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x1 examples have shape {tuple(x1.shape[1:])} but x2 examples "
                f"{tuple(x2.shape[1:])}: both batches must have the same example shape"
            )
        if x2.device != x1.device:
            raise ValueError(f"x1 is on {x1.device} but x2 is on {x2.device}: move them together")
        dtype = torch.promote_types(x1.dtype, x2.dtype)
        x1, x2 = x1.to(dtype), x2.to(dtype)

    needs_grad = torch.is_grad_enabled() and (
        x1.requires_grad
        or (x2 is not None and x2.requires_grad)
        or any(t.requires_grad for t in layer.hyperparameter_tensors())
    )
    layout = _layout(layer, x1)
    with contextlib.nullcontext() if needs_grad else torch.no_grad():
        if diagonal and x2 is not None:
            raise ValueError("diagonal=True computes k(x, x) for x in x1: pass x2=None")
        edge = _tile_edge(
            tile_size, memory_budget, x1.device, x1.element_size(), _pair_entries(x1, layout)
        )
        if diagonal:
            out = _batch_diagonal(layer, x1, need_ntk, layout, edge)
        else:
            out = _tiled(layer, x1, x2, need_ntk, layout, edge, progress)
    if not need_ntk:
        out = out.replace(ntk=None)
    if single:
        return getattr(out, gets[0])
    return out if "nngp" in gets else out.replace(nngp=None)


def _batch_diagonal(layer, x: Tensor, need_ntk: bool, layout: str, edge: int) -> Kernel:
    """k(x_i, x_i) for every example, in blocks of as many examples as a tile has pairs."""
    outs = []
    for r0, r1 in _blocks(x.shape[0], edge * edge):
        var = _variances(x[r0:r1], layout)
        outs.append(_run(layer, _input_state(x[r0:r1], None, var, None, need_ntk, layout)))
    if len(outs) == 1:
        return outs[0]
    cov = torch.cat([o.cov1 for o in outs])
    ntk = None if not need_ntk else torch.cat([o.ntk.expand(o.nngp.shape) for o in outs])
    return outs[-1].replace(nngp=cov, ntk=ntk, cov1=cov, cov2=cov)


def _tiled(layer, x1, x2, need_ntk, layout, edge, progress) -> Kernel:
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    rows, cols = _blocks(n1, edge), _blocks(n2, edge)
    tiles = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not symmetric or j >= i]
    entries = n1 * n2 * _pair_entries(x1, layout)
    show = progress if progress is not None else entries >= PROGRESS_MIN_ENTRIES
    from tqdm.auto import tqdm

    nngp = ntk = None
    cov1, cov2 = [None] * len(rows), [None] * len(cols)
    last = None
    for i, j in tqdm(tiles, desc="kernel tiles", unit="tile", disable=not show, leave=False):
        (r0, r1), (c0, c1) = rows[i], cols[j]
        on_diagonal = symmetric and i == j
        var_a = _variances(x1[r0:r1], layout)
        var_b = var_a if on_diagonal else _variances(xb[c0:c1], layout)
        b = None if on_diagonal else xb[c0:c1]
        last = out = _run(layer, _input_state(x1[r0:r1], b, var_a, var_b, need_ntk, layout))
        if nngp is None:  # the output's pixel axes are known after the first tile
            nngp, ntk = _allocate(out, n1, n2, need_ntk)
        cov1[i], cov2[j] = out.cov1, out.cov2
        for target, tile in ((nngp, out.nngp), (ntk, out.ntk)):
            if target is None:
                continue
            if out.pairs is None:
                target[r0:r1, c0:c1] = tile
                if symmetric and i != j:
                    target[c0:c1, r0:r1] = _swap(tile, out.layout)
                continue
            # a packed diagonal tile: pairs (I, J), I <= J, mirrored into (J, I)
            rows_i, cols_j = out.pairs[0] + r0, out.pairs[1] + r0
            mirrored = _swap(tile, out.layout, lead=1)
            if out.layout == "full":
                # Pooling sums pixel pairs in an order that is not symmetric to the last bit.
                self_pair = (rows_i == cols_j).reshape(-1, *([1] * (tile.ndim - 1)))
                tile = torch.where(self_pair, (tile + mirrored) / 2, tile)
                mirrored = _swap(tile, out.layout, lead=1)
            target[rows_i, cols_j] = tile
            target[cols_j, rows_i] = mirrored
    cov1_all = torch.cat(cov1)
    cov2_all = cov1_all if symmetric else torch.cat(cov2)
    return last.replace(
        nngp=nngp,
        ntk=ntk,
        cov1=cov1_all,
        cov2=cov2_all,
        same_example_diagonal=symmetric,
        pairs=None,
    )


def _allocate(tile: Kernel, n1: int, n2: int, need_ntk: bool) -> tuple[Tensor, Tensor | None]:
    """Empty (N1, N2, *pixels) results shaped like the first tile's output, if they fit."""
    shape = (n1, n2, *tile.pixel_shape)
    needed = (2 if need_ntk else 1) * math.prod(shape) * tile.nngp.element_size()
    if needed > available_memory(tile.nngp.device):
        raise MemoryError(
            f"the {shape} kernel needs {needed / 2**30:.1f} GiB, more than is available; "
            "compute it in row blocks (x1[i:j] against x2), ask get='nngp' only, or use "
            "diagonal=True if only k(x, x) is needed"
        )
    nngp = torch.empty(shape, dtype=tile.nngp.dtype, device=tile.nngp.device)
    return nngp, torch.empty_like(nngp) if need_ntk else None
