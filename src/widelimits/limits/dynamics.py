r"""Exact few-step dynamics of plain MLPs under a `Scaling`: how far weights, features, logits
and the tangent kernel move, measured the way the map of limits defines them.

The network has :math:`L` hidden layers without bias, leaky-ReLU activations and one logit,

.. math::

    z^l = m_l\, h^{l-1} (w^l)^\top, \quad h^l = \phi(z^l), \quad h^0 = x, \quad f = z^{L+1},

with multipliers :math:`m_l = \rho^{-a_l}`, raw weights
:math:`w^l \sim \mathcal N(0, \sigma_l^2 \rho^{-2 b_l})` (:math:`\sigma_l^2 = 1 / \text{fan-in}`
at the reference width) and full-batch gradient descent on the raw weights at rates
:math:`\eta_l = \eta \rho^{-c_l}`. The learning-rate-weighted tangent kernel is computed in
closed form from the backward vectors :math:`\delta^l = \partial f / \partial z^l`:

.. math::

    \Theta(x, x') = \sum_l \eta_l\, m_l^2\, \big(\delta^l(x) \cdot \delta^l(x')\big)\,
    \big(h^{l-1}(x) \cdot h^{l-1}(x')\big),

exact (no sampling), so that relative changes of a few parts in a thousand are measurable.

`run_dynamics` returns, at the recorded steps, the properties of the theory page:

- ``weight_change``: :math:`\lVert w^l_t - w^l_0 \rVert_F / \lVert w^l_0 \rVert_F` per layer;
- ``feature_change``: the same for the last hidden features :math:`h^L` on the kernel points;
- ``kernel_change``: :math:`\lVert \Theta_t - \Theta_0 \rVert_F / \lVert \Theta_0 \rVert_F` on
  the kernel points;
- ``loss``, ``mean_abs_derivative`` (mean :math:`|\ell'(f_t)|` over the training set) and its
  running sum ``derivative_sum`` :math:`U_t = \sum_{\tau < t} \overline{|\ell'_\tau|}`;
- at step 0: ``logit_scale`` (root mean square logit) and ``kernel_scale`` (mean diagonal).

``target_loss`` stops training at the first step whose training loss is at or below it (the
fixed-loss time scale); `fit_exponent` fits a width exponent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .models import loss_and_derivative
from .scaling import Scaling

__all__ = ["MLP", "run_dynamics", "fit_exponent"]


class MLP:
    r"""A bias-free leaky-ReLU MLP with one logit under a `Scaling` (module docstring), its raw
    weights plain tensors so that updates and kernels are explicit."""

    def __init__(
        self,
        scaling: Scaling,
        in_features: int,
        width: int,
        seed: int = 0,
        lr: float = 0.02,
        negative_slope: float = 0.1,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        gen = torch.Generator().manual_seed(seed)
        n = scaling.n_layers
        sizes = [in_features] + [width] * (n - 1) + [1]
        self.scaling, self.width, self.slope = scaling, width, negative_slope
        self.weights, self.multipliers, self.rates = [], [], []
        for layer in range(n):
            fan_in_ref = in_features if layer == 0 else scaling.ref_width
            std = scaling.init_scale(layer, width) / math.sqrt(fan_in_ref)
            shape = (sizes[layer + 1], sizes[layer])
            self.weights.append(torch.randn(shape, generator=gen, dtype=dtype) * std)
            self.multipliers.append(scaling.multiplier(layer, width))
            self.rates.append(lr * scaling.lr_scale(layer, width))

    def _act(self, z: Tensor) -> Tensor:
        return torch.nn.functional.leaky_relu(z, self.slope)

    def forward(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Pre-activations :math:`z^1, \\dots, z^{L+1}` (the last is the logit column)."""
        weights = self.weights if weights is None else weights
        zs, h = [], x
        for layer, (w, m) in enumerate(zip(weights, self.multipliers, strict=True)):
            z = m * (h @ w.T)
            zs.append(z)
            if layer < len(weights) - 1:
                h = self._act(z)
        return zs

    def logits(self, x: Tensor) -> Tensor:
        return self.forward(x)[-1][:, 0]

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's activations :math:`h^L`."""
        return self._act(self.forward(x)[-2])

    def kernel(self, x: Tensor) -> Tensor:
        r"""The exact learning-rate-weighted tangent kernel :math:`\Theta(x, x)` (module
        docstring), from one forward and one explicit backward pass."""
        zs = self.forward(x)
        hs = [x] + [self._act(z) for z in zs[:-1]]
        delta = torch.ones(len(x), 1, dtype=x.dtype)
        theta = torch.zeros(len(x), len(x), dtype=x.dtype)
        for layer in range(len(self.weights) - 1, -1, -1):
            m, h_in = self.multipliers[layer], hs[layer]
            theta += self.rates[layer] * m**2 * (delta @ delta.T) * (h_in @ h_in.T)
            if layer > 0:
                slope = torch.where(zs[layer - 1] > 0, 1.0, self.slope).to(x.dtype)
                delta = (delta @ (m * self.weights[layer])) * slope
        return theta

    def step(self, x: Tensor, y: Tensor, loss: str) -> tuple[float, float]:
        """One full-batch gradient step on the mean loss; returns (loss, mean |l'|) before it."""
        ws = [w.detach().requires_grad_(True) for w in self.weights]
        f = self.forward(x, ws)[-1][:, 0]
        value, derivative = loss_and_derivative(loss, f, y)
        grads = torch.autograd.grad(value, ws)
        with torch.no_grad():
            self.weights = [
                (w - rate * g).detach() for w, g, rate in zip(ws, grads, self.rates, strict=True)
            ]
        return float(value.detach()), float(derivative.detach().abs().mean())


