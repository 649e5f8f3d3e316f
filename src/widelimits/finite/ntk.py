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

``implementation="auto"`` (`choose_implementation`) takes the structured path when most of the
selected parameters sit in layers where factoring gains: Linear layers on the Gram route and
convolutions.  Otherwise (Linear layers over many tokens, as in a transformer, whose
per-example weight gradients the structured path forms too) the Jacobian one while a single
example's Jacobian fits the memory budget, else the structured one if it covers most
parameters, else NTK-vector products.  Examples must not interact and outputs must be
deterministic: what can be detected is refused the same way for every implementation (see
`widelimits.finite.checks`).  The caller's model is never called itself, nor modified: every
forward pass runs on a copy of its module tree sharing its tensors, with substituted values
(`widelimits.finite._functional`), so other threads may use the model meanwhile (a model
that cannot be copied is called in place, one call at a time).

On the CPU the result is computed in blocks (chunk pairs, or chunks with ``diagonal``) spread
over ``threads`` Python threads, each block on one torch thread (`widelimits._threads`): on a
busy machine torch's own threads, waiting for each other at the end of every small operation,
made two threads up to 2.7x slower than one.  What depends on one chunk alone (factors,
Jacobians) is computed once per chunk and kept while it fits half the memory budget
(`widelimits.finite._cache`), so the chunks can be small enough to give every thread work.
The blocks depend on the memory budget and the machine's core count, never on ``threads``,
so the result is the same bit for bit whatever the number of threads.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import jacrev, jvp, vjp, vmap

from .._compute import _blocks, available_memory
from .._threads import ONE_TORCH_THREAD, SharedSetting, check_threads, run_parallel
from ._cache import ChunkCache
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


def jacobian_block(
    fm, params, frozen, x1, x2, outputs, pairs, stochastic=False, cache=None
) -> Tensor:
    """J1 J2^T, the per-example Jacobians from ``cache`` (a `ChunkCache`) when given."""
    jac = cache or (lambda x: jacobians(fm, params, frozen, x, stochastic))
    j1 = jac(x1)
    j2 = j1 if x2 is None else jac(x2)
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


