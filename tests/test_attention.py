"""GlobalSelfAttention and padded positions (``mask_constant``), against independent sources.

- neural-tangents 0.6.5 reference kernels (tests/data/nt_attention.npz, written by
  bench/nt_reference.py): every mechanism x positional embedding x val_pos_emb, both scalings,
  2-D images, a decaying embedding covariance, fixed embedding channels, and padded sequences;
- Monte Carlo over the finite networks the same descriptions build (`KernelContract`);
- identities: the identity mechanism is a bilinear map of the input Gram matrices, computed
  here straight from the data; padded sequences give the kernels of the sequences cut to
  their lengths; the contract's shape, symmetry, PSD, tiling and float32 checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import widelimits as wl
from widelimits.finite import monte_carlo_kernel
from widelimits.testing import KernelContract, assert_matches_monte_carlo, single_thread

DATA = np.load(Path(__file__).parent / "data" / "nt_attention.npz")
DECAYS = {"exp_half": lambda d: np.exp(-d / 2)}


def _attention_params(spec) -> dict:
    """The arguments of the first GlobalSelfAttention in a spec."""
    if spec[0] == "GlobalSelfAttention":
        return dict(spec[1])
    if spec[0] in ("Serial", "Parallel"):
        found = [p for s in spec[1] if (p := _attention_params(s))]
        return found[0] if found else {}
    return {}


def _transformer(spec) -> wl.Layer:
    """bench/nt_reference.py's two-block transformer, built with `TransformerBlock`."""
    attention = _attention_params(spec)
    block = wl.TransformerBlock(8, mlp_width=8, mlp_W_std=1.1, mlp_b_std=0.1, **attention)
    return wl.Serial(
        wl.Dense(8, 1.0, 0.1), block, block, wl.GlobalAvgPool(), wl.Dense(1)
    )  # fmt: skip


def _from_spec(spec) -> wl.Layer:
    """The widelimits network of a spec of bench/nt_reference.py (NT's argument names)."""
    name, arg = spec[0], spec[1]
    if name == "Serial":
        return wl.Serial(*(_from_spec(s) for s in arg))
    if name == "Dense":
        return wl.Dense(arg["out"], arg["W_std"], arg["b_std"] if arg["bias"] else None)
    if name == "Relu":
        return wl.ReLU()
    if name == "GlobalAvgPool":
        return wl.GlobalAvgPool()
    assert name == "GlobalSelfAttention", name
    params = dict(arg)
    decay = params.pop("pos_emb_decay", None)
    return wl.GlobalSelfAttention(**params, pos_emb_decay_fn=decay and DECAYS[decay])


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))  # NT is channels-last


@pytest.mark.parametrize("i", range(int(DATA["n_att"])), ids=lambda i: str(DATA[f"att{i}_note"]))
def test_matches_neural_tangents(i):
    spec = json.loads(str(DATA[f"att{i}_spec"]))
    transformer = str(DATA[f"att{i}_note"]).startswith("transformer")
    net = _transformer(spec) if transformer else _from_spec(spec)
    data = str(DATA[f"att{i}_input"])
    x1, x2 = _nchw(DATA[f"x_{data}1"]), _nchw(DATA[f"x_{data}2"])
    masked = {"mask_constant": float(DATA["mask_constant"])} if data == "masked" else {}
    for suffix, b in (("", x2), ("_self", None)):
        k = net.kernel(x1, b, **masked)
        for g in ("nngp", "ntk"):
            ref = torch.from_numpy(DATA[f"att{i}_{g}{suffix}"])
            torch.testing.assert_close(getattr(k, g), ref, rtol=1e-12, atol=1e-12 * ref.max())


# ---------------------------------------------------------------------------------------------
# Monte Carlo over the finite networks


MONTE_CARLO = {
    "softmax": dict(W_key_std=1.5),
    "relu-concat-values": dict(attention_mechanism="relu", pos_emb_type="concat",
                               val_pos_emb=True),
    "abs-sum": dict(attention_mechanism="abs", pos_emb_type="sum", W_pos_emb_std=0.8),
    "identity-sqrt-scaling": dict(attention_mechanism="identity", linear_scaling=False,
                                  n_heads=None, W_out_std=0.8, pos_emb_type="sum"),
}  # fmt: skip


