"""`wl.from_module` on PyTorch models with integer padding: the stride-2, padding-1
downsampling of a ResNet (refused before widelimits had explicit padding), average pooling as a
module and as ``F.avg_pool2d`` (also with ``count_include_pad=False``), and 3-D convolutions.

Each translation is checked against the same architecture written by hand (exact, float64) and
against Monte Carlo over re-initialized wide copies of the user's class.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import widelimits as wl

S3 = 1 / math.sqrt(3)  # torch's default init: Var(W) = 1 / (3 fan_in), so W_std = 1/sqrt(3)


def b(fan_in: int) -> float:
    """torch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std 1/sqrt(3 fan_in)."""
    return 1 / math.sqrt(3 * fan_in)


def C(c_in: int, out: int, k: int, padding, stride: int = 1) -> wl.Conv:
    return wl.Conv(out, (k, k), (stride, stride), padding, S3, b(c_in * k * k), "standard")


class Down(nn.Module):
    """A ResNet downsampling block as users write it: 3x3 stride 2 padding 1, a 1x1 stride-2
    shortcut, on even image sizes."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=2)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x))) + self.shortcut(x)


class DownNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.down = Down(width, 2 * width)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.down(F.relu(self.stem(x)))
        x = self.pool(F.relu(x))
        x = F.avg_pool2d(x, 2)
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


def hand_down_net(width: int = 8, classes: int = 3) -> wl.Layer:
    w2 = 2 * width
    down = wl.Residual(C(width, w2, 3, 1, stride=2), wl.ReLU(), C(w2, w2, 3, 1),
                       shortcut=C(width, w2, 1, "valid", stride=2))  # fmt: skip
    return wl.Serial(
        C(3, width, 3, 1), wl.ReLU(), down, wl.ReLU(),
        wl.AvgPool(3, 1, 1, normalize_edges=True), wl.AvgPool(2), wl.GlobalAvgPool(),
        wl.Dense(classes, S3, b(w2), "standard"),
    )  # fmt: skip


def test_stride2_padding1_downsampling_matches_the_hand_written_network():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    net = wl.from_module(DownNet(), x)
    got, want = net.kernel(x, x[:2]), hand_down_net().kernel(x, x[:2])
    for g in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(got, g), getattr(want, g), rtol=1e-12, atol=1e-12)
    # "same" pads this geometry (0, 1), torch (1, 1): a different kernel, so the test can fail
    same = wl.Serial(C(3, 8, 3, "same"), wl.ReLU(), C(8, 16, 3, "same", stride=2), wl.ReLU(),
                     wl.GlobalAvgPool(), wl.Dense(3, S3, b(16), "standard"))  # fmt: skip
    ones = wl.Serial(C(3, 8, 3, 1), wl.ReLU(), C(8, 16, 3, 1, stride=2), wl.ReLU(),
                     wl.GlobalAvgPool(), wl.Dense(3, S3, b(16), "standard"))  # fmt: skip
    assert not torch.allclose(same.kernel(x).nngp, ones.kernel(x).nngp, rtol=1e-6)


def test_translated_layers_carry_the_padding():
    x = torch.randn(2, 3, 8, 8)
    layers = repr(wl.from_module(DownNet(), x))
    assert "padding=((1, 1), (1, 1))" in layers and "normalize_edges=True" in layers


def test_monte_carlo_wide_downsampling_net():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    net = wl.from_module(DownNet(48, 96), x)
    analytic = net.kernel(x, get="nngp")

    def factory(seed):
        torch.manual_seed(seed)
        return DownNet(48, 96).double()

    mc = wl.finite.monte_carlo_kernel(factory, x, n_samples=80, get=("nngp",), seed=1)
    z = (mc.nngp - analytic).abs() / mc.nngp_stderr
    assert float(z.max()) < 5.0, (mc.nngp, analytic, mc.nngp_stderr)
    assert float(mc.nngp_stderr.max() / analytic.abs().max()) < 0.03  # precise enough


class Volume(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 8, 3, stride=(1, 2, 2), padding=1)
        self.pool = nn.AvgPool3d(2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))).mean((2, 3, 4)), 1))


def test_conv3d_and_avgpool3d():
    x = torch.randn(2, 2, 2, 4, 4, dtype=torch.float64)
    net = wl.from_module(Volume(), x)
    hand = wl.Serial(
        wl.Conv(8, 3, (1, 2, 2), 1, S3, b(2 * 27), "standard"), wl.ReLU(), wl.AvgPool(2),
        wl.GlobalAvgPool(), wl.Dense(2, S3, b(8), "standard"),
    )  # fmt: skip
    got, want = net.kernel(x), hand.kernel(x)
    torch.testing.assert_close(got.ntk, want.ntk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda x: F.avg_pool2d(x, 3, ceil_mode=True), "ceil_mode"),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=3), "divisor_override"),
    ],
)
def test_functional_pooling_options_without_a_kernel(fn, message):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return fn(self.conv(x))

    with pytest.raises(ValueError, match=message):
        wl.from_module(M(), torch.randn(2, 3, 8, 8))


def test_dilation_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2))
    with pytest.raises(ValueError, match="dilation"):
        wl.from_module(model, torch.randn(2, 3, 8, 8))
