r"""The structured empirical NTK: Linear and Conv layers from their inputs and cotangents.

A Linear or Conv layer computes z(l) = W a(l) + b at each position l (a token, a pixel: for a
convolution a(l) is the flattened input patch under the kernel), so for one example

    df_o/dW = sum_l g_o(l) a(l)^T,    df_o/db = sum_l g_o(l),    g_o(l) = df_o/dz(l).

One forward pass records every a, and one backward pass of sum_n f_o(x_n) per output o gives
every g_o (examples do not interact, so the batch sum separates them).  The layer's NTK share
is then either the Gram route

    sum_{l, l'} <g_o(x, l), g_o'(x', l')> <a(x, l), a(x', l')>

or, when positions are many, the per-example weight gradients g_o a^T formed from the same
factors and contracted; the cheaper by a multiply count is used.  A layer called several times
(shared weights) simply contributes more positions.  Before trusting a layer, the batch weight
gradient sum_n sum_l g a^T is checked against autograd's on a probe example (both applied to
a random vector): a weight also used outside its module's forward (tied to an embedding, read
by attention code directly) fails the check and, with every parameter outside Linear/Conv
layers, goes to the Jacobian method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.dense import DenseModule
from ._cache import ChunkCache
from ._functional import FunctionalModel
from .ntk import Outputs, contract, jacobians

# Layers z = c W a + d b; c and d are the module's ``weight_multiplier`` / ``bias_multiplier``
# when it has them (widelimits' Dense in NTK parametrization), else 1.
STRUCTURED = (nn.Linear, nn.Conv1d, nn.Conv2d, DenseModule)


@dataclass
class Group:
    """One weight (and its bias) and the modules that apply it."""

    modules: list[nn.Module]
    weight: nn.Parameter | None  # None when only the bias is selected
    bias: nn.Parameter | None
    multipliers: tuple[float, float] = (1.0, 1.0)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in (self.weight, self.bias) if p is not None)


def patches(module: nn.Module, a: Tensor) -> Tensor:
    """A layer input as (N, L, F): positions L, features F matching W.reshape(C, F)."""
    if isinstance(module, DenseModule):  # features on axis 1
        return a.movedim(1, -1).reshape(a.shape[0], -1, a.shape[1])
    if isinstance(module, nn.Linear):
        return a.reshape(a.shape[0], -1, a.shape[-1])
    if isinstance(module, nn.Conv1d):
        a = a.unsqueeze(2)
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        pad = list(module._reversed_padding_repeated_twice)
        if isinstance(module, nn.Conv1d):
            pad = pad + [0, 0]
        a, padding = F.pad(a, pad, mode=mode), 0
    else:
        padding = module.padding
    if isinstance(module, nn.Conv1d):  # as a 2-D convolution over a height of one
        size, dilation, stride = [
            (1, *t) for t in (module.kernel_size, module.dilation, module.stride)
        ]
        padding = padding if isinstance(padding, int) else (0, *padding)
    else:
        size, dilation, stride = module.kernel_size, module.dilation, module.stride
    cols = F.unfold(a, kernel_size=size, dilation=dilation, padding=padding, stride=stride)
    return cols.transpose(1, 2)


def cotangent(module: nn.Module, g: Tensor) -> Tensor:
    """A layer's output cotangents (N, O, *z.shape[1:]) as (N, O, L, C)."""
    n, o = g.shape[:2]
    if isinstance(module, DenseModule):
        return g.movedim(2, -1).reshape(n, o, -1, g.shape[2])
    if isinstance(module, nn.Linear):
        return g.reshape(n, o, -1, g.shape[-1])
    return g.reshape(n, o, g.shape[2], -1).transpose(2, 3)


