"""Graph aggregation and the fixed pixel maps: `Aggregate`, `Index`, `DotGeneral`, `Repeat`,
`LayerNorm` over spatial axes and `FanInConcat` along a spatial axis.

Each is checked against independent sources: neural-tangents 0.6.5 reference values
(``tests/data/nt_graph.npz``, from ``bench/nt_reference_graph.py``), identities between layers
(an identity pattern is no aggregation, an edge list is its dense adjacency, ``Repeat(l, 2)`` is
``Serial(l, l)``, ...), and Monte Carlo over the finite networks the same descriptions build.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import widelimits as wl
from widelimits.testing import assert_matches_monte_carlo

DATA = np.load(Path(__file__).parent / "data" / "nt_graph.npz")
W, B = 1.5, 0.1
RTOL = 1e-13
"""Error allowed relative to the kernel's largest entry (measured worst: 5.7e-16)."""
SELF_PAIR_RTOL = 3e-8
"""Self-pairs of k(x1, None): widelimits puts an example's correlation with itself at exactly 1,
neural-tangents at 1 - O(1e-16), which arccos turns into ~1e-8 after a ReLU (measured worst:
2.8e-9; the rule of tests/test_nt_architectures.py)."""


def conv(out=16, k=1):
    return wl.Conv(out, kernel_size=k, W_std=W, b_std=B)


def readout(out=1):
    return wl.Dense(out, W_std=W, b_std=B)


def _t(name: str) -> torch.Tensor:
    return torch.from_numpy(DATA[name])


def _first(name: str) -> torch.Tensor:
    """A channels-last input (N, *S, C) of the reference file, channels first."""
    x = _t(name)
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)).contiguous()


def _reference_nets() -> dict:
    """case -> (widelimits network, inputs (x1, x2), patterns (p1, p2) or None)."""
    seq = (_first("seq1"), _first("seq2"))
    adj, edges = (_t("adj1"), _t("adj2")), (_t("edges1"), _t("edges2"))
    nets = {
        "agg_dense": (
            wl.Serial(conv(), wl.ReLU(), wl.Aggregate(), conv(), wl.ReLU(), wl.Aggregate(),
                      wl.GlobalAvgPool(), readout()),
            seq, adj,
        ),
        "agg_sparse": (
            wl.Serial(conv(), wl.ReLU(), wl.Aggregate("sparse"), conv(), wl.ReLU(),
                      wl.Aggregate("sparse"), wl.GlobalAvgPool(), readout()),
            seq, edges,
        ),
        "agg_flatten": (
            wl.Serial(conv(k=3), wl.ReLU(), wl.Aggregate(), conv(), wl.ReLU(), wl.Flatten(),
                      readout()),
            seq, adj,
        ),
        "agg_grid": (
            wl.Serial(conv(), wl.ReLU(), wl.Aggregate(), conv(), wl.ReLU(), wl.GlobalAvgPool(),
                      readout()),
            (_first("grid1"), _first("grid2")), (_t("gadj1"), _t("gadj2")),
        ),
        "index_slice": (
            wl.Serial(conv(k=3), wl.ReLU(), conv(k=3), wl.Index(wl.Slice[:, :, 5:1:-2]),
                      wl.ReLU(), conv(k=3), wl.ReLU(), wl.GlobalAvgPool(), readout()),
            seq, None,
        ),
        "index_token": (
            wl.Serial(conv(k=3), wl.ReLU(), conv(k=3), wl.Index(wl.Slice[:, :, 3]), wl.ReLU(),
                      readout()),
            seq, None,
        ),
        "dot_general": (
            wl.Serial(conv(k=3), wl.DotGeneral(_t("dot_rhs"), axes=2), wl.ReLU(),
                      wl.GlobalAvgPool(), readout()),
            (_t("seqT1"), _t("seqT2")), None,
        ),
        "repeat": (
            wl.Serial(wl.Dense(16, W_std=W, b_std=B),
                      wl.Repeat(wl.Serial(wl.ReLU(), wl.Dense(16, W_std=W, b_std=B)), 3),
                      wl.ReLU(), readout()),
            (_t("flat1"), _t("flat2")), None,
        ),
    }  # fmt: skip
    for tail, pool in (("gap", wl.GlobalAvgPool), ("flat", wl.Flatten)):
        nets[f"ln_spatial_{tail}"] = (
            wl.Serial(conv(k=3), wl.LayerNorm(axis=(1, 2)), wl.ReLU(), conv(k=3), wl.ReLU(),
                      pool(), readout()),
            seq, None,
        )  # fmt: skip
        nets[f"concat_spatial_{tail}"] = (
            wl.Serial(conv(k=3), wl.ReLU(), wl.FanOut(2), wl.Parallel(conv(), conv(k=3)),
                      wl.FanInConcat(axis=2), wl.ReLU(), conv(k=3), wl.ReLU(), pool(),
                      readout()),
            seq, None,
        )  # fmt: skip
    return nets


