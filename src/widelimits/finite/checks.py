r"""Checks shared by the finite-width tools: the model, its parameters, the inputs, the options.

A per-example NTK :math:`\Theta(x_i, x_j) = J(x_i) J(x_j)^\top` needs :math:`f(x_i)` to be a
function of :math:`x_i` alone: deterministic, and not mixing examples of a batch. Where that fails
the three NTK implementations see different functions (one Jacobian per example, one batched VJP,
one batched forward pass) and return different numbers. What can be detected is refused:

- by type, modules that mix or randomize in training mode: BatchNorm (batch statistics) and
  Dropout with p > 0 (a random mask per call).  InstanceNorm, LayerNorm and GroupNorm
  normalize within one example and are fine;
- by a probe of four forward passes on at most two examples (negligible next to the NTK
  itself): f(x_a) twice must agree (else the model draws random numbers), and f([x_a, x_b])
  must agree with f(x_a), f(x_b) row by row (else the output of one example depends on
  another, e.g. ``y - y.mean(0)``).  Agreement is to 2e-13 (float64) or 2e-3 (float32)
  relative to the output scale (batched and single kernels may round differently, and GPU
  convolutions may use TF32), so a tiny coupling can pass.

Dropout in training mode can be accepted on purpose with ``stochastic=True`` (one random
sample of the kernel, each example with its own mask; the Monte Carlo tools do this for
described networks, whose analytic Dropout kernel assumes exactly that).

The first forward pass is watched: a shape error deep inside the model (the wrong number of
features, an embedding index out of range) is re-raised as a ``ValueError`` that names the
argument, the failing layer and the shapes, with torch's error as its ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ._functional import FunctionalModel

ParamSelection = (
    str | nn.Module | Tensor | Iterable[str | nn.Module | Tensor]
    | Callable[[str, Tensor], bool] | None
)
IMPLEMENTATIONS = ("auto", "jacobian", "ntk_vector", "structured")

__all__ = [
    "IMPLEMENTATIONS",
    "ParamSelection",
    "check_embedding_indices",
    "check_inputs",
    "check_model",
    "check_options",
    "model_outputs",
    "probe",
    "select_parameters",
]


# ------------------------------------------------------------------------------- parameters
def select_parameters(model: nn.Module, params: ParamSelection) -> dict[str, nn.Parameter]:
    """Resolve ``params`` to {name: parameter}, each distinct parameter once, in model order.

    None: every parameter with ``requires_grad``.  A callable ``(name, parameter) -> bool``
    (other than a module): those it accepts.  Otherwise one item or a list of items, each a
    submodule (all its parameters, e.g. ``model.fc``), a name (of a parameter, ``"fc.weight"``,
    or of a submodule, ``"fc"``), or a parameter itself.  The selected parameters must be
    initialized and share one floating dtype and one device.
    """
    named = dict(model.named_parameters())  # distinct tensors, as autograd counts them
    if any(isinstance(v, nn.parameter.UninitializedParameter) for v in named.values()):
        raise ValueError(
            "the model has lazy layers whose parameters are not initialized yet; call the "
            "model once on a batch of inputs first"
        )
    if params is None:
        chosen = {k: v for k, v in named.items() if v.requires_grad}
    elif callable(params) and not isinstance(params, nn.Module):
        chosen = {k: v for k, v in named.items() if params(k, v)}
    else:
        ids = _selected_ids(model, params)
        chosen = {k: v for k, v in named.items() if id(v) in ids}
    if not chosen:
        raise ValueError(
            "the model has no trainable parameters (or none were selected by params), so its "
            "NTK is undefined"
        )
    kinds = {(p.dtype, p.device) for p in chosen.values()}
    if len(kinds) > 1 or not next(iter(chosen.values())).is_floating_point():
        found = sorted(f"{d} on {dev}" for d, dev in kinds)
        raise ValueError(
            f"the model's parameters must share one floating dtype and one device, found "
            f"{found}; convert the model first, e.g. model.to(device, torch.float64)"
        )
    return chosen


def _selected_ids(model: nn.Module, params) -> set[int]:
    """The ids of the parameters named by ``params``: a module, a name, a parameter, or a list
    of those (see `select_parameters`)."""
    if isinstance(params, (str, nn.Module, Tensor)):
        items = [params]
    else:
        try:
            items = list(params)
        except TypeError:
            raise TypeError(
                "params must be a submodule, a parameter or submodule name, a parameter, a list "
                f"of those, or a callable (name, parameter) -> bool; got {type(params).__name__}"
            ) from None
    aliases = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules(remove_duplicate=False))
    owned = {id(v) for v in aliases.values()}
    ids: set[int] = set()
    unknown = []
    for item in items:
        if isinstance(item, str):
            if item in aliases:
                ids.add(id(aliases[item]))
            elif item in modules:
                ids.update(id(p) for p in modules[item].parameters())
            else:
                unknown.append(item)
        elif isinstance(item, nn.Module):
            found = {id(p) for p in item.parameters()}
            if not found <= owned:
                raise ValueError(
                    f"params: the module {type(item).__name__} is not part of the model; pass "
                    "one of its submodules (e.g. model.fc) or their names"
                )
            ids.update(found)
        elif isinstance(item, Tensor):
            if id(item) not in owned:
                raise ValueError(
                    f"params: a tensor of shape {tuple(item.shape)} is not a parameter of the "
                    "model; pass model parameters, submodules or their names"
                )
            ids.add(id(item))
        else:
            raise TypeError(
                "params must be submodules, parameter or submodule names, or parameters; got "
                f"an item of type {type(item).__name__}"
            )
    if unknown:
        names = list(dict.fromkeys([*aliases, *(m for m in modules if m)]))
        raise ValueError(
            f"params: unknown parameter or submodule name(s) {unknown}; the model has "
            f"{names[:8]}{' ...' if names[8:] else ''}"
        )
    return ids


# ------------------------------------------------------------------------------------ model
def check_model(model: nn.Module, stochastic: bool = False) -> None:
    """Refuse, by module type, models whose examples interact or whose outputs are random."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        name = f"layer {name!r}" if name else "the model itself"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise ValueError(
                f"model: {name} is a BatchNorm layer in training mode, which couples the "
                "examples of a batch (batch statistics), so a per-example NTK is undefined; "
                "call model.eval() first"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            if not stochastic:
                raise ValueError(
                    f"model: {name} is Dropout in training mode, which draws a new random "
                    "mask on every call, so the NTK would change from call to call; call "
                    "model.eval(), or pass stochastic=True for one random sample in which each "
                    "example draws its own mask"
                )
        if isinstance(m, nn.Embedding) and m.max_norm is not None:
            raise ValueError(
                f"model: {name} is an Embedding with max_norm, which rescales its weight in "
                "place during the forward pass; remove max_norm (renormalize the weight once "
                "beforehand)"
            )


