"""Fully connected layer."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..kernel import Kernel
from .base import BuildContext, Layer

__all__ = ["Dense"]

PARAMETRIZATIONS = ("ntk", "standard")


def _check_std(name: str, value, allow_none: bool) -> None:
    if value is None:
        if not allow_none:
            raise ValueError(f"{name} must be a number, got None")
        return
    v = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {v}")


class Dense(Layer):
    r"""Fully connected layer ``z = W_std / sqrt(n_in) * W x + b_std * b`` (NTK parametrization).

    Args:
        out: ``None`` for a hidden layer whose width is the infinite dimension (``build`` gives it
            the ``width`` it is asked for); an integer for a layer of fixed width, typically the
            readout (``out=k`` for k outputs).  The infinite-width kernels do not depend on ``out``,
            except the standard-parametrization NTK, which grows with the width it multiplies.
        W_std: weight standard deviation sigma_w.
        b_std: bias standard deviation sigma_b; ``None`` for no bias.
        parametrization: ``"ntk"`` — W, b ~ N(0, 1) and the scale in the forward pass — or
            ``"standard"`` — W ~ N(0, sigma_w^2 / n_in), b ~ N(0, sigma_b^2), plain forward pass.

    Kernel map (both parametrizations give the same NNGP), with input state (K, Theta)::

        K'     = sigma_w^2 K + sigma_b^2
        Theta' = K' + sigma_w^2 Theta                          (ntk)
        Theta' = n_in K + sigma_w^2 Theta + [1 if bias]        (standard)

    The NNGP of the input layer is K^0(x, x') = x . x' / n_in.  ``trainable=False`` freezes the
    layer: its parameters get no gradient (``requires_grad=False`` on the finite side) and add
    nothing to the NTK, Theta' = sigma_w^2 Theta; the NTK of a network is the sum over its Dense
    layers of the NTKs with only that layer trainable.
    """

    def __init__(
        self,
        out: int | None = None,
        W_std: float | Tensor = 1.0,
        b_std: float | Tensor | None = None,
        parametrization: str = "ntk",
        trainable: bool = True,
    ) -> None:
        if out is not None and (not isinstance(out, int) or isinstance(out, bool) or out < 1):
            raise ValueError(f"Dense(out=...) must be None (hidden) or a positive int, got {out!r}")
        _check_std("W_std", W_std, allow_none=False)
        _check_std("b_std", b_std, allow_none=True)
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}"
            )
        self.out = out
        self.W_std = W_std
        self.b_std = b_std
        self.parametrization = parametrization
        self.has_parameters = bool(trainable)

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError(
                "Dense got several branches; merge them first with FanInSum, FanInConcat or "
                "FanInProd"
            )
        w2 = self.W_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        unit_w = not isinstance(w2, Tensor) and w2 == 1.0
        no_b = not isinstance(b2, Tensor) and b2 == 0.0

        def affine(t: Tensor) -> Tensor:  # skips the no-op multiply and add (a pass each)
            t = t if unit_w else w2 * t
            return t if no_b else t + b2

        out = k.map_all(affine).replace(is_gaussian=True, width=self.out)
        if k.ntk is None:
            return out
        if not self.has_parameters:
            return out.replace(ntk=k.ntk if unit_w else w2 * k.ntk)
        if self.parametrization == "ntk":
            ntk = out.nngp + (k.ntk if unit_w else w2 * k.ntk)
        else:
            if k.width is None:
                raise ValueError(
                    "the standard-parametrization NTK grows with the width of the layer before "
                    "this Dense, which is infinite here; give that layer a finite width "
                    "(Dense(out=512, parametrization='standard')) or use parametrization='ntk'"
                )
            ntk = k.width * k.nngp + w2 * k.ntk
            if self.b_std is not None:
                ntk = ntk + 1.0
        return out.replace(ntk=ntk)

    def build_module(self, in_features: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        if not isinstance(in_features, int):
            raise TypeError("Dense got several branches; merge them first with a FanIn layer")
        out = self.out if self.out is not None else ctx.next_width()
        param = ctx.parametrization or self.parametrization
        w_std, b_std = float(self.W_std), None if self.b_std is None else float(self.b_std)
        lr_scale = 1.0
        if param == "ntk":  # W, b ~ N(0, 1); scales in the forward pass
            w_mult, b_mult, w_init, b_init = w_std / math.sqrt(in_features), b_std, 1.0, 1.0
        elif param == "standard":  # scales in the initialization
            w_mult, b_mult, w_init, b_init = 1.0, 1.0, w_std / math.sqrt(in_features), b_std
        else:  # a Scaling: standard at the reference width, exponents of rho away from it
            layer = ctx.dense_layers_built
            if layer >= param.n_layers:
                raise ValueError(
                    f"the scaling has {param.n_layers} layers but the network has more Dense "
                    "layers; give one exponent per Dense layer"
                )
            used = ctx.hidden_widths_used
            before = used if self.out is not None else used[:-1]  # widths feeding this layer
            rho_in = param.rho(before[-1]) if layer > 0 and before else 1.0
            width = used[-1] if used else param.ref_width
            fan_in_ref = in_features / rho_in
            w_mult = b_mult = param.multiplier(layer, width)  # a bias: a weight on input 1
            w_init = w_std / math.sqrt(fan_in_ref) * param.init_scale(layer, width)
            b_init = None if b_std is None else b_std * param.init_scale(layer, width)
            lr_scale = param.lr_scale(layer, width)
        ctx.dense_layers_built += 1
        weight = ctx.randn(out, in_features) * w_init
        bias = None if b_std is None else ctx.randn(out) * b_init
        name = param if isinstance(param, str) else param.name
        module = DenseModule(weight, bias, w_mult, b_mult or 0.0, lr_scale, name)
        module.requires_grad_(self.has_parameters)
        return module, out


class DenseModule(nn.Module):
    """The finite fully connected layer built by `Dense`: z = c W a + d b on the feature axis 1.

    ``weight_multiplier`` c and ``bias_multiplier`` d are plain numbers fixed at build time;
    ``lr_scale`` is the factor `widelimits.optimizer` applies to this layer's learning rate.
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        weight_multiplier: float,
        bias_multiplier: float,
        lr_scale: float = 1.0,
        parametrization: str = "ntk",
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.weight_multiplier = float(weight_multiplier)
        self.bias_multiplier = float(bias_multiplier)
        self.lr_scale = float(lr_scale)
        self.parametrization = parametrization

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim > 2:  # spatial inputs (N, C, ...): act on the channel axis
            return (
                self.forward(x.movedim(1, -1).reshape(-1, x.shape[1]))
                .reshape(*x.movedim(1, -1).shape[:-1], self.out_features)
                .movedim(-1, 1)
            )
        y = torch.nn.functional.linear(x, self.weight)
        if self.weight_multiplier != 1.0:
            y = y * self.weight_multiplier
        if self.bias is not None:
            y = y + (self.bias if self.bias_multiplier == 1.0 else self.bias_multiplier * self.bias)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, weight_multiplier="
            f"{self.weight_multiplier:.4g}, bias_multiplier={self.bias_multiplier:.4g}, "
            f"lr_scale={self.lr_scale:.4g}, parametrization={self.parametrization!r}"
        )
