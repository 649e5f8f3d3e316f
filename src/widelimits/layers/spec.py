"""Network descriptions from text, for the command line: ``"Dense(512), ReLU(), Dense(1)"``.

The text is parsed, never evaluated: only layer names, calls of layers and literal arguments
(numbers, strings, None, True/False, tuples and lists of those, nested layers) are accepted.
Whatever the text, `parse_architecture` returns a `Layer` or raises a `ValueError` that says what
is wrong, and its work is bounded: the text is at most `MAX_LENGTH` characters and `MAX_DEPTH`
brackets deep, and the network's loops over tile-sized tensors (filter and pooling windows along
each axis, branches, polynomial degrees: `LOOP_COSTS`) add up to at most `MAX_WORK`.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

from .base import Layer

__all__ = ["parse_architecture", "MAX_LENGTH", "MAX_DEPTH", "MAX_WORK"]

NOT_LAYERS = ("Layer", "BuildContext", "SpatialFeatures", "Activation")
MAX_LENGTH = 10_000  # characters of an architecture
MAX_DEPTH = 32  # nested brackets, and nested expressions in the parsed tree
MAX_WORK = 4096  # LOOP_COSTS summed over the network's layers
MAX_INT = 2**63 - 1  # integers beyond int64 are no layer's size
# Layer attributes that set how often the kernel map loops over tile-sized tensors, and what a
# value costs: windows along each axis their size, polynomial degrees their value, coefficient
# lists their length, and branch counts their square (merging n branches by FanInProd takes n^2
# products).  Everything else a layer holds costs O(1) per tile.
LOOP_COSTS: dict[str, Callable[[Any], int]] = {
    "kernel_size": lambda v: sum(v) if isinstance(v, tuple) else v,
    "window": lambda v: sum(v) if isinstance(v, tuple) else v,
    "degree": lambda v: v,
    "coef": len,
    "n": lambda v: v * v,
}
EXAMPLE = "'Dense(512), ReLU(), Dense(1)'"


def _layer_classes() -> dict[str, Callable[..., Layer]]:
    from . import __all__ as names
    from . import __dict__ as namespace

    return {n: namespace[n] for n in names if n not in NOT_LAYERS}


def _wrapped(spec: str) -> str:
    """The text parsed: a list display around ``spec`` (a trailing comment cannot hide "]")."""
    return f"[{spec}\n]"


def _cut(text: str, limit: int) -> str:
    """``text`` on one line, cut in the middle if long (error messages stay readable)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


def _short(text: str, limit: int = 80) -> str:
    """``repr(text)``, cut in the middle if long."""
    return _cut(repr(text), limit)