def _check_monte_carlo(make, x, layers, nngp=(200, 128), ntk=(10, 256)) -> dict:
    """NNGP vs the output covariance of ``nngp[0]`` networks of width ``nngp[1]`` (32 outputs
    each), NTK vs the empirical NTK (Jacobian implementation) of ``ntk[0]`` networks, with
    the tolerance rule of `widelimits.testing` (``layers``: L of its finite-width bias)."""
    summary = {}
    for get, (samples, width), out, seed in (("nngp", nngp, 32, 1), ("ntk", ntk, 1, 2)):
        analytic = make(out).kernel(x, get=get)
        with single_thread():
            mc = monte_carlo_kernel(
                make(out), x, width=width, n_samples=samples, get=(get,), seed=seed,
                implementation="jacobian",
            )  # fmt: skip
        summary[get] = assert_matches_monte_carlo(
            analytic, getattr(mc, get), getattr(mc, f"{get}_stderr"), samples, width=width,
            finite_width_layers=layers, name=get,
        )  # fmt: skip
    return summary


@pytest.mark.parametrize("name", MONTE_CARLO)
def test_monte_carlo(name):
    """A hidden Dense layer (the positional embeddings get as many channels: their covariance
    concentrates only then), attention over 3 positions, GlobalAvgPool: the finite network's
    output covariance and empirical NTK tend to the kernels.  Finite-width bias: besides the
    Dense layer, the logits Ghat_pq = G_pq + O(n^-1/2) enter the output through sums over the
    P = 3 keys, so L = 1 + P (`widelimits.testing` tolerance rule).  Power: the same check
    rejects an NTK whose value/output-weight term 2 K_V is counted once (measured)."""
    options = MONTE_CARLO[name]

    def make(out: int) -> wl.Layer:  # no readout: the attention's own NTK terms dominate
        return wl.Serial(
            wl.Dense(W_std=1.2), wl.GlobalSelfAttention(out, b_std=0.1, **options),
            wl.GlobalAvgPool(),
        )  # fmt: skip

    x = KernelContract(make, in_features=(3, 3), n1=4).inputs()[0]
    sqrt = not options.get("linear_scaling", True)  # many heads: narrower
    sizes = dict(nngp=(200, 24), ntk=(12, 24)) if sqrt else dict(ntk=(16, 256))
    summary = _check_monte_carlo(make, x, 4, **sizes)
    assert summary["nngp"]["max_relative_stderr"] < 0.15  # the check has power


def test_monte_carlo_two_blocks():
    """Two attention layers with a ReLU in between (hidden widths everywhere)."""

    def make(out: int) -> wl.Layer:
        return wl.Serial(
            wl.Dense(W_std=1.2, b_std=0.1),
            wl.GlobalSelfAttention(pos_emb_type="sum", W_key_std=1.3),
            wl.ReLU(),
            wl.GlobalSelfAttention(attention_mechanism="relu", b_std=0.1),
            wl.GlobalAvgPool(),
            wl.Dense(out),
        )

    x = KernelContract(make, in_features=(2, 3), n1=4).inputs()[0]
    _check_monte_carlo(make, x, 7, nngp=(150, 128), ntk=(8, 128))


def test_monte_carlo_transformer_block():
    """The finite TransformerBlock (LayerNorms over channels at every position, residuals, a
    ReLU MLP) converges to the block's kernels.  L counts the hidden Dense layers, the
    LayerNorms and P = 3 for the attention logits."""

    def make(out: int) -> wl.Layer:
        block = wl.TransformerBlock(pos_emb_type="sum", mlp_b_std=0.1, W_key_std=1.5)
        return wl.Serial(wl.Dense(b_std=0.1), block, wl.GlobalAvgPool(), wl.Dense(out))

    x = KernelContract(make, in_features=(2, 3), n1=4).inputs()[0]
    _check_monte_carlo(make, x, 8, nngp=(150, 128), ntk=(8, 128))


# ---------------------------------------------------------------------------------------------
# The contract's exact checks


@pytest.mark.parametrize(
    "in_features, options",
    [((3, 5), dict(pos_emb_type="concat", val_pos_emb=True)),
     ((2, 2, 3), dict(attention_mechanism="abs", pos_emb_type="sum")),
     ((3, 4), dict(attention_mechanism="identity", linear_scaling=False, pos_emb_type="sum"))],
)  # fmt: skip
def test_contract(in_features, options):
    def make(out: int) -> wl.Layer:
        return wl.Serial(
            wl.Dense(W_std=1.3, b_std=0.1), wl.GlobalSelfAttention(**options), wl.ReLU(),
            wl.GlobalAvgPool(), wl.Dense(out),
        )  # fmt: skip

    KernelContract(make, in_features=in_features).check_all(monte_carlo=False)