def test_reference_file_has_every_case():
    assert sorted(json.loads(str(DATA["cases"]))) == sorted(_reference_nets())


@pytest.mark.parametrize("case", sorted(_reference_nets()))
def test_matches_neural_tangents(case):
    net, (x1, x2), patterns = _reference_nets()[case]
    both = {} if patterns is None else {"pattern": patterns}
    self_ = {} if patterns is None else {"pattern": patterns[0]}
    k = net.kernel(x1, x2, **both)
    ks = net.kernel(x1, **self_)
    for got, key in ((k.nngp, "nngp"), (k.ntk, "ntk"), (ks.nngp, "nngp_self"),
                     (ks.ntk, "ntk_self")):  # fmt: skip
        want = _t(f"{case}_{key}")
        assert got.shape == want.shape
        err = (got - want).abs() / want.abs().max()
        if key.endswith("self"):  # self-pairs: see SELF_PAIR_RTOL
            assert float(err.diagonal().max()) <= SELF_PAIR_RTOL, (case, key)
            err = err.masked_fill(torch.eye(len(err), dtype=torch.bool), 0)
        assert float(err.max()) <= RTOL, (case, key, float(err.max()))


# ---------------------------------------------------------------------------------------------
# Identities


def _graph_inputs(seed=0, n1=4, n2=3, c=3, v=6):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n1, c, v, generator=g, dtype=torch.float64)
    x2 = torch.randn(n2, c, v, generator=g, dtype=torch.float64)
    a1 = (torch.rand(n1, v, v, generator=g) < 0.4).double()
    a2 = (torch.rand(n2, v, v, generator=g) < 0.4).double()
    return x1, x2, a1, a2


def _edges(adjacency: torch.Tensor) -> torch.Tensor:
    """0/1 adjacencies (N, V, V) as edge lists (N, E, 2), padded with -1."""
    lists = [a.nonzero() for a in adjacency]
    e = max(len(x) for x in lists)
    return torch.stack([torch.cat([x, torch.full((e - len(x), 2), -1)]) for x in lists])


def _gnn(*agg, tail=None):
    return wl.Serial(conv(), wl.ReLU(), *agg, conv(), wl.ReLU(), tail or wl.GlobalAvgPool(),
                     readout())  # fmt: skip


def test_identity_pattern_is_no_aggregation():
    x1, x2, _, _ = _graph_inputs()
    eye1, eye2 = (torch.eye(6).expand(len(x), 6, 6) for x in (x1, x2))
    plain = _gnn().kernel(x1, x2)
    dense = _gnn(wl.Aggregate()).kernel(x1, x2, pattern=(eye1, eye2))
    loops = torch.arange(6).repeat(2, 1).T  # (6, 2): i -> i
    sparse = _gnn(wl.Aggregate("sparse")).kernel(
        x1, x2, pattern=(loops.expand(len(x1), 6, 2), loops.expand(len(x2), 6, 2))
    )
    for k in (dense, sparse):
        torch.testing.assert_close(k.nngp, plain.nngp, rtol=1e-13, atol=0)
        torch.testing.assert_close(k.ntk, plain.ntk, rtol=1e-13, atol=0)


def test_edge_lists_equal_dense_adjacency_and_finite_network():
    x1, x2, a1, a2 = _graph_inputs(1)
    e1, e2 = _edges(a1), _edges(a2)
    dense, sparse = _gnn(wl.Aggregate()), _gnn(wl.Aggregate("sparse"))
    kd, ks = dense.kernel(x1, x2, pattern=(a1, a2)), sparse.kernel(x1, x2, pattern=(e1, e2))
    torch.testing.assert_close(ks.nngp, kd.nngp, rtol=1e-13, atol=0)
    torch.testing.assert_close(ks.ntk, kd.ntk, rtol=1e-13, atol=0)
    md = dense.build((3, 6), 8, seed=0, dtype=torch.float64)
    ms = sparse.build((3, 6), 8, seed=0, dtype=torch.float64)
    torch.testing.assert_close(ms(x1, pattern=e1), md(x1, pattern=a1), rtol=1e-13, atol=1e-14)
    # the finite aggregation is x @ A per example
    agg = wl.Aggregate().build((3, 6), 8, dtype=torch.float64)
    torch.testing.assert_close(agg(x1, pattern=a1), torch.einsum("nci,nij->ncj", x1, a1))


