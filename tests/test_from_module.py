"""`widelimits.from_module`: the kernels of PyTorch models as users write them.

Every translated model is checked against the same architecture written by hand in widelimits
(exactly, float64), three of them also against Monte Carlo over re-initialized wide copies of the
user's own class (torch's default initialization, different seeds), and every unsupported
construct against its error message.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import widelimits as wl
from widelimits.layers import Scale

S3 = 1 / math.sqrt(3)  # torch's default init: Var(W) = 1 / (3 fan_in), so W_std = 1/sqrt(3)
BN = 1 / math.sqrt(1 + 1e-5)  # BatchNorm in eval mode at its initial running statistics


def b(fan_in: int) -> float:
    """torch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std 1/sqrt(3 fan_in)."""
    return 1 / math.sqrt(3 * fan_in)


def D(n_in: int, out: int, param: str = "standard", bias: bool = True) -> wl.Dense:
    return wl.Dense(out, S3, b(n_in) if bias else None, param)


def C(c_in: int, out: int, k: int, padding: str, stride: int = 1, d: int = 2) -> wl.Conv:
    return wl.Conv(out, (k,) * d, (stride,) * d, padding, S3, b(c_in * k**d), "standard")


def assert_same_kernel(model, hand, x, **options):
    net = wl.from_module(model, x, **options)
    got, want = net.kernel(x, x[:2]), hand.kernel(x, x[:2])
    for name in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-12)
    return net


torch.manual_seed(0)
X_FLAT = torch.randn(4, 5, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws its inputs from the same seed, whatever ran before it."""
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# Models as users write them, and their hand-written descriptions.


def mlp(act: nn.Module, d: int = 5, h: int = 16, out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(d, h), act, nn.Linear(h, h), act, nn.Linear(h, out))


ACTIVATIONS = [
    (nn.ReLU(), wl.ReLU()),
    (nn.GELU(), wl.GELU()),
    (nn.Tanh(), wl.Elementwise(torch.tanh)),
    (nn.LeakyReLU(0.2), wl.LeakyReLU(0.2)),
    (nn.LeakyReLU(1.5), wl.ABReLU(1.5, 1.0)),  # torch: x >= 0 ? x : 1.5 x
    (nn.Sigmoid(), wl.Elementwise(torch.sigmoid)),
    (nn.SiLU(), wl.Elementwise(F.silu)),
    (nn.ELU(0.5), wl.Elementwise(lambda x: F.elu(x, alpha=0.5))),
    (nn.GELU(approximate="tanh"), wl.Elementwise(lambda x: F.gelu(x, approximate="tanh"))),
]


@pytest.mark.parametrize("act,hand_act", ACTIVATIONS, ids=lambda a: type(a).__name__)
def test_mlp_each_activation(act, hand_act):
    hand = wl.Serial(D(5, 16), hand_act, D(16, 16), hand_act, D(16, 3))
    assert_same_kernel(mlp(act), hand, X_FLAT)


class FunctionalMLP(nn.Module):
    """Functional activations and a scaled readout."""

    def __init__(self, d=5, h=16, out=3):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, out)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = torch.erf(self.fc2(x))
        return self.fc3(x) * 0.5


def test_functional_mlp_scaled_output():
    # in the NTK parametrization c (W_std/sqrt(n) W h + b_std b) is the Dense with c W_std, c b_std
    hand = wl.Serial(
        D(5, 16, "ntk"), wl.ReLU(), D(16, 16, "ntk"), wl.Erf(),
        wl.Dense(3, S3 / 2, b(16) / 2, "ntk"),
    )  # fmt: skip
    assert_same_kernel(FunctionalMLP(), hand, X_FLAT, parametrization="ntk")
    # in the standard one, the scale multiplies the last layer's NTK as well
    net = wl.from_module(FunctionalMLP(), X_FLAT)
    no_scale = wl.Serial(D(5, 16), wl.ReLU(), D(16, 16), wl.Erf(), D(16, 3))
    got, want = net.kernel(X_FLAT), no_scale.kernel(X_FLAT)
    torch.testing.assert_close(got.nngp, want.nngp / 4, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.ntk, want.ntk / 4, rtol=1e-12, atol=1e-12)


class LeNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.AvgPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def test_lenet_with_average_pooling():
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    hand = wl.Serial(
        C(3, 6, 5, "valid"), wl.ReLU(), wl.AvgPool(2), C(6, 16, 5, "valid"), wl.ReLU(),
        wl.AvgPool(2), wl.Flatten(), D(16, 32), wl.ReLU(), D(32, 10),
    )  # fmt: skip
    assert_same_kernel(LeNet(), hand, x)


class PreActBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class ResNetish(nn.Module):
    """A CIFAR-style pre-activation ResNet without MaxPool (BatchNorm in eval mode)."""

    def __init__(self, width=8, classes=4):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.stage1 = nn.Sequential(PreActBlock(width, width), PreActBlock(width, width))
        self.down = nn.AvgPool2d(2)
        self.stage2 = nn.Sequential(PreActBlock(width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(F.relu(x)), 1))


def hand_block(c_in, c_out):
    shortcut = None if c_in == c_out else C(c_in, c_out, 1, "valid")
    return wl.Residual(
        Scale(BN), wl.ReLU(), C(c_in, c_out, 3, "same"), Scale(BN), wl.ReLU(),
        C(c_out, c_out, 3, "same"), shortcut=shortcut,
    )  # fmt: skip


def test_resnet_like_block_stack():
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    hand = wl.Serial(
        C(3, 8, 3, "same"), hand_block(8, 8), hand_block(8, 8), wl.AvgPool(2), hand_block(8, 16),
        wl.ReLU(), wl.GlobalAvgPool(), wl.Flatten(), D(16, 4),
    )  # fmt: skip
    assert_same_kernel(ResNetish().eval(), hand, x)


class ResidualLayerNorm(nn.Module):
    def __init__(self, d=5, h=16, out=3):
        super().__init__()
        self.inp, self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, h)
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, out)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.fc2(F.relu(self.fc1(h)))
        return self.head(F.gelu(self.norm(h)))


def test_residual_and_layer_norm():
    hand = wl.Serial(
        D(5, 16), wl.Residual(D(16, 16), wl.ReLU(), D(16, 16)), wl.LayerNorm(1e-5), wl.GELU(),
        D(16, 3),
    )  # fmt: skip
    assert_same_kernel(ResidualLayerNorm(), hand, X_FLAT)


class CNN1d(nn.Module):
    def __init__(self, width=8, out=3):
        super().__init__()
        self.conv1 = nn.Conv1d(4, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 5, padding=2, padding_mode="circular")
        self.conv3 = nn.Conv1d(width, width, 3, stride=2)
        self.fc = nn.Linear(width, out)

    def forward(self, x):
        x = torch.tanh(self.conv2(F.relu(self.conv1(x))))
        x = self.conv3(x).mean(dim=-1)
        return self.fc(torch.relu(x))


def test_1d_cnn():
    x = torch.randn(3, 4, 12, dtype=torch.float64)
    hand = wl.Serial(
        C(4, 8, 3, "same", d=1), wl.ReLU(), C(8, 8, 5, "circular", d=1),
        wl.Elementwise(torch.tanh), C(8, 8, 3, "valid", stride=2, d=1), wl.GlobalAvgPool(),
        wl.ReLU(), D(8, 3),
    )  # fmt: skip
    assert_same_kernel(CNN1d(), hand, x)


class Inner(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Dropout(0.25), nn.Linear(h, h))

    def forward(self, x):
        return x + 0.5 * self.body(x)


class Outer(nn.Module):
    def __init__(self, d=5, h=16, out=3):
        super().__init__()
        self.inp = nn.Linear(d, h)
        self.blocks = nn.Sequential(Inner(h), Inner(h))
        self.out = nn.Sequential(nn.Identity(), nn.Linear(h, out))

    def forward(self, x):
        return self.out(self.blocks(self.inp(x)))


@pytest.mark.parametrize("training", [False, True])
def test_nested_custom_modules_scaling_and_dropout(training):
    model = Outer().train(training)
    drop = [wl.Dropout(0.25)] if training else []
    inner = wl.Residual(D(16, 16), wl.ReLU(), *drop, D(16, 16), Scale(0.5))
    hand = wl.Serial(D(5, 16), inner, inner, D(16, 3))
    assert_same_kernel(model, hand, X_FLAT)


