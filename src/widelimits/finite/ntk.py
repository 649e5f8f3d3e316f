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
budget, else NTK-vector products.  Examples must not interact and outputs must be
deterministic: what can be detected is refused the same way for every implementation (see
`widelimits.finite.checks`).  The caller's model is called with substituted values
(`widelimits.finite._functional`), never modified.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import jacrev, jvp, vjp, vmap

from .._compute import _blocks, available_memory
from ._functional import FunctionalModel, detached_values
from .checks import (
    IMPLEMENTATIONS,
    ParamSelection,
    check_embedding_indices,
    check_inputs,
    check_model,
    check_options,
    model_outputs,
    probe,
    select_parameters,
)

__all__ = ["empirical_ntk", "empirical_nngp", "empirical_kernel", "EmpiricalKernel"]

Outputs = Literal["trace", "full", "diagonal"]


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
def jacobians(
    fm: FunctionalModel, params: dict, frozen: dict, x: Tensor, stochastic: bool = False
) -> dict[str, Tensor]:
    """Per-example Jacobians {name: (N, O, *param.shape)} by vmap over examples of jacrev.
    With ``stochastic`` each example draws its own random numbers (one dropout mask each)."""

    def f(p: dict, xi: Tensor) -> Tensor:
        return model_outputs(fm, {**p, **frozen}, xi.unsqueeze(0))[0]

    randomness = "different" if stochastic else "error"
    with _math_attention():
        return vmap(jacrev(f), in_dims=(None, 0), randomness=randomness)(params, x)


def jacobian_block(fm, params, frozen, x1, x2, outputs, pairs, stochastic=False) -> Tensor:
    j1 = jacobians(fm, params, frozen, x1, stochastic)
    j2 = j1 if x2 is None else jacobians(fm, params, frozen, x2, stochastic)
    return sum(contract(j1[k], j2[k], outputs, pairs) for k in params)