class _Builder:
    """Turns the parsed expression of one architecture into layers, checking every node."""

    def __init__(self, spec: str, name: str) -> None:
        self.where = f"{name} {_short(spec)}"
        self.classes = _layer_classes()
        self.text = _wrapped(spec)

    def source(self, node: ast.expr) -> str:
        """The text of ``node`` as the user wrote it."""
        return _cut(ast.get_source_segment(self.text, node) or ast.unparse(node), 40)

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.where}: {what}")

    def unknown_name(self, name: str) -> ValueError:
        by_lower = {n.lower(): n for n in self.classes}
        close = difflib.get_close_matches(name.lower(), by_lower, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(by_lower[c] for c in close)}? " if close else ""
        return self.fail(
            f"{_short(name, 40)} is not a layer or a literal: {hint}layers are "
            f"{', '.join(sorted(self.classes))}"
        )

    def layer_or_literal(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            if node.id not in self.classes:
                raise self.unknown_name(node.id)
            return self.call(node.id, [], {})
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise self.fail(
                    f"{_short(ast.unparse(node), 40)} is not a layer or a literal: call layers "
                    f"by name, like {EXAMPLE}"
                )
            if node.func.id not in self.classes:
                raise self.unknown_name(node.func.id)
            if any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords
            ):
                raise self.fail(
                    f"{node.func.id}(...) unpacks arguments with * or **: write them out"
                )
            names = [k.arg for k in node.keywords]
            if len(set(names)) < len(names):
                twice = next(n for n in names if names.count(n) > 1)
                raise self.fail(f"{node.func.id}(...) gets the argument {twice!r} twice")
            args = [self.layer_or_literal(a) for a in node.args]
            kwargs = {k.arg: self.layer_or_literal(k.value) for k in node.keywords}
            return self.call(node.func.id, args, kwargs)
        return self.literal(node)

    def literal(self, node: ast.expr) -> Any:
        """A number, string, None, bool, or a tuple or list of literals and layers."""
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self.layer_or_literal(e) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            node = node.operand
            if not (isinstance(node, ast.Constant) and type(node.value) in (int, float)):
                raise self.fail(f"a sign goes only before a number, not {self.source(node)!r}")
        if isinstance(node, ast.Constant) and type(node.value) in (int, float, str, bool):
            value = node.value
            if type(value) in (int, float):
                value = sign * value
                if isinstance(value, float) and not math.isfinite(value):
                    raise self.fail(f"{self.source(node)} is not a finite number")
                if isinstance(value, int) and abs(value) > MAX_INT:
                    raise self.fail(f"the integer {value:.3g} is too large (at most 2**63 - 1)")
            return value
        if isinstance(node, ast.Constant) and node.value is None:
            return None
        raise self.fail(
            f"{_short(ast.unparse(node), 60)} is not a layer or a literal: arguments may be "
            "numbers, strings, None, True/False, tuples or lists of these, and layers; nothing "
            "is evaluated"
        )

    def call(self, name: str, args: list, kwargs: dict) -> Layer:
        cls = self.classes[name]
        try:
            signature = inspect.signature(cls)
        except (TypeError, ValueError):  # pragma: no cover - every layer has a signature
            signature = None
        if signature is not None:
            params = signature.parameters
            # A factory whose **kwargs go to one class names it in ``keywords_from``.
            target = getattr(cls, "keywords_from", None)
            forwarded = inspect.signature(target).parameters if target is not None else {}
            takes_any = target is None and any(p.kind is p.VAR_KEYWORD for p in params.values())
            valid = [
                "*" * (v.kind is v.VAR_POSITIONAL) + p
                for p, v in params.items() if target is None or v.kind is not v.VAR_KEYWORD
            ] + [p for p in forwarded if p not in params]
            unknown = [
                k for k in kwargs if k not in params and k not in forwarded and not takes_any
            ]
            if unknown:
                raise self.fail(
                    f"{name} has no argument {unknown[0]!r}; its arguments are "
                    f"{', '.join(valid) or 'none'}: {_signature_text(name, signature)}"
                )
            try:
                signature.bind(*args, **kwargs)
            except TypeError as err:
                raise self.fail(f"{_signature_text(name, signature)}: {err}") from None
        try:
            layer = cls(*args, **kwargs)
        except (TypeError, ValueError, ArithmeticError, RecursionError, MemoryError) as err:
            raise self.fail(f"{name}: {_cut(str(err), 300)}") from None
        return layer


def _signature_text(name: str, signature: inspect.Signature) -> str:
    """``Dense(out=None, W_std=1.0, ...)``: the call signature without annotations."""
    plain = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return name + str(signature.replace(parameters=plain, return_annotation=signature.empty))


