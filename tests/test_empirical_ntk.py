"""The three empirical NTK implementations agree on many kinds of models; errors are clear."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

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


def test_parameter_selection_forms_agree():
    """A module, its name, its parameters' names, its parameters, alone or in a list: one set."""
    model, x = make("mlp")
    by_list = finite.empirical_ntk(model, x, params=["0.weight", "0.bias"])
    forms = [model[0], [model[0]], "0", ["0"], list(model[0].parameters()), model[0].weight]
    got = [finite.empirical_ntk(model, x, params=f) for f in forms]
    for k in got[:-1]:
        torch.testing.assert_close(k, by_list)
    weight_only = finite.empirical_ntk(model, x, params=["0.weight"])
    torch.testing.assert_close(got[-1], weight_only)
    assert not torch.allclose(weight_only, by_list)  # the bias counts: the forms are not vacuous
    lin = finite.linearize(model, params="0")  # linearize shares the selection
    assert sum(p.numel() for p in lin.parameters() if p.requires_grad) == sum(
        p.numel() for p in model[0].parameters())


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


# ------------------------------------------------------------------ the caller's objects stay put
class InPlaceInput(nn.Module):
    """A layer used twice and registered under two names, a frozen parameter, BatchNorm
    statistics (eval mode), and a forward that scales its input in place."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(5, 5)
        self.again = self.shared  # the same module under a second name
        self.norm = nn.BatchNorm1d(5)
        self.out = nn.Linear(5, 3)
        self.frozen = nn.Linear(5, 5)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        x.mul_(2.0)  # modifies its input, as some user code does
        h = torch.tanh(self.again(torch.tanh(self.shared(self.frozen(x)))))
        return self.out(self.norm(h))


def shared_models():
    """Models whose parameters are shared by several layers or slots, in eval mode."""
    torch.manual_seed(1)
    lin = nn.Linear(5, 5)
    sequential = nn.Sequential(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(5, 3)).double()
    inplace = InPlaceInput().double().eval()
    with torch.no_grad():
        inplace.norm.running_mean.uniform_(-0.5, 0.5)
        inplace.norm.running_var.uniform_(0.5, 2.0)
    tied, _ = make("shared")
    return {"sequential": sequential, "inplace": inplace, "tied": tied}


def snapshot(model: nn.Module) -> dict:
    """Everything a finite-width tool must leave exactly as it was."""
    slots = {}
    for prefix, m in model.named_modules(remove_duplicate=False):
        for kind, store in (("p", m._parameters), ("b", m._buffers)):
            for name, t in store.items():
                slots[(prefix, kind, name)] = None if t is None else (
                    id(t), type(t), t.requires_grad, t.detach().clone(),
                    None if t.grad is None else (id(t.grad), t.grad.clone()),
                )  # fmt: skip
    return {
        "slots": slots,
        "modes": [m.training for _, m in model.named_modules(remove_duplicate=False)],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    assert before["modes"] == after["modes"] and before["hooks"] == after["hooks"]
    assert before["slots"].keys() == after["slots"].keys()
    for key, b in before["slots"].items():
        a = after["slots"][key]
        assert (a is None) == (b is None), key
        if a is None:
            continue
        assert a[:3] == b[:3], key  # same object, same type (nn.Parameter), same requires_grad
        assert torch.equal(a[3], b[3]), key  # bit for bit
        assert (a[4] is None) == (b[4] is None) and (a[4] is None or (
            a[4][0] == b[4][0] and torch.equal(a[4][1], b[4][1]))), key  # fmt: skip


def prepare_caller(model: nn.Module) -> None:
    """Give the caller's model a populated .grad and a user hook of its own."""
    model.zero_grad(set_to_none=True)
    x = torch.randn(3, 5, dtype=torch.float64)
    model(x.clone()).sum().backward()
    model.register_forward_hook(lambda m, i, o: None)


