r"""The empirical NTK and NNGP of any ``torch.nn.Module``.

For a network f(x; theta) with O outputs the empirical NTK is the (N1, N2, O, O) array

    Theta(x, x')_{o o'} = sum_p  df_o(x)/dtheta_p  df_o'(x')/dtheta_p,

over the selected parameters p.  ``outputs`` picks what is returned: ``"trace"`` the mean over
outputs (1/O) sum_o Theta_oo, shape (N1, N2), which is what the analytic NTK of a readout layer
with O independent outputs equals; ``"full"`` every block, (N1, N2, O, O); ``"diagonal"`` the
per-output kernels Theta_oo, (N1, N2, O).  ``diagonal=True`` keeps only the pairs (x_i, x_i).

Three implementations compute the same numbers:

- ``"jacobian"``: per-example Jacobians J (N, O, P) by ``vmap(jacrev)``, then J1 J2^T.  Memory
  grows like N O P, so it is chunked over examples.
- ``"ntk_vector"``: NTK-vector products.  For each basis cotangent e (one example, one output)
  J2^T e comes from one vector-Jacobian product and J1 (J2^T e) from one Jacobian-vector product;
  no Jacobian is ever stored, only a batch of parameter-sized vectors.
- ``"structured"``: for ``nn.Linear`` and ``nn.Conv1d/2d`` the weight gradient of one example
  factorizes, df_o/dW = sum_l g_o(l) a(l)^T with a(l) the layer's input (a patch, for a
  convolution) at position l and g_o(l) the cotangent of its output.  So the layer's share is

      Theta_W(x, x')_{o o'} = sum_{l, l'} <g_o(x, l), g_o'(x', l')> <a(x, l), a(x', l')>,

  built from one forward pass and one backward pass per output.  Where the position sums make
  that Gram costlier than forming the layer's per-example weight gradient g a^T from the same
  factors, the cheaper of the two is used, layer by layer.  Parameters outside such layers
  (normalization, attention projections, tied weights) fall back to the Jacobian method.

``implementation="auto"`` takes the structured path when Linear/Conv layers hold most of the
selected parameters, else the Jacobian one while a single example's Jacobian fits the memory
budget, else NTK-vector products.  Examples must not interact: a model with BatchNorm in
training mode is refused (call ``model.eval()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .._compute import _blocks, available_memory

__all__ = ["empirical_ntk", "empirical_nngp", "empirical_kernel", "EmpiricalKernel"]

Outputs = Literal["trace", "full", "diagonal"]
IMPLEMENTATIONS = ("auto", "jacobian", "ntk_vector", "structured")
ParamSelection = Iterable[str] | Iterable[nn.Module] | Callable[[str, Tensor], bool] | None


# ------------------------------------------------------------------------------ shared plumbing
def select_parameters(model: nn.Module, params: ParamSelection) -> dict[str, nn.Parameter]:
    """Resolve ``params`` to {name: parameter}.

    None: every parameter with ``requires_grad``.  A callable ``(name, parameter) -> bool``: those
    it accepts.  An iterable of names, or of submodules (all their parameters).
    """
    named = dict(model.named_parameters())
    if params is None:
        chosen = {k: v for k, v in named.items() if v.requires_grad}
    elif callable(params):
        chosen = {k: v for k, v in named.items() if params(k, v)}
    else:
        items = list(params)
        if all(isinstance(p, nn.Module) for p in items):
            ids = {id(p) for m in items for p in m.parameters()}
            chosen = {k: v for k, v in named.items() if id(v) in ids}
        elif all(isinstance(p, str) for p in items):
            unknown = [p for p in items if p not in named]
            if unknown:
                raise ValueError(
                    f"unknown parameter name(s) {unknown}; the model has {list(named)[:8]}..."
                )
            chosen = {k: named[k] for k in items}
        else:
            raise TypeError("params must be parameter names, submodules, or a callable")
    if not chosen:
        raise ValueError(
            "the model has no trainable parameters (or none were selected), so its NTK is undefined"
        )
    return chosen


def check_model(model: nn.Module) -> None:
    """Refuse models whose examples interact, where a per-example NTK is undefined."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    coupled = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    ]
    if coupled:
        raise ValueError(
            f"{coupled[0]} is a BatchNorm layer in training mode, which couples the examples of "
            "a batch, so a per-example NTK is undefined; call model.eval() first"
        )


