"""The fx graph of a model as a widelimits description (see `widelimits.from_module`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..layers import (
    Activation,
    AvgPool,
    Dropout,
    Elementwise,
    Erf,
    FanInConcat,
    FanInProd,
    FanInSum,
    FanOut,
    Flatten,
    GlobalAvgPool,
    Identity,
    Layer,
    LayerNorm,
    Parallel,
    Serial,
    Sign,
    Sin,
)
from ..layers.dense import WeightLayer
from ..layers.scale import Scale
from .errors import INSTEAD, TranslationError, target_name, trace
from .nodes import _ADD, _CAT, _MUL, _SUB, NodeLayers

NO_CLOSED_FORM = (
    nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
    nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer, nn.RNNBase,
)  # fmt: skip

__all__ = ["Translator"]

# ---------------------------------------------------------------------------------------------
# Which layers keep the mean zero and branches uncorrelated after a fresh weight layer.


def _odd(layer: Layer) -> bool:
    if type(layer) in (Erf, Sin):
        return layer.c == 0.0
    if isinstance(layer, Sign):
        return True
    return isinstance(layer, Elementwise) and getattr(layer._fn, "odd", False)


_LINEAR = (Scale, AvgPool, GlobalAvgPool, Flatten, Identity, Dropout, LayerNorm)


def _zero_mean(layers: list[Layer]) -> bool:
    """Whether a branch ends in fresh zero-mean weights, up to mean-preserving maps."""
    for layer in reversed(layers):
        if isinstance(layer, WeightLayer):
            return True
        if isinstance(layer, Serial) and layer.layers and isinstance(layer.layers[0], FanOut):
            parallel, merge = layer.layers[1], layer.layers[2]
            if isinstance(merge, FanInConcat | FanInSum):
                return all(_zero_mean(list(_serial(b))) for b in parallel.layers)
            return False
        if not (isinstance(layer, _LINEAR) or _odd(layer)):
            return False
    return False


def _serial(layer: Layer) -> tuple[Layer, ...]:
    return layer.layers if isinstance(layer, Serial) else (layer,)


def _chain(layers: list[Layer]) -> Layer:
    flat = [piece for layer in layers for piece in ([layer] if layer is not None else [])]
    if not flat:
        return Identity()
    return flat[0] if len(flat) == 1 else Serial(*flat)


# ---------------------------------------------------------------------------------------------
# The translator.

class Translator(NodeLayers):
    """Walks the graph from the output back to the input (``run``)."""

    def __init__(self, model: nn.Module, x: Tensor, parametrization: str, init) -> None:
        self.model, self.parametrization, self.init = model, parametrization, init
        self.gm = trace(model)
        self.modules = dict(self.gm.named_modules())
        dtypes = [p.dtype for p in model.parameters() if p.is_floating_point()]
        # Only shapes matter: a copy of the input (in-place operations must not change the
        # user's tensor) and eval mode (BatchNorm must not update its running statistics).
        x = x.to(dtypes[0] if dtypes and x.is_floating_point() else x.dtype, copy=True)
        modes = {m: m.training for m in model.modules()}
        try:
            model.eval()
            with torch.no_grad():
                ShapeProp(self.gm).propagate(x)
        except Exception as error:
            cause = error.__cause__ or error
            raise ValueError(
                f"running {type(model).__name__} on example_input of shape {tuple(x.shape)} "
                f"failed ({type(cause).__name__}: {str(cause).splitlines()[0]}); pass an "
                "example batch the model accepts"
            ) from error
        finally:
            for m, training in modes.items():
                m.training = training
        self.visited: set[fx.Node] = set()
        self.node_of: dict[int, fx.Node] = {}  # id(layer) -> the node it translates

    # -- graph structure ----------------------------------------------------------------------
    def run(self) -> Layer:
        graph = self.gm.graph
        inputs = [n for n in graph.nodes if n.op == "placeholder" and n.users]
        if len(inputs) != 1:
            names = [n.name for n in inputs]
            raise TranslationError(
                f"from_module needs a model with one tensor input, got the inputs {names}; "
                "wrap the model so that forward takes one tensor"
            )
        self.input = inputs[0]
        output = next(n for n in graph.nodes if n.op == "output")
        result = output.args[0]
        if not self.is_tensor(result):
            raise self.fail(output, "the model must return one tensor (not a tuple or dict)")
        self._check_shared_modules()
        self._check_no_limit_modules()
        self.dominators = self._dominators()
        if result not in self.dominators:
            raise self.fail(output, "the output does not depend on the input")
        net = _chain(self.path(self.input, result))
        self.gaussian_after(net, False)  # the raw inputs are not Gaussian
        return net

    def _check_shared_modules(self) -> None:
        seen: dict[str, fx.Node] = {}
        for node in self.gm.graph.nodes:
            if node.op != "call_module" or not any(True for _ in self.modules[node.target]
                                                   .parameters()):  # fmt: skip
                continue
            if node.target in seen:
                raise self.fail(
                    node,
                    f"the module {node.target!r} is called a second time (first at node "
                    f"{seen[node.target].name!r}), so this call shares its weights with the "
                    "first; the kernel of shared weights is not that of fresh ones",
                    "use a separate module for each call, or " + INSTEAD,
                )
            seen[node.target] = node

    def _check_no_limit_modules(self) -> None:
        """Refuse, by name, the torch modules whose infinite-width limit has no closed form."""
        for node in self.gm.graph.nodes:
            mod = self.modules.get(node.target) if node.op == "call_module" else None
            if isinstance(mod, NO_CLOSED_FORM):
                what = (
                    "a recurrence (the same weights at every step)" if isinstance(mod, nn.RNNBase)
                    else "softmax attention with 1/sqrt(d) scaling"
                )
                raise self.fail(
                    node,
                    f"{type(mod).__name__} ({what}) has no closed-form infinite-width kernel",
                    "describe the network with wl.GlobalSelfAttention / wl.TransformerBlock "
                    "(attention whose limit has a closed form), or " + INSTEAD,
                )

    def _dominators(self) -> dict[fx.Node, set[fx.Node]]:
        doms: dict[fx.Node, set[fx.Node]] = {self.input: {self.input}}
        for node in self.gm.graph.nodes:  # topological order
            if node is self.input or not self.is_tensor(node):
                continue
            preds = self.tensor_args(node)
            reached = [p for p in preds if p in doms]
            if not reached:
                continue  # a constant or parameter, not computed from the input
            if len(reached) < len(preds):
                other = next(p for p in preds if p not in doms)
                raise self.fail(
                    node,
                    f"it uses the tensor {other.name!r} ({other.op} {target_name(other)}), "
                    "which does not come from the input (a parameter or a constant); only "
                    "weights inside Linear and Conv modules have a kernel",
                )
            doms[node] = {node} | set.intersection(*(doms[p] for p in reached))
        return doms

    def idom(self, node: fx.Node) -> fx.Node:
        strict = self.dominators[node] - {node}
        return max(strict, key=lambda d: len(self.dominators[d]))  # dominators form a chain

    def path(self, src: fx.Node, dst: fx.Node) -> list[Layer]:
        """Layers mapping the value of ``src`` to that of ``dst`` (src dominates dst)."""
        layers: list[Layer] = []
        node = dst
        while node is not src:
            if node in self.visited:
                raise self.fail(
                    node,
                    "its result feeds branches that merge at different places, so translating "
                    "it would duplicate its weights; widelimits describes series-parallel "
                    "networks (each value used by branches that merge again at one node)",
                )
            self.visited.add(node)
            merge = self.merge(node)
            if merge is not None:
                kind, branches = merge
                start = self.idom(node)
                paths = [self.path(start, a) + extra for a, extra in branches]
                self.check_independent(node, kind, paths)
                fan_in = {"sum": FanInSum, "concat": FanInConcat, "prod": FanInProd}[kind]()
                block = Serial(FanOut(len(paths)), Parallel(*map(_chain, paths)), fan_in)
                self.node_of[id(block)] = node
                layers.append(block)
                node = start
                continue
            args = self.tensor_args(node)
            for layer in self.layer(node):
                self.node_of[id(layer)] = node
                layers.append(layer)
            node = args[0]
        return layers[::-1]

    def gaussian_after(self, layer: Layer, gaussian: bool) -> bool:
        """Whether ``layer``'s output is Gaussian at infinite width; raises, naming the node,
        where an activation or LayerNorm gets an input that is not (widelimits' rule)."""
        if isinstance(layer, Serial) and layer.layers and isinstance(layer.layers[0], FanOut):
            _, parallel, merge = layer.layers
            branches = [self.gaussian_after(b, gaussian) for b in parallel.layers]
            return not isinstance(merge, FanInProd) and all(branches)
        if isinstance(layer, Serial):
            for sub in layer.layers:
                gaussian = self.gaussian_after(sub, gaussian)
            return gaussian
        if isinstance(layer, WeightLayer):
            return True
        needs = isinstance(layer, LayerNorm) or (
            isinstance(layer, Activation) and layer.requires_gaussian
        )
        if needs and not gaussian:
            raise self.fail(
                self.node_of[id(layer)],
                "its input is not Gaussian at infinite width (it follows another activation, "
                "a product, dropout, a flattening of several pixels, or the raw input), so this "
                "nonlinearity has no closed-form kernel",
                "put a Linear or Conv layer right before it (e.g. a pre-activation residual "
                "block, x + conv(relu(x)), instead of relu(x + conv(x))), or " + INSTEAD,
            )
        if needs:
            return isinstance(layer, LayerNorm)
        if isinstance(layer, Dropout):
            return gaussian and layer.p == 0
        if isinstance(layer, Flatten):
            before = self.shape(self.tensor_args(self.node_of[id(layer)])[0])
            return gaussian and math.prod(before[2:]) == 1
        return gaussian  # Identity, Scale, pooling: linear maps of Gaussians

    def check_independent(self, node: fx.Node, kind: str, paths: list[list[Layer]]) -> None:
        correlated = sum(not _zero_mean(p) for p in paths)
        if kind == "sum" and correlated > 1:
            raise self.fail(
                node,
                f"it adds {correlated} branches that do not end in a fresh Linear or Conv "
                "layer, so they are correlated and their kernels do not add (e.g. x + relu(x)); "
                "end all but one summand in a Linear or Conv layer",
            )
        if kind == "prod" and correlated:
            raise self.fail(
                node,
                "it multiplies branches that do not all end in a fresh Linear or Conv layer; "
                "the kernel of a product is the product of kernels only for independent "
                "Gaussian factors",
            )

    def merge(self, node: fx.Node) -> tuple[str, list[tuple[fx.Node, list[Layer]]]] | None:
        """``(kind, [(branch node, extra layers), ...])`` if ``node`` merges tensors."""
        if node.op not in ("call_function", "call_method"):
            return None
        target, args = node.target, list(node.args)
        if node.op == "call_function" and target in _CAT or target == "cat":
            tensors = node.kwargs.get("tensors", args[0] if args else None)
            dim = node.kwargs.get("dim", args[1] if len(args) > 1 else 0)
            ndim = len(self.shape(node))
            if not isinstance(tensors, list | tuple) or dim not in (1, 1 - ndim):
                raise self.fail(node, f"concatenation along dim={dim!r}: only the channel "
                                "(feature) axis 1 has a kernel", "concatenate along dim=1")
            return "concat", [(t, []) for t in tensors]
        tensors = self.tensor_args(node)
        if len(tensors) < 2:
            return None
        if target in _ADD or target in _SUB or target in ("add", "sub", "__add__", "__sub__"):
            alpha = node.kwargs.get("alpha", 1)
            minus = target in _SUB or target in ("sub", "__sub__")
            c = -alpha if minus else alpha
            second = [] if c == 1 else [Scale(c)]
            return "sum", [(tensors[0], []), (tensors[1], second)]
        if target in _MUL or target in ("mul", "__mul__"):
            return "prod", [(t, []) for t in tensors]
        raise self.fail(node, "an operation on several tensors without a kernel")