def test_many_edges_take_the_dense_product():
    """An edge list longer than the node count is multiplied densely: same kernel."""
    x1, x2, a1, a2 = _graph_inputs(2)
    g = torch.Generator().manual_seed(3)
    e1, e2 = (torch.randint(0, 6, (len(x), 20, 2), generator=g) for x in (x1, x2))

    def dense(e):  # repeated edges add up
        a = torch.zeros(len(e), 6, 6, dtype=torch.float64)
        for n in range(len(e)):
            for t, h in e[n].tolist():
                a[n, t, h] += 1
        return a

    k = _gnn(wl.Aggregate("sparse")).kernel(x1, x2, pattern=(e1, e2))
    kd = _gnn(wl.Aggregate()).kernel(x1, x2, pattern=(dense(e1), dense(e2)))
    torch.testing.assert_close(k.ntk, kd.ntk, rtol=1e-13, atol=0)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), implementation=st.sampled_from(["dense", "sparse"]))
def test_relabelling_the_nodes_changes_nothing(seed, implementation):
    """Permuting the nodes of the features and of the graph together leaves a pooled graph
    kernel unchanged (a property of GNTKs; an independent check of the pattern bookkeeping)."""
    x1, x2, a1, a2 = _graph_inputs(seed)
    g = torch.Generator().manual_seed(seed + 1)
    perm = torch.randperm(6, generator=g)

    def pattern(a1, a2):
        return (a1, a2) if implementation == "dense" else (_edges(a1), _edges(a2))

    net = _gnn(wl.Aggregate(implementation), conv(), wl.ReLU(), wl.Aggregate(implementation))
    k = net.kernel(x1, x2, pattern=pattern(a1, a2))
    kp = net.kernel(x1[..., perm], x2[..., perm],
                    pattern=pattern(a1[:, perm][:, :, perm], a2[:, perm][:, :, perm]))  # fmt: skip
    torch.testing.assert_close(kp.nngp, k.nngp, rtol=1e-12, atol=0)
    torch.testing.assert_close(kp.ntk, k.ntk, rtol=1e-12, atol=0)


def test_aggregate_after_a_channel_concatenation_acts_per_branch():
    """A concatenation keeps the graphs; aggregating it is aggregating each branch."""
    x1, x2, a1, a2 = _graph_inputs(12)
    cat = _gnn(wl.Aggregate(), wl.FanOut(2), wl.Parallel(conv(), conv(k=3)), wl.FanInConcat(),
               wl.Aggregate())  # fmt: skip
    k = cat.kernel(x1, x2, pattern=(a1, a2))
    per = wl.Serial(conv(), wl.ReLU(), wl.Aggregate(), wl.FanOut(2),
                    wl.Parallel(wl.Serial(conv(), wl.Aggregate()),
                                wl.Serial(conv(k=3), wl.Aggregate())),
                    wl.FanInConcat(), conv(), wl.ReLU(), wl.GlobalAvgPool(), readout())  # fmt: skip
    torch.testing.assert_close(k.ntk, per.kernel(x1, x2, pattern=(a1, a2)).ntk, rtol=1e-13, atol=0)


def test_aggregate_tiles_diagonal_and_x2_none_agree():
    x1, _, a1, _ = _graph_inputs(4, n1=7)
    net = _gnn(wl.Aggregate())
    k = net.kernel(x1, pattern=a1)
    tiled = net.kernel(x1, pattern=a1, tile_size=2)
    pair = net.kernel(x1, x1, pattern=(a1, a1), tile_size=3)
    diag = net.kernel(x1, pattern=a1, diagonal=True)
    torch.testing.assert_close(tiled.ntk, k.ntk, rtol=1e-14, atol=0)
    torch.testing.assert_close(pair.ntk, k.ntk, rtol=1e-8, atol=0)  # matmul rounding only
    assert torch.equal(diag.nngp, k.nngp.diagonal())
    # two examples with the same features but different graphs are different points
    x = torch.cat([x1[:1], x1[:1]])
    graphs = torch.stack([a1[0], a1[1]])
    kk = net.kernel(x, pattern=graphs)
    assert not torch.allclose(kk.nngp[0, 0], kk.nngp[0, 1])
    # ... so their pixel-pair kernel is not made symmetric in (p, q) as a point's with itself
    nodes = wl.Serial(conv(), wl.ReLU(), wl.Aggregate(), conv())
    for k in (nodes.kernel(x, pattern=graphs, get="nngp"),
              nodes.kernel(x, x, pattern=(graphs, graphs), get="nngp")):  # fmt: skip
        assert not torch.allclose(k[0, 1], k[0, 1].T)
        torch.testing.assert_close(k[0, 1], k[1, 0].T, rtol=1e-12, atol=0)


