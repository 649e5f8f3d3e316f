"""Bad inputs to the finite-width tools (`widelimits.finite`): each gets a clear error of the
right type whose message names the offending argument (issue 13)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from widelimits import Dense, finite

X = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))


class Returns(nn.Module):
    """A Linear model whose output is post-processed by ``fn``."""

    def __init__(self, fn):
        super().__init__()
        self.lin, self.fn = nn.Linear(3, 2), fn

    def forward(self, x):
        return self.fn(self.lin(x))


def mixed_dtype() -> nn.Module:
    model = mlp()
    model[2].double()
    return model


def mixed_device() -> nn.Module:
    model = mlp()
    model[2].to("meta")
    return model


def frozen() -> nn.Module:
    return mlp().requires_grad_(False)


class Embedder(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.emb = nn.Embedding(5, 3, **kwargs)
        self.out = nn.Linear(6, 2)

    def forward(self, idx):
        return self.out(self.emb(idx).flatten(1))


def conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(36, 2))


IDX = torch.tensor([[0, 1], [2, 3], [4, 0]])

# (case id, call, exception type, pattern the message must match)
NTK_CASES = [
    ("impl-unknown", lambda: finite.empirical_ntk(mlp(), X, implementation="fast"),
     ValueError, "implementation"),
    ("impl-none", lambda: finite.empirical_ntk(mlp(), X, implementation=None),
     ValueError, "implementation"),
    ("impl-int", lambda: finite.empirical_ntk(mlp(), X, implementation=3),
     ValueError, "implementation"),
    ("outputs-unknown", lambda: finite.empirical_ntk(mlp(), X, outputs="all"),
     ValueError, "outputs"),
    ("outputs-list", lambda: finite.empirical_ntk(mlp(), X, outputs=["trace"]),
     ValueError, "outputs"),
    ("chunk-zero", lambda: finite.empirical_ntk(mlp(), X, chunk_size=0),
     ValueError, "chunk_size"),
    ("chunk-negative", lambda: finite.empirical_ntk(mlp(), X, chunk_size=-2),
     ValueError, "chunk_size"),
    ("chunk-float", lambda: finite.empirical_ntk(mlp(), X, chunk_size=1.5),
     TypeError, "chunk_size"),
    ("chunk-bool", lambda: finite.empirical_ntk(mlp(), X, chunk_size=True),
     TypeError, "chunk_size"),
    ("chunk-str", lambda: finite.empirical_ntk(mlp(), X, chunk_size="2"),
     TypeError, "chunk_size"),
    ("budget-zero", lambda: finite.empirical_ntk(mlp(), X, memory_budget=0),
     ValueError, "memory_budget"),
    ("budget-negative", lambda: finite.empirical_ntk(mlp(), X, memory_budget=-1),
     ValueError, "memory_budget"),
    ("budget-float", lambda: finite.empirical_ntk(mlp(), X, memory_budget=1e6),
     TypeError, "memory_budget"),
    ("diagonal-str", lambda: finite.empirical_ntk(mlp(), X, diagonal="yes"),
     TypeError, "diagonal"),
    ("diagonal-with-x2", lambda: finite.empirical_ntk(mlp(), X, X, diagonal=True),
     ValueError, "x2"),
    ("progress-str", lambda: finite.empirical_ntk(mlp(), X, progress="yes"),
     TypeError, "progress"),
    ("stochastic-str", lambda: finite.empirical_ntk(mlp(), X, stochastic="yes"),
     TypeError, "stochastic"),
    ("stochastic-structured",
     lambda: finite.empirical_ntk(mlp(), X, stochastic=True, implementation="structured"),
     ValueError, "stochastic"),
    ("x1-x2-features", lambda: finite.empirical_ntk(mlp(), X, torch.randn(2, 4)),
     ValueError, "x1 has examples of shape .* but x2"),
    ("x1-x2-rank", lambda: finite.empirical_ntk(mlp(), X, torch.randn(2, 3, 1)),
     ValueError, "x2 of shape"),
    ("x1-string", lambda: finite.empirical_ntk(mlp(), "abc"), TypeError, "x1"),
    ("x1-none", lambda: finite.empirical_ntk(mlp(), None), TypeError, "x1"),
    ("x1-object", lambda: finite.empirical_ntk(mlp(), object()), TypeError, "x1"),
    ("x2-string", lambda: finite.empirical_ntk(mlp(), X, "abc"), TypeError, "x2"),
    ("x1-ragged", lambda: finite.empirical_ntk(mlp(), [[1.0, 2.0, 3.0], [1.0]]),
     TypeError, "x1"),
    ("x1-nan", lambda: finite.empirical_ntk(mlp(), X.clone().fill_(float("nan"))),
     ValueError, "x1 contains NaN"),
    ("x2-inf", lambda: finite.empirical_ntk(mlp(), X, torch.full((2, 3), float("inf"))),
     ValueError, "x2 contains NaN or infinite"),
    ("x1-empty", lambda: finite.empirical_ntk(mlp(), torch.randn(0, 3)),
     ValueError, "x1 must have a leading batch axis"),
    ("x1-scalar", lambda: finite.empirical_ntk(mlp(), torch.tensor(1.0)),
     ValueError, "x1 must have a leading batch axis"),
    ("x2-empty", lambda: finite.empirical_ntk(mlp(), X, torch.randn(0, 3)),
     ValueError, "x2 must have a leading batch axis"),
    ("x1-complex", lambda: finite.empirical_ntk(mlp(), X.to(torch.complex64)),
     TypeError, "x1 has the complex dtype"),
    ("x1-sparse", lambda: finite.empirical_ntk(mlp(), X.to_sparse()), TypeError, "x1 is a sparse"),
    ("x1-features", lambda: finite.empirical_ntk(mlp(), torch.randn(4, 7)),
     ValueError, r"x1 does not fit the model .*expects 3 features .* shape \(1, 7\)"),
    ("x1-integers-into-linear", lambda: finite.empirical_ntk(mlp(), X.long()),
     ValueError, "x1 does not fit the model .*layer '0'.*dtype"),
    ("x1-channels", lambda: finite.empirical_ntk(conv(), torch.randn(2, 2, 5, 5)),
     ValueError, "x1 does not fit the model .*expects 3 channels"),
    ("x1-spatial-too-small", lambda: finite.empirical_ntk(conv(), torch.randn(2, 3, 2, 2)),
     ValueError, r"x1 does not fit the model .*layer '0' .*kernel size \(3, 3\) failed"),
    ("x1-index-high", lambda: finite.empirical_ntk(Embedder(), torch.tensor([[0, 1], [2, 5]])),
     ValueError, "x1 holds an index out of range.*index 5.*num_embeddings=5"),
    ("x1-index-negative", lambda: finite.empirical_ntk(Embedder(), torch.tensor([[0, -1]])),
     ValueError, "x1 holds an index out of range.*index -1"),
    ("x2-index-high", lambda: finite.empirical_ntk(Embedder(), IDX, torch.tensor([[9, 0]])),
     ValueError, "x2 holds an index out of range.*index 9"),
    ("embedding-max-norm", lambda: finite.empirical_ntk(Embedder(max_norm=1.0), IDX),
     ValueError, "max_norm"),
    ("model-function", lambda: finite.empirical_ntk(lambda x: x, X), TypeError, "model must"),
    ("model-no-parameters", lambda: finite.empirical_ntk(nn.Tanh(), X),
     ValueError, "model has no trainable parameters"),
    ("model-all-frozen", lambda: finite.empirical_ntk(frozen(), X),
     ValueError, "model has no trainable parameters"),
    ("model-lazy", lambda: finite.empirical_ntk(nn.LazyLinear(2), X),
     ValueError, "model has lazy layers"),
    ("model-mixed-dtype", lambda: finite.empirical_ntk(mixed_dtype(), X),
     ValueError, "model's parameters must share one floating dtype"),
    ("model-mixed-device", lambda: finite.empirical_ntk(mixed_device(), X),
     ValueError, "model's parameters must share one floating dtype and one device"),
    ("params-unknown", lambda: finite.empirical_ntk(mlp(), X, params=["nope"]),
     ValueError, "params: unknown parameter"),
    ("params-unknown-string", lambda: finite.empirical_ntk(mlp(), X, params="fc"),
     ValueError, "params: unknown parameter or submodule name"),
    ("params-number", lambda: finite.empirical_ntk(mlp(), X, params=3), TypeError, "params must"),
    ("params-foreign-module", lambda: finite.empirical_ntk(mlp(), X, params=nn.Linear(3, 2)),
     ValueError, "params: the module Linear is not part of the model"),
    ("params-foreign-tensor", lambda: finite.empirical_ntk(mlp(), X, params=[torch.ones(2)]),
     ValueError, "params: a tensor .* is not a parameter"),
    ("params-ints", lambda: finite.empirical_ntk(mlp(), X, params=[1, 2]),
     TypeError, "params must be"),
    ("params-none-selected", lambda: finite.empirical_ntk(mlp(), X, params=lambda n, p: False),
     ValueError, "none were selected by params"),
    ("returns-tuple", lambda: finite.empirical_ntk(Returns(lambda y: (y, y)), X),
     TypeError, "model must return a tensor, got tuple"),
    ("returns-dict", lambda: finite.empirical_ntk(Returns(lambda y: {"y": y}), X),
     TypeError, "model must return a tensor, got dict"),
    ("returns-0d", lambda: finite.empirical_ntk(Returns(lambda y: y.sum()), X),
     ValueError, "model returned shape .* first axis"),
    ("returns-transposed", lambda: finite.empirical_ntk(Returns(lambda y: y.T), X),
     ValueError, "first axis of the output must be the batch axis"),
    ("returns-integers", lambda: finite.empirical_ntk(Returns(lambda y: y.argmax(1)), X),
     TypeError, "model returned torch.int64 outputs"),
    ("returns-complex", lambda: finite.empirical_ntk(Returns(lambda y: y * 1j), X),
     TypeError, "model returned .*complex"),
    ("returns-nan", lambda: finite.empirical_ntk(Returns(lambda y: y * float("nan")), X),
     ValueError, "model returned NaN"),
]  # fmt: skip


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in NTK_CASES],
                         ids=[c[0] for c in NTK_CASES])  # fmt: skip
def test_empirical_ntk_bad_inputs(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_first_call_errors_keep_torch_error_as_cause():
    with pytest.raises(ValueError, match="x1 does not fit") as info:
        finite.empirical_ntk(mlp(), torch.randn(4, 7))
    assert isinstance(info.value.__cause__, RuntimeError)


OTHER_CASES = [
    ("nngp-readout-type", lambda: finite.empirical_nngp(mlp(), X, readout="2"),
     TypeError, "readout"),
    ("nngp-readout-unused", lambda: finite.empirical_nngp(mlp(), X, readout=nn.Linear(3, 3)),
     ValueError, "readout"),
    ("nngp-diagonal-x2", lambda: finite.empirical_nngp(mlp(), X, X, diagonal=True),
     ValueError, "x2"),
    ("nngp-features", lambda: finite.empirical_nngp(mlp(), torch.randn(2, 4)),
     ValueError, "x1 does not fit the model"),
    ("nngp-index", lambda: finite.empirical_nngp(Embedder(), torch.tensor([[7, 0]])),
     ValueError, "x1 holds an index out of range"),
    ("nngp-x1-string", lambda: finite.empirical_nngp(mlp(), "abc"), TypeError, "x1"),
    ("kernel-get", lambda: finite.empirical_kernel(mlp(), X, get=("ntgp",)), ValueError, "get"),
    ("kernel-get-empty", lambda: finite.empirical_kernel(mlp(), X, get=()), ValueError, "get"),
    ("taylor-degree-zero", lambda: finite.taylor_expand(mlp(), 0), ValueError, "degree"),
    ("taylor-degree-negative", lambda: finite.taylor_expand(mlp(), -1), ValueError, "degree"),
    ("taylor-degree-float", lambda: finite.taylor_expand(mlp(), 1.5), ValueError, "degree"),
    ("taylor-degree-bool", lambda: finite.taylor_expand(mlp(), True), ValueError, "degree"),
    ("linearize-function", lambda: finite.linearize(lambda x: x), TypeError, "model must"),
    ("linearize-no-parameters", lambda: finite.linearize(nn.Tanh()),
     ValueError, "model has no trainable"),
    ("linearize-params", lambda: finite.linearize(mlp(), params=["nope"]),
     ValueError, "params: unknown"),
    ("linearize-batchnorm-train",
     lambda: finite.linearize(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))),
     ValueError, "BatchNorm layer in training mode"),
    ("linearize-returns-dict", lambda: finite.linearize(Returns(lambda y: {"y": y}))(X),
     TypeError, "model must return a tensor"),
    ("linearize-returns-integers", lambda: finite.linearize(Returns(lambda y: y.argmax(1)))(X),
     TypeError, "model returned torch.int64"),
    ("linearize-features", lambda: finite.linearize(mlp())(torch.randn(2, 4)),
     ValueError, "x does not fit the model .*expects 3 features"),
    ("taylor-features", lambda: finite.taylor_expand(mlp(), 2)(torch.randn(2, 4)),
     ValueError, "x does not fit the model .*expects 3 features"),
    ("mc-samples-one", lambda: finite.monte_carlo_kernel(Dense(1), X, width=4, n_samples=1),
     ValueError, "n_samples"),
    ("mc-samples-float", lambda: finite.monte_carlo_kernel(Dense(1), X, width=4, n_samples=2.5),
     ValueError, "n_samples"),
    ("mc-samples-str", lambda: finite.monte_carlo_kernel(Dense(1), X, width=4, n_samples="3"),
     ValueError, "n_samples"),
    ("mc-seed-str",
     lambda: finite.monte_carlo_kernel(Dense(1), X, width=4, n_samples=2, seed="a"),
     TypeError, "seed"),
    ("mc-width-zero", lambda: finite.monte_carlo_kernel(Dense(1), X, width=0, n_samples=2),
     ValueError, "width"),
    ("mc-width-float", lambda: finite.monte_carlo_kernel(Dense(1), X, width=2.5, n_samples=2),
     ValueError, "width"),
    ("mc-width-missing", lambda: finite.monte_carlo_kernel(Dense(1), X, n_samples=2),
     ValueError, "width"),
    ("mc-x1-list", lambda: finite.monte_carlo_kernel(Dense(1), [[1.0]], width=4, n_samples=2),
     TypeError, "x1"),
    ("mc-x2-array", lambda: finite.monte_carlo_kernel(Dense(1), X, X.numpy(), width=4,
                                                       n_samples=2),
     TypeError, "x2"),
    ("mc-net-int", lambda: finite.monte_carlo_kernel(3, X, n_samples=2), TypeError, "net"),
    ("mc-net-returns-int", lambda: finite.monte_carlo_kernel(lambda s: 3, X, n_samples=2),
     TypeError, "net"),
    ("mc-get", lambda: finite.monte_carlo_kernel(Dense(1), X, width=4, n_samples=2, get="ntgp"),
     ValueError, "get"),
    ("mc-factory-dropout",
     lambda: finite.monte_carlo_kernel(lambda s: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5)),
                                       X, n_samples=2, get=("ntk",)),
     ValueError, "stochastic=True"),
    ("mc-ntk-option", lambda: finite.monte_carlo_kernel(Dense(1), X, width=4, n_samples=2,
                                                         implementation="fast"),
     ValueError, "implementation"),
]  # fmt: skip


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in OTHER_CASES],
                         ids=[c[0] for c in OTHER_CASES])  # fmt: skip
def test_nngp_linearize_monte_carlo_bad_inputs(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_awkward_but_valid_inputs_are_accepted():
    """Lists and float64 inputs to a float32 model are converted; an integer-index model
    within range works; the results equal those of the plain float32 tensor."""
    model = mlp()
    ref = finite.empirical_ntk(model, X)
    torch.testing.assert_close(finite.empirical_ntk(model, X.tolist()), ref)
    torch.testing.assert_close(finite.empirical_ntk(model, X.double()), ref)
    out = finite.empirical_ntk(Embedder(), IDX)
    assert out.shape == (3, 3) and bool(torch.isfinite(out).all())


def test_monte_carlo_factory_with_the_wrong_features_names_x1():
    def factory(seed):
        torch.manual_seed(seed)
        return nn.Linear(5, 2)

    for get in (("nngp",), ("ntk",)):
        with pytest.raises(ValueError, match="x1 does not fit the model .*expects 5 features"):
            finite.monte_carlo_kernel(factory, X, n_samples=2, get=get)
