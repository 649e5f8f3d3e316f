r"""Global self-attention over the positions of sequences (N, C, L) and images (N, C, H, W).

The infinite-width kernels follow Hron, Bahri, Sohl-Dickstein and Novak (2020), "Infinite
attention: NNGP and NTK for deep attention networks", with the semantics of neural-tangents'
``stax.GlobalSelfAttention``.  Images attend over all H W pixels at once (flattened).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..kernel import Kernel
from .base import BuildContext, Layer, SpatialFeatures, check_number

__all__ = ["GlobalSelfAttention", "MECHANISMS", "POSITIONAL_EMBEDDINGS"]

MECHANISMS = ("softmax", "identity", "abs", "relu")
POSITIONAL_EMBEDDINGS = ("none", "sum", "concat")


def _check_size(name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"GlobalSelfAttention({name}=...) must be a positive int"
            + (" or None (the hidden width)" if allow_none else "")
            + f", got {value!r}"
        )


def _choice(name: str, value, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in options:
        raise ValueError(f"GlobalSelfAttention({name}=...) must be one of {options}, got {value!r}")
    return value.lower()


class GlobalSelfAttention(Layer):
    r"""Multi-head scaled dot-product self-attention over all positions (NTK parametrization).

    For one example with positions :math:`p = 1..P` and inputs :math:`x_p \in \mathbb{R}^C`,
    head :math:`h` computes keys :math:`k_p = x_p W^K_h`, queries :math:`q_p = x_p W^Q_h`
    (:math:`W^Q_h = W^K_h`, tied, with ``linear_scaling``), values :math:`v_p = x_p W^V_h` and

    .. math::

        G_{pq} &= \frac{\sigma_{QK}}{C\, n_k^{s}}\, q_p \cdot k_q, \\
        f_p &= \frac{\sigma_{OV}}{\sqrt{n_h n_v C}} \sum_h \Big(\sum_q \mathcal{A}(G)_{pq}\,
        v_q\Big) W^O_h + \sigma_b b,

    with all weights standard normal, :math:`s = 1` (``linear_scaling=True``) or
    :math:`s = 1/2`, :math:`\sigma_{QK}` = ``W_key_std * W_query_std``, :math:`\sigma_{OV}` =
    ``W_out_std * W_value_std``, and :math:`\mathcal{A}` the mechanism: a softmax over keys
    :math:`q`, or elementwise identity, abs or relu.

    Kernel map (``linear_scaling=True``).  The logits concentrate on the input covariance of
    each example with itself, :math:`G(x) \to \sigma_{QK} \tilde K(x, x)`, so the attention
    weights :math:`A(x) = \mathcal{A}(\sigma_{QK} \tilde K(x, x))` are deterministic and

    .. math::

        K'(x, x') &= \sigma_{OV}^2\, A(x)\, K_V(x, x')\, A(x')^\top + \sigma_b^2, \\
        \Theta'(x, x') &= \sigma_{OV}^2\, A(x) \big(\Theta_V(x, x') + 2 K_V(x, x')\big)
        A(x')^\top + \sigma_b^2

    (the 2 counts :math:`W^V` and :math:`W^O`; the query/key weights' share of the NTK
    vanishes).  :math:`\tilde K = w_x K + w_e R` mixes in the covariance :math:`R` of the
    positional embeddings: ``"sum"`` adds embeddings (:math:`w_x = 1, w_e = \sigma_e^2`),
    ``"concat"`` appends them as extra channels (:math:`w_x = C/(C + C_e)`,
    :math:`w_e = \sigma_e^2 C_e/(C + C_e)`, one half each for ``n_chan_pos_emb=None``).  The
    values read :math:`K_V = K` (or :math:`\tilde K` with ``val_pos_emb``; the embeddings are
    trainable, so then :math:`\Theta_V = w_x \Theta + w_e R`).

    With ``linear_scaling=False`` only the identity mechanism has a closed form: the logits stay
    Gaussian (in the limit of many heads), and with :math:`\langle A, B\rangle =
    \sum_{p,q} A_{pq} B_{pq}`

    .. math::

        K' &= \sigma_{QK}^2 \sigma_{OV}^2\, \langle \tilde K, K_V\rangle\, \tilde K + \sigma_b^2,
        \\ \Theta' &= \sigma_{QK}^2 \sigma_{OV}^2 \big(D\, \tilde K + \langle \tilde K,
        K_V\rangle (\tilde\Theta + 4 \tilde K)\big) + \sigma_b^2,

    :math:`D = 2\langle\tilde K, \tilde\Theta\rangle` (or :math:`\langle\tilde K, \Theta\rangle
    + \langle K, \tilde\Theta\rangle` with embeddings on keys only).

    Positional embeddings are random :math:`e \sim \mathcal{N}(0, \sigma_e^2 R)` per position
    and channel, shared by all examples: :math:`R = I` (one-hot), or :math:`R_{pq} =`
    ``pos_emb_decay_fn`` :math:`(\sum_i |p_i - q_i|^{r})` with :math:`r` = ``pos_emb_p_norm``
    (a positive definite decay, e.g. ``lambda d: np.exp(-d)``; the finite side draws
    :math:`e = L z` with :math:`R = L L^\top`).

    Args:
        n_chan_out: output channels; ``None`` (default) for the hidden width (``build`` gives it
            the ``width`` it is asked for).  The kernels do not depend on it.
        n_chan_key, n_chan_val, n_heads: key/query channels, value channels and heads per
            attention; ``None`` for the hidden width.  The limit is that of many key channels
            and many values (``n_heads * n_chan_val``); ``linear_scaling=False`` also needs many
            heads.  Defaults: ``None``, ``None``, 1.
        linear_scaling: tie queries to keys and divide the logits by :math:`n_k` (True), or
            untied queries and :math:`\sqrt{n_k}` (False: identity mechanism only).
        W_key_std, W_query_std, W_value_std, W_out_std: weight scales (they enter as the
            products :math:`\sigma_{QK}` and :math:`\sigma_{OV}`).
        b_std: bias scale, ``None`` for no bias.
        attention_mechanism: ``"softmax"``, ``"identity"``, ``"abs"`` or ``"relu"``.
        pos_emb_type: ``"none"``, ``"sum"`` or ``"concat"``.
        pos_emb_p_norm, pos_emb_decay_fn: the embedding covariance (above); ``None``: one-hot.
        n_chan_pos_emb: embedding channels for ``"concat"`` (``None``: as many as the input;
            an int needs an input of finite width, e.g. the network's inputs).
        W_pos_emb_std: :math:`\sigma_e`.
        val_pos_emb: add the embeddings to the values too (default: keys and queries only).

    The input must be spatial; the output has the input's positions and is Gaussian.  Padded
    positions (``net.kernel(..., mask_constant=c)``) get no attention weight
    (`widelimits.layers.masking`).
    """

    mixes_pixels = True
    has_parameters = True
    supports_mask = True

    def __init__(
        self,
        n_chan_out: int | None = None,
        n_chan_key: int | None = None,
        n_chan_val: int | None = None,
        n_heads: int | None = 1,
        linear_scaling: bool = True,
        W_key_std: float = 1.0,
        W_value_std: float = 1.0,
        W_query_std: float = 1.0,
        W_out_std: float = 1.0,
        b_std: float | None = None,
        attention_mechanism: str = "softmax",
        pos_emb_type: str = "none",
        pos_emb_p_norm: float = 2.0,
        pos_emb_decay_fn: Callable | None = None,
        n_chan_pos_emb: int | None = None,
        W_pos_emb_std: float = 1.0,
        val_pos_emb: bool = False,
    ) -> None:
        for name, value in (("n_chan_out", n_chan_out), ("n_chan_key", n_chan_key),
                            ("n_chan_val", n_chan_val), ("n_heads", n_heads),
                            ("n_chan_pos_emb", n_chan_pos_emb)):  # fmt: skip
            _check_size(name, value)
        scales = (("W_key_std", W_key_std), ("W_value_std", W_value_std),
                  ("W_query_std", W_query_std), ("W_out_std", W_out_std),
                  ("W_pos_emb_std", W_pos_emb_std), ("pos_emb_p_norm", pos_emb_p_norm))  # fmt: skip
        for name, value in scales:
            check_number("GlobalSelfAttention", name, value, allow_tensor=False)
        check_number("GlobalSelfAttention", "b_std", b_std, allow_none=True, allow_tensor=False)
        for name, value in (("linear_scaling", linear_scaling), ("val_pos_emb", val_pos_emb)):
            if not isinstance(value, bool):
                raise TypeError(
                    f"GlobalSelfAttention({name}=...) must be True or False, got {value!r}"
                )
        mechanism = _choice("attention_mechanism", attention_mechanism, MECHANISMS)
        pos = _choice("pos_emb_type", pos_emb_type, POSITIONAL_EMBEDDINGS)
        if not linear_scaling and mechanism != "identity":
            raise ValueError(
                f"GlobalSelfAttention(attention_mechanism={attention_mechanism!r}) with "
                "linear_scaling=False has no closed-form kernel (the logits stay random); use "
                "linear_scaling=True or attention_mechanism='identity'"
            )
        if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
            raise TypeError(
                f"GlobalSelfAttention(pos_emb_decay_fn=...) must be a function of the distance "
                f"or None, got {pos_emb_decay_fn!r}"
            )
        if pos == "sum" and n_chan_pos_emb is not None:
            raise ValueError(
                "GlobalSelfAttention(n_chan_pos_emb=...) applies to pos_emb_type='concat' only: "
                "summed embeddings have the input's channels; leave it None"
            )
        self.n_chan_out, self.n_chan_key, self.n_chan_val = n_chan_out, n_chan_key, n_chan_val
        self.n_heads = n_heads
        self.linear_scaling = linear_scaling
        self.W_key_std, self.W_value_std = float(W_key_std), float(W_value_std)
        self.W_query_std, self.W_out_std = float(W_query_std), float(W_out_std)
        self.b_std = None if b_std is None else float(b_std)
        self.attention_mechanism = mechanism
        self.pos_emb_type = pos
        self.pos_emb_p_norm = float(pos_emb_p_norm)
        self.pos_emb_decay_fn = pos_emb_decay_fn
        self.n_chan_pos_emb = n_chan_pos_emb
        self.W_pos_emb_std = float(W_pos_emb_std)
        self.val_pos_emb = val_pos_emb

    # -- shared by both sides ------------------------------------------------------------------

    @property
    def qk_std(self) -> float:
        return self.W_key_std * self.W_query_std

    @property
    def ov_std(self) -> float:
        return self.W_out_std * self.W_value_std

    def pos_emb_covariance(self, spatial: tuple[int, ...], dtype, device=None) -> Tensor:
        r""":math:`R` ``(P, P)`` over the flattened positions (identity without a decay)."""
        p = math.prod(spatial)
        if self.pos_emb_decay_fn is None:
            return torch.eye(p, dtype=dtype, device=device)
        grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in spatial),
                               indexing="ij")  # fmt: skip
        coords = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (P, d)
        dist = (coords[:, None, :] - coords[None, :, :]).abs().pow(self.pos_emb_p_norm).sum(-1)
        r = torch.as_tensor(self.pos_emb_decay_fn(dist.numpy()), dtype=torch.float64)
        if r.shape != (p, p) or not bool(torch.isfinite(r).all()):
            raise ValueError(
                "GlobalSelfAttention(pos_emb_decay_fn=...) must map an array of distances to "
                f"finite values of the same shape; got shape {tuple(r.shape)}"
            )
        return r.to(dtype=dtype, device=device)

    def _weights(self, in_channels: int | None) -> tuple[float, float]:
        """``(w_x, w_e)``: the shares of the input and embedding covariances in keys/queries."""
        e2 = self.W_pos_emb_std**2
        if self.pos_emb_type == "sum":
            return 1.0, e2
        if self.n_chan_pos_emb is None:
            return 0.5, 0.5 * e2
        if in_channels is None:
            raise ValueError(
                f"GlobalSelfAttention(n_chan_pos_emb={self.n_chan_pos_emb}) on an infinite-width "
                "input: a fixed number of embedding channels has a vanishing share of the keys; "
                "pass n_chan_pos_emb=None (as many as the input) or give the previous layer a "
                "finite out"
            )
        total = in_channels + self.n_chan_pos_emb
        return in_channels / total, e2 * self.n_chan_pos_emb / total

    # -- infinite width ------------------------------------------------------------------------

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("GlobalSelfAttention got several branches; merge them first")
        if k.layout == "none":
            raise ValueError(
                "GlobalSelfAttention needs spatial inputs, (N, C, L) sequences or (N, C, H, W) "
                "images, but got flat features; keep the positions as spatial axes"
            )
        if k.layout != "full":
            raise ValueError("GlobalSelfAttention needs the full pixel-pair layout")
        d = k.spatial_ndim
        spatial = tuple(k.cov1.shape[1 : 1 + d])
        p = math.prod(spatial)

        def flat(t: Tensor) -> Tensor:
            return t.reshape(*t.shape[: t.ndim - 2 * d], p, p)

        def unflat(t: Tensor) -> Tensor:
            return t.reshape(*t.shape[:-2], *spatial, *spatial)

        if self.pos_emb_type == "none":
            wx, we, r = 1.0, 0.0, None
        else:
            wx, we = self._weights(k.width)
            r = self.pos_emb_covariance(spatial, k.nngp.dtype, k.nngp.device)

        def interp(t: Tensor) -> Tensor:  # w_x K + w_e R
            return t if r is None else wx * t + we * r

        def interp_ntk(t: Tensor | None) -> Tensor | None:  # trainable embeddings: + w_e R
            if t is None or r is None:
                return t
            return we * r if t.ndim == 0 else wx * t + we * r

        m1 = None if k.mask1 is None else k.mask1.reshape(len(k.mask1), p)
        m2 = None if k.mask2 is None else k.mask2.reshape(len(k.mask2), p)
        cov1, cov2 = flat(k.cov1), flat(k.cov2)
        nngp = flat(k.nngp)
        theta = None if k.ntk is None else (k.ntk if k.ntk.ndim == 0 else flat(k.ntk))

        def rows(a: Tensor | None, b: Tensor | None) -> tuple:
            """Per-example tensors of x1 and x2 aligned with the entries of ``nngp``."""
            if a is None:
                return None, None
            if k.batch_diagonal:
                return a, a
            if k.pairs is not None:
                return a.index_select(0, k.pairs[0]), b.index_select(0, k.pairs[1])
            return a.unsqueeze(1), b.unsqueeze(0)

        args = (cov1, cov2, nngp, theta, m1, m2, interp, interp_ntk, rows)
        if self.linear_scaling:
            out = self._linear_scaling(k, *args)
        else:
            out = self._identity_sqrt_scaling(k, *args)
        nngp_o, ntk_o, cov1_o, cov2_o = out
        cov1_o = unflat(cov1_o)
        return k.replace(
            nngp=unflat(nngp_o), ntk=None if ntk_o is None else unflat(ntk_o),
            cov1=cov1_o, cov2=cov1_o if k.cov2 is k.cov1 else unflat(cov2_o),
            is_gaussian=True, width=self.n_chan_out,
        )  # fmt: skip

    def attention_weights(self, cov: Tensor, mask: Tensor | None) -> Tensor:
        r""":math:`A = \mathcal{A}(\sigma_{QK} \tilde K)` for self-covariances ``(N, P, P)``,
        padded keys (``mask`` ``(N, P)``) getting weight 0."""
        logits = self.qk_std * cov
        if self.attention_mechanism == "softmax":
            if mask is not None:
                logits = logits.masked_fill(mask.unsqueeze(1), -math.inf)
            return torch.softmax(logits, dim=-1)
        a = _MECHANISM_FNS[self.attention_mechanism](logits)
        return a if mask is None else a.masked_fill(mask.unsqueeze(1), 0.0)

    def _linear_scaling(self, k, cov1, cov2, nngp, theta, m1, m2, interp, interp_ntk, rows):
        ov2 = self.ov_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        g1 = self.attention_weights(interp(cov1), m1)
        g2 = g1 if k.cov2 is k.cov1 else self.attention_weights(interp(cov2), m2)
        ga, gb = rows(g1, g2)
        val = interp if self.val_pos_emb else (lambda t: t)

        def weigh(a: Tensor, t: Tensor, b: Tensor) -> Tensor:  # A t B^T
            return a @ t @ b.transpose(-1, -2)

        core = ov2 * weigh(ga, val(nngp), gb)
        cov1_o = ov2 * weigh(g1, val(cov1), g1) + b2
        cov2_o = cov1_o if k.cov2 is k.cov1 else ov2 * weigh(g2, val(cov2), g2) + b2
        ntk = None
        if theta is not None:
            th = interp_ntk(theta) if self.val_pos_emb else theta
            ntk = 2.0 * core + b2
            if th.ndim > 0:
                ntk = ntk + ov2 * weigh(ga, th, gb)
        return core + b2, ntk, cov1_o, cov2_o

    def _identity_sqrt_scaling(self, k, cov1, cov2, nngp, theta, m1, m2, interp, interp_ntk, rows):
        s2 = (self.qk_std * self.ov_std) ** 2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        ma, mb = rows(m1, m2)

        def keys(mask_a: Tensor | None, mask_b: Tensor | None) -> Tensor | None:
            """1 for pairs of unpadded keys, 0 if either is padding, over the last two axes."""
            if mask_a is None:
                return None
            return ((~mask_a).unsqueeze(-1) & (~mask_b).unsqueeze(-2)).to(nngp.dtype)

        def dot(a: Tensor, b: Tensor, keep: Tensor | None) -> Tensor:  # <a, b> over key pairs
            ab = a * b if keep is None else a * b * keep
            return ab.sum(dim=(-2, -1), keepdim=True)

        def value(t: Tensor) -> Tensor:
            return interp(t) if self.val_pos_emb else t

        i11 = interp(cov1)
        cov1_o = s2 * dot(i11, value(cov1), keys(m1, m1)) * i11 + b2
        if k.cov2 is k.cov1:
            cov2_o = cov1_o
        else:
            i22 = interp(cov2)
            cov2_o = s2 * dot(i22, value(cov2), keys(m2, m2)) * i22 + b2
        keep = keys(ma, mb)
        i12 = interp(nngp)
        d12 = dot(i12, value(nngp), keep)
        ntk = None
        if theta is not None:
            t12 = interp_ntk(theta)
            t12 = torch.zeros_like(i12) if t12.ndim == 0 else t12
            theta_full = torch.zeros_like(i12) if theta.ndim == 0 else theta
            if self.val_pos_emb or self.pos_emb_type == "none":
                dn = 2.0 * dot(i12, t12, keep)
            else:
                dn = dot(i12, theta_full, keep) + dot(nngp, t12, keep)
            ntk = s2 * (dn * i12 + d12 * (t12 + 4.0 * i12)) + b2
        return s2 * d12 * i12 + b2, ntk, cov1_o, cov2_o

    # -- finite width --------------------------------------------------------------------------

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, SpatialFeatures]:
        if isinstance(in_features, tuple):
            raise TypeError("GlobalSelfAttention got several branches; merge them first")
        if not isinstance(in_features, SpatialFeatures):
            raise ValueError(
                "GlobalSelfAttention needs spatial inputs: build the network with "
                "in_features=(C, L) or (C, H, W), the shape of one example"
            )
        if ctx.parametrization not in (None, "ntk"):
            raise ValueError(
                "GlobalSelfAttention is built in the NTK parametrization only; build with "
                f"parametrization=None or 'ntk', got {ctx.parametrization!r}"
            )
        sizes = (self.n_chan_out, self.n_chan_key, self.n_chan_val, self.n_heads)
        width = ctx.next_width() if any(s is None for s in sizes) else None
        n_out, n_key, n_val, heads = (width if s is None else s for s in sizes)
        c = in_features.channels
        spatial = in_features.size
        c_pe = (c if self.n_chan_pos_emb is None else self.n_chan_pos_emb) * (
            self.pos_emb_type != "none"
        )
        c_key = c + c_pe if self.pos_emb_type == "concat" else c
        c_val = c_key if self.val_pos_emb else c
        module = AttentionModule(self, c, spatial, n_out, n_key, n_val, heads, c_pe, c_key, c_val,
                                 ctx)  # fmt: skip
        return module, SpatialFeatures(n_out, spatial)


def _relu(t: Tensor) -> Tensor:
    return t.clamp_min(0.0)


_MECHANISM_FNS = {"identity": lambda t: t, "abs": torch.abs, "relu": _relu}


class AttentionModule(nn.Module):
    """The finite attention layer built by `GlobalSelfAttention` (its docstring has the maths).

    Parameters (standard normal; the scales are forward multipliers): ``key`` (and ``query``
    unless tied) ``(heads, C_key, n_key)``, ``value`` ``(heads, C_val, n_val)``, ``out``
    ``(heads * n_val, n_out)``, ``bias`` ``(n_out,)`` and the positional embeddings
    ``pos_emb`` ``(C_e, P)`` (trainable).
    """

    def __init__(self, layer: GlobalSelfAttention, c: int, spatial: tuple[int, ...], n_out: int,
                 n_key: int, n_val: int, heads: int, c_pe: int, c_key: int, c_val: int,
                 ctx: BuildContext) -> None:  # fmt: skip
        super().__init__()
        self.spatial, self.channels = tuple(spatial), c
        self.mechanism, self.pos_emb_type = layer.attention_mechanism, layer.pos_emb_type
        self.val_pos_emb, self.linear_scaling = layer.val_pos_emb, layer.linear_scaling
        self.key = nn.Parameter(ctx.randn(heads, c_key, n_key))
        self.query = None if layer.linear_scaling else nn.Parameter(ctx.randn(heads, c_key, n_key))
        self.value = nn.Parameter(ctx.randn(heads, c_val, n_val))
        self.out = nn.Parameter(ctx.randn(heads * n_val, n_out))
        self.bias = None if layer.b_std is None else nn.Parameter(ctx.randn(n_out))
        self.b_std = 0.0 if layer.b_std is None else layer.b_std
        p = math.prod(spatial)
        self.pos_emb = nn.Parameter(ctx.randn(c_pe, p)) if c_pe else None
        chol = None
        if c_pe and layer.pos_emb_decay_fn is not None:
            r = layer.pos_emb_covariance(self.spatial, torch.float64)
            chol_64, info = torch.linalg.cholesky_ex(r)
            if int(info) != 0:
                raise ValueError(
                    "GlobalSelfAttention(pos_emb_decay_fn=...) gives a covariance of the "
                    "positions that is not positive definite; use a positive definite decay "
                    "(e.g. exp(-d))"
                )
            chol = chol_64.to(ctx.dtype)
        self.register_buffer("pos_chol", chol)
        self.qk = layer.qk_std / (c_key * n_key ** (1.0 if layer.linear_scaling else 0.5))
        self.ov = layer.ov_std / math.sqrt(heads * n_val * c_val)
        self.pe_std = layer.W_pos_emb_std

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 + len(self.spatial) or tuple(x.shape[1:]) != (self.channels, *self.spatial):
            raise ValueError(
                f"this GlobalSelfAttention was built for examples of shape "
                f"{(self.channels, *self.spatial)}, got an input of shape {tuple(x.shape)}"
            )
        n = x.shape[0]
        xs = x.reshape(n, self.channels, -1).transpose(1, 2)  # (N, P, C)
        xk = xv = xs
        if self.pos_emb is not None:
            pe = self.pos_emb if self.pos_chol is None else self.pos_emb @ self.pos_chol.T
            pe = self.pe_std * pe.T  # (P, C_e)
            if self.pos_emb_type == "sum":
                xk = xs + pe
            else:
                xk = torch.cat([xs, pe.expand(n, *pe.shape)], dim=-1)
            xv = xk if self.val_pos_emb else xs
        keys = torch.einsum("npc,hck->hnpk", xk, self.key)
        queries = keys if self.query is None else torch.einsum("npc,hck->hnpk", xk, self.query)
        logits = self.qk * (queries @ keys.transpose(-1, -2))  # (heads, N, P, P)
        if self.mechanism == "softmax":
            weights = torch.softmax(logits, dim=-1)
        else:
            weights = _MECHANISM_FNS[self.mechanism](logits)
        values = torch.einsum("npc,hcv->hnpv", xv, self.value)
        heads = (weights @ values).permute(1, 2, 0, 3).reshape(n, xs.shape[1], -1)
        out = self.ov * (heads @ self.out)  # (N, P, n_out)
        if self.bias is not None:
            out = out + self.b_std * self.bias
        return out.transpose(1, 2).reshape(n, -1, *self.spatial)
