"""Torch activations (modules, functions, tensor methods) and their widelimits layers.

A closed-form widelimits activation is used when one has exactly the same function (ReLU, exact
GELU, LeakyReLU, Abs, Erf, Sin, Cos, Exp, Sign); every other elementwise function becomes an
`Elementwise` layer, whose kernel is computed by Gauss-Hermite quadrature.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..layers import GELU, ABReLU, Abs, Cos, Elementwise, Erf, Exp, LeakyReLU, ReLU, Sign, Sin
from ..layers.base import Layer

__all__ = [
    "ELEMENTWISE_FUNCTIONS", "ELEMENTWISE_METHODS", "activation_for_call", "activation_for_module",
]  # fmt: skip


def _named(fn: Callable, name: str, odd: bool = False, **kwargs) -> Callable:
    """``fn`` with fixed keyword arguments, a readable ``__name__`` and an ``odd`` flag
    (phi(-x) = -phi(x): a branch ending in it after fresh weights keeps mean zero)."""
    f = functools.partial(fn, **kwargs)
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    f.__name__ = f"{name}({args})" if args else name
    f.odd = odd
    return f


def _leaky(slope: float) -> Layer:
    # torch: x if x >= 0 else slope * x, for every slope; LeakyReLU(alpha) needs 0 <= alpha <= 1
    return LeakyReLU(slope) if 0.0 <= slope <= 1.0 else ABReLU(slope, 1.0)


def _gelu(approximate: str) -> Layer:
    if approximate == "none":
        return GELU()
    return Elementwise(_named(F.gelu, "gelu", approximate=approximate))


def _quadrature(fn: Callable, name: str, odd: bool = False, **kwargs) -> Layer:
    return Elementwise(_named(fn, name, odd, **kwargs))


def activation_for_module(mod: nn.Module) -> Layer | None:
    """The widelimits layer of an activation module, or None if ``mod`` is not one."""
    table: dict[type, Callable[[nn.Module], Layer]] = {
        nn.ReLU: lambda m: ReLU(),
        nn.GELU: lambda m: _gelu(m.approximate),
        nn.LeakyReLU: lambda m: _leaky(m.negative_slope),
        nn.Tanh: lambda m: _quadrature(torch.tanh, "tanh", odd=True),
        nn.Sigmoid: lambda m: _quadrature(torch.sigmoid, "sigmoid"),
        nn.SiLU: lambda m: _quadrature(F.silu, "silu"),
        nn.ELU: lambda m: _quadrature(F.elu, "elu", alpha=m.alpha),
        nn.CELU: lambda m: _quadrature(F.celu, "celu", alpha=m.alpha),
        nn.SELU: lambda m: _quadrature(F.selu, "selu"),
        nn.Softplus: lambda m: _quadrature(F.softplus, "softplus", beta=m.beta,
                                           threshold=m.threshold),  # fmt: skip
        nn.Mish: lambda m: _quadrature(F.mish, "mish"),
        nn.Softsign: lambda m: _quadrature(F.softsign, "softsign", odd=True),
        nn.Tanhshrink: lambda m: _quadrature(F.tanhshrink, "tanhshrink", odd=True),
        nn.Hardswish: lambda m: _quadrature(F.hardswish, "hardswish"),
        nn.Hardsigmoid: lambda m: _quadrature(F.hardsigmoid, "hardsigmoid"),
        nn.LogSigmoid: lambda m: _quadrature(F.logsigmoid, "logsigmoid"),
        nn.Softshrink: lambda m: _quadrature(F.softshrink, "softshrink", odd=True, lambd=m.lambd),
        nn.Hardshrink: lambda m: _quadrature(F.hardshrink, "hardshrink", odd=True, lambd=m.lambd),
        nn.Threshold: lambda m: _quadrature(F.threshold, "threshold", threshold=m.threshold,
                                            value=m.value),  # fmt: skip
    }
    if isinstance(mod, nn.RReLU) and not mod.training:  # a fixed slope in eval mode
        return _leaky((mod.lower + mod.upper) / 2)
    if isinstance(mod, nn.Hardtanh):  # also ReLU6
        odd = mod.min_val == -mod.max_val
        return _quadrature(F.hardtanh, "hardtanh", odd, min_val=mod.min_val, max_val=mod.max_val)
    make = table.get(type(mod))
    return None if make is None else make(mod)


# Functions and tensor methods: name -> (layer maker from the call's extra arguments).
_BY_NAME: dict[str, Callable[[dict], Layer]] = {
    "relu": lambda a: ReLU(),
    "gelu": lambda a: _gelu(a.get("approximate", "none")),
    "leaky_relu": lambda a: _leaky(a.get("negative_slope", 0.01)),
    "tanh": lambda a: _quadrature(torch.tanh, "tanh", odd=True),
    "sigmoid": lambda a: _quadrature(torch.sigmoid, "sigmoid"),
    "silu": lambda a: _quadrature(F.silu, "silu"),
    "elu": lambda a: _quadrature(F.elu, "elu", alpha=a.get("alpha", 1.0)),
    "selu": lambda a: _quadrature(F.selu, "selu"),
    "softplus": lambda a: _quadrature(F.softplus, "softplus", beta=a.get("beta", 1.0),
                                      threshold=a.get("threshold", 20.0)),  # fmt: skip
    "mish": lambda a: _quadrature(F.mish, "mish"),
    "softsign": lambda a: _quadrature(F.softsign, "softsign", odd=True),
    "celu": lambda a: _quadrature(F.celu, "celu", alpha=a.get("alpha", 1.0)),
    "hardtanh": lambda a: _hardtanh(a.get("min_val", -1.0), a.get("max_val", 1.0)),
    "relu6": lambda a: _hardtanh(0.0, 6.0),
    "hardswish": lambda a: _quadrature(F.hardswish, "hardswish"),
    "hardsigmoid": lambda a: _quadrature(F.hardsigmoid, "hardsigmoid"),
    "logsigmoid": lambda a: _quadrature(F.logsigmoid, "logsigmoid"),
    "tanhshrink": lambda a: _quadrature(F.tanhshrink, "tanhshrink", odd=True),
    "softshrink": lambda a: _quadrature(F.softshrink, "softshrink", odd=True,
                                        lambd=a.get("lambd", 0.5)),  # fmt: skip
    "hardshrink": lambda a: _quadrature(F.hardshrink, "hardshrink", odd=True,
                                        lambd=a.get("lambd", 0.5)),  # fmt: skip
    "threshold": lambda a: _quadrature(F.threshold, "threshold", threshold=a["threshold"],
                                       value=a["value"]),  # fmt: skip
    "sin": lambda a: Sin(),
    "cos": lambda a: Cos(),
    "erf": lambda a: Erf(),
    "abs": lambda a: Abs(),
    "exp": lambda a: Exp(),
    "sign": lambda a: Sign(),
}

ELEMENTWISE_FUNCTIONS = {
    torch.relu: "relu", F.relu: "relu", F.gelu: "gelu", F.leaky_relu: "leaky_relu",
    torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    F.silu: "silu", F.elu: "elu", F.selu: "selu", torch.selu: "selu", F.softplus: "softplus",
    F.mish: "mish", F.softsign: "softsign", torch.sin: "sin", torch.cos: "cos",
    torch.erf: "erf", torch.special.erf: "erf", torch.abs: "abs", torch.exp: "exp",
    torch.sign: "sign", F.celu: "celu", torch.celu: "celu", F.hardtanh: "hardtanh",
    F.relu6: "relu6", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid",
    F.logsigmoid: "logsigmoid", F.tanhshrink: "tanhshrink", F.softshrink: "softshrink",
    F.hardshrink: "hardshrink", F.threshold: "threshold", torch.special.expit: "sigmoid",
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "relu", "tanh", "sigmoid", "sin", "cos", "erf", "abs", "exp", "sign", "hardshrink",
}  # fmt: skip

# Positional parameters after the input, for the functions that take any.
_POSITIONAL = {"leaky_relu": ("negative_slope",), "elu": ("alpha",), "gelu": (),
               "softplus": ("beta", "threshold"), "celu": ("alpha",),
               "hardtanh": ("min_val", "max_val"), "softshrink": ("lambd",),
               "hardshrink": ("lambd",), "threshold": ("threshold", "value")}  # fmt: skip


def _hardtanh(min_val: float, max_val: float) -> Layer:
    return _quadrature(F.hardtanh, "hardtanh", min_val == -max_val, min_val=min_val,
                       max_val=max_val)  # fmt: skip


def activation_for_call(node: fx.Node) -> Layer:
    """The widelimits layer of a call_function / call_method node of an activation."""
    if node.op == "call_function":
        name = ELEMENTWISE_FUNCTIONS[node.target]
    else:
        name = node.target.rstrip("_")
    extra = dict(zip(_POSITIONAL.get(name, ()), node.args[1:], strict=False))
    extra.update({k: v for k, v in node.kwargs.items() if k != "inplace"})
    return _BY_NAME[name](extra)