# ---------------------------------------------------------------------------------------------
# Identities


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Input pixel Gram matrices K0(a_i, b_j)[p, q] = a_i[:, p] . b_j[:, q] / C."""
    return torch.einsum("ncp,mcq->nmpq", a, b) / a.shape[1]


def test_identity_mechanism_is_bilinear():
    """With the identity mechanism and linear scaling, K' = s_OV^2 s_QK^2 K(x,x) K(x,x')
    K(x',x')^T + b^2 from the data's Gram matrices; Theta' adds 2 (K' - b^2) (values, output
    weights) to the zero input NTK.  Read per position pair (no pooling)."""
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    att = wl.GlobalSelfAttention(
        attention_mechanism="identity", W_key_std=0.7, W_query_std=1.3, W_value_std=1.1,
        W_out_std=0.9, b_std=0.2,
    )  # fmt: skip
    k = att.kernel(x1, x2)
    a1 = (0.7 * 1.3) * torch.einsum("nnpq->npq", _gram(x1, x1))
    a2 = (0.7 * 1.3) * torch.einsum("nnpq->npq", _gram(x2, x2))
    core = (1.1 * 0.9) ** 2 * torch.einsum("npa,nmab,mqb->nmpq", a1, _gram(x1, x2), a2)
    torch.testing.assert_close(k.nngp, core + 0.04, rtol=1e-12, atol=0)
    torch.testing.assert_close(k.ntk, 2 * core + 0.04, rtol=1e-12, atol=0)


def test_identity_sqrt_scaling_is_bilinear():
    """linear_scaling=False: K'_pq = s^2 <K, K> K_pq with <K, K> = sum_ab K_ab(x, x')^2 — the
    logits and values are independent Gaussians in the limit of many heads."""
    g = torch.Generator().manual_seed(4)
    x1 = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    x2 = torch.randn(2, 2, 4, generator=g, dtype=torch.float64)
    att = wl.GlobalSelfAttention(
        attention_mechanism="identity", linear_scaling=False, W_key_std=0.8, W_out_std=1.2
    )
    k = att.kernel(x1, x2)
    k12 = _gram(x1, x2)
    expected = (0.8 * 1.2) ** 2 * (k12**2).sum(dim=(-2, -1), keepdim=True) * k12
    torch.testing.assert_close(k.nngp, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(k.ntk, 4 * expected, rtol=1e-12, atol=0)


def test_softmax_of_equal_logits_averages():
    """Inputs equal at every position: the softmax weights are uniform, and attention is the
    average over positions, so its kernel is the input kernel (times s_OV^2)."""
    x = torch.randn(3, 4, 1, dtype=torch.float64).expand(3, 4, 6)
    k = wl.GlobalSelfAttention(W_out_std=1.5).kernel(x, get="nngp")
    torch.testing.assert_close(k, 2.25 * _gram(x, x), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# Padded positions


def _transformer_like() -> wl.Layer:
    return wl.Serial(
        wl.Dense(W_std=1.2, b_std=0.1),
        wl.GlobalSelfAttention(pos_emb_type="concat", val_pos_emb=True),
        wl.ReLU(),
        wl.Dense(b_std=0.1),
        wl.GlobalSelfAttention(attention_mechanism="relu", b_std=0.1),
        wl.LayerNorm(),
        wl.GlobalAvgPool(),
        wl.Dense(1),
    )


def test_padding_equals_cut_sequences():
    """Each sequence padded to length 6 gives the kernels of the sequence cut to its length
    (one-hot positional embeddings restrict to the first positions)."""
    g = torch.Generator().manual_seed(5)
    lengths = [2, 6, 4, 4, 3]
    x = torch.randn(5, 3, 6, generator=g, dtype=torch.float64)
    padded = x.clone()
    for i, n in enumerate(lengths):
        padded[i, :, n:] = float("nan")
    net = _transformer_like()
    k = net.kernel(padded, mask_constant=float("nan"))
    for i, n in enumerate(lengths):
        for j, m in enumerate(lengths):
            if n == m:  # kernel() takes one length per batch pair
                ref = net.kernel(x[i : i + 1, :, :n], x[j : j + 1, :, :m])
                torch.testing.assert_close(k.nngp[i, j], ref.nngp[0, 0], rtol=1e-12, atol=0)
                torch.testing.assert_close(k.ntk[i, j], ref.ntk[0, 0], rtol=1e-12, atol=0)
        ref = net.kernel(x[i : i + 1, :, :n], diagonal=True)
        torch.testing.assert_close(k.nngp[i, i], ref.nngp[0], rtol=1e-12, atol=0)
    tiled = net.kernel(padded, mask_constant=float("nan"), tile_size=2)
    torch.testing.assert_close(tiled.nngp, k.nngp, rtol=1e-12, atol=0)
    diagonal = net.kernel(padded, mask_constant=float("nan"), diagonal=True)
    torch.testing.assert_close(diagonal.ntk, k.ntk.diagonal(), rtol=1e-12, atol=0)


def test_padding_ignored_by_global_avg_pool():
    """Without attention, global pooling averages over the unpadded positions only."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    padded = x.clone()
    padded[0, :, 3:] = -1.0
    net = wl.Serial(wl.Dense(b_std=0.1), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1))
    k = net.kernel(padded, mask_constant=-1.0, get="nngp")
    ref = net.kernel(x[:1, :, :3], diagonal=True, get="nngp")
    torch.testing.assert_close(k[0, 0], ref[0], rtol=1e-12, atol=0)
    # an entry equal to the constant at a position that is not all padding is zeroed (as NT)
    partial = x.clone()
    partial[1, 0, 2] = -1.0
    zeroed = x.clone()
    zeroed[1, 0, 2] = 0.0
    torch.testing.assert_close(
        net.kernel(partial, mask_constant=-1.0, get="nngp"), net.kernel(zeroed, get="nngp")
    )


