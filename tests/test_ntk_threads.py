"""The empirical NTK's blocks spread over threads (issue 14): the thread count never changes a
result, the blocks cover the output exactly once, bad ``threads`` values are refused by name,
concurrent calls on one model are independent, and ``implementation="auto"`` follows its rule.

The independent reference is a brute-force NTK from plain autograd: one backward pass per
example and output, the flattened gradients stacked and multiplied.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import widelimits as wl
from widelimits.finite import empirical_ntk
from widelimits.finite import ntk as ntk_module
from widelimits.finite.ntk import MIN_PIECE_ROWS, count_pieces, piece_size, pieces_wanted


class Encoder(nn.Module):
    """A 1-block transformer encoder: Linear layers over 6 tokens, attention, LayerNorm."""

    def __init__(self, d: int = 16, ff: int = 64):
        super().__init__()
        self.proj = nn.Linear(3, d)
        self.block = nn.TransformerEncoderLayer(d, 2, ff, dropout=0.0, batch_first=True)
        self.head = nn.Linear(d, 2)

    def forward(self, x):  # x: (N, 6, 3)
        return self.head(self.block(self.proj(x)).mean(1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 9), nn.ReLU(), nn.Linear(9, 2))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3), nn.Flatten(),
        nn.Linear(12, 2),
    )  # fmt: skip


def attention() -> nn.Module:
    """widelimits' GlobalSelfAttention network, built at width 16 (6 positions)."""
    net = wl.Serial(
        wl.Dense(), wl.GlobalSelfAttention(n_heads=2), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(2)
    )
    return net.build((3, 6), 16, seed=0)


MODELS = {
    "mlp": (mlp, (5,)),
    "cnn": (cnn, (2, 4, 4)),
    "encoder": (Encoder, (6, 3)),
    "attention": (attention, (3, 6)),
}


def make(name: str, n: int, seed: int = 0):
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    model = factory().double().eval()
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed + 1)).double()
    return model, x


def brute_force(model: nn.Module, x1, x2=None) -> torch.Tensor:
    """Full (N1, N2, O, O) NTK from one autograd backward pass per example and output."""

    def jac(x):
        params = list(model.parameters())

        def grad(o):
            grads = torch.autograd.grad(o, params, retain_graph=True)
            return torch.cat([g.reshape(-1) for g in grads])

        return torch.stack([torch.stack([grad(o) for o in model(xi[None])[0]]) for xi in x])

    j1 = jac(x1)
    j2 = j1 if x2 is None else jac(x2)
    return torch.einsum("iop,jqp->ijoq", j1, j2)


def _close(got, ref):
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize("impl", ["structured", "jacobian", "ntk_vector"])
@pytest.mark.parametrize("name", list(MODELS))
def test_thread_count_never_changes_the_result(name, impl):
    """23 (odd) inputs in chunks of 5 against 11: every layout, 1, 2 and 3 threads, equal to
    each other bit for bit (the blocks do not depend on the thread count) and to brute force
    (a missed block would be NaN, a block written twice to the wrong place a mismatch)."""
    model, x = make(name, 23)
    x2 = x[:11] * 0.7
    full = brute_force(model, x)
    cross = brute_force(model, x, x2)
    trace = full.diagonal(dim1=2, dim2=3).mean(-1)
    for threads in (1, 2, 3):
        options = dict(implementation=impl, threads=threads, chunk_size=5)
        got = empirical_ntk(model, x, outputs="full", **options)
        _close(got, full)
        if threads == 1:
            first = got
        assert torch.equal(got, first)
        _close(empirical_ntk(model, x, x2, outputs="full", **options), cross)
        _close(empirical_ntk(model, x, **options), trace)
        diag = empirical_ntk(model, x, diagonal=True, outputs="diagonal", **options)
        _close(diag, full.diagonal(dim1=0, dim2=1).diagonal(dim1=0, dim2=1))


def test_default_blocks_are_shared_by_the_threads(monkeypatch):
    """Without chunk_size, a problem of several minimal pieces is cut into pieces that the
    threads share, for every thread count alike; the result is brute force's."""
    calls = []
    real = ntk_module.run_parallel

    def spy(work, count, threads, done=None):
        calls.append((count, threads))
        return real(work, count, threads, done)

    monkeypatch.setattr(ntk_module, "run_parallel", spy)
    n = 4 * MIN_PIECE_ROWS + 1
    model, x = make("mlp", n)
    ref = brute_force(model, x).diagonal(dim1=2, dim2=3).mean(-1)
    results = [empirical_ntk(model, x, threads=t) for t in (1, 2, 3)]
    for got in results:
        assert torch.equal(got, results[0])
    _close(results[0], ref)
    counts = {count for count, _ in calls}
    assert len(counts) == 1 and counts.pop() > 1, calls  # the same pieces, several of them
    assert [threads for _, threads in calls] == [1, 2, 3]


