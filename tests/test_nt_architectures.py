"""Differential test against neural-tangents on 61 architectures, most drawn at random.

The networks (fully connected, with FanOut / Parallel / FanInSum / FanInConcat / FanInProd,
Identity and ten activations, both parametrizations, widths 8 to 512) and their float64 kernels
come from neural-tangents 0.6.5 (tests/data/README.md, ``nt_architectures.npz``).  Each JSON
spec is translated into widelimits layers here; NNGP and NTK must agree for x1 vs x2 and for
x1 vs None.  Twelve of the networks (five of them hand-written) put an activation right after
a FanInConcat, the case whose kernel used to be wrong (an activation of the width-weighted
average of the branch kernels; 12 of the 61 failed before the fix): neural-tangents refuses it,
so it was evaluated on the equivalent network with the activation moved into each branch.

Self-pairs: widelimits gives an example paired with itself a correlation of exactly 1, while
neural-tangents computes x . x and |x|^2 separately and gets 1 - O(1e-16); arccos turns that
into an angle of ~1e-8, so Tdot of ReLU-like and sign activations (and the NTK through them)
moves by ~1e-9 to 1e-8 of the kernel scale on the diagonal of k(x1, None) only.  Those entries
are compared at 3e-8 (measured worst: 7e-9); every other entry at 1e-9 (measured: 4e-16).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import widelimits as wl

DATA = np.load(Path(__file__).parent / "data" / "nt_architectures.npz")
N_ARCH = int(DATA["n_arch"])
RTOL = 1e-9
SELF_PAIR_RTOL = 3e-8

LAYERS = {
    "Relu": wl.ReLU, "LeakyRelu": wl.LeakyReLU, "Abs": wl.Abs, "Sign": wl.Sign, "Erf": wl.Erf,
    "Gelu": wl.GELU, "Sin": wl.Sin, "Rbf": wl.RBF, "Exp": wl.Exp, "Identity": wl.Identity,
    "FanInSum": wl.FanInSum, "FanInConcat": wl.FanInConcat, "FanInProd": wl.FanInProd,
    "Flatten": wl.Flatten, "GlobalAvgPool": wl.GlobalAvgPool,
}  # fmt: skip


def translate(node) -> wl.Layer:
    """A widelimits description from the JSON spec grammar of the reference file."""
    name, arg = node
    if name in ("Serial", "Parallel"):
        return getattr(wl, name)(*(translate(child) for child in arg))
    if name == "FanOut":
        return wl.FanOut(arg)
    if name in ("Dense", "Conv"):
        common = dict(
            W_std=arg["W_std"],
            b_std=arg["b_std"] if arg["bias"] else None,
            parametrization=arg["parameterization"],
        )
        if name == "Dense":
            return wl.Dense(arg["out"], **common)
        padding = arg["padding"].lower()
        return wl.Conv(arg["out"], tuple(arg["filter_shape"]), padding=padding, **common)
    return LAYERS[name](**arg)


def _relative_errors(actual: torch.Tensor, expected: np.ndarray) -> np.ndarray:
    return np.abs(actual.numpy() - expected) / np.abs(expected).max()


@pytest.mark.parametrize("i", range(N_ARCH))
def test_matches_neural_tangents(i):
    net = translate(json.loads(str(DATA[f"arch{i}_spec"])))
    x1, x2 = torch.from_numpy(DATA["x1"]), torch.from_numpy(DATA["x2"])
    note = str(DATA[f"arch{i}_note"])
    cross, self_ = net.kernel(x1, x2), net.kernel(x1)
    for g in ("nngp", "ntk"):
        err = _relative_errors(getattr(cross, g), DATA[f"arch{i}_{g}"])
        assert err.max() <= RTOL, f"arch{i} ({note}) {g}(x1, x2): relative error {err.max():.3g}"
        err = _relative_errors(getattr(self_, g), DATA[f"arch{i}_{g}_self"])
        off = err[~np.eye(len(err), dtype=bool)].max()
        assert off <= RTOL, f"arch{i} ({note}) {g}(x1, None) off the diagonal: {off:.3g}"
        diag = err.diagonal().max()
        assert diag <= SELF_PAIR_RTOL, f"arch{i} ({note}) {g}(x1, None) self-pairs: {diag:.3g}"


def test_the_required_concat_cases_are_there():
    notes = [str(DATA[f"arch{i}_note"]) for i in range(N_ARCH)]
    concat_then_activation = [n for n in notes if "FanInConcat" in n and "then" in n]
    assert len(concat_then_activation) >= 5
    specs = [str(DATA[f"arch{i}_spec"]) for i in range(N_ARCH)]
    assert sum("FanInConcat" in s for s in specs) >= 10


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_circular_conv_on_images_smaller_than_the_filter(readout):
    """H = 1 with 3x3 circular filters: the taps wrap around the single row."""
    net = translate(json.loads(str(DATA[f"circ_small_{readout}_spec"])))
    x = torch.from_numpy(DATA["x_img"].transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW
    k = net.kernel(x)
    for g in ("nngp", "ntk"):
        err = _relative_errors(getattr(k, g), DATA[f"circ_small_{readout}_{g}"])
        assert err.max() <= RTOL, f"circ_small_{readout} {g}: relative error {err.max():.3g}"