class TwoTowers(nn.Module):
    """Two branches of different widths concatenated along the features."""

    def __init__(self, d=5, out=3):
        super().__init__()
        self.a, self.b = nn.Linear(d, 16), nn.Linear(d, 8)
        self.head = nn.Linear(24, out)

    def forward(self, x):
        return self.head(torch.cat([F.relu(self.a(x)), torch.tanh(self.b(x))], dim=1))


def test_concatenation_weighs_by_width():
    hand = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(D(5, 16), wl.ReLU()), wl.Serial(D(5, 8), wl.Elementwise(torch.tanh))),
        wl.FanInConcat(), D(24, 3),
    )  # fmt: skip
    assert_same_kernel(TwoTowers(), hand, X_FLAT)


class Subtract(nn.Module):
    def __init__(self, d=5, h=16):
        super().__init__()
        self.inp, self.fc, self.head = nn.Linear(d, h), nn.Linear(h, h), nn.Linear(h, 1)

    def forward(self, x):
        h = self.inp(x)
        return self.head(torch.sin(torch.add(h, self.fc(h), alpha=2.0) - 0.5 * self.fc2(h)))

    def fc2(self, h):  # a helper method: traced through
        return -h


def test_weighted_sums_and_ntk_parametrization():
    # h + 2 fc(h) - 0.5 (-h): three summands, of which only fc(h) ends in fresh weights -> error
    with pytest.raises(ValueError, match="correlated"):
        wl.from_module(Subtract(), X_FLAT)
    # two summands: h + 2 fc(h)
    class Add(Subtract):
        def forward(self, x):
            h = self.inp(x)
            return self.head(torch.sin(torch.add(h, self.fc(h), alpha=2.0)))

    hand = wl.Serial(
        D(5, 16, "ntk"), wl.Residual(D(16, 16, "ntk"), Scale(2.0)), wl.Sin(), D(16, 1, "ntk")
    )
    assert_same_kernel(Add(), hand, X_FLAT, parametrization="ntk")


def test_init_rules():
    model = mlp(nn.ReLU())
    with torch.no_grad():
        model[2].weight.normal_(0, 0.1)
    x = X_FLAT
    with pytest.raises(ValueError, match=r"node '_2'.*init='empirical'"):
        wl.from_module(model, x)
    rms = lambda t: float(t.detach().double().pow(2).mean().sqrt())  # noqa: E731
    hand = wl.Serial(
        wl.Dense(16, rms(model[0].weight) * math.sqrt(5), rms(model[0].bias), "standard"),
        wl.ReLU(),
        wl.Dense(16, rms(model[2].weight) * 4.0, rms(model[2].bias), "standard"),
        wl.ReLU(),
        wl.Dense(3, rms(model[4].weight) * 4.0, rms(model[4].bias), "standard"),
    )
    assert_same_kernel(model, hand, x, init="empirical")
    hand = wl.Serial(D(5, 16), wl.ReLU(), wl.Dense(16, 0.4, 0.0, "standard"), wl.ReLU(), D(16, 3))
    assert_same_kernel(model, hand, x, init={"2": (0.4, 0.0)})
    assert_same_kernel(model, hand, x, init=lambda name, m: (0.4, 0.0) if name == "2" else (
        S3, b(m.in_features)))  # fmt: skip


def test_result_builds_the_models_widths_and_prints():
    net = wl.from_module(ResidualLayerNorm(), X_FLAT)
    built = net.build(5, width=1, seed=0)  # every layer keeps the model's width
    got = sorted(tuple(p.shape) for p in built.parameters())
    want = sorted(
        tuple(p.shape) for n, p in ResidualLayerNorm().named_parameters() if "norm" not in n
    )  # widelimits' LayerNorm has no affine parameters (they must be 1 and 0)
    assert got == want
    assert built(X_FLAT.float()).shape == (4, 3)
    text = repr(net)
    assert text.startswith("Serial(Dense(out=16") and "LayerNorm(eps=1e-05)" in text


# ---------------------------------------------------------------------------------------------
# Monte Carlo over re-initialized wide copies of the user's own classes.


