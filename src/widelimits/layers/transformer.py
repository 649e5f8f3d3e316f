r"""Transformer encoder blocks built from `GlobalSelfAttention`, `LayerNorm` and residuals."""

from __future__ import annotations

from .activations import ReLU
from .attention import GlobalSelfAttention
from .base import Layer
from .combinators import Residual, Serial
from .dense import Dense
from .normalization import LayerNorm

__all__ = ["TransformerBlock"]


def TransformerBlock(
    width: int | None = None,
    *,
    mlp_width: int | None = None,
    mlp_activation: Layer | None = None,
    mlp_W_std: float = 1.0,
    mlp_b_std: float | None = None,
    layer_norm: bool = True,
    eps: float = 1e-12,
    **attention,
) -> Serial:
    r"""One post-LayerNorm transformer encoder block over sequences (N, C, L) or images.

    .. math::

        h = \mathrm{LN}\big(x + \mathrm{Attention}(x)\big), \qquad
        y = \mathrm{LN}\big(h + W_2\, \phi(W_1 h + b_1) + b_2\big)

    built as ``Serial(Residual(GlobalSelfAttention(**attention)), LayerNorm(),
    Residual(Dense(), mlp_activation, Dense()), LayerNorm())``: both residual branches end in
    fresh zero-mean weights, so their kernels add to the shortcut's, and each `LayerNorm`
    normalises the channels at every position,
    :math:`K'_{pq}(x, x') = K_{pq}(x, x') / \sqrt{K_{pp}(x, x) K_{qq}(x', x')}`.  The kernel
    map is the composition of its layers' maps; ``net.build`` gives the finite block with
    hidden widths everywhere (attention channels, MLP width).

    Args:
        width: channels of the residual stream (the attention's ``n_chan_out`` and the MLP's
            output), ``None`` for the hidden width; it must match the block's input width.
        mlp_width: the MLP's hidden width (``None``: the hidden width).
        mlp_activation: the MLP's activation (default `ReLU`).
        mlp_W_std, mlp_b_std: ``W_std`` and ``b_std`` of the two MLP Dense layers.
        layer_norm: ``False`` drops both LayerNorms (the kernels then grow with depth).
        eps: LayerNorm's epsilon.
        **attention: arguments of `GlobalSelfAttention` (``n_heads``,
            ``attention_mechanism``, ``pos_emb_type``, ``W_out_std``, ...).

    The input must be Gaussian (after a Dense or Conv embedding, or a previous block) for the
    LayerNorms; stack blocks with `Serial` and end in `GlobalAvgPool` and a Dense readout.
    """
    act = ReLU() if mlp_activation is None else mlp_activation
    if not isinstance(act, Layer):
        raise TypeError(
            f"TransformerBlock(mlp_activation=...) must be a widelimits layer such as "
            f"wl.ReLU(), got {mlp_activation!r}"
        )
    if not isinstance(layer_norm, bool):
        raise TypeError(
            f"TransformerBlock(layer_norm=...) must be True or False, got {layer_norm!r}"
        )
    norm = (LayerNorm(eps),) if layer_norm else ()
    attention.setdefault("n_chan_out", width)
    if attention["n_chan_out"] != width:
        raise ValueError(
            f"TransformerBlock(n_chan_out={attention['n_chan_out']!r}) differs from "
            f"width={width!r}: the attention output is added to the block's input; pass width"
        )
    mlp = Dense(mlp_width, W_std=mlp_W_std, b_std=mlp_b_std)
    return Serial(
        Residual(GlobalSelfAttention(**attention)),
        *norm,
        Residual(mlp, act, Dense(width, W_std=mlp_W_std, b_std=mlp_b_std)),
        *norm,
    )


# ``**attention`` takes GlobalSelfAttention's arguments: the ``--arch`` parser lists and checks
# them.
TransformerBlock.keywords_from = GlobalSelfAttention
