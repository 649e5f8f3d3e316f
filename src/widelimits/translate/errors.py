"""Tracing a model with torch.fx, and error messages that name the node and its source line."""

from __future__ import annotations

import os
import re
import traceback

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["INSTEAD", "TranslationError", "NodeBase", "trace", "target_name"]

INSTEAD = (
    "for the kernels of this model as it is, use widelimits.finite.empirical_ntk(model, x1, x2) "
    "(its NTK) or widelimits.finite.monte_carlo_kernel(factory, x1, x2, n_samples=...) (NNGP "
    "and NTK averaged over random copies)"
)
_TORCH_DIR = os.path.dirname(torch.__file__)
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # widelimits itself


class TranslationError(ValueError):
    """A construct of the model without a closed-form infinite-width kernel (a ValueError)."""


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)')


def _user_frame(frames: list[tuple[str, int, str]]) -> str:
    user = [f for f in frames if not f[0].startswith((_TORCH_DIR, _HERE))]
    if not user:
        return ""
    file, line, code = user[-1]
    return f" at {file}:{line} ({code.strip()})" if code else f" at {file}:{line}"


def node_source(node: fx.Node) -> str:
    trace = node.stack_trace or ""
    return _user_frame([(f, int(n), c) for f, n, c in _FRAME.findall(trace)])


def target_name(node: fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    module = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", repr(t))
    return f"{module}.{name}" if module and module != "_operator" else f"operator.{name}"


def trace(model: nn.Module) -> fx.GraphModule:
    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(model)
    except Exception as error:  # TraceError, or any error raised by a Proxy in user code
        frames = [(f.filename, f.lineno, f.line or "") for f in traceback.extract_tb(
            error.__traceback__)]  # fmt: skip
        raise TranslationError(
            f"torch.fx could not trace {type(model).__name__}{_user_frame(frames)}: {error}. "
            "Data-dependent control flow (an if or loop on tensor values) or other Python on "
            "tensor values has no fixed architecture and no closed-form kernel; write the "
            f"forward pass without it, or {INSTEAD}"
        ) from error
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


# Functions whose weight and bias arguments are parameters: name -> their positions in args.
PARAMETER_FUNCTIONS = {F.linear: (1, 2), F.layer_norm: (2, 3)}
_PARAMETER_NAMES = {F.linear: ("weight", "bias"), F.layer_norm: ("weight", "bias")}


class NodeBase:
    """Shapes of graph values (from a run on the example input) and node-naming errors."""

    input: fx.Node

    def fail(self, node: fx.Node, what: str, instead: str | None = None) -> TranslationError:
        return TranslationError(
            f"from_module: node {node.name!r} ({node.op} {target_name(node)})"
            f"{node_source(node)}: {what}; {instead or INSTEAD}"
        )

    @staticmethod
    def shape(node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def parameter_args(self, node: fx.Node) -> tuple[fx.Node | None, fx.Node | None]:
        """The (weight, bias) argument nodes of an ``F.linear`` / ``F.layer_norm`` call."""
        found = []
        for position, name in zip(PARAMETER_FUNCTIONS[node.target],
                                  _PARAMETER_NAMES[node.target], strict=True):  # fmt: skip
            a = node.kwargs.get(name, node.args[position] if len(node.args) > position else None)
            if a is not None and not (isinstance(a, fx.Node) and a.op == "get_attr"):
                raise self.fail(node, f"its {name} is not a parameter of the model (computed "
                                "from the input, or a constant): only fresh weights have a "
                                "kernel", "pass a parameter of the model as the " + name)
            found.append(a)
        return found[0], found[1]

    def is_tensor(self, a) -> bool:
        return isinstance(a, fx.Node) and self.shape(a) is not None

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        """The tensors ``node`` computes from (for ``F.linear`` and ``F.layer_norm``: the data
        only; their weight and bias are the layer's parameters, see `parameter_args`)."""
        if node.op == "call_function" and node.target in PARAMETER_FUNCTIONS:
            return [a for a in node.args[:1] if self.is_tensor(a)]
        out: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: out.append(a) if self.is_tensor(a)
                        else None)  # fmt: skip
        return out
