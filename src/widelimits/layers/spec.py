"""Network descriptions from text, for the command line: ``"Dense(512), ReLU(), Dense(1)"``."""

from __future__ import annotations

import ast

from .base import Layer

__all__ = ["parse_architecture"]

NOT_LAYERS = ("Layer", "BuildContext", "SpatialFeatures", "Activation")


def _layer_classes() -> dict:
    from . import __all__ as names
    from . import __dict__ as namespace

    return {n: namespace[n] for n in names if n not in NOT_LAYERS}


def parse_architecture(spec: str) -> Layer:
    """A description from comma-separated layer calls with literal arguments.

    ``"Conv(None, 3), ReLU(), GlobalAvgPool(), Dense(10)"`` gives the `Serial` of those layers
    (a single layer is returned as it is); arguments may be numbers, strings, None, tuples or
    nested layers (``"Residual(Dense(), ReLU(), Dense())"``), and a layer without arguments may
    omit its parentheses.  Nothing else is evaluated.
    """
    from .combinators import Serial

    classes = _layer_classes()
    try:
        tree = ast.parse(f"[{spec}]", mode="eval")
    except SyntaxError as err:
        raise ValueError(
            f"architecture {spec!r} is not a list of layers like 'Dense(512), ReLU(), Dense(1)': "
            f"{err.msg}"
        ) from None

    def build(node: ast.AST):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in classes:
                args = [build(a) for a in node.args]
                kwargs = {k.arg: build(k.value) for k in node.keywords}
                return classes[node.func.id](*args, **kwargs)
        if isinstance(node, ast.Name) and node.id in classes:
            return classes[node.id]()
        try:
            return ast.literal_eval(node)
        except (ValueError, SyntaxError):
            raise ValueError(
                f"architecture {spec!r}: {ast.unparse(node)!r} is not a layer or a literal; "
                f"layers: {', '.join(sorted(classes))}"
            ) from None

    items = [build(e) for e in tree.body.elts]
    if not items or not all(isinstance(i, Layer) for i in items):
        raise ValueError(f"architecture {spec!r} must be a comma-separated list of layers")
    return items[0] if len(items) == 1 else Serial(*items)
