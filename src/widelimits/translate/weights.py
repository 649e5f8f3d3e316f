"""W_std and b_std of a torch weight layer, read from its initialization (see `from_module`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..layers.base import check_number
from .errors import NodeBase

__all__ = ["weight_stds"]


def weight_stds(
    tr: NodeBase, node: fx.Node, mod, fan_in: int, name: str | None = None
) -> tuple[float, float | None]:
    """``(W_std, b_std)`` of a Linear or Conv module (or anything with ``weight`` and ``bias``,
    named ``name``: an ``F.linear`` call, named by its weight parameter) by the ``init`` rule."""
    name = node.target if name is None else name
    rule = tr.init
    has_bias = mod.bias is not None
    if isinstance(rule, Mapping):
        functional = {n.args[1].target for n in tr.gm.graph.nodes
                      if n.op == "call_function" and n.target is F.linear
                      and isinstance(n.args[1], fx.Node)}  # fmt: skip
        unknown = set(rule) - functional - {n for n, m in tr.model.named_modules()
                                            if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)}
        if unknown:
            raise ValueError(f"init names {sorted(unknown)}, which are not Linear or Conv "
                             "modules of the model (names as in model.named_modules()) nor "
                             "weights passed to F.linear")
        if name not in rule:
            rule = "torch"
    if isinstance(rule, Mapping) or callable(rule) and not isinstance(rule, str):
        try:
            w_std, b_std = rule[name] if isinstance(rule, Mapping) else rule(name, mod)
        except (TypeError, ValueError) as error:
            raise ValueError(f"init for layer {name!r} must give a pair (W_std, b_std): "
                             f"{error}") from error
        check_number(f"init[{name!r}]", "W_std", w_std)
        check_number(f"init[{name!r}]", "b_std", b_std, allow_none=not has_bias)
        return float(w_std), (None if b_std is None or not has_bias else float(b_std))
    w, b = mod.weight.detach().double(), None if not has_bias else mod.bias.detach().double()
    if rule == "empirical":
        w_std = math.sqrt(float(w.pow(2).mean()) * fan_in)
        return w_std, None if b is None else math.sqrt(float(b.pow(2).mean()))
    bound = 1.0 / math.sqrt(fan_in)  # torch's default: U(-bound, bound), variance bound^2/3
    for what, t in (("weight", w), ("bias", b)):
        if t is not None and not _looks_uniform(t, bound):
            raise tr.fail(
                node,
                f"its {what} does not look like PyTorch's default initialization "
                f"(uniform in +-1/sqrt(fan_in) = +-{bound:.4g}; max |{what}| "
                f"{float(t.abs().max()):.4g}, rms {float(t.pow(2).mean().sqrt()):.4g})",
                "pass init='empirical' to read each layer's standard deviation, or a dict "
                "{name: (W_std, b_std)}",
            )
    return 1.0 / math.sqrt(3.0), (1.0 / math.sqrt(3.0 * fan_in) if has_bias else None)


def _looks_uniform(t: Tensor, bound: float) -> bool:
    """|t| <= bound and mean(t^2) within 6 standard errors of bound^2 / 3 (U(-bound, bound))."""
    if float(t.abs().max()) > bound * (1 + 1e-6):
        return False
    var, n = bound**2 / 3, t.numel()
    stderr = math.sqrt(4 / 45) * bound**2 / math.sqrt(n)  # sd of w^2 is sqrt(4/45) bound^2
    return abs(float(t.pow(2).mean()) - var) <= 6 * stderr
