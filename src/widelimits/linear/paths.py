r"""The rooted-path basis of the infinite-width deep linear network.

In the limit each middle matrix :math:`M_j` acts like a free circular element
:math:`c_j = l(\mathrm{up}_j) + l(\mathrm{down}_j)^*` on a full Fock space.  The vectors the
gradient flow ever touches are spanned by ROOTED PATHS: walks on the line of layers 0..q that start
at a root and step up (layer j-1 to j, letter :math:`\mathrm{up}_j`) or down (layer j to j-1,
letter :math:`\mathrm{down}_j`).  There are d input roots at layer 0 (the columns of U) and k
output roots at layer q (the columns of V).  Layer j's coordinates are the paths ending at layer j
with at most R steps (the truncation).  At initialization (p at layer j-1, p' at layer j)

.. math::

    M_j(0)_{p' p} &= 1 \iff p' = p + \mathrm{up}_j \ \text{ or } \ p = p' + \mathrm{down}_j, \\
    U(0)_{:, i} &= e_{(\text{input root } i,\ \text{empty path})}, \qquad
    V(0)_{:, i} = e_{(\text{output root } i,\ \text{empty path})}.

Counting: from an interior layer a path has two possible steps, from layers 0 and q one.  For
q = 0 there are no steps (d + k coordinates), for q = 1 every root gives one chain (R + 1 paths),
and for :math:`q \ge 2` the number of paths per root grows roughly like :math:`2^{R (q-1)/q}`
(:math:`2^{R/2}` for q = 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .network import check_depth

__all__ = ["Path", "PathBasis", "path_basis"]

UP, DOWN = 1, -1


@dataclass(frozen=True)
class Path:
    """A rooted path: ``root`` is ``("in", i)`` (layer 0) or ``("out", i)`` (layer q); ``steps``
    is a tuple of +1 (up) / -1 (down); ``layer`` the layer it ends at."""

    root: tuple[str, int]
    steps: tuple[int, ...]
    layer: int


@dataclass
class PathBasis:
    """All rooted paths with at most ``R`` steps, grouped by end layer: ``layers[j]`` lists the
    paths ending at layer j (the coordinates of layer j) and ``index[j]`` maps a path to its
    position there."""

    d: int
    k: int
    q: int
    R: int
    layers: list[list[Path]]
    index: list[dict[Path, int]]

    @property
    def sizes(self) -> list[int]:
        r""":math:`N_j`, the number of coordinates of layer j."""
        return [len(paths) for paths in self.layers]

    def initial_matrices(self, dense: bool = True):
        r""":math:`(U(0), [M_1(0), \dots, M_q(0)], V(0))` of the limit network (dense numpy arrays,
        or scipy CSR matrices for ``dense=False``)."""
        N = self.sizes
        U0 = np.zeros((N[0], self.d))
        for i in range(self.d):
            U0[self.index[0][Path(("in", i), (), 0)], i] = 1.0
        V0 = np.zeros((N[self.q], self.k))
        for i in range(self.k):
            V0[self.index[self.q][Path(("out", i), (), self.q)], i] = 1.0
        Ms = []
        for j in range(1, self.q + 1):
            rows, cols = [], []
            for col, p in enumerate(self.layers[j - 1]):
                up = Path(p.root, (*p.steps, UP), j)  # append up_j
                if up in self.index[j]:
                    rows.append(self.index[j][up])
                    cols.append(col)
                if p.steps and p.steps[-1] == DOWN:  # p = p' + down_j: remove the down step
                    rows.append(self.index[j][Path(p.root, p.steps[:-1], j)])
                    cols.append(col)
            M = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(N[j], N[j - 1]))
            Ms.append(M.toarray() if dense else M)
        return U0, Ms, V0


def path_basis(d: int, k: int, q: int, R: int) -> PathBasis:
    """Enumerate the rooted paths with at most ``R`` steps for d input roots, k output roots and q
    middle layers (breadth first, so shorter paths come first within each root)."""
    q = check_depth(q)
    if d < 0 or k < 0 or d + k == 0:
        raise ValueError(f"need d, k >= 0 roots with d + k >= 1; got d={d}, k={k}")
    if R < 0:
        raise ValueError(f"the truncation R (maximal path length) must be >= 0; got {R}")
    layers: list[list[Path]] = [[] for _ in range(q + 1)]
    roots = [(("in", i), 0) for i in range(d)] + [(("out", i), q) for i in range(k)]
    for root, start in roots:
        frontier = [Path(root, (), start)]
        for length in range(R + 1):
            for p in frontier:
                layers[p.layer].append(p)
            if length == R:
                break
            nxt = []
            for p in frontier:
                if p.layer < q:
                    nxt.append(Path(root, (*p.steps, UP), p.layer + 1))
                if p.layer > 0:
                    nxt.append(Path(root, (*p.steps, DOWN), p.layer - 1))
            frontier = nxt
    index = [{p: i for i, p in enumerate(paths)} for paths in layers]
    return PathBasis(d, k, q, R, layers, index)