def test_gradients_reach_edge_weights():
    """A learned (weighted) adjacency gets the gradient of the kernel (finite differences)."""
    x1, x2, a1, a2 = _graph_inputs(13, n1=2, n2=2)
    w = (a1 * 0.7).requires_grad_(True)
    net = _gnn(wl.Aggregate())
    net.kernel(x1, x2, pattern=(w, a2), get="ntk").sum().backward()
    h = 1e-6
    bump = torch.zeros_like(a1)
    bump[0, 1, 2] = h
    with torch.no_grad():
        up = net.kernel(x1, x2, pattern=(a1 * 0.7 + bump, a2), get="ntk").sum()
        down = net.kernel(x1, x2, pattern=(a1 * 0.7 - bump, a2), get="ntk").sum()
    assert float(w.grad[0, 1, 2]) == pytest.approx(float(up - down) / (2 * h), rel=1e-6)


def _pooled(*middle):
    return wl.Serial(conv(k=3), wl.ReLU(), conv(k=3), *middle, wl.ReLU(), conv(k=3), wl.ReLU(),
                     wl.GlobalAvgPool(), readout())  # fmt: skip


def test_index_and_dot_general_identities():
    x1, x2, _, _ = _graph_inputs(5)
    ref = _pooled().kernel(x1, x2)
    reverse = torch.eye(6, dtype=torch.float64).flip(0)
    cases = {
        "everything": _pooled(wl.Index(wl.Slice[...])),
        "reversed twice": _pooled(wl.Index(wl.Slice[:, :, ::-1]), wl.Index(wl.Slice[:, :, ::-1])),
        "identity matrix": _pooled(wl.DotGeneral(torch.eye(6, dtype=torch.float64))),
        "reversal matrix twice": _pooled(wl.DotGeneral(reverse), wl.DotGeneral(reverse, axes=-1)),
    }
    for name, net in cases.items():
        k = net.kernel(x1, x2)
        torch.testing.assert_close(k.ntk, ref.ntk, rtol=1e-13, atol=0, msg=name)
    # a selection is the matrix product with its 0/1 matrix
    sel = torch.zeros(6, 3, dtype=torch.float64)
    sel[[5, 3, 1], [0, 1, 2]] = 1
    a = _pooled(wl.Index(wl.Slice[:, :, 5:0:-2])).kernel(x1, x2)
    b = _pooled(wl.DotGeneral(sel)).kernel(x1, x2)
    torch.testing.assert_close(a.ntk, b.ntk, rtol=1e-13, atol=0)
    # a number c multiplies the kernels by c^2
    c = _pooled(wl.DotGeneral(0.7)).kernel(x1, x2, get="nngp")
    torch.testing.assert_close(c, _pooled(wl.Scale(0.7)).kernel(x1, x2, get="nngp"))


def test_index_on_images_and_finite_shapes():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 5, 4, generator=g, dtype=torch.float64)
    net = wl.Serial(conv(k=3), wl.Index(wl.Slice[:, :, 1:4, 2:3]), wl.ReLU(), conv(k=3),
                    wl.ReLU(), wl.GlobalAvgPool(), readout())  # fmt: skip
    same = wl.Serial(conv(k=3), wl.DotGeneral(torch.eye(5)[:, 1:4].double(), axes=2),
                     wl.DotGeneral(torch.eye(4)[:, 2:3].double(), axes=3), wl.ReLU(),
                     conv(k=3), wl.ReLU(), wl.GlobalAvgPool(), readout())  # fmt: skip
    torch.testing.assert_close(net.kernel(x).ntk, same.kernel(x).ntk, rtol=1e-13, atol=0)
    # an int drops its axis: a row of pixels is a sequence
    row = wl.Serial(conv(k=3), wl.Index(wl.Slice[..., 2]), wl.ReLU(), wl.Flatten(), readout())
    col = wl.Serial(conv(k=3), wl.DotGeneral(torch.eye(4)[:, 2:3].double(), axes=-1), wl.ReLU(),
                    wl.Flatten(), readout())  # fmt: skip
    torch.testing.assert_close(row.kernel(x).ntk, col.kernel(x).ntk, rtol=1e-13, atol=0)
    model = wl.Index(wl.Slice[:, :, 1:4, 2]).build((2, 5, 4), 1)
    assert torch.equal(model(x), x[:, :, 1:4, 2])
    model = wl.DotGeneral(torch.ones(4, 2), axes=-1).build((2, 5, 4), 1)
    assert model(x.float()).shape == (3, 2, 5, 2)