def _depth(tree: ast.AST, limit: int) -> int:
    """Nesting depth of an expression tree, or ``limit + 1`` if deeper; without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= limit:
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _bracket_depth(spec: str) -> int:
    depth = deepest = 0
    for ch in spec:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _loop_work(net: Layer) -> tuple[int, str]:
    """Sum of the loop costs (`LOOP_COSTS`) over the network, and its largest term."""
    total, largest, largest_cost, stack = 0, "", -1, [net]
    while stack:  # a layer used twice (Myrtle's poolings) runs, and counts, twice
        layer = stack.pop()
        for attr, cost_of in LOOP_COSTS.items():
            value = getattr(layer, attr, None)
            try:
                cost = int(cost_of(value))
            except (TypeError, ValueError):  # absent, None, or not a size
                continue
            total += cost
            if cost > largest_cost:
                largest_cost = cost
                largest = f"{type(layer).__name__}({attr}={_cut(repr(value), 40)})"
        stack.extend(c for c in layer.children() if isinstance(c, Layer))
    return total, largest


def parse_architecture(spec: str, name: str = "--arch") -> Layer:
    """A description from comma-separated layer calls with literal arguments.

    ``"Conv(None, 3), ReLU(), GlobalAvgPool(), Dense(10)"`` gives the `Serial` of those layers
    (a single layer is returned as it is); arguments may be numbers, strings, None, True/False,
    tuples or lists of these, or nested layers (``"Residual(Dense(), ReLU(), Dense())"``), and a
    layer without arguments may omit its parentheses.  Nothing else is evaluated.

    Any text that is not such a description raises a `ValueError` whose message starts with
    ``name`` (the option the text came from) and says what is wrong: unknown layers and
    keyword arguments list the valid ones, and a layer's own refusal is passed on with the
    layer's name.  Limits keep the work bounded: `MAX_LENGTH` characters, `MAX_DEPTH` levels of
    nesting, and `MAX_WORK` tile operations for the loops of its kernel map (`LOOP_COSTS`).
    """
    if not isinstance(spec, str):
        raise TypeError(f"{name} must be a string like {EXAMPLE}, got {type(spec).__name__}")
    where = f"{name} {_short(spec)}"
    if len(spec) > MAX_LENGTH:
        raise ValueError(f"{where} has {len(spec)} characters, more than the {MAX_LENGTH} allowed")
    if _bracket_depth(spec) > MAX_DEPTH:
        raise ValueError(f"{where} nests brackets more than {MAX_DEPTH} deep")
    try:
        with warnings.catch_warnings():  # "1if", "'\d'": the error below says it better
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(_wrapped(spec), mode="eval")
    except (SyntaxError, ValueError) as err:  # ValueError: null bytes on some versions
        what = getattr(err, "msg", None) or str(err)
        raise ValueError(
            f"{where} is not a list of layers like {EXAMPLE}: {_cut(what, 200)}"
        ) from None
    except (RecursionError, MemoryError):
        raise ValueError(f"{where} nests expressions more than {MAX_DEPTH} deep") from None
    limit = MAX_DEPTH + 2  # + the Expression and the list around the text
    if _depth(tree, limit) > limit:
        raise ValueError(f"{where} nests expressions more than {MAX_DEPTH} deep")
    builder = _Builder(spec, name)
    items = [builder.layer_or_literal(e) for e in tree.body.elts]
    if not items:
        raise ValueError(f"{where} is empty: give layers like {EXAMPLE}")
    for i, item in enumerate(items):
        if not isinstance(item, Layer):
            raise ValueError(
                f"{where}: item {i + 1} ({_cut(repr(item), 40)}) is not a layer; give a "
                f"comma-separated list of layers like {EXAMPLE}"
            )
    from .combinators import Serial

    try:
        net = items[0] if len(items) == 1 else Serial(*items)
    except (TypeError, ValueError) as err:  # pragma: no cover - Serial takes any layers
        raise ValueError(f"{where}: {err}") from None
    work, largest = _loop_work(net)
    if work > MAX_WORK:
        raise ValueError(
            f"{where} costs {work} tile operations (window sizes per axis, squared branch "
            f"counts, degrees and coefficients add up; the largest is {largest}), more than "
            f"the {MAX_WORK} allowed: use smaller filters, windows, branch counts or degrees"
        )
    return net
