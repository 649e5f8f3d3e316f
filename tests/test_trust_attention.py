"""Bad inputs to GlobalSelfAttention, TransformerBlock and mask_constant: each error names the
offending argument and says what to do."""

from __future__ import annotations

import pytest
import torch

import widelimits as wl


def _seq(n: int = 2, c: int = 3, length: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, length, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_chan_out=0), ValueError, "n_chan_out"),
        (dict(n_chan_key=2.5), ValueError, "n_chan_key"),
        (dict(n_chan_val=True), ValueError, "n_chan_val"),
        (dict(n_heads=-1), ValueError, "n_heads"),
        (dict(n_chan_pos_emb=0, pos_emb_type="concat"), ValueError, "n_chan_pos_emb"),
        (dict(W_key_std=-1.0), ValueError, "W_key_std"),
        (dict(W_out_std=float("nan")), ValueError, "W_out_std"),
        (dict(W_query_std="1"), TypeError, "W_query_std"),
        (dict(b_std=-0.1), ValueError, "b_std"),
        (dict(W_pos_emb_std=float("inf")), ValueError, "W_pos_emb_std"),
        (dict(attention_mechanism="tanh"), ValueError, "attention_mechanism"),
        (dict(attention_mechanism=None), ValueError, "attention_mechanism"),
        (dict(pos_emb_type="learned"), ValueError, "pos_emb_type"),
        (dict(linear_scaling=1), TypeError, "linear_scaling"),
        (dict(val_pos_emb="yes"), TypeError, "val_pos_emb"),
        (dict(linear_scaling=False), ValueError, "linear_scaling"),
        (dict(pos_emb_decay_fn=3.0, pos_emb_type="sum"), TypeError, "pos_emb_decay_fn"),
        (dict(pos_emb_type="sum", n_chan_pos_emb=4), ValueError, "n_chan_pos_emb"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        wl.GlobalSelfAttention(**kwargs)


def test_flat_inputs_refused():
    net = wl.Serial(wl.Dense(), wl.GlobalSelfAttention(), wl.GlobalAvgPool(), wl.Dense(1))
    with pytest.raises(ValueError, match="spatial inputs"):
        wl.Serial(wl.Dense(), wl.GlobalSelfAttention(), wl.Dense(1)).kernel(torch.randn(3, 4))
    with pytest.raises(ValueError, match="in_features"):
        net.build(4, width=8)


def test_fixed_embedding_channels_need_a_finite_input():
    att = wl.GlobalSelfAttention(pos_emb_type="concat", n_chan_pos_emb=3)
    net = wl.Serial(wl.Dense(), att, wl.GlobalAvgPool(), wl.Dense(1))
    with pytest.raises(ValueError, match="n_chan_pos_emb"):
        net.kernel(_seq())
    wl.Serial(wl.Dense(8), att, wl.GlobalAvgPool(), wl.Dense(1)).kernel(_seq())  # finite: fine


def test_decay_must_give_a_positive_definite_covariance():
    att = wl.GlobalSelfAttention(pos_emb_type="sum", pos_emb_decay_fn=lambda d: -1.0 + 0 * d)
    with pytest.raises(ValueError, match="pos_emb_decay_fn"):
        att.build((3, 4), width=8)
    bad_shape = wl.GlobalSelfAttention(pos_emb_type="sum", pos_emb_decay_fn=lambda d: 1.0)
    with pytest.raises(ValueError, match="pos_emb_decay_fn"):
        bad_shape.kernel(_seq())


def test_standard_parametrization_refused():
    with pytest.raises(ValueError, match="parametrization"):
        wl.GlobalSelfAttention().build((3, 4), width=8, parametrization="standard")


def test_finite_module_checks_its_input_shape():
    module = wl.GlobalSelfAttention().build((3, 4), width=8, seed=0)
    with pytest.raises(ValueError, match="shape"):
        module(torch.randn(2, 3, 5))


def test_transformer_block_arguments():
    with pytest.raises(TypeError, match="mlp_activation"):
        wl.TransformerBlock(mlp_activation=torch.relu)
    with pytest.raises(TypeError, match="layer_norm"):
        wl.TransformerBlock(layer_norm="yes")
    with pytest.raises(ValueError, match="width"):
        wl.TransformerBlock(8, n_chan_out=16)
    with pytest.raises(ValueError, match="attention_mechanism"):
        wl.TransformerBlock(attention_mechanism="cosine")


def test_mask_constant_errors():
    net = wl.Serial(wl.Dense(), wl.GlobalSelfAttention(), wl.GlobalAvgPool(), wl.Dense(1))
    x = _seq()
    with pytest.raises(TypeError, match="mask_constant"):
        net.kernel(x, mask_constant="pad")
    with pytest.raises(ValueError, match="mask_constant"):
        wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(1)).kernel(torch.randn(3, 4), mask_constant=0.0)
    empty = x.clone()
    empty[1] = 5.0
    with pytest.raises(ValueError, match="example 1 of x1 is padding"):
        net.kernel(empty, mask_constant=5.0)
    with pytest.raises(ValueError, match="example 1 of x2 is padding"):
        net.kernel(x, empty, mask_constant=5.0)
    conv = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1))
    with pytest.raises(ValueError, match="mask_constant: Conv"):
        conv.kernel(x, mask_constant=0.0)
    flat = wl.Serial(wl.Dense(), wl.ReLU(), wl.Flatten(), wl.Dense(1))
    with pytest.raises(ValueError, match="mask_constant: Flatten"):
        flat.kernel(x, mask_constant=0.0)