def check_options(
    *, chunk_size=None, memory_budget=None, diagonal=False, progress=None, stochastic=False
) -> None:
    """Type and range checks of the tuning options of `empirical_ntk`."""
    for name, value in (("chunk_size", chunk_size), ("memory_budget", memory_budget)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a positive integer, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    for name, value in (("diagonal", diagonal), ("stochastic", stochastic)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")


# ----------------------------------------------------------------------------------- inputs
def check_inputs(model: nn.Module, x1, x2) -> tuple[Tensor, Tensor | None]:
    """Inputs as tensors on the model's device (floating ones in its dtype), with one batch
    axis and matching trailing shape."""
    ref = next(iter(model.parameters()), None)

    def prepare(x, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(
                    f"{name} must be a tensor (or an array of numbers), got {type(x).__name__}"
                ) from err
        if x.layout != torch.strided:
            raise TypeError(f"{name} is a sparse tensor ({x.layout}); pass {name}.to_dense()")
        if x.is_complex():
            raise TypeError(f"{name} has the complex dtype {x.dtype}; pass real inputs")
        if ref is not None:
            x = x.to(device=ref.device)
            if x.is_floating_point():
                x = x.to(ref.dtype)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(
                f"{name} must have a leading batch axis with at least one example, got shape "
                f"{tuple(x.shape)}"
            )
        if x.is_floating_point() and x.numel() and not _all_finite(x):
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


def _all_finite(x: Tensor) -> bool:
    """No NaN or infinity in ``x``: one pass for its extremes (NaN propagates to both), 20x
    faster on one thread than ``isfinite(x).all()``, which writes a mask first."""
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low) & torch.isfinite(high))


# ---------------------------------------------------------------------------------- outputs
def model_outputs(fm: FunctionalModel, values: dict, x: Tensor) -> Tensor:
    """f(x) as (N, O) with the given parameter values, checking what the model returns."""
    return as_outputs(fm(values, x), len(x))


def as_outputs(out, n: int) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the model must return a tensor, got {type(out).__name__}; wrap it so that it "
            "returns the outputs whose NTK you want"
        )
    if not (out.is_floating_point() or out.is_complex()):
        raise TypeError(
            f"the model returned {out.dtype} outputs, which have no derivatives; return the "
            "floating-point outputs (logits) whose NTK you want"
        )
    if out.is_complex():
        raise TypeError(f"the model returned complex outputs ({out.dtype}); return real ones")
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for a batch of {n}: the first axis "
            "of the output must be the batch axis"
        )
    return out.reshape(n, -1)