@pytest.mark.parametrize("impl", IMPLS + ("auto",))
@pytest.mark.parametrize("name", ["sequential", "inplace", "tied"])
def test_empirical_ntk_leaves_model_and_inputs_untouched(name, impl):
    """Issue 13: a module used twice came back holding plain tensors (requires_grad=False
    after ntk_vector), so the next call was tens of percent off; an input scaled in place
    changed the caller's tensor.  Now everything is identical after two calls, and the two
    results agree exactly."""
    model = shared_models()[name]
    prepare_caller(model)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x2 = x[:2] + 0.5
    inputs = (x.clone(), x2.clone())
    before = snapshot(model)
    first = finite.empirical_ntk(model, x, outputs="full", implementation=impl)
    cross = finite.empirical_ntk(model, x, x2, implementation=impl, chunk_size=2)
    assert_same_snapshot(before, snapshot(model))
    second = finite.empirical_ntk(model, x, outputs="full", implementation=impl)
    assert_same_snapshot(before, snapshot(model))
    assert torch.equal(x, inputs[0]) and torch.equal(x2, inputs[1])
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    # Shared parameters count once, as autograd counts them: an independent computation.
    explicit = explicit_ntk(model, torch.cat([x, x2]))
    torch.testing.assert_close(first, explicit[:4, :4])
    torch.testing.assert_close(cross, explicit[:4, 4:].diagonal(dim1=2, dim2=3).mean(-1))


def explicit_ntk(model: nn.Module, x: Tensor) -> Tensor:
    """An independent NTK: rows of the Jacobian over the distinct trainable parameters
    (``model.parameters()``, which autograd also sees once each) by plain backward passes on a
    deep copy, one per example and output: (N, N, O, O)."""
    import copy

    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for xi in x:
        out = model(xi[None].clone())[0]
        rows.append(torch.stack([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(
                out[o], params, retain_graph=True, allow_unused=True, materialize_grads=True)])
            for o in range(len(out))
        ]))  # fmt: skip
    jac = torch.stack(rows)  # (N, O, P)
    return torch.einsum("iop,jqp->ijoq", jac, jac)


