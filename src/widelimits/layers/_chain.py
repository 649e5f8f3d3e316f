r"""Runs of Dense layers and activations in one compiled pass over a fully connected tile.

Layer by layer, a depth-L fully connected network reads and writes each tile L times: the
activation's closed form is one compiled pass (`_jit`), but the tile (a few MiB) does not stay
in the core's cache from one layer to the next, and Dense's NTK update is another pass.  Every
layer of such a network maps each entry :math:`(K_{ij}, \Theta_{ij})` on its own, given the two
examples' variances, and the variances follow their own recursion on the diagonal:

.. math::

    K^{l+1}_{ij} = f_l\bigl(K^l_{ij};\ K^l_{ii}, K^l_{jj}\bigr), \qquad
    \Theta^{l+1}_{ij} = g_l\bigl(K^l_{ij}, \Theta^l_{ij};\ K^l_{ii}, K^l_{jj}\bigr).

So `run` first takes the variances through the run of layers (their own `kernel_fn` on the
examples' self-covariances: vectors, cheap), then hands the whole run to one compiled loop
(`_jit_loops.chain`) that takes each row of the tile through every layer while it sits in the L1
cache.  The result is the layer-by-layer one up to rounding (tests compare them to 1e-12 in
float64).

A layer joins a run by answering `chain_op`: Dense does, and so do the activations with a
compiled form (`Activation.compiled_op`: the ReLU family and Erf); every other layer returns None
and ends the run.  Runs are used only for plain flat tiles on the CPU with
no gradient needed, when numba is installed and neither the fused nor the compiled maps are
switched off; anything else goes layer by layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..kernel import Kernel
from . import _jit
from ._fused import can_fuse

__all__ = ["run"]


def _applies(k) -> bool:
    if type(k) is not Kernel:  # branches (a tuple), or concatenated features
        return False
    t = k.nngp
    return (
        k.layout == "none"
        and not k.batch_diagonal
        and t.ndim == (1 if k.pairs is not None else 2)
        and t.dtype in (torch.float32, torch.float64)
        and t.device.type == "cpu"
        and t.is_contiguous()
        and k.cov1.dtype == t.dtype == k.cov2.dtype
        and (k.ntk is None or k.ntk.ndim == 0 or (k.ntk.shape == t.shape and k.ntk.is_contiguous()))
        and (k.ntk is None or k.ntk.ndim > 0 or float(k.ntk) == 0.0)
        and can_fuse(t, k.ntk, k.cov1, k.cov2)
        and _jit.compiled_enabled()
    )


def run(layers: Sequence, k: Kernel) -> tuple[Kernel, int] | None:
    """The state after the longest leading run of ``layers`` that chains (see the module
    docstring), and the run's length; None when no run with an activation in it applies."""
    if len(layers) < 2 or not _applies(k) or (loops := _jit.loops()) is None:
        return None
    ops, state = [], k
    for layer in layers:
        step = layer.chain_op(state)
        if step is None:
            break
        ops.append(step[0])
        state = state.replace(**step[1])  # what the layer does to the flags (width, ...)
    activations = sum(op[0] >= _jit.RELU for op in ops)
    if not activations:
        return None
    consts, tiny = _jit.constants(k.nngp.dtype)
    ops_array = np.array(ops, dtype=consts.dtype)

    def call(k12, ntk, t, theta, v1, v2, idx1, idx2, var_out, ntk_kind, mode):
        def rows(x):  # a vector as one row
            return x.numpy().reshape(-1, x.shape[-1])

        loops.chain(
            rows(k12), rows(ntk), rows(t), rows(theta), ops_array, v1.numpy(), v2.numpy(),
            idx1.numpy(), idx2.numpy(), var_out.numpy(), consts, tiny, ntk_kind, mode,
        )  # fmt: skip

    # The examples' own variances through the run (SELF mode), each activation's inputs kept.
    none = torch.zeros(1, dtype=torch.int64)
    own = []
    for cov in (k.cov1,) if k.cov2 is k.cov1 else (k.cov1, k.cov2):
        out = torch.empty_like(cov)
        var = torch.empty((activations, len(cov)), dtype=cov.dtype)
        call(cov, out, out, out, var, var, none, none, var, 0, _jit.SELF)
        own.append((out, var))
    (cov1, var1), (cov2, var2) = own[0], own[-1]
    t = torch.empty_like(k.nngp)
    theta = None if k.ntk is None else torch.empty_like(t)
    ntk_kind = 0 if k.ntk is None else (1 if k.ntk.ndim > 0 else 2)
    pairs = (none, none) if k.pairs is None else k.pairs
    call(
        k.nngp, k.ntk if ntk_kind == 1 else t, t, t if theta is None else theta, var1, var2,
        *pairs, var1, ntk_kind, _jit.OUTER if k.pairs is None else _jit.PAIRS,
    )  # fmt: skip
    return state.replace(nngp=t, ntk=theta, cov1=cov1, cov2=cov2), len(ops)