def ntk_vector_block(fm, params, frozen, x1, x2, outputs, pairs, batch: int) -> Tensor:
    """Theta columns J1 (J2^T e) for basis cotangents e, ``batch`` of them at a time."""
    x2 = x1 if x2 is None else x2

    def f1(p):
        return model_outputs(fm, {**p, **frozen}, x1)

    f2_out, vjp2 = vjp(lambda p: model_outputs(fm, {**p, **frozen}, x2), params)
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
    stochastic: bool = False,
) -> Tensor:
    r"""Empirical NTK of ``model`` between the batches ``x1`` and ``x2`` (``x1`` if None).

    :math:`\Theta(x, x')_{o o'} = \sum_p \frac{\partial f_o(x)}{\partial p}
    \frac{\partial f_{o'}(x')}{\partial p}` over the selected parameters ``params``
    (a submodule such as ``model.fc``, a parameter or submodule name such as ``"fc"``, a
    parameter, a list of those, a predicate ``(name, p) -> bool``, or None for all trainable
    ones).  ``outputs="trace"``
    returns :math:`\frac1O \sum_o \Theta_{oo}`, shape (N1, N2); ``"full"`` (N1, N2, O, O);
    ``"diagonal"`` (N1, N2, O).  ``diagonal=True`` (with x2=None) keeps only the pairs
    :math:`(x_i, x_i)`, dropping the
    N2 axis.  ``implementation`` is "auto", "jacobian", "ntk_vector" or "structured" (see the
    module docstring); all give the same numbers.  Work is chunked over examples so that it
    stays within ``memory_budget`` bytes (default: a quarter of the free memory), or
    ``chunk_size`` examples when given.  The result has the parameters' dtype and device.
    ``progress``: a bar on stderr (None: for 16 chunk pairs or more, when stderr is a terminal).

    The model and the inputs are left exactly as they were (parameters, ``requires_grad``,
    ``.grad``, buffers, mode, hooks; each forward pass gets a copy of its input batch).  Its
    outputs must be per-example and deterministic (`widelimits.finite.checks`); a model that
    draws random numbers (Dropout in training mode) is refused unless ``stochastic=True``:
    then each example draws its own randomness, used on both sides of its kernel entries, and
    the result is one random sample (Jacobian implementation; the diagonal x_i, x_i uses one
    draw, other pairs independent draws).
    """
    from .structured import StructuredNTK

    if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if not isinstance(outputs, str) or outputs not in ("trace", "full", "diagonal"):
        raise ValueError(f"outputs must be 'trace', 'full' or 'diagonal', got {outputs!r}")
    check_options(
        chunk_size=chunk_size, memory_budget=memory_budget, diagonal=diagonal,
        progress=progress, stochastic=stochastic,
    )  # fmt: skip
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True pairs each example with itself: leave x2=None")
    if stochastic and implementation not in ("auto", "jacobian"):
        raise ValueError(
            "stochastic=True needs one forward pass per example shared by both sides of each "
            f"kernel entry, which only implementation='jacobian' does; got {implementation!r}"
        )
    check_model(model, stochastic)
    chosen = select_parameters(model, params)
    x1, x2 = check_inputs(model, x1, x2)
    fm = FunctionalModel(model)
    params_d, frozen = detached_values(model, chosen)
    state = {**params_d, **frozen}
    check_embedding_indices(fm, state, {"x1": x1} if x2 is None else {"x1": x1, "x2": x2})
    first = probe(fm, state, x1, x2, stochastic)
    if stochastic:
        implementation = "jacobian"
    n_out = first.shape[1]
    itemsize = first.element_size()
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
            return jacobian_block(fm, params_d, frozen, a, b, outputs, pairs, stochastic)
        vectors = max(1, int(budget // (2 * n_params * itemsize)))
        return ntk_vector_block(fm, params_d, frozen, a, b, outputs, pairs, vectors)

    return assemble(block, x1, x2, size, n_out, outputs, diagonal, progress)


def assemble(block, x1, x2, size, n_out, outputs, diagonal, progress) -> Tensor:
    """Fill the result chunk pair by chunk pair; for x2=None only upper chunks, mirrored."""
    from .._progress import progress_bar

    rows = chunks(len(x1), size)
    if diagonal:
        bar = progress_bar(rows, progress=progress, default=len(rows) >= 16, leave=False,
                           desc="empirical kernel")  # fmt: skip
        return torch.cat([block(x1[r], None, True) for r in bar])
    symmetric = x2 is None
    cols = rows if symmetric else chunks(len(x2), size)
    pairs = [
        (r, c) for a, r in enumerate(rows) for b, c in enumerate(cols) if not symmetric or b >= a
    ]
    result = None
    bar = progress_bar(pairs, progress=progress, default=len(pairs) >= 16, leave=False,
                       desc="empirical kernel")  # fmt: skip
    for r, c in bar:
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


def readout_features(
    fm: FunctionalModel, state: dict, x: Tensor, readout: nn.Module | None
) -> Tensor:
    """The inputs of ``readout`` (default: the last Linear, Conv or widelimits Dense layer
    called), (N, F)."""
    from ..layers.dense import DenseModule

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, DenseModule)
    seen: list[tuple[nn.Module, Tensor]] = []
    model = fm.model
    if readout is not None and not isinstance(readout, nn.Module):
        raise TypeError(f"readout must be a submodule of the model, got {type(readout).__name__}")
    targets = (
        [readout] if readout is not None else [m for m in model.modules() if isinstance(m, kinds)]
    )
    if not targets:
        raise ValueError("the model has no Linear or Conv layer; pass readout=<module>")

    def record(m: nn.Module, inputs: tuple, out) -> None:
        seen.append((m, inputs[0]))

    hooks = [m.register_forward_hook(record) for m in targets]
    try:
        with torch.no_grad():
            fm(state, x)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError("readout: the module was never called in the model's forward pass")
    return seen[-1][1].reshape(len(x), -1)


def empirical_nngp(
    model: nn.Module,
    x1,
    x2=None,
    *,
    readout: nn.Module | None = None,
    diagonal: bool = False,
) -> Tensor:
    r"""Gram matrix of the readout's input features, :math:`K(x, x') = \phi(x) \cdot \phi(x') / F`.

    :math:`\phi` are the F inputs of ``readout`` (default: the last Linear or Conv layer the
    forward pass calls), flattened per example.  For a readout
    :math:`f = \sigma_w W \phi / \sqrt F + \sigma_b b` with standard normal W, b, the output
    covariance over the readout's draw is :math:`\sigma_w^2 K + \sigma_b^2`: this is one sample of
    the NNGP of the layers below the readout.
    The model and inputs are checked and left as they are, as in `empirical_ntk`.
    """
    check_options(diagonal=diagonal)
    check_model(model)
    x1, x2 = check_inputs(model, x1, x2)
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True pairs each example with itself: leave x2=None")
    fm = FunctionalModel(model)
    params, frozen = detached_values(model, dict(model.named_parameters()))
    state = {**params, **frozen}
    check_embedding_indices(fm, state, {"x1": x1} if x2 is None else {"x1": x1, "x2": x2})
    probe(fm, state, x1, x2, stochastic=False)
    f1 = readout_features(fm, state, x1, readout)
    if diagonal:
        return (f1 * f1).sum(1) / f1.shape[1]
    f2 = f1 if x2 is None else readout_features(fm, state, x2, readout)
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