# ------------------------------------------------------------------------------------ probe
def probe(fm: FunctionalModel, values: dict, x1: Tensor, x2: Tensor | None, stochastic: bool):
    """f(x1[:1]) as (1, O), after checking that outputs are finite, deterministic and
    per-example (see the module docstring; ``stochastic=True`` skips the last two)."""
    with torch.no_grad():
        first = as_outputs(watched_call(fm, values, x1[:1], "x1"), 1)
        other_name, other = ("x2", x2[:1]) if x2 is not None else ("x1", x1[1:2])
        second = None
        if len(other):
            second = as_outputs(watched_call(fm, values, other, other_name), 1)
        for out, name in ((first, "x1"), (second, other_name)):
            if out is not None and not bool(torch.isfinite(out).all()):
                raise ValueError(
                    f"the model returned NaN or infinite outputs for the first example of "
                    f"{name}; its NTK would be too"
                )
        if stochastic:
            return first
        again = model_outputs(fm, values, x1[:1])
        if not _same(first, again):
            raise ValueError(
                "the model returned different outputs for the same input on two calls "
                f"(by up to {_gap(first, again):.3g}): it draws random numbers (Dropout in "
                "training mode, torch.randn in forward), so its NTK changes from call to call; "
                "call model.eval() or remove the randomness, or pass stochastic=True for one "
                "random sample in which each example draws its own randomness"
            )
        if second is not None:
            both = model_outputs(fm, values, torch.cat([x1[:1], other]))
            together, alone = both, torch.cat([first, second])
            if not _same(together, alone):
                raise ValueError(
                    "the model's output for one example depends on the other examples of its "
                    f"batch (it changed by up to {_gap(together, alone):.3g} when evaluated "
                    "next to another example): a per-example NTK needs example-independent "
                    "outputs; call model.eval() and remove batch statistics such as "
                    "y - y.mean(0) or BatchNorm in training mode"
                )
    return first


