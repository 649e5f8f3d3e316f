r"""Limit models that finite networks under a `Scaling` are compared with.

**Kernel (NTK) limit.**  In a frozen-kernel scaling the logits on the training and evaluation
points follow kernel gradient descent with the learning-rate-weighted tangent kernel,

    f_{k+1} = f_k - Theta_eta[:, train] l'(f_k[train], y) / n_train,

    Theta_eta = eta sum_l lambda_l Theta_l,
    lambda_l  = rho^{-c_l} rho^{-2 a_l} fan_in_l / W_std_l^2  (x r for l below the readout)

where Theta_l is the analytic NTK of the network with only Dense layer l trainable (NTK
parametrization), fan_in_l the layer's fan-in at width n, and r = rho^{1 - 2 (a + b)_{L+1}} the
readout's variance relative to the NTK parametrization's (the hidden layers of a stable scaling
have a_l + b_l = 0 for the first and 1/2 after, so their forward scales equal the NTK
parametrization's; that is checked).  The logits at initialization are a GP draw with covariance
r K (K the NNGP).  At the NTK point every lambda_l and r is independent of the width: that is the
NTK limit.  ``l`` is "bce" (labels 0/1, l = softplus(f) - y f), "mse" (l = (f - y)^2 / 2) or any
callable l(f, y); `gp_draw` samples the initial logits.

**Mean-field limit** of a one-hidden-layer network: the particle dynamics of the neurons
(w_r, a_r) under mean-field scaling.  A mean-field network with many neurons is its Monte Carlo
discretization; `mean_field_limit` uses antithetic pairs (w, a), (w, -a) so that the logits
start at 0 (up to rounding), the limit's value, and the Monte Carlo error is the only difference.

**IC-MF limit**: f_t + g with g ~ GP(0, K) a frozen draw and f_t the mean-field particle
dynamics driven by the loss at f_t + g (see `widelimits.InitCorrected`): the same particles,
trained through the corrected logits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .scaling import Scaling

__all__ = [
    "dense_layers",
    "layer_ntks",
    "tangent_kernel",
    "output_variance_factor",
    "init_exponents",
    "KernelDynamics",
    "mean_field_limit",
    "loss_and_derivative",
    "gp_draw",
]


def dense_layers(net) -> list:
    """The Dense layers of a description, in the order `build` creates them."""
    from ..layers.dense import Dense

    found = []

    def walk(layer) -> None:
        if isinstance(layer, Dense):
            found.append(layer)
        for child in layer.children():
            walk(child)

    walk(net)
    return found


def layer_ntks(net, x1: Tensor, x2: Tensor | None = None) -> list[Tensor]:
    """The analytic NTK of ``net`` with only Dense layer l trainable, for each l; they sum to
    the network's NTK."""
    layers = dense_layers(net)
    if len({id(layer) for layer in layers}) != len(layers):
        raise ValueError(
            "the description uses one Dense object at several places; create one per layer "
            "(e.g. [Dense(), ReLU()] * 3 repeats the same objects) to tell their NTKs apart"
        )
    out = []
    for index in range(len(dense_layers(net))):
        frozen = copy.deepcopy(net)
        for j, layer in enumerate(dense_layers(frozen)):
            layer.has_parameters = j == index
        out.append(frozen.kernel(x1, x2, get="ntk"))
    return out


def _check_kernel_regime(scaling: Scaling) -> None:
    hidden_ok = abs(scaling.a[0] + scaling.b[0]) < 1e-12 and all(
        abs(a + b - 0.5) < 1e-12 for a, b in zip(scaling.a[1:-1], scaling.b[1:-1], strict=True)
    )
    if not hidden_ok:
        raise ValueError(
            f"{scaling.name}: the hidden layers' forward scales must be stable (a_1 + b_1 = 0, "
            "a_l + b_l = 1/2 after) for the kernel model"
        )


def output_variance_factor(scaling: Scaling, width: int) -> float:
    """r = rho^{1 - 2 (a + b)_{L+1}}: the readout's variance relative to the NTK
    parametrization's (r K is the logits' covariance at initialization)."""
    return scaling.rho(width) ** (1.0 - 2.0 * (scaling.a[-1] + scaling.b[-1]))


def init_exponents(scaling: Scaling) -> tuple[float, float]:
    """Width exponents (logits, tangent kernel) at initialization of an MLP under ``scaling``.

    From the kernel model: the logits' variance is r K with r = rho^{1 - 2 (a + b)_{L+1}}, so
    logits ~ rho^{1/2 - (a + b)_{L+1}}; layer l's share of Theta_eta grows like lambda_l,
    rho^{-c_l - 2 a_l + [l > 1] + [l <= L] (1 - 2 (a + b)_{L+1})}, and the kernel like the
    largest.  For the one-hidden-layer plane these are q_sigma + 1/2 and q_tilde + 2 q_sigma + 1.
    """
    _check_kernel_regime(scaling)
    readout = 1.0 - 2.0 * (scaling.a[-1] + scaling.b[-1])
    last = scaling.n_layers - 1
    shares = [
        -scaling.c[i] - 2 * scaling.a[i] + (i > 0) + (readout if i < last else 0.0)
        for i in range(scaling.n_layers)
    ]
    return readout / 2, max(shares)