def _relative(a: Tensor, b: Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def run_dynamics(
    scaling: Scaling,
    width: int,
    x: Tensor,
    y: Tensor,
    loss: str = "bce",
    steps: int = 1,
    record: Sequence[int] | None = None,
    kernel_x: Tensor | None = None,
    lr: float = 0.02,
    seed: int = 0,
    target_loss: float | None = None,
    negative_slope: float = 0.1,
) -> dict:
    """Train `MLP` for ``steps`` full-batch steps (or until the training loss reaches
    ``target_loss``) and record the module docstring's quantities at the steps in ``record``
    (default: every step) and at the last step. Returns a dict of lists keyed by quantity, with
    ``steps`` (the recorded steps), ``reached`` (whether ``target_loss`` was reached) and the
    step-0 scales."""
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if loss not in ("bce", "mse"):
        raise ValueError(f"loss must be 'bce' or 'mse', got {loss!r}")
    kernel_x = x if kernel_x is None else kernel_x
    net = MLP(scaling, x.shape[1], width, seed, lr, negative_slope, x.dtype)
    w0, h0, theta0 = list(net.weights), net.features(kernel_x), net.kernel(kernel_x)
    wanted = set(range(steps + 1) if record is None else record) | {steps}
    keys = ("steps", "loss", "mean_abs_derivative", "derivative_sum", "weight_change",
            "feature_change", "kernel_change")  # fmt: skip
    out: dict = {key: [] for key in keys}
    out["logit_scale"] = float(net.logits(kernel_x).pow(2).mean().sqrt())
    out["kernel_scale"] = float(theta0.diagonal().mean())
    total, reached = 0.0, False
    for t in range(steps + 1):
        with torch.no_grad():
            value, derivative = loss_and_derivative(loss, net.logits(x), y)
        value, derivative = float(value), float(derivative.abs().mean())
        reached = target_loss is not None and value <= target_loss
        if t in wanted or reached:
            out["steps"].append(t)
            out["loss"].append(value)
            out["mean_abs_derivative"].append(derivative)
            out["derivative_sum"].append(total)
            out["weight_change"].append([_relative(w, v) for w, v in zip(net.weights, w0,
                                                                         strict=True)])  # fmt: skip
            out["feature_change"].append(_relative(net.features(kernel_x), h0))
            out["kernel_change"].append(_relative(net.kernel(kernel_x), theta0))
        if t == steps or reached or not math.isfinite(value):
            break
        net.step(x, y, loss)
        total += derivative
    out["reached"] = reached
    return out


def fit_exponent(widths: Sequence[float], values: Sequence[float], ref_width: int = 128) -> float:
    """Least-squares slope of log(value) against log(width / ref_width)."""
    rho = np.asarray(widths, dtype=float) / ref_width
    return float(np.polyfit(np.log(rho), np.log(np.asarray(values, dtype=float)), 1)[0])