def choose_implementation(gainful: int, covered: int, n_params: int, jacobian_fits: bool) -> str:
    """The rule of ``implementation="auto"``, from the counts of selected parameters that the
    structured method handles (``covered``) and handles with a gain (``gainful``, see
    `StructuredNTK.gainful_parameters`).

    Structured when the gainful ones are at least half; otherwise the Jacobian method when one
    example's Jacobian fits the memory budget (for Linear layers over many positions, as in a
    transformer, the structured method forms the same per-example weight gradients as the
    Jacobian method and pays a factor pass on top: 1.3x to 1.5x slower measured on a 2-block
    encoder); else structured when it covers half of them; else NTK-vector products.
    """
    if gainful >= n_params / 2:
        return "structured"
    if jacobian_fits:
        return "jacobian"
    return "structured" if covered >= n_params / 2 else "ntk_vector"


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
    threads: int | None = None,
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
    ``threads``: how many blocks are computed at once on the CPU, each on one torch thread
    (default: ``torch.get_num_threads()``; fewer when the memory budget holds fewer blocks'
    working memory, one for ``ntk_vector``, whose forward-mode derivatives are not
    thread-safe in torch).  The result does not depend on it.

    The model and the inputs are left exactly as they were (parameters, ``requires_grad``,
    ``.grad``, buffers, mode, hooks; each forward pass gets a copy of its input batch).  Its
    outputs must be per-example and deterministic (`widelimits.finite.checks`); a model that
    draws random numbers (Dropout in training mode) is refused unless ``stochastic=True``:
    then each example draws its own randomness, used on both sides of its kernel entries, and
    the result is one random sample (Jacobian implementation; the diagonal x_i, x_i uses one
    draw, other pairs independent draws).
    """
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
    threads = check_threads(threads)
    check_model(model, stochastic)
    chosen = select_parameters(model, params)
    x1, x2 = check_inputs(model, x1, x2)
    options = dict(
        outputs=outputs, diagonal=diagonal, implementation=implementation,
        chunk_size=chunk_size, memory_budget=memory_budget, progress=progress,
        stochastic=stochastic,
    )  # fmt: skip
    # The attention kernels without higher derivatives are switched off, and on the CPU the
    # checks and probes before the blocks (small operations) run on one torch thread too.
    with _MATH_ATTENTION.held():
        if x1.device.type != "cpu":  # the device parallelises inside each (large) block
            return _empirical_ntk(model, x1, x2, chosen, 1, **options)
        with ONE_TORCH_THREAD.held():
            return _empirical_ntk(model, x1, x2, chosen, threads, **options)


def _apply_math_attention() -> Callable[[], None]:
    context = _math_attention()
    context.__enter__()
    return lambda: context.__exit__(None, None, None)


_MATH_ATTENTION = SharedSetting(_apply_math_attention)


def _empirical_ntk(
    model, x1, x2, chosen, threads, *, outputs, diagonal, implementation, chunk_size,
    memory_budget, progress, stochastic,
) -> Tensor:  # fmt: skip
    from .structured import StructuredNTK

    fm = FunctionalModel(model, copies=True)
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
        structured = StructuredNTK(model, chosen, frozen, x1[:1], n_out, budget // 2, fm)
    if implementation == "auto":
        n_rule = min(len(x1), len(x1) if x2 is None else len(x2))
        implementation = choose_implementation(
            structured.gainful_parameters(n_rule, outputs), structured.covered_parameters(),
            n_params, one_jacobian <= budget,
        )  # fmt: skip
    elif implementation == "jacobian" and one_jacobian > budget and chunk_size is None:
        raise MemoryError(
            f"one example's Jacobian ({n_out} outputs x {n_params} parameters) needs "
            f"{one_jacobian / 2**30:.1f} GiB, over the budget of {budget / 2**30:.1f} GiB; use "
            "implementation='ntk_vector' or 'structured', or a larger memory_budget"
        )

    # Blocks never depend on the thread count (nor, then, the result's rounding): their size
    # comes from the memory budget and the machine's core count; the number of threads is
    # capped by how many blocks' working memory the budget holds at once.
    n1, n2 = len(x1), len(x1) if x2 is None else len(x2)
    rows_of = None if diagonal else n2
    on_cpu = x1.device.type == "cpu"  # a GPU parallelises inside each block: large ones
    cache, vectors = None, 1
    if implementation == "structured":  # half the budget for cached factors, half for work
        size = chunk_size or structured.chunk_size(min(n1, n2), outputs, budget // 2)
        # Factors are computed once per chunk, so smaller pieces cost little more, unless a
        # layer forms per-example weight gradients (those are formed again for every block).
        if chunk_size is None and on_cpu and not structured.forms_weight_gradients(size, outputs):
            size = piece_size(n1, rows_of, x2 is None, size)
        workers = (budget // 2) // max(1, structured.block_bytes(size, outputs))
    elif implementation == "jacobian":
        size = chunk_size or max(1, min(n1, n2, int(budget // one_jacobian)))
        every_jacobian = (n1 + (0 if x2 is None else n2)) * one_jacobian // 3
        if not stochastic and every_jacobian <= budget // 2:
            # Every chunk's Jacobians fit half the budget: each computed once, so the pieces
            # can be small (with stochastic each chunk draws anew for each block instead).
            cache = ChunkCache(lambda x: jacobians(fm, params_d, frozen, x), budget // 2)
            if chunk_size is None:
                size = max(1, min(size, int(budget // 2 // one_jacobian)))
                if on_cpu:
                    size = piece_size(n1, rows_of, x2 is None, size)
        workers = (budget - (budget // 2 if cache else 0)) // (2 * size * one_jacobian)
        if stochastic:  # the random draws, from one generator, in a reproducible order
            workers = 1
    else:
        size = chunk_size or max(1, min(n1, n2, int(budget // (one_jacobian // 48))))
        vectors = max(1, min(size * n_out, int(budget // (2 * n_params * itemsize))))
        # torch's forward-mode autodiff (jvp) keeps its dual level in a process-wide
        # variable: two threads in jvp at once break each other's, so one thread.
        workers = 1
    threads = max(1, min(threads, int(workers)))

    def block(a: Tensor, b: Tensor | None, pairs: bool) -> Tensor:
        if implementation == "structured":
            return structured.block(a, b, outputs, pairs)
        if implementation == "jacobian":
            return jacobian_block(fm, params_d, frozen, a, b, outputs, pairs, stochastic, cache)
        return ntk_vector_block(fm, params_d, frozen, a, b, outputs, pairs, vectors)

    prepare = cache  # each chunk's quantities as pieces of their own, where all are kept
    if implementation == "structured":
        every = (n1 + (0 if x2 is None else n2)) * structured.chunk_bytes_per_example()
        prepare = structured.prepare if every <= budget // 2 else None
    return assemble(block, x1, x2, size, n_out, outputs, diagonal, progress, threads, prepare)


# Below this, fixed costs (a forward pass per chunk, starting threads) outweigh what another
# thread gains: 100 inputs of a 3072-512-512-1 MLP (18 ms) took 1.1x longer in 6 pieces of 34
# on 2 threads than on one.
MIN_PIECE_ROWS = 64


def pieces_wanted() -> int:
    """Four pieces per core (up to 8 cores), so that threads finishing at different times
    balance out; from the machine, not the thread count, so that results do not depend on it."""
    return 4 * min(os.cpu_count() or 1, 8)


def count_pieces(n1: int, n2: int | None, symmetric: bool, size: int) -> int:
    """Blocks of ``size`` examples: row blocks (``n2=None``), upper chunk pairs or all pairs."""
    rows = math.ceil(n1 / size)
    if n2 is None:
        return rows
    return rows * (rows + 1) // 2 if symmetric else rows * math.ceil(n2 / size)


def piece_size(n1: int, n2: int | None, symmetric: bool, size: int) -> int:
    """``size`` reduced until there are `pieces_wanted` pieces, but not below
    `MIN_PIECE_ROWS` examples (nor below ``size``'s own minimum of one), then evened out over
    the chunks of ``n1``."""
    target, most = pieces_wanted(), size
    while size > MIN_PIECE_ROWS and count_pieces(n1, n2, symmetric, size) < target:
        size = max(MIN_PIECE_ROWS, size - max(1, size // 8))
    even = math.ceil(n1 / math.ceil(n1 / size))  # as many chunks, of even sizes
    if even < MIN_PIECE_ROWS <= size:  # one chunk fewer, within the memory-derived size
        even = min(most, math.ceil(n1 / max(1, n1 // size)))
    return even


def assemble(
    block, x1, x2, size, n_out, outputs, diagonal, progress, threads=1, prepare=None
) -> Tensor:
    """Fill the result block by block, the blocks spread over ``threads`` threads, each on one
    torch thread (`widelimits._threads.run_parallel`).

    Blocks are chunk pairs (for x2=None only the upper ones, mirrored) or, with ``diagonal``,
    chunks; each writes its own part of the result, so neither the order in which they finish
    nor the number of threads changes a value.  ``prepare(chunk)``, when given, computes and
    caches what a block needs from one chunk alone: each chunk's is a piece of its own, run
    before the blocks, so that the threads share those too in even pieces.  Blocks pairing a
    chunk with itself come first.
    """
    from .._progress import progress_bar

    rows = chunks(len(x1), size)
    symmetric = x2 is None
    if diagonal:
        pieces = [(r, None) for r in rows]
        shape_n = (len(x1), len(x1), True)
    else:
        cols = rows if symmetric else chunks(len(x2), size)
        pieces = [
            (r, c) for a, r in enumerate(rows) for b, c in enumerate(cols)
            if not symmetric or b >= a
        ]  # fmt: skip
        pieces.sort(key=lambda rc: rc[0].start != rc[1].start)  # stable: same chunk first
        shape_n = (len(x1), len(x1) if symmetric else len(x2), False)
    preps = []
    if prepare is not None and not diagonal and len(pieces) > 1:
        preps = [x1[r] for r in rows] + ([] if symmetric else [x2[c] for c in cols])
    result: list[Tensor] = []
    lock = threading.Lock()  # allocation, and writes (autograd may record them)

    def work(k: int) -> None:
        if k < len(preps):
            prepare(preps[k])
            return
        r, c = pieces[k - len(preps)]
        if diagonal:
            piece = block(x1[r], None, True)
        else:
            same = symmetric and r == c
            piece = block(x1[r], None if same else (x1 if symmetric else x2)[c], False)
        with lock:
            if not result:
                shape = output_shape(*shape_n[:2], n_out, outputs, shape_n[2])
                result.append(piece.new_full(shape, float("nan")))  # a missed block shows
            out = result[0]
            if diagonal:
                out[r] = piece
                return
            out[r, c] = piece
            if symmetric and r != c:
                out[c, r] = piece.transpose(0, 1).transpose(2, 3) if outputs == "full" else (
                    piece.transpose(0, 1)
                )  # fmt: skip

    count = len(preps) + len(pieces)
    with progress_bar(total=count, progress=progress, default=len(pieces) >= 16,
                      leave=False, desc="empirical kernel") as bar:  # fmt: skip
        run_parallel(work, count, threads, done=bar.update)
    return result[0]


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
    if not any(m is readout for m in model.modules()) and readout is not None:
        raise ValueError(
            f"readout: the module {type(readout).__name__} is not part of the model; pass one "
            "of its submodules (e.g. model.fc)"
        )

    def record(m: nn.Module, inputs: tuple, out) -> None:
        seen.append((m, inputs[0]))

    with fm.borrow() as lent:  # hooks on a module tree this call alone uses
        hooks = [lent.of(m).register_forward_hook(record) for m in targets]
        try:
            with torch.no_grad():
                fm.call(lent.module, state, x)
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
    fm = FunctionalModel(model, copies=True)
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