def _gap(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal up to rounding: batched and single-example kernels may sum in another order."""
    tol = {torch.float64: 1e3 * torch.finfo(torch.float64).eps, torch.float32: 2e-3}
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    return _gap(a, b) <= tol.get(a.dtype, 5e-2) * max(scale, 1.0)


def watched_call(fm: FunctionalModel, values: dict, x: Tensor, name: str):
    """fm(values, x), turning an error inside the model into a ValueError that names the
    argument ``name``, the innermost failing module and the shapes."""
    stack: list[tuple[nn.Module, tuple]] = []

    def enter(m: nn.Module, args: tuple) -> None:
        stack.append((m, args))

    def leave(m: nn.Module, args: tuple, out) -> None:
        stack.pop()

    with fm.borrow() as lent:  # hooks on the module tree this call alone uses
        names = {id(m): n for n, m in lent.module.named_modules()}
        handles = []
        for m in lent.module.modules():
            handles.append(m.register_forward_pre_hook(enter))
            handles.append(m.register_forward_hook(leave))
        try:
            return fm.call(lent.module, values, x)
        except (RuntimeError, IndexError, ValueError) as err:
            where = "the model's forward pass failed"
            if stack:
                module, args = stack[-1]
                shape = tuple(args[0].shape) if args and isinstance(args[0], Tensor) else None
                label = names.get(id(module)) or "the model"
                where = f"layer {label!r} ({module!r}) {_expectation(module, shape)}"
            raise ValueError(
                f"{name} does not fit the model ({name} has examples of shape "
                f"{tuple(x.shape[1:])}): {where}; the error was: {err}"
            ) from err
        finally:
            for h in handles:
                h.remove()


def _expectation(module: nn.Module, shape: tuple | None) -> str:
    """What ``module`` expected, against the ``shape`` it got."""
    if shape is None:
        return "failed"
    failed = f"failed on an input of shape {shape}"
    if isinstance(module, nn.Linear) and shape[-1] != module.in_features:
        return f"expects {module.in_features} features on the last axis but got shape {shape}"
    if isinstance(module, nn.modules.conv._ConvNd):
        if len(shape) < 2 or shape[1] != module.in_channels:
            return f"expects {module.in_channels} channels on axis 1 but got shape {shape}"
        return f"with kernel size {module.kernel_size} {failed}"
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return f"takes indices 0 to {module.num_embeddings - 1} and {failed}"
    return failed


class _IndexOutOfRange(Exception):
    pass


def check_embedding_indices(fm: FunctionalModel, values: dict, xs: dict, chunk: int = 256):
    """For models with embeddings, one forward pass over every input (``xs``: {name: batch})
    with the indices each embedding receives checked against its size, before any kernel can
    fail on them (on a GPU that failure is a device-side assert that ends the process)."""
    if not any(isinstance(m, nn.Embedding | nn.EmbeddingBag) for m in fm.model.modules()):
        return
    with fm.borrow() as lent:  # hooks on the module tree these calls alone use
        _check_indices(fm, lent.module, values, xs, chunk)


def _check_indices(fm: FunctionalModel, model: nn.Module, values: dict, xs: dict, chunk: int):
    embeddings = {
        id(m): (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag)
    }

    def check(m, args):
        idx = args[0] if args else None
        if isinstance(idx, Tensor) and not idx.is_floating_point() and idx.numel():
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= m.num_embeddings:
                label, _ = embeddings[id(m)]
                bad = high if high >= m.num_embeddings else low
                raise _IndexOutOfRange(
                    f"embedding {label!r} ({m!r}) received the index {bad}, but it has "
                    f"num_embeddings={m.num_embeddings} (valid indices 0 to "
                    f"{m.num_embeddings - 1})"
                )

    handles = [m.register_forward_pre_hook(check) for _, m in embeddings.values()]
    try:
        with torch.no_grad():
            for name, x in xs.items():
                for start in range(0, len(x), chunk):
                    try:
                        fm.call(model, values, x[start : start + chunk])
                    except _IndexOutOfRange as err:
                        raise ValueError(
                            f"{name} holds an index out of range: {err}; check {name} or "
                            "enlarge the embedding"
                        ) from None
    finally:
        for h in handles:
            h.remove()
