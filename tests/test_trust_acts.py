"""Bad inputs to `Gabor`, `ExpNormalized`, the width factors ``s`` and the functional layers of
`from_module`: each error has the right type and names the offending argument or node."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import widelimits as wl
from widelimits.from_module import TranslationError


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma=-0.5), "gamma"), (dict(gamma="1"), "gamma"), (dict(gamma=math.nan), "gamma"),
        (dict(shift=math.inf), "shift"), (dict(shift=None), "shift"),
    ],
)  # fmt: skip
def test_exp_normalized_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wl.ExpNormalized(**kwargs)


def test_exp_normalized_refuses_a_concatenation_of_branches():
    net = wl.Serial(
        wl.FanOut(2), wl.Parallel(wl.Dense(W_std=1.0), wl.Dense(W_std=2.0)), wl.FanInConcat(),
        wl.ExpNormalized(),
    )  # fmt: skip
    with pytest.raises(ValueError, match="FanInConcat"):
        net.kernel(torch.randn(3, 4))


def test_exp_normalized_needs_gaussian_inputs_and_a_channel_axis():
    with pytest.raises(ValueError, match="Gaussian"):
        wl.ExpNormalized().kernel(torch.randn(3, 4), get="nngp")
    with pytest.raises(ValueError, match="channel axis"):
        wl.ExpNormalized().fn(torch.randn(5))


def test_gabor_needs_gaussian_inputs():
    with pytest.raises(ValueError, match="Gaussian"):
        wl.Serial(wl.Dense(), wl.ReLU(), wl.Gabor()).kernel(torch.randn(3, 4))


@pytest.mark.parametrize(
    "s", [(0, 1), (1, -2), 3, (1, 2, 3), (1.5, 1), (True, 1), "11", None],
)  # fmt: skip
def test_width_factor_must_be_a_pair_of_positive_ints(s):
    with pytest.raises(ValueError, match=r"s=\.\.\."):
        wl.Dense(4, parametrization="standard", s=s)


def test_width_factor_needs_the_standard_parametrization():
    with pytest.raises(ValueError, match="parametrization='standard'"):
        wl.Dense(4, s=(1, 2))
    assert wl.Dense(4, s=(1, 1)).s == (1, 1)  # the default is accepted everywhere


def test_width_factor_must_match_the_layer_before():
    net = wl.Serial(
        wl.Dense(4, parametrization="standard", s=(1, 3)), wl.ReLU(),
        wl.Dense(1, parametrization="standard", s=(5, 1)),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"s\[0\]"):
        net.kernel(torch.randn(3, 2), get="ntk")


class _Bad(nn.Module):
    def __init__(self, forward, features: int = 6) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))
        self.out = nn.Linear(features, 1)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


@pytest.mark.parametrize(
    "forward, shape, match",
    [
        (lambda m, x: m.out(F.linear(x, torch.ones(6, 4))), (3, 4), "weight"),
        (lambda m, x: m.out(F.linear(x, x[:, :1].T.expand(6, 4))), (4, 4), "weight"),
        (lambda m, x: m.out(F.linear(x, m.w) ** 2.5), (3, 4), "power"),
        (lambda m, x: m.out(F.linear(x, m.w).flatten(1)), (3, 2, 4), "F.linear"),
        (lambda m, x: m.out(F.layer_norm(F.linear(x, m.w), (3, 6))), (3, 4), "LayerNorm"),
        (lambda m, x: m.out(F.layer_norm(F.linear(x, m.w), (6,), m.w[:, 0])), (3, 4), "weight"),
    ],
    ids=[
        "constant-weight", "computed-weight", "power", "linear-3d", "layer-norm-shape",
        "computed-gain",
    ],
)
def test_from_module_functional_errors(forward, shape, match):
    model = _Bad(forward, 12 if len(shape) == 3 else 6)
    with pytest.raises(TranslationError, match=match):
        wl.from_module(model, torch.randn(*shape), init="empirical")


def test_from_module_refuses_rrelu_in_training_mode():
    model = nn.Sequential(nn.Linear(4, 6), nn.RReLU(), nn.Linear(6, 1))
    with pytest.raises(TranslationError, match="eval"):
        wl.from_module(model, torch.randn(3, 4))