@pytest.mark.parametrize("name", ["sequential", "inplace", "tied"])
def test_linearize_leaves_model_untouched_and_counts_shared_parameters_once(name):
    """The Taylor model copies the network: the caller's model and inputs are untouched; a
    shared parameter is one trainable parameter, and moving it moves every use of it (the
    first-order gap to the moved network, built independently by copying values into a deep
    copy, shrinks 4x when the step halves)."""
    import copy

    model = shared_models()[name]
    prepare_caller(model)
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    kept = x.clone()
    before = snapshot(model)
    lin = finite.linearize(model)
    torch.testing.assert_close(lin(x), model(x.clone()))
    assert torch.equal(x, kept)
    assert_same_snapshot(before, snapshot(model))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in lin.parameters()) == sum(p.numel() for p in trainable)
    gaps = []
    for eps in (1e-2, 5e-3):
        moved_lin = finite.linearize(model)
        gen = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for p in moved_lin.parameters():
                p.add_(eps * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        theta = {n.replace(":", "."): p.detach() for n, p in moved_lin.theta.items()}
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in moved.named_parameters():
                if n in theta:
                    p.copy_(theta[n])
        with torch.no_grad():
            gaps.append(float((moved_lin(x) - moved(x.clone())).abs().max()))
    assert 3.5 < gaps[0] / gaps[1] < 4.5, gaps
    assert_same_snapshot(before, snapshot(model))


def test_linearized_tied_weights_stay_tied_after_a_dtype_change():
    """``.double()`` copies a Taylor model's buffers module by module; the tied readout still
    moves with its embedding: f_lin(theta_0 + eps d) - f(theta_0 + eps d) = O(eps^2)."""
    import copy

    model, _ = make("shared")
    model = model.float()
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gaps = []
    for eps in (1e-2, 5e-3):
        lin = finite.linearize(model).double()
        gen = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for p in lin.parameters():
                p.add_(eps * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        moved = copy.deepcopy(model).double()
        theta = {n.replace(":", "."): p.detach() for n, p in lin.theta.items()}
        with torch.no_grad():
            for n, p in moved.named_parameters():
                p.copy_(theta[n])
            gaps.append(float((lin(x) - moved(x)).abs().max()))
    assert 3.5 < gaps[0] / gaps[1] < 4.5, gaps


# --------------------------------------------------------- outputs that mix examples or are random
class Centred(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        y = self.lin(x)
        return y - y.mean(0)  # each output depends on the whole batch


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x) + 0.1 * torch.randn(len(x), 3, dtype=x.dtype)


def norm_net(norm):
    return nn.Sequential(nn.Linear(4, 6), norm, nn.Tanh(), nn.Linear(6, 3))


COUPLED = {
    "centred": (Centred, "depends on the other examples"),
    "randn": (Noisy, "different outputs for the same input"),
    "batchnorm-train": (lambda: norm_net(nn.BatchNorm1d(6)), "BatchNorm layer in training"),
    "dropout-train": (lambda: norm_net(nn.Dropout(0.3)), "Dropout in training mode"),
}


@pytest.mark.parametrize("impl", IMPLS + ("auto",))
@pytest.mark.parametrize("case", list(COUPLED))
def test_models_mixing_examples_or_drawing_randomness_are_refused(case, impl):
    """Every implementation refuses the same models, with the same message (before, they
    returned different numbers, or different numbers on each call)."""
    factory, message = COUPLED[case]
    torch.manual_seed(0)
    model = factory().double().train()
    x = torch.randn(5, 4, dtype=torch.float64)
    for x2 in (None, x[:2] + 1.0):
        with pytest.raises(ValueError, match=message):
            finite.empirical_ntk(model, x, x2, implementation=impl)
    if case in ("centred", "randn"):
        with pytest.raises(ValueError, match=message):
            finite.empirical_nngp(model, x)
    else:  # found by module type, without inputs
        with pytest.raises(ValueError, match=message):
            finite.linearize(model)


@pytest.mark.parametrize("norm", ["batchnorm", "dropout", "instancenorm", "dropout0"])
def test_per_example_models_pass_and_implementations_agree(norm):
    """BatchNorm and Dropout in eval mode, InstanceNorm in either mode (per example) and
    Dropout(p=0) in training mode are per-example and deterministic: accepted, and the three
    implementations agree with an explicit Jacobian."""
    torch.manual_seed(0)
    layer = {
        "batchnorm": nn.BatchNorm1d(6), "dropout": nn.Dropout(0.3),
        "instancenorm": nn.Sequential(nn.Unflatten(1, (2, 3)), nn.InstanceNorm1d(2),
                                      nn.Flatten()),
        "dropout0": nn.Dropout(0.0),
    }[norm]  # fmt: skip
    model = norm_net(layer).double()
    model.train(norm in ("instancenorm", "dropout0"))
    x = torch.randn(5, 4, dtype=torch.float64)
    explicit = explicit_ntk(model, x)
    for impl in IMPLS:
        got = finite.empirical_ntk(model, x, outputs="full", implementation=impl)
        torch.testing.assert_close(got, explicit)
    finite.linearize(model)


def test_stochastic_sample_is_opt_in_and_jacobian_only():
    """stochastic=True: each example draws its own mask, shared by both sides of its entries,
    so one sample is symmetric; each call draws a new sample.  (Its mean is the Dropout NTK:
    tests/test_monte_carlo.py.)  Other implementations are refused."""
    torch.manual_seed(0)
    model = norm_net(nn.Dropout(0.5)).double().train()
    x = torch.randn(5, 4, dtype=torch.float64)
    theta = finite.empirical_ntk(model, x, stochastic=True, chunk_size=5)
    torch.testing.assert_close(theta, theta.T)
    again = finite.empirical_ntk(model, x, stochastic=True, chunk_size=5)
    assert not torch.allclose(theta, again)  # a new sample on each call
    for impl in ("ntk_vector", "structured"):
        with pytest.raises(ValueError, match="stochastic=True needs"):
            finite.empirical_ntk(model, x, stochastic=True, implementation=impl)


class Reused(nn.Module):
    """A random stack in which some Linear layers are applied several times."""

    def __init__(self, width: int, plan: list[int], n_layers: int, in_features: int):
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
        self.plan = plan  # which layer to apply at each step; repeats share parameters
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for i in self.plan:
            h = torch.tanh(self.layers[i](h))
        return self.out(h)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    width=st.integers(2, 5),
    n_layers=st.integers(1, 3),
    plan=st.lists(st.integers(0, 2), min_size=1, max_size=4),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_shared_layers_property(width, n_layers, plan, n, seed):
    """Any reuse pattern: each implementation equals the explicit Jacobian over the distinct
    parameters, twice in a row, and leaves the model as it was."""
    torch.manual_seed(seed)
    plan = [i % n_layers for i in plan]
    model = Reused(width, plan, n_layers, 3).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    explicit = explicit_ntk(model, x)
    before = snapshot(model)
    for impl in IMPLS:
        for _ in range(2):
            got = finite.empirical_ntk(model, x, outputs="full", implementation=impl)
            torch.testing.assert_close(got, explicit)
    assert_same_snapshot(before, snapshot(model))