def test_repeat_is_serial():
    x1, x2, _, _ = _graph_inputs(7)
    block = wl.Serial(conv(k=3), wl.ReLU())
    a = wl.Serial(conv(k=3), wl.Repeat(block, 2), wl.GlobalAvgPool(), readout()).kernel(x1, x2)
    b = wl.Serial(conv(k=3), block, block, wl.GlobalAvgPool(), readout()).kernel(x1, x2)
    assert torch.equal(a.ntk, b.ntk) and torch.equal(a.nngp, b.nngp)
    zero = wl.Serial(conv(k=3), wl.Repeat(block, 0), wl.GlobalAvgPool(), readout())
    one = wl.Serial(conv(k=3), wl.GlobalAvgPool(), readout())
    assert torch.equal(zero.kernel(x1, x2).ntk, one.kernel(x1, x2).ntk)
    # the finite network: n copies with their own weights
    model = wl.Repeat(wl.Dense(), 3).build(5, 5, seed=0)
    weights = [m.weight for m in model.modules() if hasattr(m, "weight")]
    assert len(weights) == 3 and not torch.equal(weights[0], weights[1])


def test_layernorm_spatial_identities():
    x1, x2, _, _ = _graph_inputs(8)
    # one pixel: normalising over it too changes nothing
    one = x1[..., :1], x2[..., :1]
    a = wl.Serial(conv(k=3), wl.LayerNorm(axis=(1, 2)), wl.ReLU(), wl.Flatten(), readout())
    b = wl.Serial(conv(k=3), wl.LayerNorm(), wl.ReLU(), wl.Flatten(), readout())
    torch.testing.assert_close(a.kernel(*one).ntk, b.kernel(*one).ntk, rtol=1e-14, atol=0)
    # the same per-pixel variance everywhere (circular padding, constant inputs along L):
    # the spatial mean is that variance
    flat = x1[..., :1].expand(-1, -1, 6), x2[..., :1].expand(-1, -1, 6)
    for ln in (wl.LayerNorm(axis=(1, -1)), wl.LayerNorm()):
        k = wl.Serial(wl.Conv(8, 3, padding="circular"), ln, wl.ReLU(), wl.GlobalAvgPool(),
                      readout()).kernel(*flat)  # fmt: skip
        k0 = wl.Serial(wl.Conv(8, 3, padding="circular"), wl.LayerNorm(), wl.ReLU(),
                       wl.GlobalAvgPool(), readout()).kernel(*flat)  # fmt: skip
        torch.testing.assert_close(k.ntk, k0.ntk, rtol=1e-13, atol=0)
    # the finite side normalises over channels and pixels together
    model = wl.LayerNorm(axis=(1, 2)).build((3, 6), 1, dtype=torch.float64)
    y = model(x1)
    torch.testing.assert_close(y.mean(dim=(1, 2)), torch.zeros(len(x1), dtype=torch.float64))
    torch.testing.assert_close(y.pow(2).mean(dim=(1, 2)), torch.ones(len(x1), dtype=torch.float64))


def test_spatial_concat_then_flatten_averages_the_branches():
    """Concatenating equal-length branches along L, then Flatten (mean over pixels), gives the
    mean of the branches' flattened kernels."""
    x1, x2, _, _ = _graph_inputs(9)
    b1, b2 = wl.Serial(conv(k=1), wl.ReLU()), wl.Serial(conv(k=3), wl.ReLU())
    head = (conv(k=3), wl.ReLU())
    cat = wl.Serial(*head, wl.FanOut(2), wl.Parallel(conv(k=1), conv(k=3)),
                    wl.FanInConcat(axis=-1), wl.ReLU(), wl.Flatten(), readout())  # fmt: skip
    k = cat.kernel(x1, x2)
    parts = [wl.Serial(*head, b, wl.Flatten(), readout()).kernel(x1, x2) for b in (b1, b2)]
    torch.testing.assert_close(k.nngp, (parts[0].nngp + parts[1].nngp) / 2, rtol=1e-13, atol=0)
    model = cat.build((3, 6), 4, seed=0)
    assert model(x1.float()).shape == (len(x1), 1)


