"""What follows a FanInConcat: per-feature layers act on each branch, linear readouts read the
feature-weighted average, and what would need one Gaussian refuses (`widelimits.layers._concat`).

The references are the same networks with the per-feature layers moved into each branch (the
rewrite neural-tangents evaluates) and the share-weighted averages of single-branch kernels;
Monte Carlo checks of such networks are in tests/test_random_architectures.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl


def _x(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# FanInConcat keeps its branches: what follows it acts branch by branch where the finite network
# does (identities against the same network with the per-feature layers moved into each branch,
# the rewrite neural-tangents evaluates), and refuses where one Gaussian would be assumed.


def _assert_same_kernels(a: wl.Layer, b: wl.Layer, x: torch.Tensor, rtol: float = 1e-13):
    ka, kb = a.kernel(x), b.kernel(x)
    for g in ("nngp", "ntk"):
        torch.testing.assert_close(getattr(ka, g), getattr(kb, g), rtol=rtol, atol=0)


@pytest.mark.parametrize("act", [wl.Erf, wl.ReLU, wl.GELU, lambda: wl.Sin(b=1.5)])
def test_activation_after_concat_acts_on_each_branch(act):
    d1, d2, d3 = wl.Dense(W_std=0.5), wl.Dense(W_std=2.0, b_std=1.0), wl.Dense(W_std=1.3)
    concat_first = wl.Serial(
        wl.FanOut(3), wl.Parallel(d1, d2, d3), wl.FanInConcat(), act(), wl.Dense(1, W_std=1.2)
    )
    activated_branches = wl.Serial(
        wl.FanOut(3),
        wl.Parallel(wl.Serial(d1, act()), wl.Serial(d2, act()), wl.Serial(d3, act())),
        wl.FanInConcat(),
        wl.Dense(1, W_std=1.2),
    )
    _assert_same_kernels(concat_first, activated_branches, _x())


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    stds=st.lists(
        st.tuples(st.floats(0.1, 3.0), st.sampled_from([None, 0.1, 1.0, 2.0])),
        min_size=2, max_size=4,
    ),
    widths=st.booleans(),
    act=st.sampled_from([wl.Erf, wl.ReLU, wl.Abs, wl.GELU, wl.Cos]),
)  # fmt: skip
def test_concat_then_activation_property(stds, widths, act):
    """Any branch scales, infinite or fixed widths: the kernel of concat -> act -> Dense is the
    share-weighted average of the single-branch kernels of Dense_b -> act -> Dense."""
    outs = [3 + 2 * i if widths else None for i in range(len(stds))]
    dense = [wl.Dense(o, W_std=w, b_std=b) for o, (w, b) in zip(outs, stds, strict=True)]
    net = wl.Serial(
        wl.FanOut(len(dense)), wl.Parallel(*dense), wl.FanInConcat(), act(), wl.Dense(1)
    )
    x = _x(4, 3)
    k = net.kernel(x)
    shares = [o / sum(outs) for o in outs] if widths else [1 / len(outs)] * len(outs)
    singles = [wl.Serial(d, act(), wl.Dense(1)).kernel(x) for d in dense]
    for g in ("nngp", "ntk"):
        expected = sum(s * getattr(kb, g) for s, kb in zip(shares, singles, strict=True))
        torch.testing.assert_close(getattr(k, g), expected, rtol=1e-12, atol=1e-14)


def test_concat_of_fixed_widths_weighs_activated_branches_by_width():
    d1, d2 = wl.Dense(3, W_std=0.5), wl.Dense(5, W_std=2.0, b_std=1.0)
    concat_first = wl.Serial(wl.FanOut(2), wl.Parallel(d1, d2), wl.FanInConcat(), wl.Erf(),
                             wl.Dense(1))  # fmt: skip
    x = _x()
    k1 = wl.Serial(d1, wl.Erf(), wl.Dense(1)).kernel(x)
    k2 = wl.Serial(d2, wl.Erf(), wl.Dense(1)).kernel(x)
    k = concat_first.kernel(x)
    torch.testing.assert_close(k.nngp, (3 * k1.nngp + 5 * k2.nngp) / 8, rtol=1e-13, atol=0)
    torch.testing.assert_close(k.ntk, (3 * k1.ntk + 5 * k2.ntk) / 8, rtol=1e-13, atol=0)


def test_nested_concat_flattens_with_feature_shares():
    """concat(concat(A, B), C) holds 2n + n features: shares 1/3 each, not 1/2, 1/4, 1/4."""
    a, b, c = wl.Dense(W_std=0.5), wl.Dense(W_std=2.0, b_std=1.0), wl.Dense(W_std=1.3)
    nested = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(wl.FanOut(2), wl.Parallel(a, b), wl.FanInConcat()), c),
        wl.FanInConcat(), wl.Erf(), wl.Dense(1),
    )  # fmt: skip
    flat = wl.Serial(wl.FanOut(3), wl.Parallel(a, b, c), wl.FanInConcat(), wl.Erf(), wl.Dense(1))
    _assert_same_kernels(nested, flat, _x())


def test_residual_of_concatenations_sums_branch_by_branch():
    a, b = wl.Dense(W_std=0.5), wl.Dense(W_std=2.0, b_std=1.0)
    c, d = wl.Dense(W_std=0.9), wl.Dense(W_std=1.1, b_std=0.3)
    summed = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(wl.FanOut(2), wl.Parallel(a, b), wl.FanInConcat()),
                    wl.Serial(wl.FanOut(2), wl.Parallel(c, d), wl.FanInConcat())),
        wl.FanInSum(), wl.Erf(), wl.Dense(1),
    )  # fmt: skip
    piecewise = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(wl.FanOut(2), wl.Parallel(a, c), wl.FanInSum(), wl.Erf()),
                    wl.Serial(wl.FanOut(2), wl.Parallel(b, d), wl.FanInSum(), wl.Erf())),
        wl.FanInConcat(), wl.Dense(1),
    )  # fmt: skip
    _assert_same_kernels(summed, piecewise, _x())


def test_product_of_a_concatenation_and_a_plain_branch():
    a, b = wl.Dense(3, W_std=0.5), wl.Dense(5, W_std=2.0, b_std=1.0)
    c3, c5, c8 = (wl.Dense(n, W_std=1.3, b_std=0.2) for n in (3, 5, 8))
    product = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(wl.FanOut(2), wl.Parallel(a, b), wl.FanInConcat()), c8),
        wl.FanInProd(), wl.Dense(1),
    )  # fmt: skip
    piecewise = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(wl.FanOut(2), wl.Parallel(a, c3), wl.FanInProd()),
                    wl.Serial(wl.FanOut(2), wl.Parallel(b, c5), wl.FanInProd())),
        wl.FanInConcat(), wl.Dense(1),
    )  # fmt: skip
    _assert_same_kernels(product, piecewise, _x())


def test_pooling_after_concat_then_activation_acts_on_each_branch():
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c1, c2 = wl.Conv(W_std=0.5), wl.Conv(W_std=2.0, b_std=1.0)
    concat_first = wl.Serial(
        wl.FanOut(2), wl.Parallel(c1, c2), wl.FanInConcat(), wl.AvgPool(2), wl.Erf(),
        wl.GlobalAvgPool(), wl.Dense(1),
    )  # fmt: skip
    per_branch = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(c1, wl.AvgPool(2), wl.Erf()), wl.Serial(c2, wl.AvgPool(2), wl.Erf())),
        wl.FanInConcat(), wl.GlobalAvgPool(), wl.Dense(1),
    )  # fmt: skip
    _assert_same_kernels(concat_first, per_branch, x)


def test_concat_refusals():
    x = _x()
    cat = [wl.FanOut(2), wl.Parallel(wl.Dense(W_std=0.5), wl.Dense(W_std=2.0)), wl.FanInConcat()]
    with pytest.raises(ValueError, match="LayerNorm"):  # would need its branches scaled alike
        wl.Serial(*cat, wl.LayerNorm(), wl.Dense(1)).kernel(x)
    with pytest.raises(ValueError, match="Erf needs Gaussian"):  # the average is not Gaussian
        wl.Serial(*cat, wl.Dropout(0.0), wl.Erf(), wl.Dense(1)).kernel(x)
    two_vs_three = wl.Serial(
        wl.FanOut(2),
        wl.Parallel(wl.Serial(*cat),
                    wl.Serial(wl.FanOut(3), wl.Parallel(wl.Dense(), wl.Dense(), wl.Dense()),
                              wl.FanInConcat())),
        wl.FanInSum(), wl.Dense(1),
    )  # fmt: skip
    with pytest.raises(ValueError, match="FanInSum merges concatenations whose branches split"):
        two_vs_three.kernel(x)
    with pytest.raises(ValueError, match="FanInSum merges a concatenation of 2 infinite"):
        wl.Serial(*cat, wl.Residual(wl.Dense()), wl.Dense(1)).kernel(x)


def test_concat_of_copies_counts_all_features():
    """FanOut(2) straight into FanInConcat duplicates 3 features into 6: still one Gaussian (a
    LayerNorm or activation may follow), and a standard-parametrization readout counts 6
    inputs, like one of 6 features."""
    x = _x()
    readout = wl.Dense(1, W_std=0.9, b_std=0.1, parametrization="standard")
    copies = wl.Serial(
        wl.Dense(3, W_std=1.2, parametrization="standard"), wl.FanOut(2), wl.FanInConcat(),
        wl.LayerNorm(), wl.ReLU(), readout,
    )  # fmt: skip
    six = wl.Serial(
        wl.Dense(6, W_std=1.2, parametrization="standard"), wl.LayerNorm(), wl.ReLU(), readout
    )
    _assert_same_kernels(copies, six, x)
