"""Bad inputs to the graph and pixel-map layers: each raises the right exception type with a
message that names the offending argument and says what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import widelimits as wl

G = torch.Generator().manual_seed(0)
X = torch.randn(3, 2, 5, generator=G, dtype=torch.float64)
X2 = torch.randn(2, 2, 5, generator=G, dtype=torch.float64)
A = (torch.rand(3, 5, 5, generator=G) < 0.5).double()
A2 = (torch.rand(2, 5, 5, generator=G) < 0.5).double()


def gnn(implementation="dense"):
    return wl.Serial(
        wl.Conv(kernel_size=1), wl.ReLU(), wl.Aggregate(implementation),
        wl.Conv(kernel_size=1), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1),
    )  # fmt: skip


def test_aggregate_implementation():
    with pytest.raises(ValueError, match="implementation"):
        wl.Aggregate("csr")


def test_pattern_missing_or_unused():
    with pytest.raises(ValueError, match="pattern"):
        gnn().kernel(X)
    with pytest.raises(ValueError, match="pattern"):
        wl.Serial(wl.Conv(), wl.ReLU(), wl.Flatten(), wl.Dense(1)).kernel(X, pattern=A)
    model = gnn().build((2, 5), 4, seed=0)
    with pytest.raises(ValueError, match="pattern"):
        model(X.float())


def test_pattern_types():
    with pytest.raises(TypeError, match="pattern"):
        gnn().kernel(X, pattern=A.tolist())
    with pytest.raises(TypeError, match="pattern"):
        gnn().kernel(X, X2, pattern=A)  # x2 given: a pair is needed
    with pytest.raises(ValueError, match="pattern"):
        gnn().kernel(X, pattern=(A, A2))  # x2=None: the pair belongs to x2
    with pytest.raises(TypeError, match="pattern"):
        gnn().kernel(X, pattern=A.to_sparse())
    with pytest.raises(TypeError, match="pattern"):
        gnn("sparse").kernel(X, pattern=torch.zeros(3, 4, 2))  # float edge list
    model = gnn().build((2, 5), 4, seed=0)
    with pytest.raises(TypeError, match="pattern"):
        model(X.float(), pattern=A.numpy())


def test_pattern_shapes():
    with pytest.raises(ValueError, match="pattern"):
        gnn().kernel(X, pattern=A[:2])  # one graph per example
    with pytest.raises(ValueError, match=r"pattern\[1\]"):
        gnn().kernel(X, X2, pattern=(A, A))
    with pytest.raises(ValueError, match="pattern"):
        gnn().kernel(X, pattern=A[:, :4, :4])  # 4 nodes, the features have 5
    with pytest.raises(ValueError, match="pattern"):
        gnn("sparse").kernel(X, pattern=torch.zeros(3, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pattern"):
        gnn("sparse").kernel(X, pattern=torch.full((3, 4, 2), 5))  # node 5 of 0..4
    model = gnn().build((2, 5), 4, seed=0)
    with pytest.raises(ValueError, match="pattern"):
        model(X.float(), pattern=A[:1])
    # numpy patterns are accepted
    k = gnn().kernel(X, pattern=A.numpy())
    assert torch.equal(k.nngp, gnn().kernel(X, pattern=A).nngp)


def test_aggregate_needs_nodes():
    net = wl.Serial(wl.Dense(), wl.ReLU(), wl.Aggregate(), wl.Dense(1))
    with pytest.raises(ValueError, match="Aggregate"):
        net.kernel(X.flatten(1), pattern=A)
    with pytest.raises(ValueError, match="in_features"):
        net.build(10, 4)


def test_index_arguments():
    net = lambda idx: wl.Serial(wl.Conv(), wl.Index(idx), wl.ReLU(), wl.Flatten(), wl.Dense(1))  # noqa: E731
    with pytest.raises(ValueError, match="idx"):
        wl.Index(wl.Slice[0])  # the examples
    with pytest.raises(ValueError, match="idx"):
        wl.Index(wl.Slice[:, 1])  # the channels
    with pytest.raises(ValueError, match="idx"):
        wl.Index(wl.Slice[..., 0, ...])
    with pytest.raises(TypeError, match="idx"):
        net(wl.Slice[:, :, [0, 1]]).kernel(X)
    with pytest.raises(ValueError, match="idx"):
        net(wl.Slice[:, :, 7]).kernel(X)  # out of range
    with pytest.raises(ValueError, match="idx"):
        net(wl.Slice[:, :, 3:3]).kernel(X)  # selects nothing
    with pytest.raises(ValueError, match="idx"):
        net(wl.Slice[:, :, 0, 0]).kernel(X)  # more entries than axes
    with pytest.raises(ValueError, match="Index"):
        wl.Serial(wl.Dense(), wl.Index(wl.Slice[:, :, 0])).kernel(X.flatten(1))


def test_dot_general_arguments():
    with pytest.raises(TypeError, match="rhs"):
        wl.DotGeneral("2")
    with pytest.raises(TypeError, match="rhs"):
        wl.DotGeneral(torch.ones(5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="rhs"):
        wl.DotGeneral(torch.full((5, 5), float("nan")))
    with pytest.raises(ValueError, match="rhs"):
        wl.DotGeneral(float("inf"))
    with pytest.raises(ValueError, match="axes"):
        wl.DotGeneral(torch.ones(5, 5), axes=1)  # the channels
    with pytest.raises(ValueError, match="axes"):
        wl.DotGeneral(torch.ones(5, 5), axes=(2, 2))
    with pytest.raises(ValueError, match="rhs"):
        wl.DotGeneral(torch.ones(5, 5, 5), axes=2)
    net = lambda dg: wl.Serial(wl.Conv(), dg, wl.ReLU(), wl.Flatten(), wl.Dense(1))  # noqa: E731
    with pytest.raises(ValueError, match="rhs"):
        net(wl.DotGeneral(torch.ones(4, 5))).kernel(X)  # 5 positions, not 4
    with pytest.raises(ValueError, match="axes"):
        net(wl.DotGeneral(torch.ones(5, 5), axes=3)).kernel(X)
    with pytest.raises(ValueError, match="in_features"):
        wl.DotGeneral(torch.ones(5, 5)).build(10, 4)
    assert isinstance(wl.DotGeneral(np.eye(5)).rhs, torch.Tensor)


def test_repeat_arguments():
    with pytest.raises(ValueError, match="n="):
        wl.Repeat(wl.Dense(), -1)
    with pytest.raises(ValueError, match="n="):
        wl.Repeat(wl.Dense(), 2.0)
    with pytest.raises(TypeError, match="parentheses"):
        wl.Repeat(wl.ReLU, 2)
    with pytest.raises(ValueError, match="shape"):
        wl.Serial(wl.Repeat(wl.Dense(3), 2), wl.Dense(1)).kernel(X.flatten(1))
    with pytest.raises(ValueError, match="shape"):
        wl.Repeat(wl.Dense(3), 2).build(10, 4)


def test_layernorm_axis():
    with pytest.raises(ValueError, match="axis"):
        wl.LayerNorm(axis=0)
    with pytest.raises(ValueError, match="axis"):
        wl.LayerNorm(axis=(1, True))
    net = lambda ln: wl.Serial(wl.Conv(), ln, wl.ReLU(), wl.Flatten(), wl.Dense(1))  # noqa: E731
    with pytest.raises(ValueError, match="axis"):
        net(wl.LayerNorm(axis=2)).kernel(X)  # without the channels
    with pytest.raises(ValueError, match="axis"):
        net(wl.LayerNorm(axis=(1, 3))).kernel(X)  # sequences have axes 1 and 2
    with pytest.raises(ValueError, match="axis"):
        net(wl.LayerNorm(axis=(1, 3))).build((2, 5), 4)


def test_fan_in_concat_axis():
    with pytest.raises(ValueError, match="axis"):
        wl.FanInConcat(axis=0)
    with pytest.raises(ValueError, match="axis"):
        wl.FanInConcat(axis=1.0)

    def net(branches, axis, *tail):
        return wl.Serial(wl.Conv(), wl.ReLU(), wl.FanOut(len(branches)), wl.Parallel(*branches),
                         wl.FanInConcat(axis=axis), *tail, wl.Flatten(), wl.Dense(1))  # fmt: skip

    with pytest.raises(ValueError, match="axis"):
        net([wl.Conv(), wl.Conv()], 3).kernel(X)
    with pytest.raises(ValueError, match="axis"):
        net([wl.Conv(), wl.Identity()], 2).kernel(X)  # not Gaussian: its pixels correlate
    with pytest.raises(ValueError, match="axis"):
        net([wl.Conv(3), wl.Conv(4)], 2).kernel(X)  # different channel counts
    with pytest.raises(ValueError, match="axis"):
        net([wl.Conv(3), wl.Conv(4)], 2).build((2, 5), 4)
    with pytest.raises(ValueError, match="axis"):
        net([wl.Conv(3), wl.Conv(3)], 4).build((2, 5), 4)
