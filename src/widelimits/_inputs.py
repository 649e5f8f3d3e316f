"""Checks on what a user passes to ``net.kernel``, and which inputs are the same point.

`as_input` turns a batch into a floating tensor or says exactly what is wrong with it (and warns
when an image batch looks channels-last).  `point_ids` labels the rows of two batches so that two
rows get the same label exactly when they hold the same values: the kernel computation gives such
pairs exactly the treatment of an example paired with itself.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["LayoutWarning", "as_input", "check_kernel_options", "point_ids"]

CHANNELS_LAST_SIZES = (1, 3, 4)  # grey, RGB, RGBA
CHANNELS_LAST_RATIO = 4
HASH_BLOCK = {"cpu": 2**16, "cuda": 2**26}  # elements hashed at a time: on the CPU the int64
# temporaries stay in cache; on a GPU fewer, larger launches (2^16 cost 50 ms on 20000 x 3072)


class LayoutWarning(UserWarning):
    """An input whose shape suggests the wrong axis order (e.g. channels-last images)."""


def as_input(x, name: str, *, stacklevel: int = 2) -> Tensor:
    """Check an input batch and return it as a floating tensor (dtype and device kept).

    Torch tensors and numpy arrays (or anything ``numpy.asarray`` takes) are accepted; sparse
    tensors and matrices are refused (densify them explicitly: the kernel is dense anyway).
    """
    if isinstance(x, Tensor) and x.layout != torch.strided:
        raise TypeError(
            f"{name} is a sparse tensor ({x.layout}); kernels need dense inputs: pass "
            f"{name}.to_dense()"
        )
    if not isinstance(x, Tensor):
        if hasattr(x, "toarray") and hasattr(x, "nnz"):  # a scipy.sparse matrix
            raise TypeError(
                f"{name} is a scipy sparse matrix; kernels need dense inputs: pass {name}.toarray()"
            )
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"{name} must be a torch tensor or numpy array of numbers, got {type(x).__name__}"
            ) from err
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values; pass real data")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; kernels need real floating inputs: convert with "
            f"{name}.float() (float32) or {name}.double() (float64)"
        )
    if x.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"{name} has dtype {x.dtype}, too imprecise for kernel recursions; "
            "use float32 or float64"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (examples, features), (examples, C, L), (examples, C, H, "
            f"W) or (examples, C, *spatial) (volumes, ...), got {tuple(x.shape)}"
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
    if looks_channels_last(x.shape):
        order = {3: "(N, L, C)", 4: "(N, H, W, C)"}.get(x.ndim, "(N, *S, C)")
        perm = ", ".join(map(str, (0, x.ndim - 1, *range(1, x.ndim - 1))))
        warnings.warn(
            f"{name} of shape {tuple(x.shape)} looks like channels-last {order}, but kernels "
            f"read axis 1 as the channels; pass {name}.permute({perm}) (or silence "
            "widelimits.LayoutWarning if the layout is right)",
            LayoutWarning,
            stacklevel=stacklevel + 1,
        )
    return x


def looks_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a spatial batch (N, C, *S) is more likely (N, *S, C): the last axis is 1, 3 or 4
    (grey, RGB, RGBA) and every other non-batch axis is at least 4 times longer."""
    if len(shape) < 3 or shape[-1] not in CHANNELS_LAST_SIZES:
        return False
    return all(n >= CHANNELS_LAST_RATIO * shape[-1] for n in shape[1:-1])


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def check_kernel_options(
    get, diagonal, tile_size, memory_budget, progress, gets: tuple[str, ...]
) -> tuple[tuple[str, ...], bool]:
    """Validate the keyword arguments of ``net.kernel``; return ``(gets, single)``."""
    single = isinstance(get, str)
    if single:
        names = (get,)
    elif isinstance(get, list | tuple | set | frozenset):
        names = tuple(get)
    else:
        raise TypeError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
    if not names or any(not isinstance(g, str) or g not in gets for g in names):
        raise ValueError(f"get must name kernels among {gets}, got {get!r}")
    if not isinstance(diagonal, bool | np.bool_):
        raise TypeError(f"diagonal must be True or False, got {diagonal!r}")
    if progress is not None and not isinstance(progress, bool | np.bool_):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    for arg, value in (("tile_size", tile_size), ("memory_budget", memory_budget)):
        if value is None:
            continue
        if not _is_int(value):
            raise TypeError(f"{arg} must be a positive integer or None, got {value!r}")
        if value < 1:
            raise ValueError(f"{arg} must be a positive integer or None, got {value!r}")
    return tuple(dict.fromkeys(names)), single


def _row_keys(x: Tensor) -> Tensor:
    """An int64 key per row, equal for rows with equal values (+0.0 and -0.0 alike).

    The key is sum_k w_k b_k over the bit patterns b_k of the row's values, with fixed random
    odd weights w_k, in wrapping 64-bit integer arithmetic: exact and associative, so equal rows
    get equal keys whatever the batch and the order of summation.  Different rows may collide;
    `point_ids` compares the values of rows with equal keys.
    """
    flat = x.reshape(len(x), -1)
    int_type = torch.int64 if flat.dtype == torch.float64 else torch.int32
    d = flat.shape[1]
    gen = torch.Generator().manual_seed(20260101)
    weights = (torch.randint(-(2**62), 2**62, (d,), generator=gen) * 2 + 1).to(x.device)
    keys = torch.empty(len(x), dtype=torch.int64, device=x.device)
    step = max(1, HASH_BLOCK.get(x.device.type, HASH_BLOCK["cuda"]) // d)
    for r0 in range(0, len(x), step):
        block = flat[r0 : r0 + step] + 0.0  # -0.0 -> +0.0, and a copy the products may overwrite
        bits = block.view(int_type).to(torch.int64)
        keys[r0 : r0 + step] = bits.mul_(weights).sum(1)
    return keys


def point_ids(x1: Tensor, x2: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """Labels of the rows of ``x1`` and ``x2`` (``x1`` again if ``None``): equal exactly for
    rows with equal values.  ``None`` when no two rows (of x1 and x2, or within x1 for
    ``x2=None``) are the same point, the usual case: nothing to do then.
    """
    rows = x1 if x2 is None else torch.cat([x1, x2])
    keys = _row_keys(rows)
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    candidates = (counts[inverse] > 1).nonzero().squeeze(1)
    if len(candidates) == 0:
        return None
    # Equal keys are only candidates: compare their values exactly.
    _, groups = torch.unique(rows[candidates].reshape(len(candidates), -1), dim=0,
                             return_inverse=True)  # fmt: skip
    ids = -1 - torch.arange(len(rows), device=rows.device)  # a distinct label per row...
    ids[candidates] = groups  # ...but one per group of equal rows
    ids1, ids2 = (ids, ids) if x2 is None else (ids[: len(x1)], ids[len(x1) :])
    if x2 is None:
        if len(candidates) == len(torch.unique(groups)):
            return None
    elif not bool(torch.isin(ids1[ids1 >= 0], ids2[ids2 >= 0]).any()):
        return None
    return ids1, ids2
