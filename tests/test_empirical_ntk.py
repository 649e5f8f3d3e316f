"""The three empirical NTK implementations agree on many kinds of models; errors are clear."""

import numpy as np
import pytest
import torch
from torch import nn

import widelimits as wl
from widelimits import finite
from widelimits.finite.structured import StructuredNTK
from widelimits.layers.dense import DenseModule

IMPLS = ("jacobian", "ntk_vector", "structured")


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding="same", padding_mode="circular")
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x  # in place, as torchvision does
        return torch.relu(out)


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.block = Residual(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.block(torch.relu(self.stem(x)))
        return self.head(h.mean((2, 3)))


class SharedWeights(nn.Module):
    """One Linear applied twice, and a tied embedding/readout pair."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 6)
        self.shared = nn.Linear(6, 6)
        self.out = nn.Linear(6, 4, bias=False)
        self.emb = nn.Embedding(4, 6)
        self.out.weight = self.emb.weight  # tied: also used as an embedding below

    def forward(self, x):
        h = torch.tanh(self.shared(torch.tanh(self.shared(self.inp(x)))))
        h = h + self.emb(torch.zeros(len(x), dtype=torch.long)) * 0.5
        return self.out(h)


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):  # x: (N, tokens, 3)
        return self.head(self.block(self.proj(x)).mean(1))


def mlp():
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 7), nn.Tanh(),
                         nn.Linear(7, 3))  # fmt: skip


def cnn1d():
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv1d(3, 4, 2, stride=2, dilation=2),
        nn.Flatten(), nn.LazyLinear(3),
    )  # fmt: skip


def layernorm_mlp():
    return nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 2))


def widelimits_net(parametrization="ntk"):
    net = wl.Serial(wl.Dense(W_std=1.3, b_std=0.2), wl.Erf(), wl.Dense(2, b_std=0.1))
    return net.build(5, 9, parametrization=parametrization, seed=3, dtype=torch.float64)


MODELS = {
    "mlp": (mlp, (6, 5)),
    "cnn1d": (cnn1d, (5, 2, 8)),
    "resnet": (SmallResNet, (4, 3, 6, 6)),
    "layernorm": (layernorm_mlp, (6, 5)),
    "shared": (SharedWeights, (5, 5)),
    "transformer": (Transformer, (4, 3, 3)),
    "widelimits": (widelimits_net, (6, 5)),
    "widelimits-standard": (lambda: widelimits_net("standard"), (6, 5)),
}


def make(name):
    torch.manual_seed(0)
    factory, shape = MODELS[name]
    model = factory().double()
    x = torch.randn(*shape, dtype=torch.float64)
    model(x)  # materialize lazy layers
    for m in model.modules():  # non-trivial normalization statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval(), x


@pytest.mark.parametrize("outputs", ["trace", "full", "diagonal"])
@pytest.mark.parametrize("name", list(MODELS))
def test_implementations_agree(name, outputs):
    model, x = make(name)
    ref = finite.empirical_ntk(model, x, outputs=outputs, implementation="jacobian")
    for impl in IMPLS[1:] + ("auto",):
        got = finite.empirical_ntk(model, x, outputs=outputs, implementation=impl)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11, msg=f"{impl} vs jacobian")
    cross = finite.empirical_ntk(model, x, x[:2], outputs=outputs, implementation="structured")
    ref_cross = finite.empirical_ntk(model, x, x[:2], outputs=outputs, implementation="ntk_vector")
    torch.testing.assert_close(cross, ref_cross, rtol=1e-9, atol=1e-11)
    diag = finite.empirical_ntk(model, x, outputs=outputs, diagonal=True, chunk_size=2)
    torch.testing.assert_close(diag, ref.diagonal(dim1=0, dim2=1).movedim(-1, 0))


@pytest.mark.parametrize(
    "name, covered",
    [
        ("mlp", 1.0),
        ("cnn1d", 1.0),
        ("resnet", None),
        ("shared", None),
        ("widelimits", 1.0),
        ("widelimits-standard", 1.0),
    ],
)
def test_structured_path_covers_linear_and_conv_layers(name, covered):
    """The fast path really factorizes (no silent fallback); tied weights are excluded."""
    model, x = make(name)
    chosen = dict(model.named_parameters())
    frozen = dict(model.named_buffers())
    s = StructuredNTK(model, chosen, frozen, x[:1], model(x[:1]).shape[1])
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, DenseModule)
    linear_conv = sum(
        p.numel() for m in model.modules() if isinstance(m, kinds) for p in m.parameters(False)
    )
    if name == "shared":  # out.weight is tied to an embedding: only inp and shared factorize
        linear_conv -= model.out.weight.numel()
    assert s.covered_parameters() == linear_conv
    if covered is not None:
        assert s.covered_parameters() == sum(p.numel() for p in model.parameters())


def test_parameter_selection():
    model, x = make("mlp")
    full = finite.empirical_ntk(model, x)
    parts = [
        finite.empirical_ntk(model, x, params=[model[0]]),
        finite.empirical_ntk(model, x, params=["2.weight", "2.bias"], implementation="ntk_vector"),
        finite.empirical_ntk(model, x, params=lambda n, p: n.startswith("4.")),
    ]
    torch.testing.assert_close(sum(parts), full)


def test_matches_explicit_flat_jacobian():
    """A second algorithm: torch.autograd.functional.jacobian on the flattened parameters."""
    model, x = make("resnet")
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    flat = torch.cat([p.reshape(-1) for p in params])

    def outputs(theta):
        chunks, start = [], 0
        for p in params:
            chunks.append(theta[start : start + p.numel()].reshape(p.shape))
            start += p.numel()
        return torch.func.functional_call(model, dict(zip(names, chunks, strict=True)), (x,))

    jac = torch.autograd.functional.jacobian(outputs, flat)  # (N, O, P)
    explicit = torch.einsum("iop,jqp->ijoq", jac, jac)
    got = finite.empirical_ntk(model, x, outputs="full", implementation="structured")
    torch.testing.assert_close(got, explicit)


def test_memory_budget_chunks_without_changing_the_result():
    model, x = make("cnn1d")
    ref = finite.empirical_ntk(model, x, implementation="jacobian")
    for impl in IMPLS:
        got = finite.empirical_ntk(model, x, implementation=impl, memory_budget=20_000)
        torch.testing.assert_close(got, ref)


def test_float32_agrees_with_float64():
    model, x = make("resnet")
    ref = finite.empirical_ntk(model, x)
    got = finite.empirical_ntk(model.float(), x.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=2e-4, atol=1e-5)


def test_empirical_nngp_is_the_readout_feature_gram():
    model, x = make("mlp")
    feats = torch.tanh(model[2](torch.relu(model[0](x))))
    torch.testing.assert_close(finite.empirical_nngp(model, x), feats @ feats.T / 7)
    torch.testing.assert_close(
        finite.empirical_nngp(model, x, diagonal=True), (feats**2).sum(1) / 7
    )
    both = finite.empirical_kernel(model, x, x[:2])
    torch.testing.assert_close(both.nngp, feats @ feats[:2].T / 7)
    torch.testing.assert_close(both.ntk, finite.empirical_ntk(model, x, x[:2]))
    first = finite.empirical_nngp(model, x, readout=model[0])
    torch.testing.assert_close(first, x @ x.T / 5)


def test_empirical_nngp_of_a_widelimits_network_converges_to_the_hidden_nngp():
    """For a widelimits net the readout features' Gram estimates the NNGP of the layers below
    the readout: its error to the analytic kernel falls with width (8 networks each)."""
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    body = wl.Serial(wl.Dense(W_std=1.4, b_std=0.1), wl.ReLU())
    analytic = body.kernel(x, get="nngp")
    errors = []
    for width in (64, 1024):
        net = wl.Serial(body, wl.Dense(1))
        grams = [finite.empirical_nngp(net.build(5, width, seed=s, dtype=torch.float64), x)
                 for s in range(8)]  # fmt: skip
        errors.append(np.mean([float((g - analytic).norm() / analytic.norm()) for g in grams]))
    assert errors[1] < errors[0] / 2.5, errors  # 16x the width: about 4x smaller


def test_weight_norm_goes_to_the_jacobian_path():
    """A computed weight (torch parametrizations, here weight norm on the weight only) is not
    factorized; the result still matches the Jacobian method."""
    model, x = make("mlp")
    torch.nn.utils.parametrizations.weight_norm(model[2])
    torch.testing.assert_close(
        finite.empirical_ntk(model, x, implementation="structured"),
        finite.empirical_ntk(model, x, implementation="jacobian"),
    )


def test_errors_are_clear():
    model, x = make("mlp")
    with pytest.raises(ValueError, match="no trainable parameters"):
        finite.empirical_ntk(nn.ReLU(), torch.randn(2, 3))
    with pytest.raises(TypeError, match="must return a tensor"):
        finite.empirical_ntk(DictOut(), torch.randn(2, 3))
    with pytest.raises(ValueError, match="same kind of example"):
        finite.empirical_ntk(model, x, torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch axis"):
        finite.empirical_ntk(nn.Linear(3, 2), torch.randn(0, 3))
    with pytest.raises(ValueError, match="first axis of the output"):
        finite.empirical_ntk(Transposed(), torch.randn(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        finite.empirical_ntk(model, torch.full((2, 5), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="model.eval"):
        finite.empirical_ntk(SmallResNet().train(), torch.randn(2, 3, 6, 6))
    with pytest.raises(ValueError, match="leave x2=None"):
        finite.empirical_ntk(model, x, x, diagonal=True)
    with pytest.raises(ValueError, match="implementation must be"):
        finite.empirical_ntk(model, x, implementation="fast")
    with pytest.raises(ValueError, match="unknown parameter"):
        finite.empirical_ntk(model, x, params=["nope"])


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return {"y": self.lin(x)}


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x).T


def test_an_explicit_jacobian_request_that_cannot_fit_is_refused():
    model, x = make("mlp")
    with pytest.raises(MemoryError, match="ntk_vector"):
        finite.empirical_ntk(model, x, implementation="jacobian", memory_budget=100)
    model, x = make("layernorm")  # only the LayerNorm selected: no structured path
    auto = finite.empirical_ntk(model, x, params=[model[1]], memory_budget=100)  # ntk_vector
    torch.testing.assert_close(auto, finite.empirical_ntk(model, x, params=[model[1]]))
