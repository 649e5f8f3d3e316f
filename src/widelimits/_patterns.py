"""Graph patterns passed along with the examples (``net.kernel(x1, x2, pattern=...)``).

A network with `widelimits.layers.Aggregate` layers needs, besides the node features of each
example, its graph: the pattern.  The kernel is computed tile by tile over examples, so the
patterns travel in the `Kernel` state, sliced along with the rows of each tile
(``Kernel.pattern``).  This module checks what the user passed and folds the patterns into the
labels of equal points (two examples are the same point only if their features *and* their
graphs are equal).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._inputs import point_ids

__all__ = ["check_patterns", "joint_point_ids", "reads_patterns"]


def _one(pattern, name: str, x: Tensor) -> Tensor:
    if isinstance(pattern, np.ndarray):
        pattern = torch.from_numpy(pattern)
    if not isinstance(pattern, Tensor):
        raise TypeError(
            f"{name} must be a tensor or numpy array (a dense adjacency or an edge list per "
            f"example, see Aggregate), got {type(pattern).__name__}"
        )
    if pattern.layout != torch.strided:
        raise TypeError(f"{name} is a sparse tensor: pass {name}.to_dense() or an edge list")
    if pattern.ndim < 2 or pattern.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must have one entry per example on its first axis ({x.shape[0]}), got "
            f"shape {tuple(pattern.shape)}"
        )
    return pattern.to(x.device)


def reads_patterns(layer) -> bool:
    """Whether a layer description has a layer that reads the graph patterns (`Aggregate`)."""
    return getattr(layer, "takes_pattern", False) or any(
        reads_patterns(c) for c in layer.children()
    )


def check_patterns(pattern, layer, x1: Tensor, x2: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """``(pattern1, pattern2)`` for ``x1`` and ``x2`` (``x1`` again when ``x2`` is ``None``)."""
    if pattern is None:
        return None
    if not reads_patterns(layer):
        raise ValueError(
            "pattern was passed but the network has no Aggregate layer to read it: drop "
            "pattern=..., or add Aggregate() where the graph mixes the nodes"
        )
    if x2 is None:
        if isinstance(pattern, tuple):
            if len(pattern) != 2 or (pattern[1] is not None and pattern[1] is not pattern[0]):
                raise ValueError(
                    "pattern: with x2=None pass the patterns of x1 alone (a pair "
                    "(pattern1, pattern2) goes with x2)"
                )
            pattern = pattern[0]
        p1 = _one(pattern, "pattern", x1)
        return p1, p1
    if not isinstance(pattern, tuple) or len(pattern) != 2:
        raise TypeError(
            "pattern must be a pair (pattern1, pattern2) of the graphs of x1 and x2 when x2 is "
            f"given, got {type(pattern).__name__}"
        )
    return _one(pattern[0], "pattern[0]", x1), _one(pattern[1], "pattern[1]", x2)


def joint_point_ids(
    ids: tuple[Tensor, Tensor] | None, patterns: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor] | None:
    """Labels of equal points (`point_ids`) that also require equal patterns.

    Patterns of different shapes (edge lists of different lengths) count as different graphs:
    missing a pair of equal points only costs its exact correlation of 1, never a value.
    """
    if ids is None or patterns is None:
        return ids
    p1, p2 = patterns
    symmetric = p2 is p1
    if not symmetric and p1.shape[1:] != p2.shape[1:]:
        offset = int(torch.cat(ids).abs().max()) + 1
        return ids[0], torch.where(ids[1] >= 0, ids[1] + offset, ids[1] - offset)
    f1 = p1.reshape(len(p1), -1).double()
    graph_ids = point_ids(f1, None if symmetric else p2.reshape(len(p2), -1).double())
    if graph_ids is None:
        return None
    a, b = (ids[0], graph_ids[0]) if symmetric else (torch.cat(ids), torch.cat(graph_ids))
    _, joint = torch.unique(torch.stack([a, b], 1), dim=0, return_inverse=True)
    if symmetric:
        return joint, joint
    return joint[: len(ids[0])], joint[len(ids[0]) :]
