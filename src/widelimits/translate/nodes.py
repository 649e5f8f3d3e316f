"""The widelimits layer of each single-input node of a traced model (modules, functions,
tensor methods): weight layers, activations, pooling, flattening, normalization, scalings."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..layers import (
    AvgPool,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
)
from ..layers._spatial import pads
from ..layers.polynomial import MAX_MONOMIAL_DEGREE, Monomial
from ..layers.scale import Scale
from .activations import (
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    activation_for_call,
    activation_for_module,
)
from .errors import INSTEAD, NodeBase
from .weights import weight_stds

__all__ = ["NodeLayers"]

_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.true_divide}
_CAT = {torch.cat, torch.concat}
_POW = {operator.pow, torch.pow}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_IDENTITY_METHODS = {"contiguous", "clone"}

class NodeLayers(NodeBase):
    """``layer(node)``: the layers of one single-input node (an empty list for a no-op)."""

    model: nn.Module
    modules: dict[str, nn.Module]
    parametrization: str
    init: object

    def layer(self, node: fx.Node) -> list[Layer | None]:
        args = self.tensor_args(node)
        if len(args) != 1:
            raise self.fail(node, "an operation on several tensors without a kernel")
        self.check_in_place(node, args[0])
        if node.op == "call_module":
            return self.module_layer(node, self.modules[node.target])
        if node.op == "call_function":
            return self.function_layer(node)
        if node.op == "call_method":
            return self.method_layer(node)
        raise self.fail(node, f"unsupported graph operation {node.op!r}")

    def check_in_place(self, node: fx.Node, arg: fx.Node) -> None:
        name = node.target if isinstance(node.target, str) else ""
        in_place = node.kwargs.get("inplace", False) or (
            node.op == "call_method" and name.endswith("_") and not name.startswith("__")
        )
        if node.op == "call_module":
            in_place = getattr(self.modules[node.target], "inplace", False)
        if in_place and (arg is self.input or len(arg.users) > 1):
            which = "the model's input" if arg is self.input else f"{arg.name!r}, used elsewhere"
            raise self.fail(
                node,
                f"an in-place operation on {which} changes a value other operations read",
                "use the out-of-place version (e.g. torch.relu(x) instead of x.relu_(), "
                "inplace=False)",
            )

    def scalar(self, node: fx.Node) -> float | None:
        numbers = [a for a in node.args if isinstance(a, int | float) and not isinstance(a, bool)]
        return float(numbers[0]) if len(numbers) == 1 else None

    def function_layer(self, node: fx.Node) -> list[Layer | None]:
        t = node.target
        c = self.scalar(node)
        if t in _MUL and c is not None:
            return [Scale(c)]
        if t in _DIV and c is not None and self.is_tensor(node.args[0]):
            return [Scale(1.0 / c)]
        if t in (operator.neg, torch.neg):
            return [Scale(-1.0)]
        if t in (operator.pos,):
            return []
        if t in _ADD or t in _SUB:
            raise self.fail(node, "adding a constant shifts the mean: it has no kernel map here",
                            "remove the constant, or " + INSTEAD)
        if t is torch.flatten:
            return self.flatten(node)
        if t is torch.mean:
            return self.mean(node)
        if t is F.linear:
            return [self.functional_linear(node)]
        if t is F.layer_norm:
            return [self.functional_layer_norm(node)]
        if t in _POW or t is torch.square:
            return [self.power(node, 2 if t is torch.square else node.args[1])]
        if t in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d):
            return [self.functional_avg_pool(node)]
        if t in (F.dropout,):
            args = dict(zip(("p", "training"), node.args[1:], strict=False)) | node.kwargs
            return self.dropout(node, args.get("p", 0.5), args.get("training", True))
        if t in ELEMENTWISE_FUNCTIONS:
            return [activation_for_call(node)]
        return self.unsupported(node)

    def method_layer(self, node: fx.Node) -> list[Layer | None]:
        name = node.target.rstrip("_") if not node.target.startswith("__") else node.target
        c = self.scalar(node)
        if name in ("mul", "__mul__", "__rmul__") and c is not None:
            return [Scale(c)]
        if name in ("div", "__truediv__") and c is not None:
            return [Scale(1.0 / c)]
        if name in ("neg", "__neg__"):
            return [Scale(-1.0)]
        if name in ("pow", "__pow__", "square"):
            return [self.power(node, 2 if name == "square" else node.args[1])]
        if name in _FLATTEN_METHODS:
            return self.flatten(node)
        if name in _IDENTITY_METHODS:
            return []
        if name == "mean":
            return self.mean(node)
        if name in ELEMENTWISE_METHODS:
            return [activation_for_call(node)]
        if name in ("add", "sub", "__add__", "__sub__", "__radd__", "__rsub__"):
            raise self.fail(node, "adding a constant shifts the mean: it has no kernel map here",
                            "remove the constant, or " + INSTEAD)
        return self.unsupported(node)

    def unsupported(self, node: fx.Node) -> list[Layer]:
        raise self.fail(node, "this function or method has no infinite-width kernel in "
                        "widelimits")  # fmt: skip

    def flatten(self, node: fx.Node) -> list[Layer | None]:
        before, after = self.shape(self.tensor_args(node)[0]), self.shape(node)
        if after == before:
            return []
        if after == (before[0], math.prod(before[1:])):
            return [Flatten()]
        raise self.fail(node, f"reshapes {before} to {after}; only flattening to (N, features) "
                        "has a kernel", "use torch.flatten(x, 1)")  # fmt: skip

    def mean(self, node: fx.Node) -> list[Layer | None]:
        before = self.shape(self.tensor_args(node)[0])
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = (dims,) if isinstance(dims, int) else dims
        spatial = set(range(2, len(before)))
        if dims is None or not spatial or {d % len(before) for d in dims} != spatial:
            raise self.fail(node, f"a mean over dims {dims} of a tensor of shape {before}; only "
                            "the mean over all spatial axes (global average pooling) has a kernel",
                            "use x.mean(dim=(2, 3)) on images, x.mean(dim=2) on sequences")
        return [GlobalAvgPool()]

    def power(self, node: fx.Node, n) -> Layer:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_MONOMIAL_DEGREE:
            raise self.fail(node, f"the power {n!r} has no closed-form kernel here (only "
                            f"integer powers 0 to {MAX_MONOMIAL_DEGREE})",
                            "use an integer exponent, or wl.Elementwise for another function")
        return Monomial(n)

    def attribute(self, node: fx.Node | None):
        if node is None:
            return None
        value = self.gm
        for part in node.target.split("."):
            value = getattr(value, part)
        return value

    def functional_linear(self, node: fx.Node) -> Layer:
        before = self.shape(self.tensor_args(node)[0])
        weight, bias = map(self.attribute, self.parameter_args(node))
        if not isinstance(weight, nn.Parameter):
            raise self.fail(node, "its weight is a constant tensor, not a parameter: fixed "
                            "weights have no Gaussian infinite-width limit",
                            "make the weight an nn.Parameter")  # fmt: skip
        if len(before) != 2 or weight.ndim != 2:
            raise self.fail(node, f"F.linear on a tensor of shape {before} acts on its last "
                            "axis; widelimits' Dense acts on the feature axis 1",
                            "flatten to (N, features) first")  # fmt: skip
        shim = nn.Module()
        shim.weight, shim.bias = weight, bias
        name = self.parameter_args(node)[0].target
        w_std, b_std = weight_stds(self, node, shim, weight.shape[1], name=name)
        return Dense(weight.shape[0], w_std, b_std, self.parametrization)

    def functional_layer_norm(self, node: fx.Node) -> Layer:
        shape = node.kwargs.get("normalized_shape", node.args[1] if len(node.args) > 1 else None)
        eps = node.kwargs.get("eps", node.args[4] if len(node.args) > 4 else 1e-5)
        weight, bias = map(self.attribute, self.parameter_args(node))
        mod = nn.Module()
        mod.normalized_shape = tuple(shape) if isinstance(shape, list | tuple) else (shape,)
        mod.weight, mod.bias, mod.eps = weight, bias, eps
        return self.layer_norm(node, mod)

    def dropout(self, node: fx.Node, p: float, training: bool) -> list[Layer | None]:
        return [Dropout(p)] if training and p > 0 else []

    # -- modules ------------------------------------------------------------------------------
    def module_layer(self, node: fx.Node, mod: nn.Module) -> list[Layer | None]:
        if isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            return [self.weight_layer(node, mod)]
        if isinstance(mod, nn.Identity):
            return []
        if type(mod) is nn.Dropout:
            return self.dropout(node, mod.p, mod.training)
        if isinstance(mod, nn.MaxPool1d | nn.MaxPool2d | nn.AdaptiveMaxPool1d |
                      nn.AdaptiveMaxPool2d):  # fmt: skip
            raise self.fail(node, "max pooling has no closed-form infinite-width kernel",
                            "replace it by nn.AvgPool2d (same kernel_size and stride) for an "
                            "analytic kernel, or " + INSTEAD)
        if isinstance(mod, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d):
            return [self.avg_pool(node, mod)]
        if isinstance(mod, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
            return [self.adaptive_pool(node)]
        if isinstance(mod, nn.Flatten):
            return self.flatten(node)
        if isinstance(mod, nn.LayerNorm):
            return [self.layer_norm(node, mod)]
        if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
            return [self.batch_norm(node, mod)]
        if isinstance(mod, nn.RReLU) and mod.training:
            raise self.fail(node, "RReLU in training mode draws a random slope for every unit "
                            "and example: no closed-form kernel", "call model.eval() (the "
                            "slope is then (lower + upper) / 2), or " + INSTEAD)  # fmt: skip
        layer = activation_for_module(mod)
        if layer is not None:
            return [layer]
        raise self.fail(node, f"the module {type(mod).__name__} has no infinite-width kernel "
                        "in widelimits")  # fmt: skip

    def weight_layer(self, node: fx.Node, mod: nn.Module) -> Layer:
        before = self.shape(self.tensor_args(node)[0])
        if isinstance(mod, nn.Linear):
            if len(before) != 2:
                raise self.fail(node, f"Linear on a tensor of shape {before} acts on its last "
                                "axis; widelimits' Dense acts on the feature axis 1",
                                "flatten to (N, features) first")  # fmt: skip
            w_std, b_std = weight_stds(self, node, mod, mod.in_features)
            return Dense(mod.out_features, w_std, b_std, self.parametrization)
        if mod.groups != 1 or any(x != 1 for x in mod.dilation):
            raise self.fail(node, f"groups={mod.groups}, dilation={mod.dilation}: widelimits' "
                            "Conv has no grouped or dilated convolution",
                            "use groups=1 and dilation=1, or " + INSTEAD)
        padding = self.padding(node, before[2:], mod.kernel_size, mod.stride, mod.padding,
                               mod.padding_mode)  # fmt: skip
        fan_in = mod.in_channels * math.prod(mod.kernel_size)
        w_std, b_std = weight_stds(self, node, mod, fan_in)
        return Conv(mod.out_channels, tuple(mod.kernel_size), tuple(mod.stride), padding,
                    w_std, b_std, self.parametrization)  # fmt: skip

    def padding(self, node, sizes, window, stride, padding, mode: str = "zeros"):
        """widelimits' padding for torch's: a name, or PyTorch's zeros per axis (ints)."""
        if mode not in ("zeros", "circular"):
            raise self.fail(node, f"padding_mode={mode!r}; widelimits pads with zeros or "
                            "circularly", "use padding_mode='zeros' or 'circular'")
        if padding == "valid" or (not isinstance(padding, str) and not any(padding)):
            return "valid"
        same = "circular" if mode == "circular" else "same"
        if padding == "same":  # torch pads k - 1 in total, the smaller half first, as widelimits
            return same
        if mode == "zeros":  # PyTorch's zeros on both sides, exactly
            return tuple(int(p) for p in padding)
        for n, k, s, p in zip(sizes, window, stride, padding, strict=True):
            before, _, out = pads(n, k, s, "same")
            if before != p or out != (n + 2 * p - k) // s + 1:
                raise self.fail(
                    node,
                    f"padding={tuple(padding)} with padding_mode='circular', kernel_size="
                    f"{tuple(window)}, stride={tuple(stride)} on size {tuple(sizes)} is not "
                    "widelimits' 'circular' geometry (wrapping is only supported as 'circular')",
                    "use padding=kernel_size // 2 with an odd kernel_size, or padding_mode="
                    "'zeros'",
                )
        return same

    def avg_pool(self, node: fx.Node, mod) -> Layer:
        before = self.shape(self.tensor_args(node)[0])
        options = dict(
            kernel_size=mod.kernel_size, stride=mod.stride, padding=mod.padding,
            ceil_mode=mod.ceil_mode, count_include_pad=mod.count_include_pad,
            divisor_override=getattr(mod, "divisor_override", None),
        )  # fmt: skip
        return self.pool_layer(node, before, options)

    def functional_avg_pool(self, node: fx.Node) -> Layer:
        before = self.shape(self.tensor_args(node)[0])
        names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override")  # fmt: skip
        options = dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)
        if any(isinstance(v, fx.Node) for v in options.values()):
            raise self.fail(node, "pooling arguments computed in the forward pass",
                            "pass constant kernel_size, stride and padding")
        return self.pool_layer(node, before, options)

    def pool_layer(self, node: fx.Node, before, options: dict) -> Layer:
        d = len(before) - 2
        as_t = lambda v: tuple(v) if isinstance(v, tuple | list) else (v,) * d  # noqa: E731
        window = as_t(options["kernel_size"])
        stride = as_t(options.get("stride") or options["kernel_size"])  # None or []: window
        padding = as_t(options.get("padding", 0))
        if options.get("ceil_mode", False) or options.get("divisor_override") is not None:
            raise self.fail(node, "ceil_mode and divisor_override have no widelimits pooling",
                            "use the defaults")  # fmt: skip
        normalize = any(padding) and not options.get("count_include_pad", True)
        return AvgPool(window, stride, self.padding(node, before[2:], window, stride, padding),
                       normalize_edges=bool(normalize))  # fmt: skip

    def adaptive_pool(self, node: fx.Node) -> Layer:
        before, after = self.shape(self.tensor_args(node)[0]), self.shape(node)
        if all(o == 1 for o in after[2:]):
            return GlobalAvgPool()
        if all(n % o == 0 for n, o in zip(before[2:], after[2:], strict=True)):
            window = tuple(n // o for n, o in zip(before[2:], after[2:], strict=True))
            return AvgPool(window)
        raise self.fail(node, f"adaptive pooling from {before[2:]} to {after[2:]} uses windows "
                        "of different sizes", "use an output size dividing the input size")

    def layer_norm(self, node: fx.Node, mod: nn.LayerNorm) -> Layer:
        before = self.shape(self.tensor_args(node)[0])
        if len(before) != 2 or tuple(mod.normalized_shape) != (before[1],):
            raise self.fail(node, f"LayerNorm over {tuple(mod.normalized_shape)} on a tensor of "
                            f"shape {before}; widelimits' LayerNorm normalizes (N, features) "
                            "over the features", "apply it to flat (N, features) tensors")
        for name, value in (("weight", 1.0), ("bias", 0.0)):
            p = getattr(mod, name, None)
            if p is not None and not bool(torch.all(p == value)):
                raise self.fail(node, f"its affine {name} is not all {value:g} (as initialized)",
                                "use elementwise_affine=False, or " + INSTEAD)
        return LayerNorm(mod.eps)

    def batch_norm(self, node: fx.Node, mod) -> Layer:
        if mod.training or mod.running_var is None:
            raise self.fail(node, "BatchNorm in training mode (or without running statistics) "
                            "normalizes by statistics of the batch: no per-example kernel",
                            "call model.eval() to use its running statistics")
        with torch.no_grad():
            scale = (mod.running_var.double() + mod.eps).rsqrt()  # eps in float64
            if mod.weight is not None:
                scale = scale * mod.weight.double()
            shift = -scale * mod.running_mean.double()
            if mod.bias is not None:
                shift = shift + mod.bias.double()
        if not bool(torch.all(shift == 0)) or not bool(torch.all(scale == scale[0])):
            raise self.fail(node, "in eval mode this BatchNorm is an affine map with per-channel "
                            "scales or shifts, not one scalar factor, so it has no kernel map "
                            "(only its initial state, a uniform scale, has)", INSTEAD)
        return Scale(float(scale[0]))
