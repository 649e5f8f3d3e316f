"""The kernel state of a concatenation: several Gaussian (or not) branches side by side.

``FanInConcat`` puts the features of its branches next to each other.  At infinite width the
features of branch b are iid with the kernel K_b of that branch, but the concatenation as a whole
is *not* one Gaussian process with the width-weighted average kernel sum_b w_b K_b: a
nonlinearity acts on each feature, so on each branch separately,

    mean_i E[phi(z_i(x)) phi(z_i(x'))] = sum_b w_b T_phi(K_b)  !=  T_phi(sum_b w_b K_b).

`Concatenated` therefore keeps the branches (each a plain `Kernel`) with their weights, the
shares of the features they hold (branch widths, or equal shares for infinite hidden branches,
which are built with the same width; neural-tangents weights by channel counts the same way).
Its own ``nngp``/``ntk``/``cov1``/``cov2`` fields hold the weighted averages sum_b w_b K_b:

- a layer that acts per feature (activations, `Identity`, pooling, `Flatten`) maps the branches
  one by one and concatenates again (`map_branches`): exact;
- a layer that reads a linear combination of all features (`Dense`, `Conv`) sees the weighted
  average, which is exact for it: the covariance of sum_i W_i z_i with iid weights is
  sum_b w_b K_b (and likewise for the NTK, where each branch keeps its own Theta_b);
- any other layer that calls `replace` (or `map_all`) gets a plain `Kernel` of the averages
  that is marked non-Gaussian, so an activation or `LayerNorm` after it refuses instead of
  computing the kernel of a Gaussian that is not there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from ..kernel import Kernel

__all__ = ["Concatenated", "concatenate", "branch_weights", "align_branches"]


def branch_weights(branches: Sequence[Kernel], name: str = "FanInConcat") -> list[float]:
    """Shares of the concatenated features held by each (plain) branch.

    Finite branches weigh by their widths; infinite hidden branches (``width=None``) are all
    built with the same width and weigh equally.  Mixing the two has no infinite-width limit
    (the finite branches' share tends to 0), so it is refused.
    """
    widths = [b.width for b in branches]
    if all(w is None for w in widths):
        return [1.0 / len(branches)] * len(branches)
    if all(w is not None for w in widths):
        total = sum(widths)
        return [w / total for w in widths]
    raise ValueError(
        f"{name} cannot mix infinite hidden branches with fixed-width branches "
        f"(widths {widths}): their shares of the features are undefined"
    )


@dataclass(frozen=True)
class Concatenated(Kernel):
    """A `Kernel` that remembers the branches of a concatenation (see the module docstring).

    The inherited fields hold the weighted averages over ``branches``; ``is_gaussian`` is False
    (the concatenation is not one Gaussian process) unless all branches are copies of one
    Gaussian state.
    """

    branches: tuple[Kernel, ...] = ()

    @property
    def weights(self) -> list[float]:
        return branch_weights(self.branches)

    def replace(self, **changes) -> Kernel:
        """A plain `Kernel` of the averages with ``changes``: the layer making them collapses
        the branches (exact for linear readouts; marked non-Gaussian otherwise)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(Kernel)}
        values.update(changes)
        return Kernel(**values)

    def map_branches(self, fn: Callable[[Kernel], Kernel]) -> Kernel:
        """Apply a per-feature kernel map to every branch and concatenate the results."""
        return concatenate([fn(b) for b in self.branches])


def _flatten(ks: Sequence[Kernel]) -> list[Kernel]:
    out: list[Kernel] = []
    for k in ks:
        out.extend(k.branches if isinstance(k, Concatenated) else (k,))
    return out


def concatenate(ks: Sequence[Kernel], name: str = "FanInConcat") -> Kernel:
    """The state of the concatenation of ``ks`` along the features (nested ones flattened)."""
    branches = _flatten(ks)
    weights = branch_weights(branches, name)
    # copies of one state (FanOut straight into FanInConcat) are still that Gaussian
    copies = all(b is branches[0] for b in branches)

    def combine(field: str) -> Tensor | None:
        values = [getattr(b, field) for b in branches]
        if values[0] is None:
            return None
        return sum(w * v for w, v in zip(weights, values, strict=True))

    cov1 = combine("cov1")
    same = all(b.cov2 is b.cov1 for b in branches)
    widths = [b.width for b in branches]
    first = branches[0]
    return Concatenated(
        nngp=combine("nngp"),
        ntk=combine("ntk"),
        cov1=cov1,
        cov2=cov1 if same else combine("cov2"),
        is_gaussian=copies and branches[0].is_gaussian,
        width=None if widths[0] is None else sum(widths),
        layout=first.layout,
        batch_diagonal=first.batch_diagonal,
        same_example_diagonal=first.same_example_diagonal,
        pairs=first.pairs,
        pattern=first.pattern,
        branches=tuple(branches),
    )


def per_branch(k, fn: Callable[[Kernel], Kernel]):
    """``fn(k)``, applied branch by branch when ``k`` is a concatenation."""
    return k.map_branches(fn) if isinstance(k, Concatenated) else fn(k)


def align_branches(ks: Sequence[Kernel], name: str) -> list[tuple[Kernel, ...]] | None:
    """Pieces of features on which every input of an elementwise merge is one plain branch.

    ``None`` when no input is a concatenation.  Otherwise every concatenation must split the
    features the same way (the same number of branches with the same shares, as when both come
    from the same kind of block); a plain input covers every piece.  Returns, per piece, the
    tuple of the inputs' kernels on it.
    """
    cats = [k for k in ks if isinstance(k, Concatenated)]
    if not cats:
        return None
    weights = cats[0].weights
    for c in cats[1:]:
        w = c.weights
        if len(w) != len(weights) or any(
            abs(a - b) > 1e-12 for a, b in zip(w, weights, strict=True)
        ):
            raise ValueError(
                f"{name} merges concatenations whose branches split the features differently "
                f"(shares {[round(x, 6) for x in weights]} and {[round(x, 6) for x in w]}): "
                "their features do not line up; put a Dense or Conv layer after each "
                "FanInConcat first"
            )
    if any(not isinstance(k, Concatenated) and k.width is None for k in ks) and (
        cats[0].width is None
    ):
        raise ValueError(
            f"{name} merges a concatenation of {len(weights)} infinite branches ({len(weights)} "
            "times the hidden width) with a branch of one hidden width: the widths differ"
        )
    n = len(weights)
    return [
        tuple(k.branches[i] if isinstance(k, Concatenated) else k for k in ks) for i in range(n)
    ]
