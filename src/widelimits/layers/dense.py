"""Fully connected layer."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ..kernel import Kernel
from ._chain import Step
from ._spatial import check_fits
from .base import BuildContext, Layer, SpatialFeatures, check_number

__all__ = ["Dense", "WeightLayer"]

PARAMETRIZATIONS = ("ntk", "standard")


class WeightLayer(Layer):
    """What Dense and Conv share: weights and biases, their parametrization and the affine map.

    Subclasses give the mixing ``A`` their weights apply to the input kernel (identity for Dense,
    the filter-offset average for Conv) and the number of inputs each output sums over.  The
    width factors ``s`` of the standard parametrization (see `Dense`) live here too: the kernel
    map reads them, and subclasses build ``finite_out(ctx)`` output channels.
    """

    def __init__(
        self,
        out: int | None,
        W_std: float | Tensor,
        b_std: float | Tensor | None,
        parametrization: str,
        trainable: bool,
        s: tuple[int, int] = (1, 1),
    ) -> None:
        name = type(self).__name__
        if out is not None and (not isinstance(out, int) or isinstance(out, bool) or out < 1):
            raise ValueError(
                f"{name}(out=...) must be None (hidden) or a positive int, got {out!r}"
            )
        check_number(name, "W_std", W_std)
        check_number(name, "b_std", b_std, allow_none=True)
        if not isinstance(parametrization, str) or parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"{name}(parametrization=...) must be one of {PARAMETRIZATIONS}, got "
                f"{parametrization!r}"
            )
        if not isinstance(trainable, bool | np.bool_):
            raise TypeError(f"{name}(trainable=...) must be True or False, got {trainable!r}")
        s = _check_s(name, s, parametrization)
        self.out = out
        self.W_std = W_std
        self.b_std = b_std
        self.parametrization = parametrization
        self.has_parameters = bool(trainable)
        self.s = s

    def __repr__(self) -> str:
        text = super().__repr__()
        return text.replace(", s=(1, 1)", "") if self.s == (1, 1) else text

    @property
    def finite_width(self) -> int | None:
        """Channels of the finite layer, ``s[1] * out`` (``None`` for a hidden layer)."""
        return None if self.out is None else self.out * self.s[1]

    def finite_out(self, ctx: BuildContext) -> int:
        """Output channels of the built layer: ``s[1]`` times ``out`` or the next hidden width."""
        return (self.out if self.out is not None else ctx.next_width()) * self.s[1]

    def affine_kernel(self, k: Kernel, window_sum=None, taps: int = 1) -> Kernel:
        """K' = sigma_w^2 A(K) + sigma_b^2 and the matching Theta', A = window_sum / taps.

        ``window_sum`` (linear) sums the input kernel over the ``taps`` input positions each
        output reads (the filter size; identity and 1 for Dense); the 1 / taps of the average is
        folded into the sigma_w^2 multiply.  The standard-parametrization NTK counts every
        weight, n_in * taps of them per output: n_in * taps * A(K) = n_in * window_sum(K).
        """
        if not isinstance(k, Kernel):
            raise TypeError(
                f"{type(self).__name__} got several branches; merge them first with FanInSum, "
                "FanInConcat or FanInProd"
            )
        summed = k if window_sum is None else k.map_all(window_sum, ntk=True)
        w2 = self.W_std**2 / taps
        b2 = 0.0 if self.b_std is None else self.b_std**2
        unit_w = not isinstance(w2, Tensor) and w2 == 1.0
        no_b = not isinstance(b2, Tensor) and b2 == 0.0

        def affine(t: Tensor) -> Tensor:  # skips the no-op multiply and add (a pass each)
            t = t if unit_w else w2 * t
            return t if no_b else t + b2

        out = summed.map_all(affine).replace(is_gaussian=True, width=self.finite_width)
        theta = summed.ntk
        if theta is None:
            return out
        if theta.ndim == 0:  # the zero NTK before any trainable layer
            theta_part = theta
        else:
            theta_part = theta if unit_w else w2 * theta
        rule, count = self.ntk_rule(k)
        if rule == "frozen":
            return out.replace(ntk=theta_part)
        if rule == "ntk":
            ntk = out.nngp if theta.ndim == 0 else out.nngp + theta_part
        else:
            ntk = count * summed.nngp + theta_part
            if self.b_std is not None:
                ntk = ntk + 1.0
        return out.replace(ntk=ntk)

    def ntk_rule(self, k: Kernel) -> tuple[str, int]:
        r"""How this layer updates the NTK, given its input state: ``("frozen", 0)``
        (:math:`\Theta' = \sigma_w^2 \Theta`), ``("ntk", 0)`` (:math:`\Theta' = K' + \sigma_w^2
        \Theta`) or ``("standard", n)`` (:math:`\Theta' = n K + \sigma_w^2 \Theta\,[+1]`, with
        :math:`n = n_\text{in} / s_\text{in}`).  Raises ValueError when the standard NTK is
        asked of an infinitely wide input."""
        if not self.has_parameters:
            return "frozen", 0
        if self.parametrization == "ntk":
            return "ntk", 0
        if k.width is None:
            raise ValueError(
                "the standard-parametrization NTK grows with the width of the layer before "
                f"this {type(self).__name__}, which is infinite here; give that layer a "
                "finite width (e.g. Dense(out=512, parametrization='standard')) or use "
                "parametrization='ntk'"
            )
        s_in = self.s[0]
        if k.width % s_in:
            raise ValueError(
                f"{type(self).__name__}(s=({s_in}, ...)): the layer before has {k.width} "
                f"features, not a multiple of s[0] = {s_in}; s[0] must equal s[1] of the "
                "layer before (1 for the first layer)"
            )
        return "standard", k.width // s_in

    def weight_scales(self, fan_in: int, ctx: BuildContext) -> dict:
        """Forward multipliers, init stds and learning-rate factor of the finite layer.

        ``fan_in`` is the number of inputs each output sums over (in_features, or channels
        times filter size).  Returns a dict with ``w_mult``, ``b_mult``, ``w_init``, ``b_init``,
        ``lr_scale`` and ``name``; counts this layer in ``ctx.dense_layers_built``.
        """
        param = ctx.parametrization or self.parametrization
        w_std, b_std = float(self.W_std), None if self.b_std is None else float(self.b_std)
        lr_scale = 1.0
        s_in = self.s[0]
        if param == "ntk":  # W, b ~ N(0, 1); scales in the forward pass
            w_mult, b_mult, w_init, b_init = w_std / math.sqrt(fan_in), b_std, 1.0, 1.0
        elif param == "standard":  # scales in the initialization (and 1 / sqrt(s[0]))
            w_mult, b_mult = 1.0 / math.sqrt(s_in), 1.0
            w_init, b_init = w_std / math.sqrt(fan_in / s_in), b_std
        else:  # a Scaling: standard at the reference width, exponents of rho away from it
            layer = ctx.dense_layers_built
            if layer >= param.n_layers:
                raise ValueError(
                    f"the scaling has {param.n_layers} layers but the network has more weight "
                    "layers; give one exponent per Dense or Conv layer"
                )
            used = ctx.hidden_widths_used
            before = used if self.out is not None else used[:-1]  # widths feeding this layer
            rho_in = param.rho(before[-1]) if layer > 0 and before else 1.0
            width = used[-1] if used else param.ref_width
            fan_in_ref = fan_in / rho_in
            w_mult = b_mult = param.multiplier(layer, width)  # a bias: a weight on input 1
            w_init = w_std / math.sqrt(fan_in_ref) * param.init_scale(layer, width)
            b_init = None if b_std is None else b_std * param.init_scale(layer, width)
            lr_scale = param.lr_scale(layer, width)
        ctx.dense_layers_built += 1
        name = param if isinstance(param, str) else param.name
        return dict(
            w_mult=w_mult, b_mult=b_mult or 0.0, w_init=w_init, b_init=b_init,
            lr_scale=lr_scale, name=name,
        )  # fmt: skip


class Dense(WeightLayer):
    r"""Fully connected layer :math:`z = \sigma_w W x / \sqrt{n_\text{in}} + \sigma_b b`
    (NTK parametrization).

    Args:
        out: ``None`` for a hidden layer whose width is the infinite dimension (``build`` gives it
            the ``width`` it is asked for); an integer for a layer of fixed width, typically the
            readout (``out=k`` for k outputs).  The infinite-width kernels do not depend on ``out``,
            except the standard-parametrization NTK, which grows with the width it multiplies.
        W_std: weight standard deviation :math:`\sigma_w`.
        b_std: bias standard deviation :math:`\sigma_b`; ``None`` for no bias.
        parametrization: ``"ntk"`` — :math:`W, b \sim \mathcal N(0, 1)` and the scale in the
            forward pass — or ``"standard"`` —
            :math:`W \sim \mathcal N(0, \sigma_w^2 / n_\text{in})`,
            :math:`b \sim \mathcal N(0, \sigma_b^2)`, plain forward pass.
        trainable: ``False`` freezes the layer (see below).
        s: the width factors :math:`(s_{in}, s_{out})` of neural-tangents' standard
            parametrization (Sohl-Dickstein et al. 2020), ``"standard"`` only: the finite layer
            has :math:`s_{out} \cdot` ``out`` outputs, weights
            :math:`W \sim \mathcal{N}(0, \sigma_w^2 s_{in} / n_{in})` and the forward pass
            :math:`z = W x / \sqrt{s_{in}} + b`, where :math:`n_{in}` is the actual number of
            inputs.  The NNGP is unchanged and the NTK counts :math:`n_{in} / s_{in}` inputs,
            :math:`\Theta' = (n_{in} / s_{in}) K + \sigma_w^2 \Theta\,[+1]`: the network is
            :math:`s` times wider than the widths its NTK is taken at, and as :math:`s \to \infty`
            its empirical NTK tends to the standard-parametrization NTK at widths ``out``.
            :math:`s_{in}` must be the previous layer's :math:`s_{out}` (1 for the first layer).

    Kernel map (both parametrizations give the same NNGP), with input state :math:`(K, \Theta)`:

    .. math::

        K' &= \sigma_w^2 K + \sigma_b^2 \\
        \Theta' &= K' + \sigma_w^2\, \Theta \qquad \text{(ntk)} \\
        \Theta' &= (n_\text{in} / s_\text{in}) K + \sigma_w^2\, \Theta + [1 \text{ if bias}]
            \qquad \text{(standard)}

    The NNGP of the input layer is :math:`K^0(x, x') = x \cdot x' / n_\text{in}`.
    ``trainable=False`` freezes the layer: its parameters get no gradient
    (``requires_grad=False`` on the finite side) and add nothing to the NTK,
    :math:`\Theta' = \sigma_w^2\, \Theta`; the NTK of a network is the sum over its Dense
    layers of the NTKs with only that layer trainable.  On spatial inputs ``(N, C, *S)`` a Dense
    layer acts on the channels at every pixel (a 1x1 convolution).
    """

    def __init__(
        self,
        out: int | None = None,
        W_std: float | Tensor = 1.0,
        b_std: float | Tensor | None = None,
        parametrization: str = "ntk",
        trainable: bool = True,
        s: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__(out, W_std, b_std, parametrization, trainable, s)

    def kernel_fn(self, k: Kernel) -> Kernel:
        return self.affine_kernel(k)

    _RULES = {"frozen": 0, "ntk": 1, "standard": 2}

    def chain_op(self, k: Kernel, size: tuple[int, ...]) -> Step | None:
        """``(rule, w2, b2, n)`` for `widelimits.layers._chain` (rule 0 frozen, 1 NTK
        parametrization, 2 standard, 3 standard with a bias; n the standard rule's count) and
        the flags of the state after it, or None when a hyperparameter needs a gradient or the
        layer must raise its own error.  The same map for every pixel of a per-pixel tile."""
        hyper = [v for v in (self.W_std, self.b_std) if isinstance(v, Tensor)]
        if any(v.requires_grad or v.ndim > 0 for v in hyper):
            return None
        try:
            rule, n = self.ntk_rule(k)
        except ValueError:
            return None
        code = self._RULES[rule] + (rule == "standard" and self.b_std is not None)
        b2 = 0.0 if self.b_std is None else float(self.b_std) ** 2
        op = (code, float(self.W_std) ** 2, b2, float(n), 0.0, 0.0)
        return Step(op, {"is_gaussian": True, "width": self.finite_width})

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, int]:
        if isinstance(in_features, tuple):
            raise TypeError("Dense got several branches; merge them first with a FanIn layer")
        spatial = isinstance(in_features, SpatialFeatures)
        n_in = in_features.channels if spatial else in_features
        out = self.finite_out(ctx)
        check_fits(
            f"Dense(out={self.out!r})" if self.out is not None else f"Dense (hidden width {out})",
            f"the weights of {out} x {n_in} features", out * n_in,
            torch.empty((), dtype=ctx.dtype).element_size(),
            "use a smaller out or width (the infinite-width kernel needs none of this memory)",
        )  # fmt: skip
        sc = self.weight_scales(n_in, ctx)
        weight = ctx.randn(out, n_in) * sc["w_init"]
        bias = None if self.b_std is None else ctx.randn(out) * sc["b_init"]
        module = DenseModule(weight, bias, sc["w_mult"], sc["b_mult"], sc["lr_scale"], sc["name"])
        module.requires_grad_(self.has_parameters)
        return module, SpatialFeatures(out, in_features.size) if spatial else out


def _check_s(name: str, s, parametrization: str) -> tuple[int, int]:
    """``s`` as a pair of positive ints; anything but (1, 1) only with the standard one."""
    ok = (
        isinstance(s, tuple | list)
        and len(s) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in s)
    )
    if not ok:
        raise ValueError(f"{name}(s=...) must be a pair (s_in, s_out) of positive ints, got {s!r}")
    s = (int(s[0]), int(s[1]))
    if s != (1, 1) and parametrization != "standard":
        raise ValueError(
            f"{name}(s={s}): the width factors s apply to parametrization='standard' only "
            f"(got parametrization={parametrization!r}); drop s or use the standard one"
        )
    return s


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
        if x.ndim < 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"this Dense layer was built for {self.in_features} input features (axis 1 of "
                f"its input), got an input of shape {tuple(x.shape)}; build the network with "
                "in_features matching your data"
            )
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