def check_inputs(model: nn.Module, x1, x2) -> tuple[Tensor, Tensor | None]:
    """Inputs as tensors on the model's device, with one batch axis and matching trailing shape."""
    ref = next(iter(model.parameters()), None)

    def prepare(x, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        if ref is not None:
            x = x.to(device=ref.device)
            if x.is_floating_point():
                x = x.to(ref.dtype)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"{name} must have a leading batch axis with at least one example")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values; clean them first")
        return x

    x1 = prepare(x1, "x1")
    if x2 is None:
        return x1, None
    x2 = prepare(x2, "x2")
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x1 has examples of shape {tuple(x1.shape[1:])} but x2 of shape "
            f"{tuple(x2.shape[1:])}; both batches must hold the same kind of example"
        )
    return x1, x2


def model_outputs(model: nn.Module, params: dict, x: Tensor) -> Tensor:
    """f(x) as (N, O) with the given parameter values, checking what the model returns."""
    out = functional_call(model, params, (x,))
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model must return a tensor, got {type(out).__name__}; wrap it so that it "
            "returns the outputs whose NTK you want"
        )
    if out.ndim == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for a batch of {x.shape[0]}: the "
            "first axis of the output must be the batch axis"
        )
    return out.reshape(x.shape[0], -1)


def contract(a: Tensor, b: Tensor, outputs: Outputs, pairs: bool) -> Tensor:
    """Contract per-example derivatives a (N1, O, ...) and b (N2, O, ...) over their trailing
    axes into the requested output layout (the (N1, N2) part becomes (N,) when ``pairs``)."""
    a, b = a.reshape(a.shape[0], a.shape[1], -1), b.reshape(b.shape[0], b.shape[1], -1)
    j = "i" if pairs else "j"
    q = "q" if outputs == "full" else "o"
    out = {"trace": "i" + j, "full": f"i{j}oq", "diagonal": f"i{j}o"}[outputs]
    if pairs:
        out = out[0] + out[2:]
    result = torch.einsum(f"iop,{j}{q}p->{out}", a, b)
    return result / a.shape[1] if outputs == "trace" else result


def output_shape(n1: int, n2: int, n_out: int, outputs: Outputs, pairs: bool) -> tuple:
    lead = (n1,) if pairs else (n1, n2)
    return lead + {"trace": (), "full": (n_out, n_out), "diagonal": (n_out,)}[outputs]


def chunks(n: int, size: int) -> list[slice]:
    return [slice(a, b) for a, b in _blocks(n, max(1, int(size)))]


# --------------------------------------------------------------------------- the implementations
def jacobians(model: nn.Module, params: dict, frozen: dict, x: Tensor) -> dict[str, Tensor]:
    """Per-example Jacobians {name: (N, O, *param.shape)} by vmap over examples of jacrev."""

    def f(p: dict, xi: Tensor) -> Tensor:
        return model_outputs(model, {**p, **frozen}, xi.unsqueeze(0))[0]

    with _math_attention():
        return vmap(jacrev(f), in_dims=(None, 0), randomness="different")(params, x)


def jacobian_block(model, params, frozen, x1, x2, outputs, pairs) -> Tensor:
    j1 = jacobians(model, params, frozen, x1)
    j2 = j1 if x2 is None else jacobians(model, params, frozen, x2)
    return sum(contract(j1[k], j2[k], outputs, pairs) for k in params)


def ntk_vector_block(model, params, frozen, x1, x2, outputs, pairs, batch: int) -> Tensor:
    """Theta columns J1 (J2^T e) for basis cotangents e, ``batch`` of them at a time."""
    x2 = x1 if x2 is None else x2

    def f1(p):
        return model_outputs(model, {**p, **frozen}, x1)

    f2_out, vjp2 = vjp(lambda p: model_outputs(model, {**p, **frozen}, x2), params)
    n1, n2, n_out = len(x1), len(x2), f2_out.shape[1]
    basis = torch.eye(n2 * n_out, dtype=f2_out.dtype, device=f2_out.device)

    def column(cot: Tensor) -> Tensor:
        (tangent,) = vjp2(cot.reshape(n2, n_out))
        try:
            return jvp(f1, (params,), (tangent,))[1]
        except NotImplementedError:
            # No forward-mode rule for some op: J t is the VJP of the linear map u -> J^T u.
            _, vjp1 = vjp(f1, params)
            zeros = torch.zeros(n1, n_out, dtype=cot.dtype, device=cot.device)
            return vjp(vjp1, zeros)[1]((tangent,))[0]

    with _math_attention():  # fused attention kernels lack the higher derivatives needed here
        cols = torch.cat([vmap(column)(basis[s]) for s in chunks(n2 * n_out, batch)])
    theta = cols.reshape(n2, n_out, n1, n_out).permute(2, 0, 3, 1)  # (i, j, o, q)
    if pairs:
        theta = theta.diagonal(dim1=0, dim2=1).movedim(-1, 0)
    if outputs == "full":
        return theta
    diag = theta.diagonal(dim1=-2, dim2=-1)
    return diag.mean(-1) if outputs == "trace" else diag