def monte_carlo_check(make, x, n_samples, get=("nngp",), z=5.0):
    net = wl.from_module(make(0), x)
    want = net.kernel(x, get=get)
    want = want if isinstance(want, wl.Kernel) else None

    def factory(seed):
        torch.manual_seed(seed)
        return make(seed).double()

    mc = wl.finite.monte_carlo_kernel(factory, x, n_samples=n_samples, get=get, seed=1)
    for name in get:
        analytic = getattr(net.kernel(x), name)
        est, err = getattr(mc, name), getattr(mc, f"{name}_stderr")
        excess = (est - analytic).abs() / err
        assert float(excess.max()) < z, (name, est, analytic, err)
        # and the estimate is precise enough for the check to mean something
        precision = float(err.max() / analytic.abs().max())
        assert precision < 0.02, (name, precision)  # a 10% error in a kernel would show


def test_monte_carlo_wide_mlp():
    class MLP(nn.Module):  # as a user writes it, with a width argument
        def __init__(self, width, out):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(5, width), nn.GELU(), nn.Linear(width, width), nn.ReLU(),
                nn.Linear(width, out),
            )  # fmt: skip

        def forward(self, x):
            return self.layers(x)

    x = torch.randn(4, 5, dtype=torch.float64)
    monte_carlo_check(lambda s: MLP(512, 64), x, n_samples=300)
    # the standard-parametrization NTK of the model at its own widths
    monte_carlo_check(lambda s: MLP(512, 1), x, n_samples=40, get=("ntk",))


def test_monte_carlo_wide_resnet():
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    monte_carlo_check(lambda s: ResNetish(width=64, classes=128).eval(), x, n_samples=60)


def test_monte_carlo_wide_concatenation():
    class Towers(TwoTowers):
        def __init__(self):
            super().__init__(out=128)
            self.a, self.b = nn.Linear(5, 512), nn.Linear(5, 256)
            self.head = nn.Linear(768, 128)

    monte_carlo_check(lambda s: Towers(), X_FLAT, n_samples=100)


# ---------------------------------------------------------------------------------------------
# Constructs without a closed-form kernel: each error names the node (and its line).