def tangent_kernel(
    net,
    scaling: Scaling,
    width: int,
    x1: Tensor,
    x2: Tensor | None = None,
    lr: float = 1.0,
    per_layer: bool = False,
) -> Tensor | list[Tensor]:
    """The expected learning-rate-weighted tangent kernel Theta_eta of the network built from
    ``net`` at ``width`` under ``scaling`` with base learning rate ``lr`` (module docstring).
    ``per_layer=True`` returns the list of the layers' shares."""
    _check_kernel_regime(scaling)
    layers = dense_layers(net)
    if len(layers) != scaling.n_layers:
        raise ValueError(
            f"the scaling has {scaling.n_layers} layers but the network has {len(layers)} Dense "
            "layers"
        )
    if any(layer.b_std is not None for layer in layers):
        raise ValueError("the kernel model is derived for Dense layers without bias (b_std=None)")
    rho, r = scaling.rho(width), output_variance_factor(scaling, width)
    shares = []
    for index, (layer, theta) in enumerate(zip(layers, layer_ntks(net, x1, x2), strict=True)):
        fan_in = x1.shape[1] if index == 0 else width
        factor = rho ** -scaling.c[index] * rho ** (-2 * scaling.a[index])
        factor *= fan_in / float(layer.W_std) ** 2
        if index < len(layers) - 1:
            factor *= r
        shares.append(lr * factor * theta)
    return shares if per_layer else sum(shares)


def loss_and_derivative(loss, f: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean loss and its derivative per example (not divided by n): ``loss`` is "bce", "mse",
    or any callable l(f, y) -> per-example losses (differentiated by autograd)."""
    if loss == "bce":
        return (nn.functional.softplus(f) - y * f).mean(), torch.sigmoid(f) - y
    if loss == "mse":
        return 0.5 * ((f - y) ** 2).mean(), f - y
    if callable(loss):
        with torch.enable_grad():
            f = f.detach().requires_grad_(True)
            per_example = loss(f, y)
            (grad,) = torch.autograd.grad(per_example.sum(), f)
        return per_example.detach().mean(), grad
    raise ValueError(f"loss must be 'bce', 'mse' or a callable l(f, y), got {loss!r}")


def gp_draw(kernel: Tensor, seed: int, n_samples: int = 1) -> Tensor:
    """Samples of GP(0, kernel) on its points, shape (n_samples, N), by an eigendecomposition
    (negative rounding eigenvalues clipped to 0): the NTK limit's initial logits."""
    values, vectors = torch.linalg.eigh(kernel)
    gen = torch.Generator(device=kernel.device).manual_seed(seed)
    z = torch.randn(n_samples, len(kernel), generator=gen, dtype=kernel.dtype, device=kernel.device)
    return (z * values.clamp(min=0).sqrt()) @ vectors.T


@dataclass
class KernelDynamics:
    """Discrete kernel gradient descent of the logits on [train; evaluation] points.

    ``theta`` is (N_all, N_train): the tangent kernel between every point and the training
    points (the first N_train rows are the training points themselves).
    """

    theta: Tensor
    y_train: Tensor
    loss: str = "bce"

    def __post_init__(self) -> None:
        n_train = self.theta.shape[1]
        if self.y_train.shape != (n_train,):
            raise ValueError(
                f"y_train must have shape ({n_train},) to match theta's columns, got "
                f"{tuple(self.y_train.shape)}"
            )
        if not bool(torch.isfinite(self.theta).all()):
            raise ValueError("the tangent kernel has non-finite entries")
        loss_and_derivative(self.loss, self.y_train[:1], self.y_train[:1])  # validates loss

    def run(self, f0: Tensor, steps: int, record: list[int] | None = None) -> dict[int, Tensor]:
        """Logits after each step in ``record`` (default every step), starting from ``f0``."""
        n_train = self.theta.shape[1]
        if f0.shape != (self.theta.shape[0],):
            raise ValueError(f"f0 must have shape ({self.theta.shape[0]},)")
        wanted = set(range(steps + 1) if record is None else record)
        f, out = f0.clone(), {}
        for step in range(steps + 1):
            if step in wanted:
                out[step] = f.clone()
            if step == steps:
                break
            _, d = loss_and_derivative(self.loss, f[:n_train], self.y_train)
            f = f - self.theta @ d / n_train
        return out


def mean_field_limit(net, in_features: int, particles: int, seed: int, dtype=torch.float32):
    """A one-hidden-layer network under mean-field scaling with ``particles`` neurons in
    antithetic pairs (w, a), (w, -a): the Monte Carlo discretization of the mean-field limit,
    with logits exactly 0 at initialization."""
    if particles < 2 or particles % 2:
        raise ValueError(f"particles must be an even number >= 2, got {particles}")
    model = net.build(in_features, particles, parametrization=Scaling.mean_field(), seed=seed,
                      dtype=dtype)  # fmt: skip
    layers = [m for m in model.modules() if hasattr(m, "lr_scale")]
    if len(layers) != 2:
        raise ValueError("mean_field_limit needs a one-hidden-layer network (two Dense layers)")
    first, readout = layers
    half = particles // 2
    with torch.no_grad():
        first.weight[half:] = first.weight[:half]
        if first.bias is not None:
            first.bias[half:] = first.bias[:half]
        readout.weight[:, half:] = -readout.weight[:, :half]
        if readout.bias is not None:
            readout.bias.zero_()
    return model
