r"""How far is a PyTorch model from its infinite-width limit?  `distance_to_limit`.

For the description of a model (`widelimits.from_module`) and copies of it whose hidden weight
layers are ``factor`` times wider (the readout keeps its width), each copy is built
``n_networks`` times with different seeds and each network's empirical NTK is compared with the
analytic NTK of that copy (Frobenius norms, mean over the networks):

.. math::

    \mathrm{error}(\mathrm{width}) = \operatorname{mean}
    \lVert \hat\Theta - \Theta \rVert / \lVert \Theta \rVert

and likewise for the NNGP when the network ends in a fully connected readout (one sample of the
NNGP per network: :math:`\sigma_w^2\, \phi \cdot \phi' / F + \sigma_b^2` with :math:`\phi` the
readout's input features).  Such errors shrink like :math:`\mathrm{width}^{-1/2}` for networks at
initialization; ``exponent`` is the slope fitted
to log error against log width.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..layers import FanOut, Layer, Serial
from ..layers.dense import Dense, WeightLayer

__all__ = ["LimitDistance", "distance_to_limit", "widen"]


@dataclass(frozen=True)
class LimitDistance:
    """Relative distances of finite networks' kernels to the analytic ones, per width factor."""

    factors: tuple[int, ...]
    ntk_error: tuple[float, ...]
    ntk_stderr: tuple[float, ...]
    ntk_exponent: float
    nngp_error: tuple[float, ...] | None
    nngp_stderr: tuple[float, ...] | None
    nngp_exponent: float | None

    def plot(self, ax=None):
        """Errors against the width factor on log-log axes (needs matplotlib)."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(4.5, 3.5))[1]
        rows = [("NTK", self.ntk_error, self.ntk_stderr, self.ntk_exponent)]
        if self.nngp_error is not None:
            rows.append(("NNGP", self.nngp_error, self.nngp_stderr, self.nngp_exponent))
        for name, err, se, slope in rows:
            ax.errorbar(self.factors, err, yerr=se, marker="o", capsize=3,
                        label=f"{name} (slope {slope:.2f})")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="width / model width",
               ylabel="relative distance to the limit")  # fmt: skip
        ax.legend()
        return ax


def _tail(layer: Layer) -> tuple[set[int], bool]:
    """ids of the weight layers last on some path to the output; whether every path has one."""
    if isinstance(layer, WeightLayer):
        return {id(layer)}, True
    if isinstance(layer, Serial) and layer.layers and isinstance(layer.layers[0], FanOut):
        tails = [_tail(b) for b in layer.layers[1].layers]
        return set().union(*(t for t, _ in tails)), all(c for _, c in tails)
    if isinstance(layer, Serial):
        ids: set[int] = set()
        for sub in reversed(layer.layers):
            more, complete = _tail(sub)
            ids |= more
            if complete:
                return ids, True
        return ids, False
    return set(), False


def _weight_layers(layer: Layer):
    if isinstance(layer, WeightLayer):
        yield layer
    for child in layer.children():
        yield from _weight_layers(child)


def widen(net: Layer, factor: int) -> Layer:
    """A copy of ``net`` with every hidden weight layer's ``out`` times ``factor`` (the layers
    that produce the output keep their width)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    wide = copy.deepcopy(net)
    readout, _ = _tail(wide)
    for layer in _weight_layers(wide):
        if id(layer) not in readout and layer.out is not None:
            layer.out *= factor
    return wide


def _slope(factors, errors) -> float:
    return float(np.polyfit(np.log(factors), np.log(errors), 1)[0])


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def _relative(a: Tensor, b: Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def distance_to_limit(
    model: nn.Module,
    x: Tensor,
    *,
    factors: tuple[int, ...] = (1, 2, 4),
    n_networks: int = 8,
    seed: int = 0,
    **options,
) -> LimitDistance:
    """How far ``model``'s kernels are from the infinite-width limit, and how fast they approach.

    Args:
        model: a module `widelimits.from_module` can translate.
        x: a few inputs (N, ...); the kernels are (N, N).  float64 gives the cleanest numbers.
        factors: width multipliers of the hidden layers (1 is the model's own widths), at
            least two.
        n_networks: random networks per width (seeds ``seed``, ``seed + 1``, ...), at least 2.
        options: passed to `from_module` (``init``, ``parametrization``).

    Returns:
        A `LimitDistance` with the mean relative errors, their standard errors and the fitted
        exponents (about -1/2 for networks at initialization); ``.plot()`` draws them.
    """
    from ..from_module import from_module
    from .ntk import empirical_nngp, empirical_ntk

    if len(factors) < 2 or len(set(factors)) != len(factors):
        raise ValueError(f"factors must hold at least two different widths, got {factors!r}")
    if isinstance(n_networks, bool) or not isinstance(n_networks, int) or n_networks < 2:
        raise ValueError(f"n_networks must be an integer >= 2, got {n_networks!r}")
    net = from_module(model, x, **options)
    last = net.layers[-1] if isinstance(net, Serial) else net
    readout = last if isinstance(last, Dense) else None
    ntk, ntk_se, nngp, nngp_se = [], [], [], []
    for factor in factors:
        wide = widen(net, factor)
        analytic = wide.kernel(x)
        ntk_errors, nngp_errors = [], []
        for s in range(n_networks):
            built = wide.build(tuple(x.shape[1:]), 1, seed=seed + s, dtype=x.dtype)
            ntk_errors.append(_relative(empirical_ntk(built, x), analytic.ntk))
            if readout is not None:
                head = list(built.modules())[-1] if isinstance(built, nn.Sequential) else built
                features = empirical_nngp(built, x, readout=head)
                b2 = 0.0 if readout.b_std is None else float(readout.b_std) ** 2
                sample = float(readout.W_std) ** 2 * features + b2
                nngp_errors.append(_relative(sample, analytic.nngp))
        mean, se = _mean_se(ntk_errors)
        ntk.append(mean)
        ntk_se.append(se)
        if readout is not None:
            mean, se = _mean_se(nngp_errors)
            nngp.append(mean)
            nngp_se.append(se)
    has_nngp = readout is not None
    return LimitDistance(
        factors=tuple(factors),
        ntk_error=tuple(ntk),
        ntk_stderr=tuple(ntk_se),
        ntk_exponent=_slope(factors, ntk),
        nngp_error=tuple(nngp) if has_nngp else None,
        nngp_stderr=tuple(nngp_se) if has_nngp else None,
        nngp_exponent=_slope(factors, nngp) if has_nngp else None,
    )