def test_architecture_text():
    """The command line's ``--arch`` text parser knows the new layers."""
    from widelimits.layers.spec import parse_architecture

    net = parse_architecture(
        "Dense(b_std=0.1), TransformerBlock(pos_emb_type='sum', n_heads=2), GlobalAvgPool(), "
        "Dense(1)"
    )
    block = wl.TransformerBlock(pos_emb_type="sum", n_heads=2)
    same = wl.Serial(wl.Dense(b_std=0.1), block, wl.GlobalAvgPool(), wl.Dense(1))
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(net.kernel(x).ntk, same.kernel(x).ntk, rtol=0, atol=0)


def test_padding_is_not_zeros():
    """A padded sequence and the same sequence with zeros at those positions are different
    points: the kernel between them (per position pair: no pooling) follows the formula
    s_OV^2 A(a) K0(a, b) A(b)^T with a softmax over a's unpadded keys only."""
    g = torch.Generator().manual_seed(8)
    b = torch.randn(1, 2, 4, generator=g, dtype=torch.float64)
    b[:, :, 3] = 0.0
    a = b.clone()
    a[:, :, 3] = 9.0  # padding
    att = wl.GlobalSelfAttention(W_key_std=1.4, W_out_std=1.1)
    k = att.kernel(torch.cat([a, b]), mask_constant=9.0, get="nngp")[0, 1]
    gram = _gram(b, b)[0, 0]
    weights_a = torch.softmax((1.4 * gram).masked_fill(torch.arange(4) == 3, -torch.inf), -1)
    weights_b = torch.softmax(1.4 * gram, -1)
    torch.testing.assert_close(k, 1.21 * weights_a @ gram @ weights_b.T, rtol=1e-12, atol=0)


def test_global_sum_pool_ignores_padded_positions():
    """GlobalSumPool with a mask sums the real positions only: a padded sequence equals the
    same sequence cut to its length."""
    x = torch.randn(3, 2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, :, 4:] = -7.0
    net = wl.Serial(wl.Dense(None, b_std=0.3), wl.ReLU(), wl.GlobalSumPool(), wl.Dense(1))
    k = net.kernel(x, mask_constant=-7.0)
    cut = net.kernel(x[:1, :, :4])
    torch.testing.assert_close(k.nngp[0, 0], cut.nngp[0, 0])
    torch.testing.assert_close(k.ntk[0, 0], cut.ntk[0, 0])


@pytest.mark.parametrize(
    "layer", [wl.LayerNorm(axis=(1, 2)), wl.FanInConcat(axis=2)], ids=["layernorm", "concat"]
)
def test_layers_across_positions_refuse_a_mask(layer):
    """LayerNorm over positions and concatenation along positions would mix padding in."""
    x = torch.randn(3, 2, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, :, 4:] = -7.0
    if isinstance(layer, wl.FanInConcat):
        body = [wl.FanOut(2), wl.Parallel(wl.Dense(None), wl.Dense(None)), layer]
    else:
        body = [wl.Dense(None), layer]
    net = wl.Serial(*body, wl.GlobalAvgPool(), wl.Dense(1))
    with pytest.raises(ValueError, match="mask_constant"):
        net.kernel(x, mask_constant=-7.0)
