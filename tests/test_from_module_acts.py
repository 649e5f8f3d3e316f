"""`from_module` on functional layers (`F.linear`, `F.layer_norm`), powers and the activation
modules and functions added to its tables: each model's kernel equals the hand-written
description's (an independent construction of the same network)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import widelimits as wl

F64 = torch.float64
S3 = 1 / math.sqrt(3)  # PyTorch's default initialization as W_std


def _assert_same_kernels(model, hand: wl.Layer, shape=(4, 5), **options):
    torch.manual_seed(0)
    net = wl.from_module(model, torch.randn(*shape), **options)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    got, want = net.kernel(x), hand.kernel(x)
    torch.testing.assert_close(got.nngp, want.nngp, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.ntk, want.ntk, rtol=1e-12, atol=1e-14)
    return net


def _std(out, fan_in, w=S3, bias=True):
    return wl.Dense(out, w, S3 / math.sqrt(fan_in) if bias else None, "standard")


class FunctionalBlock(nn.Module):
    def __init__(self, bias: bool, affine: bool) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 5))
        self.b = nn.Parameter(0.1 * torch.randn(16)) if bias else None
        self.g = nn.Parameter(torch.ones(16)) if affine else None
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        h = F.linear(x, self.w, self.b)
        h = F.layer_norm(h, (16,), self.g, None, 1e-3)
        return self.out(F.gelu(h, approximate="tanh"))


@pytest.mark.parametrize("bias, affine", [(True, True), (False, False)])
def test_functional_linear_and_layer_norm(bias, affine):
    torch.manual_seed(2)
    model = FunctionalBlock(bias, affine)
    hand = wl.Serial(
        wl.Dense(16, 2.0, 0.1 if bias else None, "standard"), wl.LayerNorm(1e-3),
        wl.Elementwise(lambda x: F.gelu(x, approximate="tanh")), _std(1, 16),
    )  # fmt: skip
    init = {"w": (2.0, 0.1 if bias else None)}
    _assert_same_kernels(model, hand, init=init)


def test_functional_linear_reads_the_default_rule_from_its_weight():
    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.Linear(5, 12)  # PyTorch's default initialization, used functionally
            self.weight, self.bias = layer.weight, layer.bias
            self.out = nn.Linear(12, 1)

        def forward(self, x):
            return self.out(torch.relu(F.linear(x, self.weight, self.bias)))

    _assert_same_kernels(Lin(), wl.Serial(_std(12, 5), wl.ReLU(), _std(1, 12)))


POWERS = [
    (lambda h: h**2, 2), (lambda h: torch.square(h), 2), (lambda h: h.pow(3), 3),
    (lambda h: torch.pow(h, 1), 1),
]  # fmt: skip


@pytest.mark.parametrize("fn, n", POWERS)
def test_integer_powers_are_monomials(fn, n):
    class Pow(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 9), nn.Linear(9, 1)

        def forward(self, x):
            return self.b(fn(self.a(x)))

    _assert_same_kernels(Pow(), wl.Serial(_std(9, 5), wl.Monomial(n), _std(1, 9)))


ACTIVATIONS = [
    (nn.Softshrink(0.3), lambda x: F.softshrink(x, 0.3)),
    (nn.Hardshrink(0.4), lambda x: F.hardshrink(x, 0.4)),
    (nn.Threshold(0.1, -0.2), lambda x: F.threshold(x, 0.1, -0.2)),
    (lambda x: F.celu(x, 0.7), lambda x: F.celu(x, 0.7)),
    (lambda x: F.hardtanh(x, -0.5, 2.0), lambda x: F.hardtanh(x, -0.5, 2.0)),
    (F.relu6, F.relu6),
    (F.hardswish, F.hardswish),
    (F.hardsigmoid, F.hardsigmoid),
    (F.logsigmoid, F.logsigmoid),
    (F.tanhshrink, F.tanhshrink),
    (torch.special.expit, torch.sigmoid),
    (lambda x: x.hardshrink(0.2), lambda x: F.hardshrink(x, 0.2)),
    (nn.RReLU(0.1, 0.3).eval(), wl.LeakyReLU(0.2)),  # eval: the mean slope, a closed form
]


@pytest.mark.parametrize("act, fn", ACTIVATIONS, ids=lambda v: getattr(v, "__name__", "fn"))
def test_activations_added_to_the_tables(act, fn):
    class Act(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 9), nn.Linear(9, 1)
            self.act = act if isinstance(act, nn.Module) else None

        def forward(self, x):
            h = self.a(x)
            return self.b(self.act(h) if self.act is not None else act(h))

    layer = fn if isinstance(fn, wl.Layer) else wl.Elementwise(fn)
    hand = wl.Serial(_std(9, 5), layer, _std(1, 9))
    _assert_same_kernels(Act(), hand)