def test_piece_sizes():
    """Pieces: even chunks, at least the wanted number where the minimum piece allows it,
    never below the minimum (unless the memory-derived size already is), never above the
    given size."""
    wanted = pieces_wanted()
    assert wanted >= 3
    for n1, n2, symmetric in [(1000, 1000, True), (1000, 300, False), (97, None, True)]:
        for size in (1, 7, MIN_PIECE_ROWS, 100, 1000):
            got = piece_size(n1, n2, symmetric, size)
            assert got <= size
            assert got >= min(size, MIN_PIECE_ROWS)
            chunks = -(-n1 // got)
            if got < size:
                assert -(-n1 // chunks) == got  # even chunks
                if count_pieces(n1, n2, symmetric, got) < wanted:
                    assert n1 // (chunks + 1) < MIN_PIECE_ROWS  # one more: too small
    assert count_pieces(10, 10, True, 3) == 10  # 4 chunks: 4 + 3 + 2 + 1 upper pairs
    assert count_pieces(10, 4, False, 3) == 8
    assert count_pieces(10, None, True, 3) == 4


@pytest.mark.parametrize("bad, error", [
    (0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError),
])  # fmt: skip
def test_bad_threads_are_refused_by_name(bad, error):
    model, x = make("mlp", 4)
    with pytest.raises(error, match="threads"):
        empirical_ntk(model, x, threads=bad)


@pytest.mark.parametrize("name", ["mlp", "encoder"])
def test_concurrent_calls_on_one_model_are_independent(name):
    """Two Python threads computing NTKs of one model (each call on 2 threads) while a third
    trains it: each gets its own serial result bit for bit, and the trainer's forward passes
    see the model's own parameters (gradients flow), as the computation never swaps them in
    the model itself nor hooks it; the process-wide settings (torch's threads, the attention
    kernels) are held until the last call ends, then restored."""
    old_threads = torch.get_num_threads()
    model, x = make(name, 40)
    xa, xb = x[:40], x[:17] * 1.3
    ref_a = empirical_ntk(model, xa, threads=1, chunk_size=8)
    ref_b = empirical_ntk(model, xb, x[:9], outputs="full", threads=1, chunk_size=8)
    loss_ref = model(xa).square().sum()
    grads_ref = torch.autograd.grad(loss_ref, list(model.parameters()))
    failures: list[str] = []

    def ntk_a():
        for _ in range(3):
            got = empirical_ntk(model, xa, threads=2, chunk_size=8)
            if not torch.equal(got, ref_a):
                failures.append("a")

    def ntk_b():
        for _ in range(3):
            got = empirical_ntk(model, xb, x[:9], outputs="full", threads=2, chunk_size=8)
            if not torch.equal(got, ref_b):
                failures.append("b")

    def trainer():
        for _ in range(20):
            loss = model(xa).square().sum()
            grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
            pairs = zip(grads, grads_ref, strict=True)
            if any(g is None or not torch.allclose(g, r) for g, r in pairs):
                failures.append("trainer")

    def guarded(f):
        def run():
            try:
                f()
            except Exception as err:  # noqa: BLE001 - reported below, from the main thread
                failures.append(f"{f.__name__}: {err!r}")

        return run

    workers = [threading.Thread(target=guarded(f)) for f in (ntk_a, ntk_b, trainer)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    assert not failures, failures
    assert after == old_threads  # the last call out restored torch's setting
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())


def test_auto_takes_the_jacobian_path_on_a_transformer(monkeypatch):
    """Linear layers over many tokens gain nothing from factorization (the per-example weight
    gradients are formed either way) and attention is left to the Jacobian method anyway:
    auto takes the Jacobian path there (a torch encoder, a widelimits attention network), the
    structured one for an MLP and a CNN."""
    chosen = []
    real = ntk_module.choose_implementation
    monkeypatch.setattr(
        ntk_module, "choose_implementation", lambda *a: chosen.append(real(*a)) or chosen[-1]
    )
    for name in ("encoder", "attention", "mlp", "cnn"):
        model, x = make(name, 8)
        got = empirical_ntk(model, x)
        _close(got, empirical_ntk(model, x, implementation="structured"))
    assert chosen == ["jacobian", "jacobian", "structured", "structured"]


def test_stochastic_samples_do_not_depend_on_threads():
    """With Dropout drawing per-example masks, a seeded sample is the same for any thread
    count (the draws keep their order), and differs for another seed (the check has power)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 2)).double().train()
    x = torch.randn(9, 5, dtype=torch.float64)
    samples = []
    for threads in (1, 2, 1):
        torch.manual_seed(3 if len(samples) < 2 else 4)
        samples.append(empirical_ntk(model, x, stochastic=True, threads=threads, chunk_size=3))
    assert torch.equal(samples[0], samples[1])
    assert not torch.equal(samples[0], samples[2])