class StructuredNTK:
    """Empirical NTK blocks with Linear/Conv layers done from factors (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        chosen: dict,
        frozen: dict,
        probe: Tensor,
        n_out: int,
        cache_bytes: int = 0,
        fm: FunctionalModel | None = None,
    ):
        self.model, self.n_out, self.chosen = model, n_out, chosen
        self.fm = fm if fm is not None else FunctionalModel(model, copies=True)
        self._frozen_all = frozen
        # A chunk pairs with every other chunk: its factors (and the Jacobians of the
        # parameters left to the Jacobian method) are kept while they fit.
        self._chunk = ChunkCache(self._chunk_quantities, cache_bytes)
        self.groups = self._find_groups(model, chosen)
        self._verify(probe)
        covered = {id(p) for g in self.groups for p in (g.weight, g.bias) if p is not None}
        self.leftover = {k: v.detach() for k, v in chosen.items() if id(v) not in covered}
        self.frozen = {
            **frozen,
            **{k: v.detach() for k, v in chosen.items() if id(v) in covered},
        }

    @staticmethod
    def _find_groups(model: nn.Module, chosen: dict) -> list[Group]:
        selected = {id(p) for p in chosen.values()}
        owners: dict[int, list[tuple[nn.Module, str]]] = {}
        for m in model.modules():
            for name, p in m._parameters.items():
                if p is not None:
                    owners.setdefault(id(p), []).append((m, name))
        groups: dict[int, Group] = {}
        for m in model.modules():
            if not isinstance(m, STRUCTURED) or getattr(m, "groups", 1) != 1:
                continue
            if m._parameters.get("weight") is None:  # e.g. torch parametrizations: computed
                continue
            w = m.weight if id(m.weight) in selected else None
            b = m.bias if m.bias is not None and id(m.bias) in selected else None
            if w is None and b is None:
                continue
            # Every owner of the weight and bias must be a structured layer of the same kind
            # sharing both, or the factorization would miss uses.
            same = [o for o, _ in owners[id(m.weight)]]
            if m.bias is not None:
                same += [o for o, _ in owners[id(m.bias)]]
            if any(type(o) is not type(m) or o.weight is not m.weight or o.bias is not m.bias
                   for o in same):  # fmt: skip
                continue
            mults = (getattr(m, "weight_multiplier", 1.0), getattr(m, "bias_multiplier", 1.0))
            group = groups.setdefault(id(m.weight), Group([], w, b, mults))
            if group.multipliers != mults:
                group.weight = group.bias = None  # applied with different scales: not handled
            if m not in group.modules:
                group.modules.append(m)
        return [g for g in groups.values() if g.weight is not None or g.bias is not None]

    def covered_parameters(self) -> int:
        return sum(g.n_params for g in self.groups)

    def forms_weight_gradients(self, n: int, outputs: Outputs) -> bool:
        """Whether a layer takes the per-example route in n x n blocks."""
        return "per_example" in self._routes(n, n, outputs).values()

    def gainful_parameters(self, n: int, outputs: Outputs) -> int:
        """Parameters whose factored share of n x n blocks saves work over their Jacobian:
        those of layers on the Gram route (no per-example weight gradient is formed) and of
        convolutions (whose per-example weight gradients the Jacobian method forms slowly,
        one batched convolution backward per example)."""
        routes = self._routes(n, n, outputs)
        return sum(
            g.n_params
            for gi, g in enumerate(self.groups)
            if routes.get(gi) == "gram" or isinstance(g.modules[0], (nn.Conv1d, nn.Conv2d))
        )

    # ------------------------------------------------------------------------------ factors
    def factors(self, x: Tensor, extra: tuple = ()):
        """Per group: inputs A (N, L, F) and cotangents G (N, O, L, C); also autograd's
        gradients of sum_n f_0(x_n) w.r.t. ``extra`` tensors (for the probe check)."""
        with self.fm.borrow() as lent:  # hooks on a module tree this call alone uses
            return self._factors(lent, x, extra)

    def _factors(self, lent, x: Tensor, extra: tuple):
        records: dict[int, list[tuple[nn.Module, Tensor, Tensor]]] = {}
        index = {id(lent.of(m)): gi for gi, g in enumerate(self.groups) for m in g.modules}

        def hook(m, inputs, out):
            records.setdefault(index[id(m)], []).append((m, inputs[0].detach(), out))
            return out.clone()  # later in-place ops must not touch the tensor we differentiate

        hooks = [lent.of(m).register_forward_hook(hook) for g in self.groups for m in g.modules]
        # Fresh leaves stand in for the parameters: the caller's keep requires_grad and .grad.
        leaves = {k: v.detach().requires_grad_() for k, v in self.chosen.items()}
        leaf_of = {id(v): leaves[k] for k, v in self.chosen.items()}
        extra = [leaf_of[id(t)] for t in extra]
        try:
            with torch.enable_grad():
                values = {**self._frozen_all, **leaves}
                out = self.fm.call(lent.module, values, x).reshape(len(x), -1)
                zs = [z for gi in sorted(records) for _, _, z in records[gi]]
                grads, extra_grads = [], None
                for o in range(out.shape[1]):
                    wrt = zs + extra if o == 0 else zs
                    g = torch.autograd.grad(
                        out[:, o].sum(), wrt, retain_graph=o < out.shape[1] - 1,
                        allow_unused=True, materialize_grads=True,
                    )  # fmt: skip
                    grads.append(g[: len(zs)])
                    if o == 0:
                        extra_grads = g[len(zs) :]
        finally:
            for h in hooks:
                h.remove()
        per_z = [torch.stack(gs, dim=1).detach() for gs in zip(*grads, strict=True)]
        result, k = {}, 0
        for gi in sorted(records):
            a_parts, g_parts = [], []
            for m, a, _ in records[gi]:
                a_parts.append(patches(m, a))
                g_parts.append(cotangent(m, per_z[k]))
                k += 1
            result[gi] = (torch.cat(a_parts, 1), torch.cat(g_parts, 2))
        return result, extra_grads

    def _verify(self, probe: Tensor) -> None:
        """Keep only groups whose factored batch gradient matches autograd's."""
        self.shapes: dict[int, tuple[int, int, int]] = {}
        if not self.groups:
            return
        tensors = [p for g in self.groups for p in (g.weight, g.bias) if p is not None]
        facts, true = self.factors(probe, tuple(tensors))
        true_of = dict(zip(map(id, tensors), true, strict=True))
        keep, kept = [], []
        for gi, g in enumerate(self.groups):
            if gi not in facts:
                continue  # never called: its parameters are not structured here
            a, gz = facts[gi]
            cw, cb = g.multipliers
            ok = True
            if g.weight is not None:
                # Both gradients applied to one random vector v: a wrong factorization differs
                # by a matrix D != 0, and |D v| ~ |D|_F, at a matrix-vector product's cost.
                gen = torch.Generator(device=a.device).manual_seed(gi)
                v = torch.randn(a.shape[-1], generator=gen, dtype=a.dtype, device=a.device)
                est_v = cw * torch.einsum("nlc,nl->c", gz[:, 0], a @ v)
                true = true_of[id(g.weight)].reshape(est_v.shape[0], -1)
                ok &= _close(est_v, true @ v)
            if g.bias is not None:
                ok &= _close(cb * gz[:, 0].sum((0, 1)), true_of[id(g.bias)])
            if ok:
                keep.append(g)
                kept.append(gi)
        self.groups = keep
        self.shapes = {  # (positions, input features, output channels) of each kept group
            i: (facts[gi][0].shape[1], facts[gi][0].shape[2], facts[gi][1].shape[3])
            for i, gi in enumerate(kept)
        }

    # ------------------------------------------------------------------------------- blocks
    def _routes(self, n1: int, n2: int, outputs: Outputs) -> dict[int, str]:
        o_eff = self.n_out**2 if outputs == "full" else self.n_out
        routes = {}
        for gi, (length, f, c) in self.shapes.items():
            gram = n1 * n2 * length * length * (o_eff * c + f)
            per_example = (n1 + n2) * self.n_out * length * c * f + n1 * n2 * o_eff * c * f
            routes[gi] = "gram" if length == 1 or gram <= per_example else "per_example"
        return routes

    def block_bytes(self, n: int, outputs: Outputs) -> int:
        """Working memory of one block of n examples against n: both chunks' factors (with
        the forward pass's activations), and each layer's largest temporary on its route."""
        item = next(iter(self.chosen.values())).element_size()
        o_eff = self.n_out**2 if outputs == "full" else self.n_out
        routes = self._routes(n, n, outputs)
        total = 0
        for gi, (length, f, c) in self.shapes.items():
            total += 2 * n * 3 * (self.n_out * length * c + length * f)
            if routes[gi] == "per_example":
                total += 2 * n * self.n_out * c * f
            elif length > 1:
                total += n * n * (o_eff + 1) * length * length
        n_left = sum(p.numel() for p in self.leftover.values())
        return item * (total + 2 * n * 3 * self.n_out * n_left)

    def chunk_size(self, n_max: int, outputs: Outputs, budget: int) -> int:
        """The largest chunk (at most ``n_max``) whose block fits ``budget`` bytes."""
        low, high = 1, n_max
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.block_bytes(mid, outputs) <= budget else (low, mid - 1)
        return low

    def block(self, x1: Tensor, x2: Tensor | None, outputs: Outputs, pairs: bool) -> Tensor:
        f1, j1 = self._chunk(x1)
        f2, j2 = (f1, j1) if x2 is None else self._chunk(x2)
        n2 = len(x1) if x2 is None else len(x2)
        routes = self._routes(len(x1), n2, outputs)
        total = None
        for gi, g in enumerate(self.groups):
            if gi not in f1:
                continue
            (a1, g1), (a2, g2) = f1[gi], f2[gi]
            cw, cb = g.multipliers
            part = 0
            if g.weight is not None:
                part = cw**2 * _weight_share(a1, g1, a2, g2, outputs, pairs, routes[gi])
            if g.bias is not None:
                part = part + cb**2 * contract(g1.sum(2), g2.sum(2), outputs, pairs)
            total = part if total is None else total + part
        if self.leftover:
            rest = sum(contract(j1[k], j2[k], outputs, pairs) for k in self.leftover)
            total = rest if total is None else total + rest
        return total

    def prepare(self, x: Tensor) -> None:
        """Compute (and cache, if it fits) what blocks need from the chunk ``x`` alone."""
        self._chunk(x)

    def chunk_bytes_per_example(self) -> int:
        """Bytes per example of a chunk's cached quantities: each layer's inputs and output
        cotangents, and the Jacobians of the parameters left to the Jacobian method."""
        item = next(iter(self.chosen.values())).element_size()
        factors = sum(length * (self.n_out * c + f) for length, f, c in self.shapes.values())
        n_left = sum(p.numel() for p in self.leftover.values())
        return item * (factors + self.n_out * n_left)

    def _chunk_quantities(self, x: Tensor) -> tuple[dict, dict | None]:
        """A chunk's factors, and the Jacobians of the parameters outside them (if any)."""
        jac = jacobians(self.fm, self.leftover, self.frozen, x) if self.leftover else None
        return self.factors(x)[0], jac