class Wrap(nn.Module):
    """A model whose forward is ``fn(self, x)``, with ``modules`` as submodules."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, m in modules.items():
            self.add_module(name, m)

    def forward(self, x):
        return self.fn(self, x)


IMG = torch.randn(2, 3, 8, 8)
FLAT = torch.randn(2, 5)
CASES = [
    ("maxpool", Wrap(lambda s, x: s.pool(s.conv(x)), conv=nn.Conv2d(3, 4, 3), pool=nn.MaxPool2d(2)),
     IMG, r"node 'pool'.*max pooling.*AvgPool2d.*monte_carlo_kernel"),
    ("in-place on input", Wrap(lambda s, x: s.fc(x.mul_(2)), fc=nn.Linear(5, 3)), FLAT,
     r"node 'mul_'.*in-place.*input"),
    ("in-place module", Wrap(lambda s, x: s.fc(s.act(x)), fc=nn.Linear(5, 3),
                             act=nn.ReLU(inplace=True)), FLAT, r"node 'act'.*in-place"),
    ("function", Wrap(lambda s, x: torch.softmax(s.fc(x), 1), fc=nn.Linear(5, 3)), FLAT,
     r"node 'softmax'.*torch.softmax.*empirical_ntk"),
    ("module", Wrap(lambda s, x: s.sm(s.fc(x)), fc=nn.Linear(5, 3), sm=nn.Softmax(1)), FLAT,
     r"node 'sm'.*Softmax"),
    ("dilation", Wrap(lambda s, x: s.conv(x), conv=nn.Conv2d(3, 4, 3, dilation=2)), IMG,
     r"node 'conv'.*dilation"),
    ("groups", Wrap(lambda s, x: s.conv(x), conv=nn.Conv2d(4, 4, 3, groups=2)),
     torch.randn(2, 4, 8, 8), r"node 'conv'.*groups"),
    ("padding", Wrap(lambda s, x: s.conv(x), conv=nn.Conv2d(3, 4, 3, padding=2,
                                                         padding_mode="circular")), IMG,
     r"node 'conv'.*padding=\(2, 2\).*circular"),
    ("strided padding", Wrap(lambda s, x: s.conv(x), conv=nn.Conv2d(
        3, 4, 3, 2, padding=1, padding_mode="circular")), IMG,
     r"node 'conv'.*padding=\(1, 1\).*stride=\(2, 2\)"),
    ("padding mode", Wrap(lambda s, x: s.conv(x),
                          conv=nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")), IMG,
     r"node 'conv'.*padding_mode='reflect'"),
    ("batchnorm training", Wrap(lambda s, x: s.bn(s.fc(x)), fc=nn.Linear(5, 3),
                                bn=nn.BatchNorm1d(3)), FLAT, r"node 'bn'.*training mode.*eval"),
    ("layernorm on images", Wrap(lambda s, x: s.ln(x), ln=nn.LayerNorm([8, 8])), IMG,
     r"node 'ln'.*LayerNorm over \(8, 8\)"),
    ("correlated sum", Wrap(lambda s, x: (lambda h: torch.tanh(h) + torch.relu(h))(s.fc(x)),
                            fc=nn.Linear(5, 3)), FLAT, r"node 'add'.*correlated.*x \+ relu\(x\)"),
    ("shared weights", Wrap(lambda s, x: s.fc(torch.relu(s.fc(x))), fc=nn.Linear(5, 5)), FLAT,
     r"node 'fc_1'.*module 'fc'.*shares its weights"),
    ("constant shift", Wrap(lambda s, x: s.fc(x) + 1.0, fc=nn.Linear(5, 3)), FLAT,
     r"node 'add'.*constant"),
    ("concat dim", Wrap(lambda s, x: (lambda h: torch.cat([h, h], dim=2))(s.c(x)),
                        c=nn.Conv2d(3, 4, 1)),
     IMG, r"node 'cat'.*dim=2"),
    ("linear on images", Wrap(lambda s, x: s.fc(x), fc=nn.Linear(8, 3)), IMG,
     r"node 'fc'.*last axis"),
    ("parameter", Wrap(lambda s, x: s.fc(x) * s.fc.bias, fc=nn.Linear(5, 3)), FLAT,
     r"node 'mul'.*parameter or a constant"),
    ("adaptive pool", Wrap(lambda s, x: s.p(x), p=nn.AdaptiveAvgPool2d(3)), IMG,
     r"node 'p'.*adaptive pooling"),
    ("mean over features", Wrap(lambda s, x: s.fc(x).mean(1), fc=nn.Linear(5, 3)), FLAT,
     r"node 'mean'.*mean over dims"),
    ("ceil mode", Wrap(lambda s, x: s.p(x), p=nn.AvgPool2d(3, ceil_mode=True)), IMG,
     r"node 'p'.*ceil_mode"),
    ("reshape", Wrap(lambda s, x: s.fc(x).view(-1, 3, 1), fc=nn.Linear(5, 3)), FLAT,
     r"node 'view'.*reshapes"),
    ("tuple output", Wrap(lambda s, x: (s.fc(x), s.fc(x)), fc=nn.Linear(5, 3)), FLAT,
     r"node 'output'.*one tensor"),
]  # fmt: skip


@pytest.mark.parametrize("model,x,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_unsupported_construct_names_node(model, x, message):
    with pytest.raises(ValueError, match=re.compile(message, re.DOTALL)):
        wl.from_module(model, x)


def test_error_names_the_users_source_line():
    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(x)  # the line the message points to

    with pytest.raises(ValueError, match=r"test_from_module.py:\d+ \(return self.pool\(x\)"):
        wl.from_module(Pooled(), IMG)


def test_data_dependent_control_flow():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return -self.fc(x)

    with pytest.raises(ValueError, match=r"could not trace Branchy at .*test_from_module.py:\d+.*"
                       r"control flow.*empirical_ntk"):  # fmt: skip
        wl.from_module(Branchy(), FLAT)


def test_shared_weights_across_merges():
    class Tangled(nn.Module):  # a = f(x) feeds two merges: not series-parallel
        def __init__(self):
            super().__init__()
            self.f, self.g, self.h = nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 5)

        def forward(self, x):
            a = self.f(x)
            c = a + self.g(x)
            return self.h(c) + a

    with pytest.raises(ValueError, match="series-parallel"):
        wl.from_module(Tangled(), FLAT)


def test_batchnorm_with_per_channel_statistics():
    bn = nn.BatchNorm1d(3).eval()
    bn.running_var[0] = 2.0
    with pytest.raises(ValueError, match=r"node 'bn'.*per-channel"):
        wl.from_module(Wrap(lambda s, x: s.bn(s.fc(x)), fc=nn.Linear(5, 3), bn=bn), FLAT)


def test_layernorm_with_trained_affine():
    ln = nn.LayerNorm(3)
    with torch.no_grad():
        ln.weight[1] = 2.0
    with pytest.raises(ValueError, match=r"node 'ln'.*affine weight"):
        wl.from_module(Wrap(lambda s, x: s.ln(s.fc(x)), fc=nn.Linear(5, 3), ln=ln), FLAT)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(model=nn.Linear(5, 3).state_dict()), TypeError, "model"),
        (dict(example_input=[[1.0] * 5]), TypeError, "example_input"),
        (dict(example_input=torch.randn(5)), ValueError, "example_input"),
        (dict(parametrization="mup"), ValueError, "parametrization"),
        (dict(init="kaiming"), ValueError, "init"),
        (dict(init={"nope": (1.0, 0.0)}), ValueError, r"init names \['nope'\]"),
        (dict(init={"0": (1.0,)}), ValueError, r"init for layer '0'"),
        (dict(init={"0": (-1.0, 0.0)}), ValueError, "W_std"),
        (dict(example_input=torch.randn(2, 7)), ValueError, "example_input of shape"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = dict(model=nn.Sequential(nn.Linear(5, 3)), example_input=FLAT) | kwargs
    with pytest.raises(error, match=message):
        wl.from_module(args.pop("model"), args.pop("example_input"), **args)


def test_scale_layer_checks_its_constant():
    with pytest.raises(ValueError, match="Scale"):
        Scale(float("nan"))


def test_activation_on_non_gaussian_input_names_node():
    class PostActivation(nn.Module):  # relu(x + conv(x)) after a relu: no closed form
        def __init__(self):
            super().__init__()
            self.stem, self.conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            x = F.relu(self.stem(x))
            return F.relu(x + self.conv(x))

    with pytest.raises(ValueError, match=r"node 'relu_1'.*not Gaussian.*pre-activation"):
        wl.from_module(PostActivation(), IMG)
    with pytest.raises(ValueError, match=r"node 'ln'.*not Gaussian"):
        wl.from_module(Wrap(lambda s, x: s.ln(torch.relu(s.fc(x))), fc=nn.Linear(5, 3),
                            ln=nn.LayerNorm(3)), FLAT)  # fmt: skip


def test_functional_dropout_positional_arguments():
    class FDrop(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 16), nn.Linear(16, 3)

        def forward(self, x):
            return self.fc2(F.dropout(F.relu(self.fc1(x)), 0.3, self.training))

    hand = wl.Serial(D(5, 16), wl.ReLU(), wl.Dropout(0.3), D(16, 3))
    assert_same_kernel(FDrop().train(), hand, X_FLAT)
    hand = wl.Serial(D(5, 16), wl.ReLU(), D(16, 3))
    assert_same_kernel(FDrop().eval(), hand, X_FLAT)


# ---------------------------------------------------------------------------------------------
# Distance of a model to its limit, at its width and at wider copies.


def test_widen_keeps_the_readout():
    from widelimits.finite import widen

    net = wl.from_module(ResidualLayerNorm(), X_FLAT)
    wide = widen(net, 3)
    built = wide.build(5, width=1, seed=0)
    got = sorted(tuple(p.shape) for p in built.parameters())
    assert got == sorted([(48, 5), (48,), (48, 48), (48,), (48, 48), (48,), (3, 48), (3,)])
    # the NNGP does not depend on the widths; the standard NTK grows with them
    k, kw = net.kernel(X_FLAT), wide.kernel(X_FLAT)
    torch.testing.assert_close(kw.nngp, k.nngp, rtol=1e-12, atol=0)
    assert bool((kw.ntk.diagonal() > 2 * k.ntk.diagonal()).all())
    with pytest.raises(ValueError, match="factor"):
        widen(net, 0)


def test_distance_to_limit_shrinks_like_one_over_sqrt_width():
    import matplotlib

    from widelimits.finite import distance_to_limit

    matplotlib.use("Agg")
    torch.manual_seed(1)
    model = mlp(nn.ReLU(), h=16, out=1)
    x = torch.randn(5, 5, dtype=torch.float64)
    result = distance_to_limit(model, x, factors=(1, 4, 16, 64), n_networks=10, seed=0)
    # per-network kernels fluctuate like width^(-1/2) around the limit (the NTK of this small
    # ReLU net approaches it more slowly over these widths: about -0.3 over seeds)
    assert -0.7 < result.nngp_exponent < -0.35, result
    assert result.ntk_exponent < -0.15, result
    assert result.nngp_error[-1] < result.nngp_error[0] / 2
    assert result.plot() is not None
    with pytest.raises(ValueError, match="factors"):
        distance_to_limit(model, x, factors=(2,))
    with pytest.raises(ValueError, match="n_networks"):
        distance_to_limit(model, x, n_networks=1)


# ---------------------------------------------------------------------------------------------
# Random MLPs as users write them, against their hand-written descriptions.

CLOSED_FORMS = [
    (nn.ReLU, wl.ReLU), (nn.GELU, wl.GELU), (lambda: nn.LeakyReLU(0.3), lambda: wl.LeakyReLU(0.3)),
]  # fmt: skip


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    acts=st.lists(st.integers(0, len(CLOSED_FORMS) - 1), min_size=4, max_size=4),
    bias=st.booleans(),
    residual=st.booleans(),
    param=st.sampled_from(["standard", "ntk"]),
)
def test_random_mlps_match_hand_written(widths, acts, bias, residual, param):
    torch.manual_seed(len(widths))
    sizes = [5, *widths]
    layers, hand = [], []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        torch_act, wl_act = CLOSED_FORMS[acts[i]]
        layers += [nn.Linear(n_in, n_out, bias=bias), torch_act()]
        hand += [D(n_in, n_out, param, bias), wl_act()]
    layers.append(nn.Linear(sizes[-1], 2, bias=bias))
    hand.append(D(sizes[-1], 2, param, bias))
    model, net = nn.Sequential(*layers), wl.Serial(*hand)
    if residual:  # x -> body(x) + skip(x), the skip a Linear as in a projection shortcut
        class Skip(nn.Module):
            def __init__(self):
                super().__init__()
                self.body, self.skip = model, nn.Linear(5, 2, bias=bias)

            def forward(self, x):
                return self.body(x) + self.skip(x)

        model, net = Skip(), wl.Residual(net, shortcut=D(5, 2, param, bias))
    assert_same_kernel(model, net, X_FLAT, parametrization=param)


def test_view_flatten_as_users_write_it():
    model = Wrap(lambda s, x: s.fc(s.conv(x).view(x.size(0), -1)), conv=nn.Conv2d(3, 4, 3),
                 fc=nn.Linear(4 * 6 * 6, 2))  # fmt: skip
    x = IMG.double()
    hand = wl.Serial(C(3, 4, 3, "valid"), wl.Flatten(), D(144, 2))
    assert_same_kernel(model, hand, x)


def test_model_and_input_are_left_as_they_were():
    model = Wrap(lambda s, x: s.bn(s.fc(x)), fc=nn.Linear(5, 3), bn=nn.BatchNorm1d(3))
    x = FLAT.clone()
    with pytest.raises(ValueError, match="training mode"):
        wl.from_module(model, x)
    assert model.training and model.bn.training
    assert bool((model.bn.running_mean == 0).all()) and int(model.bn.num_batches_tracked) == 0
    with pytest.raises(ValueError, match="in-place"):
        wl.from_module(Wrap(lambda s, x: s.fc(x.mul_(2)), fc=nn.Linear(5, 3)), x)
    assert torch.equal(x, FLAT)


class _Wrapped(nn.Module):
    """A user model around a torch module whose limit has no closed form."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.head = inner, nn.Linear(8, 1)

    def forward(self, x):
        if isinstance(self.inner, nn.MultiheadAttention):
            y = self.inner(x, x, x)[0]
        elif isinstance(self.inner, nn.LSTM):
            y = self.inner(x)[0]
        else:
            y = self.inner(x)
        return self.head(y.mean(1))


@pytest.mark.parametrize(
    "inner, what",
    [
        (nn.MultiheadAttention(8, 2, batch_first=True), "softmax attention"),
        (nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), "softmax attention"),
        (nn.LSTM(8, 8, batch_first=True), "recurrence"),
    ],
    ids=["multihead_attention", "transformer_layer", "lstm"],
)
def test_modules_without_a_closed_form_limit_are_refused_by_name(inner, what):
    with pytest.raises(ValueError, match=f"node 'inner'.*{what}.*GlobalSelfAttention"):
        wl.from_module(_Wrapped(inner), torch.zeros(1, 5, 8))
