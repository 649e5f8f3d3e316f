"""From inputs to kernels: input checks, the input kernel, and tiling under a memory budget.

Every layer acts on pairs of examples independently, so the kernel of a (N1, N2) batch pair is
assembled from tiles (rows of x1 against rows of x2), each pushed through the whole network.
Small tiles stay in the processor's cache, which makes the elementwise recursion cheap, and the
working memory is bounded by the tile size rather than by N1 * N2 * depth.  For x2=None only the
tiles on and above the diagonal are computed and mirrored.
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
DEFAULT_TILE = {"cpu": 512, "cuda": 8192}
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
    if x.ndim != 2:
        raise ValueError(
            f"{name} must have shape (examples, features), got {tuple(x.shape)}; flatten images "
            "with x.reshape(len(x), -1) for fully connected networks"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(x.shape)}): pass at least one example"
        )
    if x.shape[1] == 0:
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


def _tile_edge(tile_size: int | None, memory_budget: int | None, device, itemsize: int) -> int:
    if tile_size is not None:
        if tile_size < 1:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        return int(tile_size)
    budget = memory_budget if memory_budget is not None else available_memory(device) // 4
    by_budget = int(math.sqrt(max(budget, 1) / (itemsize * TEMPORARIES_PER_TILE)))
    return max(16, min(DEFAULT_TILE.get(device.type, 512), by_budget))


def _blocks(n: int, edge: int) -> list[tuple[int, int]]:
    return [(i, min(i + edge, n)) for i in range(0, n, edge)]


def _variances(x: Tensor) -> Tensor:
    """K0(x, x) = |x|^2 / d for each row."""
    return (x * x).sum(1) / x.shape[1]


def _input_state(
    a: Tensor, b: Tensor | None, var_a: Tensor, var_b: Tensor | None, need_ntk: bool
) -> Kernel:
    """The kernel of the raw inputs: K0(x, x') = x . x' / d, with Theta0 = 0.

    ``b=None`` marks a tile of a symmetric kernel on the diagonal: the same examples on both
    sides, whose self-pairs get exactly their variances (correlation exactly 1).
    ``var_b=None`` (with ``b=None``) asks for the batch diagonal k(x, x) only.
    """
    d = a.shape[1]
    ntk = torch.zeros((), dtype=a.dtype, device=a.device) if need_ntk else None
    if b is None and var_b is None:
        return Kernel(var_a, ntk, var_a, var_a, width=d, batch_diagonal=True)
    if b is None:
        nngp = torch.mm(a, a.T)
        # Some BLAS kernels round a a^T asymmetrically; averaging makes it symmetric bit for bit.
        nngp = nngp.add_(nngp.T.clone()).div_(2 * d)
        nngp.diagonal().copy_(var_a)
        return Kernel(nngp, ntk, var_a, var_a, width=d, same_example_diagonal=True)
    return Kernel(torch.mm(a, b.T).div_(d), ntk, var_a, var_b, width=d)


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
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(
                f"x1 has {x1.shape[1]} features but x2 has {x2.shape[1]}: both batches must "
                "have the same number of features"
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
    with contextlib.nullcontext() if needs_grad else torch.no_grad():
        if diagonal:
            if x2 is not None:
                raise ValueError("diagonal=True computes k(x, x) for x in x1: pass x2=None")
            out = _run(layer, _input_state(x1, None, _variances(x1), None, need_ntk))
        else:
            out = _tiled(layer, x1, x2, need_ntk, tile_size, memory_budget, progress)
    if not need_ntk:
        out = out.replace(ntk=None)
    if single:
        return getattr(out, gets[0])
    return out if "nngp" in gets else out.replace(nngp=None)


def _tiled(layer, x1, x2, need_ntk, tile_size, memory_budget, progress) -> Kernel:
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    itemsize = x1.element_size()
    n_out = 2 if need_ntk else 1
    needed = n_out * n1 * n2 * itemsize
    if needed > available_memory(x1.device):
        raise MemoryError(
            f"the ({n1}, {n2}) kernel needs {needed / 2**30:.1f} GiB, more than is available; "
            "compute it in row blocks (x1[i:j] against x2), ask get='nngp' only, or use "
            "diagonal=True if only k(x, x) is needed"
        )
    edge = _tile_edge(tile_size, memory_budget, x1.device, itemsize)
    rows, cols = _blocks(n1, edge), _blocks(n2, edge)
    tiles = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not symmetric or j >= i]
    show = progress if progress is not None else n1 * n2 >= PROGRESS_MIN_ENTRIES
    from tqdm.auto import tqdm

    nngp = torch.empty(n1, n2, dtype=x1.dtype, device=x1.device)
    ntk = torch.empty_like(nngp) if need_ntk else None
    var1 = _variances(x1)
    var2 = var1 if symmetric else _variances(xb)
    cov1, cov2 = [None] * len(rows), [None] * len(cols)
    last = None
    for i, j in tqdm(tiles, desc="kernel tiles", unit="tile", disable=not show, leave=False):
        (r0, r1), (c0, c1) = rows[i], cols[j]
        on_diagonal = symmetric and i == j
        b = None if on_diagonal else xb[c0:c1]
        state = _input_state(x1[r0:r1], b, var1[r0:r1], var2[c0:c1], need_ntk)
        last = out = _run(layer, state)
        cov1[i], cov2[j] = out.cov1, out.cov2
        for target, tile in ((nngp, out.nngp), (ntk, out.ntk)):
            if target is None:
                continue
            target[r0:r1, c0:c1] = tile
            if symmetric and i != j:
                target[c0:c1, r0:r1] = tile.T
    cov1_all = torch.cat(cov1)
    cov2_all = cov1_all if symmetric else torch.cat(cov2)
    return last.replace(
        nngp=nngp, ntk=ntk, cov1=cov1_all, cov2=cov2_all, same_example_diagonal=symmetric
    )