def _math_attention():
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


# ---------------------------------------------------------------------------------- public API
def empirical_ntk(
    model: nn.Module,
    x1,
    x2=None,
    *,
    outputs: Outputs = "trace",
    diagonal: bool = False,
    implementation: str = "auto",
    params: ParamSelection = None,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool | None = None,
) -> Tensor:
    r"""Empirical NTK of ``model`` between the batches ``x1`` and ``x2`` (``x1`` if None).

    Theta(x, x')_{o o'} = sum_p df_o(x)/dp df_o'(x')/dp over the selected parameters ``params``
    (names, submodules, a predicate, or None for all trainable ones).  ``outputs="trace"``
    returns (1/O) sum_o Theta_oo, shape (N1, N2); ``"full"`` (N1, N2, O, O); ``"diagonal"``
    (N1, N2, O).  ``diagonal=True`` (with x2=None) keeps only the pairs (x_i, x_i), dropping the
    N2 axis.  ``implementation`` is "auto", "jacobian", "ntk_vector" or "structured" (see the
    module docstring); all give the same numbers.  Work is chunked over examples so that it
    stays within ``memory_budget`` bytes (default: a quarter of the free memory), or
    ``chunk_size`` examples when given.  The result has the parameters' dtype and device.
    """
    from .structured import StructuredNTK

    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if outputs not in ("trace", "full", "diagonal"):
        raise ValueError(f"outputs must be 'trace', 'full' or 'diagonal', got {outputs!r}")
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True pairs each example with itself: leave x2=None")
    check_model(model)
    chosen = select_parameters(model, params)
    x1, x2 = check_inputs(model, x1, x2)
    params_d = {k: v.detach() for k, v in chosen.items()}
    frozen = {k: v.detach() for k, v in model.named_parameters() if k not in chosen}
    frozen.update(dict(model.named_buffers()))
    with torch.no_grad():
        probe = model_outputs(model, {**params_d, **frozen}, x1[:1])
    n_out = probe.shape[1]
    itemsize = probe.element_size()
    n_params = sum(p.numel() for p in chosen.values())
    budget = memory_budget or available_memory(x1.device) // 4

    structured = None
    one_jacobian = 3 * n_out * n_params * itemsize  # one example's Jacobian, with temporaries
    if implementation in ("auto", "structured"):
        structured = StructuredNTK(model, chosen, frozen, x1[:1], n_out, budget // 2)
    if implementation == "auto":
        if structured.covered_parameters() >= n_params / 2:
            implementation = "structured"
        else:
            implementation = "jacobian" if one_jacobian <= budget else "ntk_vector"
    elif implementation == "jacobian" and one_jacobian > budget and chunk_size is None:
        raise MemoryError(
            f"one example's Jacobian ({n_out} outputs x {n_params} parameters) needs "
            f"{one_jacobian / 2**30:.1f} GiB, over the budget of {budget / 2**30:.1f} GiB; use "
            "implementation='ntk_vector' or 'structured', or a larger memory_budget"
        )

    n_max = min(len(x1), len(x1) if x2 is None else len(x2))
    if chunk_size is not None:
        size = chunk_size
    elif implementation == "structured":  # half the budget for cached factors, half for work
        size = structured.chunk_size(n_max, outputs, budget // 2)
    else:
        per_example = one_jacobian if implementation == "jacobian" else one_jacobian // 48
        size = max(1, min(n_max, int(budget // per_example)))

    def block(a: Tensor, b: Tensor | None, pairs: bool) -> Tensor:
        if implementation == "structured":
            return structured.block(a, b, outputs, pairs)
        if implementation == "jacobian":
            return jacobian_block(model, params_d, frozen, a, b, outputs, pairs)
        vectors = max(1, int(budget // (2 * n_params * itemsize)))
        return ntk_vector_block(model, params_d, frozen, a, b, outputs, pairs, vectors)

    return assemble(block, x1, x2, size, n_out, outputs, diagonal, progress)


def assemble(block, x1, x2, size, n_out, outputs, diagonal, progress) -> Tensor:
    """Fill the result chunk pair by chunk pair; for x2=None only upper chunks, mirrored."""
    from tqdm.auto import tqdm

    rows = chunks(len(x1), size)
    if diagonal:
        pieces = [block(x1[r], None, True) for r in tqdm(rows, disable=not progress, leave=False)]
        return torch.cat(pieces)
    symmetric = x2 is None
    cols = rows if symmetric else chunks(len(x2), size)
    pairs = [
        (r, c) for a, r in enumerate(rows) for b, c in enumerate(cols) if not symmetric or b >= a
    ]
    result = None
    show = progress if progress is not None else len(pairs) >= 16
    for r, c in tqdm(pairs, desc="empirical kernel", disable=not show, leave=False):
        same = symmetric and r == c
        piece = block(x1[r], None if same else (x1 if symmetric else x2)[c], False)
        if result is None:
            n2 = len(x1) if symmetric else len(x2)
            shape = output_shape(len(x1), n2, n_out, outputs, False)
            result = piece.new_empty(shape)
        result[r, c] = piece
        if symmetric and not same:
            result[c, r] = (
                piece.transpose(0, 1).transpose(2, 3)
                if outputs == "full"
                else (piece.transpose(0, 1))
            )
    return result


def readout_features(model: nn.Module, x: Tensor, readout: nn.Module | None) -> Tensor:
    """The inputs of ``readout`` (default: the last Linear, Conv or widelimits Dense layer
    called), (N, F)."""
    from ..layers.dense import DenseModule

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, DenseModule)
    seen: list[tuple[nn.Module, Tensor]] = []
    targets = (
        [readout] if readout is not None else [m for m in model.modules() if isinstance(m, kinds)]
    )
    if not targets:
        raise ValueError("the model has no Linear or Conv layer; pass readout=<module>")
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0]))) for m in targets]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError("the readout module was never called in the model's forward pass")
    return seen[-1][1].reshape(len(x), -1)


def empirical_nngp(
    model: nn.Module,
    x1,
    x2=None,
    *,
    readout: nn.Module | None = None,
    diagonal: bool = False,
) -> Tensor:
    r"""Gram matrix of the readout's input features, K(x, x') = phi(x) . phi(x') / F.

    phi are the F inputs of ``readout`` (default: the last Linear or Conv layer the forward pass
    calls), flattened per example.  For a readout f = W_std W phi / sqrt(F) + b_std b with
    standard normal W, b, the output covariance over the readout's draw is
    W_std^2 K + b_std^2: this is one sample of the NNGP of the layers below the readout.
    """
    check_model(model)
    x1, x2 = check_inputs(model, x1, x2)
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True pairs each example with itself: leave x2=None")
    f1 = readout_features(model, x1, readout)
    if diagonal:
        return (f1 * f1).sum(1) / f1.shape[1]
    f2 = f1 if x2 is None else readout_features(model, x2, readout)
    return f1 @ f2.T / f1.shape[1]


@dataclass(frozen=True)
class EmpiricalKernel:
    """The empirical NNGP (readout features' Gram) and NTK of one finite network."""

    nngp: Tensor | None
    ntk: Tensor | None


def empirical_kernel(
    model: nn.Module, x1, x2=None, *, get: tuple[str, ...] = ("nngp", "ntk"), **kwargs
) -> EmpiricalKernel:
    """Both empirical kernels; ``kwargs`` go to `empirical_ntk` (``readout`` to the NNGP)."""
    get = (get,) if isinstance(get, str) else tuple(get)
    if not set(get) <= {"nngp", "ntk"} or not get:
        raise ValueError(f"get must name 'nngp' and/or 'ntk', got {get}")
    readout = kwargs.pop("readout", None)
    nngp = ntk = None
    if "nngp" in get:
        nngp = empirical_nngp(
            model, x1, x2, readout=readout, diagonal=kwargs.get("diagonal", False)
        )
    if "ntk" in get:
        ntk = empirical_ntk(model, x1, x2, **kwargs)
    return EmpiricalKernel(nngp=nngp, ntk=ntk)
