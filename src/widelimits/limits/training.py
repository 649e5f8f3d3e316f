r"""Finite networks under a `Scaling`: per-layer learning rates, plain torch MLPs, and the
initialization-corrected mean-field (IC-MF) model.

IC-MF: with theta following mean-field scaling and theta_hat_0 the same
random draw at NTK scale,

    f_IC(x; theta_t) = f(x; theta_t) - f(x; theta_0) + f(x; theta_hat_0),

both corrections frozen.  At initialization f_IC equals the NTK-scaled network exactly; its
gradients are the mean-field network's.  Its infinite-width limit is the mean-field limit plus a
frozen draw of the NNGP Gaussian process: bounded random logits at initialization, a bounded
tangent kernel, and a kernel that evolves, which no pure power scaling has together.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .scaling import Scaling

__all__ = ["optimizer", "apply_scaling", "InitCorrected"]


def _scaled_linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def optimizer(
    model: nn.Module,
    lr: float,
    parametrization: Scaling | None = None,
    kind: str = "sgd",
    **options,
) -> torch.optim.Optimizer:
    r"""A torch optimizer whose per-layer learning rates are :math:`\text{lr}\, \rho^{-c_l}`.

    Layers built with a `Scaling` (``net.build(..., parametrization=scaling)``) or prepared by
    `apply_scaling` carry their factor as ``lr_scale``; a plain torch MLP can instead be given
    ``parametrization`` directly (its Linear layers, in order, are the scaling's layers, and the
    width is the first one's ``out_features``).  ``kind`` is "sgd" or "adam"; ``options`` go to
    the torch optimizer (momentum, weight_decay, betas, ...).
    """
    if kind not in ("sgd", "adam"):
        raise ValueError(f"kind must be 'sgd' or 'adam', got {kind!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    scales: dict[int, float] = {}
    if parametrization is not None:
        linears = _scaled_linears(model)
        if len(linears) != parametrization.n_layers:
            raise ValueError(
                f"the scaling has {parametrization.n_layers} layers but the model has "
                f"{len(linears)} Linear layers"
            )
        width = linears[0].out_features
        for layer, m in enumerate(linears):
            for p in m.parameters(recurse=True):
                scales[id(p)] = parametrization.lr_scale(layer, width)
    else:
        for m in model.modules():
            if hasattr(m, "lr_scale"):
                for p in m.parameters(recurse=True):
                    scales[id(p)] = float(m.lr_scale)
    groups: dict[float, list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(scales.get(id(p), 1.0), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    param_groups = [{"params": ps, "lr": lr * s, "lr_scale": s} for s, ps in groups.items()]
    cls = torch.optim.SGD if kind == "sgd" else torch.optim.Adam
    return cls(param_groups, lr=lr, **options)


class _Multiplier(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, w: Tensor) -> Tensor:
        return w * self.factor


def apply_scaling(
    model: nn.Module,
    scaling: Scaling,
    W_std: float = 1.0,
    seed: int | None = None,
) -> nn.Module:
    r"""Re-initialize a plain torch MLP (its Linear layers in order) under ``scaling``, in place.

    Each weight is drawn
    :math:`\mathcal N(0, (\sigma_w^2 / \text{fan-in}_\text{ref})\, \rho^{-2 b_l})` and, with its
    bias (zeroed), multiplied by :math:`\rho^{-a_l}` in the forward pass (a
    ``torch.nn.utils.parametrize`` parametrization, so the gradient sees the multiplier);
    ``lr_scale`` :math:`= \rho^{-c_l}` is set on each Linear for `optimizer`.
    :math:`\rho` = (first Linear's out_features) / ``scaling.ref_width``.
    """
    linears = _scaled_linears(model)
    if len(linears) != scaling.n_layers:
        raise ValueError(
            f"the scaling has {scaling.n_layers} layers but the model has {len(linears)} "
            "Linear layers"
        )
    width = linears[0].out_features
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    for layer, m in enumerate(linears):
        for name in ("weight", "bias"):
            if parametrize.is_parametrized(m, name):
                parametrize.remove_parametrizations(m, name, leave_parametrized=False)
        fan_in_ref = m.in_features if layer == 0 else m.in_features / scaling.rho(width)
        std = W_std / math.sqrt(fan_in_ref) * scaling.init_scale(layer, width)
        with torch.no_grad():
            w = torch.randn(m.weight.shape, generator=gen, dtype=m.weight.dtype)
            m.weight.copy_(w.to(m.weight.device) * std)
            if m.bias is not None:
                m.bias.zero_()
        factor = scaling.multiplier(layer, width)
        if factor != 1.0:
            for name in ("weight", "bias") if m.bias is not None else ("weight",):
                parametrize.register_parametrization(m, name, _Multiplier(factor))
        m.lr_scale = scaling.lr_scale(layer, width)
    return model


def _frozen(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class InitCorrected(nn.Module):
    """f(x; theta_t) - f(x; theta_0) + f(x; theta_hat_0) (module docstring).

    ``model`` is trained; frozen copies of its initial state and of ``reference`` (the same
    random draw at another scale) give the correction.
    """

    def __init__(self, model: nn.Module, reference: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.initial = _frozen(model)
        self.reference = _frozen(reference)

    @classmethod
    def mean_field(
        cls,
        net,
        in_features: int,
        width: int,
        seed: int,
        hidden_layers: int = 1,
        ref_width: int = 128,
        dtype: torch.dtype = torch.float32,
    ) -> InitCorrected:
        """IC-MF of a widelimits description: mean-field training, NTK-scale correction, both
        built from ``seed`` (hence the same raw draw)."""
        mf = Scaling.mean_field(hidden_layers, ref_width)
        ntk = Scaling.ntk(hidden_layers, ref_width)
        model = net.build(in_features, width, parametrization=mf, seed=seed, dtype=dtype)
        reference = net.build(in_features, width, parametrization=ntk, seed=seed, dtype=dtype)
        return cls(model, reference)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            correction = self.reference(x) - self.initial(x)
        return self.model(x) + correction