# ---------------------------------------------------------------------------------------------
# Monte Carlo over the finite networks


def _ntk_sample(model: nn.Module, x: torch.Tensor, pattern) -> torch.Tensor:
    """The empirical NTK of one network on the batch x (one output), by a full Jacobian."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    kwargs = {} if pattern is None else {"pattern": pattern}

    def f(p):
        return torch.func.functional_call(model, p, (x,), kwargs)[:, 0]

    jac = torch.func.jacrev(f)(params)
    flat = torch.cat([j.reshape(len(x), -1) for j in jac.values()], dim=1)
    return flat @ flat.T


def _check_monte_carlo(net, x1, x2, pattern, width, layers, n_nngp, n_ntk, seed):
    """Analytic k(x1, x2) against the mean over finite networks (NNGP: 64 outputs, NTK: the
    empirical NTK of one output), on the joint batch of x1 and x2 with their patterns."""
    x = torch.cat([x1, x2])
    n1, shape = len(x1), tuple(x.shape[1:])
    joint = None if pattern is None else torch.cat(pattern)
    given = {} if pattern is None else {"pattern": pattern}
    analytic = net(1).kernel(x1, x2, **given)
    var = [net(1).kernel(a, diagonal=True, **({} if p is None else {"pattern": p}))
           for a, p in ((x1, None if pattern is None else pattern[0]),
                        (x2, None if pattern is None else pattern[1]))]  # fmt: skip
    summaries = []
    for get, n in (("nngp", n_nngp), ("ntk", n_ntk)):
        samples = []
        for s in range(n):
            model = net(64 if get == "nngp" else 1).build(shape, width, seed=seed + s,
                                                          dtype=torch.float64)  # fmt: skip
            if get == "nngp":
                with torch.no_grad():
                    f = model(x) if joint is None else model(x, pattern=joint)
                samples.append(f @ f.T / f.shape[1])
            else:
                samples.append(_ntk_sample(model, x, joint))
        stack = torch.stack(samples)[:, :n1, n1:]
        summary = assert_matches_monte_carlo(
            getattr(analytic, get), stack.mean(0), stack.std(0) / n**0.5, n, width=width,
            finite_width_layers=layers, variances=(getattr(var[0], get), getattr(var[1], get)),
            name=f"{get} k(x1, x2)",
        )  # fmt: skip
        summaries.append(summary)
    return summaries


def test_monte_carlo_graph_network():
    """(Edge lists give the same finite outputs and kernels as their adjacencies, tested above:
    one Monte Carlo check covers both.)"""
    x1, x2, a1, a2 = _graph_inputs(10, n1=3, n2=2, v=5)

    def net(out):
        return wl.Serial(wl.Conv(kernel_size=1, W_std=W, b_std=B), wl.ReLU(), wl.Aggregate(),
                         wl.Conv(kernel_size=1, W_std=W), wl.ReLU(), wl.Aggregate(),
                         wl.GlobalAvgPool(), readout(out))  # fmt: skip

    _check_monte_carlo(net, x1, x2, (a1, a2), 256, 2, 200, 40, seed=100)


def test_monte_carlo_spatial_maps():
    """LayerNorm over pixels, FanInConcat along L, Index, DotGeneral and Repeat, all in one
    finite network against its kernel."""
    x1, x2, _, _ = _graph_inputs(11, n1=3, n2=2, v=5)
    m = torch.randn(7, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64) / 2

    def net(out):
        return wl.Serial(
            wl.Conv(kernel_size=3, W_std=W, b_std=B), wl.LayerNorm(axis=(1, 2)), wl.ReLU(),
            wl.FanOut(2), wl.Parallel(wl.Conv(kernel_size=1, W_std=W), wl.Conv(kernel_size=3)),
            wl.FanInConcat(axis=2), wl.Index(wl.Slice[:, :, 1:8]), wl.ReLU(),
            wl.Conv(kernel_size=1, W_std=W), wl.DotGeneral(m), wl.ReLU(),
            wl.Repeat(wl.Serial(wl.Conv(kernel_size=1, W_std=W), wl.ReLU()), 2),
            wl.GlobalAvgPool(), readout(out),
        )  # fmt: skip

    _check_monte_carlo(net, x1, x2, None, 192, 7, 150, 30, seed=200)