def _weight_share(a1, g1, a2, g2, outputs: Outputs, pairs: bool, route: str) -> Tensor:
    j = "i" if pairs else "j"
    if route == "per_example":
        w1 = torch.einsum("iolc,ilf->iocf", g1, a1)
        w2 = w1 if a2 is a1 else torch.einsum("iolc,ilf->iocf", g2, a2)
        return contract(w1, w2, outputs, pairs)
    if a1.shape[1] == 1:  # one position: a product of two Grams
        gg = contract(g1[:, :, 0], g2[:, :, 0], outputs, pairs)
        aa = torch.einsum(f"if,{j}f->i{j}" if not pairs else "if,if->i", a1[:, 0], a2[:, 0])
        return gg * aa.reshape(aa.shape + (1,) * (gg.ndim - aa.ndim))
    lead = "i" if pairs else f"i{j}"
    aa = torch.einsum(f"ilf,{j}mf->{lead}lm", a1, a2)
    if outputs == "trace":
        gg = torch.einsum(f"iolc,{j}omc->{lead}lm", g1, g2)
        return (gg * aa).sum((-2, -1)) / g1.shape[1]
    if outputs == "diagonal":
        gg = torch.einsum(f"iolc,{j}omc->{lead}olm", g1, g2)
        return torch.einsum(f"{lead}olm,{lead}lm->{lead}o", gg, aa)
    gg = torch.einsum(f"iolc,{j}qmc->{lead}oqlm", g1, g2)
    return torch.einsum(f"{lead}oqlm,{lead}lm->{lead}oq", gg, aa)


def _close(est: Tensor, true: Tensor) -> bool:
    tol = 1e-3 if est.dtype == torch.float32 else 1e-8
    return bool(torch.linalg.norm(est - true) <= tol * torch.linalg.norm(true) + 1e-12)
