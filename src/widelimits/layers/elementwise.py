r"""`Elementwise`: any torch elementwise function as an activation.

Without a closed form, the dual maps are computed by two-dimensional Gauss-Hermite quadrature;
with a user-supplied closed form for :math:`T`, :math:`\dot T` follows from it by automatic
differentiation (Price's theorem).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .._numerics import safe_sqrt
from .activations import Activation

__all__ = ["Elementwise"]

DEFAULT_DEGREE = 64
"""Default number of Gauss-Hermite nodes per dimension (``DEFAULT_DEGREE**2`` points per entry)."""

MAX_DEGREE = 300
"""Largest supported degree (numpy's hermegauss overflows beyond about 370 nodes)."""

_POINTS_PER_CHUNK = 2**20
"""Quadrature points (kernel entries x degree**2) evaluated at once by default."""


class Elementwise(Activation):
    r"""An activation :math:`\phi` = ``fn`` applied elementwise, for any torch elementwise function.

    For :math:`(u, v) \sim \mathcal N(0, [[k_{11}, k_{12}], [k_{12}, k_{22}]])` the dual maps
    :math:`T = \mathbb E[\phi(u) \phi(v)]` and :math:`\dot T = \mathbb E[\phi'(u) \phi'(v)]` come
    from, in order of preference:

    - ``nngp_fn(k11, k22, k12)``, the user's closed form for :math:`T` (torch operations,
      elementwise and broadcasting), with ``ntk_fn(k11, k22, k12)`` for :math:`\dot T`; when
      ``ntk_fn`` is missing, :math:`\dot T = \partial T / \partial k_{12}` by autograd (Price's
      theorem: :math:`\partial T / \partial k_{12} = \mathbb E[\phi'(u) \phi'(v)]`).  Write
      ``nngp_fn`` so that its gradient stays finite at correlation :math:`\pm 1` (see
      ``widelimits._numerics``: ``correlation``, ``angle``, ``safe_sqrt``).  Note the argument
      order: neural-tangents' ``nngp_fn(cov12, var1, var2)`` puts the covariance first.
    - otherwise, Gauss-Hermite quadrature with ``degree`` nodes per dimension
      (``numpy.polynomial.hermite_e.hermegauss``): writing :math:`u = \sqrt{k_{11}}\, z_1` and
      :math:`v = \sqrt{k_{22}}\, (\rho z_1 + \sqrt{1 - \rho^2}\, z_2)` with
      :math:`z_1, z_2 \sim \mathcal N(0, 1)` iid,

      .. math::

          T &\approx \sum_{ij} w_i w_j\, \phi(u_i)\, \phi(v_{ij}), \\
          \dot T &\approx \sum_{ij} w_i w_j\, \phi'(u_i)\, \phi'(v_{ij})

      where :math:`\phi'` is the autograd derivative of ``fn`` and u is the input with the
      smaller variance (more accurate than the other order, and exactly symmetric in the two
      inputs: :math:`K(x, x') = K(x', x)`).  Kernel entries are evaluated in chunks
      of ``chunk_size`` (bounded memory, forward and backward: the backward pass recomputes
      each chunk), in the dtype of the kernel.

    Accuracy of the default ``degree=64`` (4096 evaluations of fn, and of its derivative for
    :math:`\dot T`, per kernel entry), measured in float64 over variances
    :math:`k_{11}, k_{22} \in \{0.1, 0.5, 1, 2, 5\}` and correlations in :math:`[-1, 1]`
    (including :math:`\pm 1`), as the largest error relative to
    :math:`\sqrt{T(k_{11}, k_{11}, k_{11})\, T(k_{22}, k_{22}, k_{22})}` (likewise for
    :math:`\dot T`), against the closed forms (erf,
    GELU) or degree 300 (the others)::

        fn          k11, k22 <= 1         k11, k22 <= 2         k11, k22 <= 5
                    T        Tdot         T        Tdot         T        Tdot
        tanh        7e-9     2e-7         2e-6     7e-5         4e-4     9e-3
        erf         3e-13    9e-12        3e-8     1e-6         2e-4     4e-3
        gelu        4e-16    4e-16        8e-13    3e-11        4e-7     2e-5
        silu        4e-16    1e-15        1e-12    5e-11        2e-8     9e-7
        sigmoid     6e-16    6e-16        4e-13    5e-11        2e-8     2e-6
        softplus    6e-16    6e-16        5e-15    4e-13        3e-10    2e-8
        relu        4e-3     5e-2         (the same at every variance: not smooth, use `ReLU`)

    Smooth functions converge exponentially in ``degree``, more slowly the larger the variance
    (tanh and erf then approach sign; degree 200 brings tanh to :math:`T` 5e-12, :math:`\dot T`
    5e-10 for variances :math:`\le 2`).  Non-smooth functions (relu, abs, sign) converge only
    algebraically: use their closed forms.  The cost grows as the square of ``degree``; in float32
    the results are accurate to float32 rounding at best.

    Gradients w.r.t. :math:`(k_{11}, k_{22}, k_{12})` are those of the quadrature formula (exact
    derivatives of what the forward pass computes).  At correlation exactly :math:`\pm 1` the
    derivative of :math:`\sqrt{1 - \rho^2}` is taken to be 0 (`safe_sqrt`, as in the closed
    forms), so the partial derivatives there are a choice; but since :math:`|\rho| \le 1`,
    :math:`\rho` is stationary wherever it reaches :math:`\pm 1`, so derivatives of such entries
    w.r.t. inputs or hyperparameters are unaffected.

    Args:
        fn: the elementwise function (torch tensor in, same shape out); ``None`` only with
            ``nngp_fn`` (then the layer has no finite network).
        nngp_fn: optional closed form of T.
        ntk_fn: optional closed form of :math:`\dot T` (needs ``nngp_fn``).
        degree: Gauss-Hermite nodes per dimension (cost and memory grow as its square).
        chunk_size: kernel entries evaluated at once by the quadrature (default:
            ``2**20 // degree**2``, i.e. about :math:`2^{20}` quadrature points per chunk).
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor] | None = None,
        nngp_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
        ntk_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
        degree: int = DEFAULT_DEGREE,
        chunk_size: int | None = None,
    ) -> None:
        if fn is None and nngp_fn is None:
            raise ValueError("Elementwise needs fn, nngp_fn or both")
        for name, f in (("fn", fn), ("nngp_fn", nngp_fn), ("ntk_fn", ntk_fn)):
            if f is not None and not callable(f):
                raise TypeError(f"{name} must be callable, got {f!r}")
        if ntk_fn is not None and nngp_fn is None:
            raise ValueError("ntk_fn needs nngp_fn (the closed form of T) as well")
        if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_DEGREE:
            raise ValueError(f"degree must be an integer in [1, {MAX_DEGREE}], got {degree!r}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self._fn, self._nngp_fn, self._ntk_fn = fn, nngp_fn, ntk_fn
        self.degree = degree
        self.chunk_size = chunk_size or max(1, _POINTS_PER_CHUNK // degree**2)
        nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
        self._rule = (nodes, weights / math.sqrt(2 * math.pi))  # E[g(z)] ~= sum_i w_i g(x_i)
        self._rule_cache: dict = {}

    # -- finite side --------------------------------------------------------------------------

    def fn(self, x: Tensor) -> Tensor:
        if self._fn is None:
            raise NotImplementedError(
                "this Elementwise layer was given only nngp_fn, so it has no finite network; "
                "pass fn as well"
            )
        return self._fn(x)

    # -- infinite side ------------------------------------------------------------------------

    def dual(self, k11, k22, k12, need_dot):
        if self._nngp_fn is not None:
            return self._closed_form(k11, k22, k12, need_dot)
        shape = torch.broadcast_shapes(k11.shape, k22.shape, k12.shape)
        dtype = torch.promote_types(torch.promote_types(k11.dtype, k22.dtype), k12.dtype)
        flat = [t.to(dtype).expand(shape).reshape(-1) for t in (k11, k22, k12)]
        out = _Quadrature.apply(*flat, self, bool(need_dot))
        t = out[0].reshape(shape)
        return t, (out[1].reshape(shape) if need_dot else None)

    def _closed_form(self, k11, k22, k12, need_dot):
        zero = torch.zeros_like(k11 + k22 + k12)
        if not need_dot or self._ntk_fn is not None:
            t = self._nngp_fn(k11, k22, k12) + zero
            return t, (self._ntk_fn(k11, k22, k12) + zero if need_dot else None)
        upstream = torch.is_grad_enabled() and any(x.requires_grad for x in (k11, k22, k12))
        with torch.enable_grad():
            eps = zero.detach().requires_grad_(True)
            t = self._nngp_fn(k11, k22, k12 + eps) + zero
            (tdot,) = torch.autograd.grad(t.sum(), eps, create_graph=upstream, allow_unused=True)
        tdot = zero if tdot is None else tdot
        if not upstream:
            t, tdot = t.detach(), tdot.detach()
        return t, tdot

    def _phi(self, x: Tensor, need_dot: bool, graph: bool) -> tuple[Tensor, Tensor | None]:
        """phi(x) and (if ``need_dot``) phi'(x); differentiable w.r.t. x when ``graph``."""
        if not need_dot:
            y = self.fn(x)
            self._check_shape(x, y)
            return y, None
        with torch.enable_grad():
            xg = x if graph and x.requires_grad else x.detach().requires_grad_(True)
            y = self.fn(xg)
            self._check_shape(x, y)
            dy = None
            if y.requires_grad:
                ones = torch.ones((), dtype=y.dtype, device=y.device).expand_as(y)
                (dy,) = torch.autograd.grad(y, xg, ones, create_graph=graph, allow_unused=True)
            dy = torch.zeros_like(x) if dy is None else dy
        if not graph:
            y, dy = y.detach(), dy.detach()
        return y, dy

    @staticmethod
    def _check_shape(x: Tensor, y) -> None:
        if not isinstance(y, Tensor) or y.shape != x.shape:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(
                f"Elementwise fn must map a tensor to a tensor of the same shape (an elementwise "
                f"function), got {got} for input shape {tuple(x.shape)}"
            )

    def _evaluate(self, k11: Tensor, k22: Tensor, k12: Tensor, need_dot: bool, graph: bool):
        """Quadrature of T (and Tdot) for 1-D tensors of kernel entries."""
        key = (k12.dtype, k12.device)
        if key not in self._rule_cache:
            self._rule_cache[key] = tuple(
                torch.as_tensor(r, dtype=k12.dtype, device=k12.device) for r in self._rule
            )
        nodes, weights = self._rule_cache[key]
        # T and Tdot are symmetric in (u, v): integrate with the smaller variance as u (the
        # 1-D direction), which is more accurate and makes the result exactly symmetric.
        swap = k11 > k22
        k11, k22 = torch.where(swap, k22, k11), torch.where(swap, k11, k22)
        prod = safe_sqrt(k11 * k22)
        positive = prod > 0
        # rho is irrelevant where a variance is 0; 0 keeps the formula exact there.
        rho = torch.where(positive, k12 / torch.where(positive, prod, 1), 0).clamp(-1, 1)
        s = safe_sqrt((1 - rho) * (1 + rho))
        a, b = safe_sqrt(k11), safe_sqrt(k22)
        u = a[:, None] * nodes  # (c, d)
        v = ((b * rho)[:, None] * nodes)[:, :, None] + ((b * s)[:, None] * nodes)[:, None, :]
        phi_u, dphi_u = self._phi(u, need_dot, graph)
        phi_v, dphi_v = self._phi(v, need_dot, graph)
        # sum_ij w_i w_j f(u_i) g(v_ij)
        t = ((phi_v @ weights) * phi_u) @ weights
        if not need_dot:
            return (t,)
        return t, ((dphi_v @ weights) * dphi_u) @ weights

    def __repr__(self) -> str:
        parts = []
        for name, f in (("fn", self._fn), ("nngp_fn", self._nngp_fn), ("ntk_fn", self._ntk_fn)):
            if f is not None:
                parts.append(f"{name}={getattr(f, '__name__', repr(f))}")
        if self._nngp_fn is None:
            parts.append(f"degree={self.degree}")
        return f"Elementwise({', '.join(parts)})"


class _Quadrature(torch.autograd.Function):
    """Chunked quadrature whose backward pass recomputes each chunk (bounded memory)."""

    @staticmethod
    def forward(ctx, k11, k22, k12, layer: Elementwise, need_dot: bool):
        ctx.layer, ctx.need_dot = layer, need_dot
        ctx.save_for_backward(k11, k22, k12)
        n, step = k12.shape[0], layer.chunk_size
        outs = [
            layer._evaluate(
                k11[i : i + step], k22[i : i + step], k12[i : i + step], need_dot, False
            )
            for i in range(0, n, step)
        ]
        if not outs:
            empty = k12.new_empty(0)
            return (empty, empty.clone()) if need_dot else (empty,)
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))

    @staticmethod
    def backward(ctx, *grads):
        layer, need_dot = ctx.layer, ctx.need_dot
        k = ctx.saved_tensors
        create = torch.is_grad_enabled()  # double backward asked for
        n, step = k[2].shape[0], layer.chunk_size
        pieces: list[list[Tensor]] = [[], [], []]
        for i in range(0, n, step):
            sl = slice(i, i + step)
            with torch.enable_grad():
                eps = [torch.zeros_like(x[sl]).requires_grad_(True) for x in k]
                ins = [
                    (x[sl] if create else x[sl].detach()) + e for x, e in zip(k, eps, strict=True)
                ]
                outs = layer._evaluate(*ins, need_dot, True)
                total = sum((o * g[sl]).sum() for o, g in zip(outs, grads, strict=False))
                got = torch.autograd.grad(total, eps, create_graph=create, allow_unused=True)
            for j in range(3):
                pieces[j].append(torch.zeros_like(eps[j]) if got[j] is None else got[j])
        result = [
            torch.cat(p) if p else torch.zeros_like(x) for p, x in zip(pieces, k, strict=True)
        ]
        return (*result, None, None)
