"""Float64 reference values from neural-tangents 0.6.5 for widelimits' spatial layers.

Run with the interpreter of the separate neural-tangents environment (see bench/README.md)::

    .nt-venv/bin/python bench/nt_reference.py OUT_DIR --only spatial

(or ``python bench/nt_reference_spatial.py OUT_DIR``).  It writes ``nt_spatial.npz`` into OUT_DIR
atomically.  Everything is float64 (``jax_enable_x64``).  This script imports neither torch nor
widelimits.

Inputs: ``x_img1`` = default_rng(20).standard_normal((3, 5, 6, 2)), ``x_img2`` =
default_rng(21).standard_normal((2, 5, 6, 2)) (NHWC images; transpose (0, 3, 1, 2) for NCHW),
``x_seq1`` = default_rng(22).standard_normal((3, 7, 2)), ``x_seq2`` = default_rng(23)
.standard_normal((2, 7, 2)) (NWC sequences; transpose (0, 2, 1) for NCL), ``x_vol1`` =
default_rng(24).standard_normal((2, 3, 4, 3, 2)), ``x_vol2`` = default_rng(25)
.standard_normal((2, 3, 4, 3, 2)) (NDHWC volumes; transpose (0, 4, 1, 2, 3) for NCDHW).

For each case NAME (``names``: JSON list), ``NAME_spec`` (JSON), ``NAME_input`` (``img``, ``seq``
or ``vol``) and ``NAME_{nngp,ntk}`` = ``kernel_fn(x1, x2)``, ``NAME_{nngp,ntk}_self`` =
``kernel_fn(x1, None)``.  Spec grammar: ``["Serial", [layer, ...]]``; layers ``["Conv" |
"ConvTranspose" | "ConvLocal", {"out", "filter_shape", "strides", "padding", "W_std", "b_std",
"bias", "parameterization"}]``, ``["AvgPool", {"window_shape", "strides", "padding",
"normalize_edges"}]``, ``["Dense", {"out", "W_std", "b_std", "bias", "parameterization"}]``,
``["ImageResize", {"shape", "method", "antialias"}]`` (NT's shape: -1 keeps the batch and
channel axes), ``["Relu" | "Erf" | "Flatten" | "GlobalAvgPool" | "GlobalSumPool", {}]``.
Paddings are NT's names (``SAME``, ``VALID``, ``CIRCULAR``); NT's layers act on the spatial
axes in order (H, W) (the default dimension numbers), as widelimits' on NCHW.

Semantics these values depend on: ``ConvTranspose`` is ``lax.conv_transpose`` (no kernel flip)
scaled by ``W_std / sqrt(C k)``, its kernel the stride-1 convolution of the dilated, padded input
kernel with a 1 / k diagonal filter (then, for CIRCULAR, the VALID result wrapped onto ``n s``
pixels); ``ConvLocal`` has independent weights and biases at each output position (its kernel
is zero between different pixels); ``AvgPool(normalize_edges=True)`` with SAME padding divides
each window by its count of input pixels; ``GlobalSumPool`` sums over the pixels;
``ImageResize`` is ``jax.image.resize`` ("linear": triangle filter at half-pixel centres,
widened when down-sampling with antialias; "nearest": floor((i + 1/2) n / m)), its kernel
R K R^T per axis (NT resizes the wrong axes of kernels whose spatial axes it keeps reversed,
after an odd number of weight-shared convolutions: every case here has an even number).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

Spec = list[Any]


def conv(name: str, filt, strides=None, padding="SAME", W_std=1.0, b_std=None, out=16,
         parameterization="ntk") -> Spec:  # fmt: skip
    return [
        name,
        {
            "out": out,
            "filter_shape": list(filt),
            "strides": list(strides or (1,) * len(filt)),
            "padding": padding,
            "W_std": float(W_std),
            "b_std": 0.0 if b_std is None else float(b_std),
            "bias": b_std is not None,
            "parameterization": parameterization,
        },
    ]


def dense(out=1, W_std=1.0, b_std=None) -> Spec:
    b = 0.0 if b_std is None else float(b_std)
    return ["Dense", {"out": out, "W_std": float(W_std), "b_std": b, "bias": b_std is not None,
                      "parameterization": "ntk"}]  # fmt: skip


def pool(window, strides=None, padding="VALID", normalize_edges=False) -> Spec:
    return ["AvgPool", {"window_shape": list(window), "strides": list(strides or window),
                        "padding": padding, "normalize_edges": normalize_edges}]  # fmt: skip


def resize(shape, method, antialias=True) -> Spec:
    return ["ImageResize", {"shape": list(shape), "method": method, "antialias": antialias}]


def serial(*layers: Spec) -> Spec:
    return ["Serial", list(layers)]


RELU, ERF, FLAT, GAP, GSP = ["Relu", {}], ["Erf", {}], ["Flatten", {}], ["GlobalAvgPool", {}], [
    "GlobalSumPool", {}]  # fmt: skip


def cases() -> list[tuple[str, str, Spec]]:
    ct, cl, cv = "ConvTranspose", "ConvLocal", "Conv"
    return [
        ("convT_same_s2_flatten", "img", serial(
            conv(ct, (3, 3), (2, 2), "SAME", 1.3, 0.1), RELU,
            conv(cv, (2, 2), (1, 1), "SAME", 1.2), FLAT, dense(1, 1.1))),
        ("convT_valid_k2x3_s2x1_gap", "img", serial(
            conv(ct, (2, 3), (2, 1), "VALID", 1.4, 0.2), ERF, GAP, dense(1, 1.2))),
        ("convT_circular_k3_s2_gap", "img", serial(
            conv(ct, (3, 3), (2, 2), "CIRCULAR", 1.5, 0.1), RELU, GAP, dense(1, 1.0, 0.1))),
        ("convT_same_k4_s1_standard", "img", serial(
            conv(cv, (3, 3), None, "SAME", 1.3, out=8), RELU,
            conv(ct, (4, 4), (1, 1), "SAME", 1.2, 0.3, out=8, parameterization="standard"),
            RELU, GAP, dense(1, 1.1))),
        ("convT_seq_k5_s3_valid", "seq", serial(
            conv(ct, (5,), (3,), "VALID", 1.3, 0.1), RELU, conv(ct, (2,), (2,), "SAME", 1.1),
            FLAT, dense(1, 1.0))),
        ("convlocal_same_then_valid_gap", "img", serial(
            conv(cl, (3, 3), None, "SAME", 1.3, 0.2), RELU,
            conv(cl, (2, 3), (2, 1), "VALID", 1.2, 0.1), ERF, GAP, dense(1, 1.1))),
        ("convlocal_circular_flatten", "img", serial(
            conv(cl, (3, 2), None, "CIRCULAR", 1.4), RELU, FLAT, dense(1, 1.0, 0.1))),
        ("avgpool_normalize_edges_same", "img", serial(
            conv(cv, (3, 3), None, "SAME", 1.3, 0.1), RELU,
            pool((3, 3), (2, 2), "SAME", True), GAP, dense(1, 1.0))),
        ("avgpool_normalize_edges_same_s1", "img", serial(
            conv(cv, (2, 3), None, "SAME", 1.2), ERF,
            pool((2, 3), (1, 1), "SAME", True), FLAT, dense(1, 1.0))),
        ("avgpool_plain_same", "img", serial(
            conv(cv, (3, 3), None, "SAME", 1.3, 0.1), RELU,
            pool((3, 3), (2, 2), "SAME", False), GAP, dense(1, 1.0))),
        ("globalsumpool", "img", serial(
            conv(cv, (3, 3), None, "SAME", 1.3, 0.1), RELU, GSP, dense(1, 1.0, 0.2))),
        ("conv3d_pool_gap", "vol", serial(
            conv(cv, (3, 2, 3), None, "SAME", 1.3, 0.1), RELU,
            conv(cv, (2, 2, 2), (1, 2, 1), "CIRCULAR", 1.2), ERF,
            pool((2, 2, 2), (1, 1, 1), "SAME", True), GAP, dense(1, 1.1))),
        # NT's ImageResize resizes the wrong axes after an odd number of weight-shared
        # convolutions (their kernels keep the spatial axes reversed): two convolutions first
        ("resize_linear_up_gap", "img", serial(
            conv(cv, (3, 3), None, "SAME", 1.3, 0.1), RELU, conv(cv, (2, 2), None, "SAME", 1.2),
            resize((-1, 8, 9, -1), "linear"),
            conv(cv, (3, 3), None, "SAME", 1.2), ERF, GAP, dense(1, 1.0))),
        ("resize_linear_down_antialias_gap", "img", serial(
            conv(cv, (3, 3), None, "SAME", 1.3), RELU, conv(cv, (3, 3), None, "SAME", 1.1),
            resize((-1, 3, 4, -1), "linear"),
            conv(cv, (2, 2), None, "VALID", 1.2), RELU, GAP, dense(1, 1.1, 0.1))),
        ("resize_linear_down_no_antialias_gap", "img", serial(
            conv(cv, (2, 2), None, "SAME", 1.3), ERF, conv(cv, (3, 3), None, "SAME", 1.2, 0.1),
            resize((-1, 2, 9, -1), "linear", antialias=False), GAP, dense(1, 1.0))),
        ("resize_nearest_flatten", "img", serial(
            conv(cv, (3, 3), None, "SAME", 1.3, 0.1), RELU, conv(cv, (3, 3), None, "SAME", 1.1),
            resize((-1, 11, 4, -1), "nearest"),
            conv(cv, (3, 3), None, "SAME", 1.2), RELU, FLAT, dense(1, 1.0))),
        ("conv3d_transpose_flatten", "vol", serial(
            conv(ct, (2, 3, 2), (2, 1, 2), "SAME", 1.3, 0.1), RELU, FLAT, dense(1, 1.0))),
    ]  # fmt: skip


def build(spec: Spec) -> Any:
    from neural_tangents import stax

    name, p = spec
    if name == "Serial":
        return stax.serial(*(build(s) for s in p))
    if name in ("Conv", "ConvTranspose", "ConvLocal"):
        return getattr(stax, name)(
            p["out"], tuple(p["filter_shape"]), strides=tuple(p["strides"]),
            padding=p["padding"], W_std=p["W_std"], b_std=p["b_std"] if p["bias"] else None,
            parameterization=p["parameterization"],
        )  # fmt: skip
    if name == "Dense":
        return stax.Dense(p["out"], W_std=p["W_std"], b_std=p["b_std"] if p["bias"] else None)
    if name == "AvgPool":
        return stax.AvgPool(tuple(p["window_shape"]), tuple(p["strides"]), p["padding"],
                            normalize_edges=p["normalize_edges"])  # fmt: skip
    if name == "ImageResize":
        return stax.ImageResize(tuple(p["shape"]), p["method"], antialias=p["antialias"])
    return getattr(stax, name)()


def inputs() -> dict[str, np.ndarray]:
    g = np.random.default_rng
    return {
        "x_img1": g(20).standard_normal((3, 5, 6, 2)),
        "x_img2": g(21).standard_normal((2, 5, 6, 2)),
        "x_seq1": g(22).standard_normal((3, 7, 2)),
        "x_seq2": g(23).standard_normal((2, 7, 2)),
        "x_vol1": g(24).standard_normal((2, 3, 4, 3, 2)),
        "x_vol2": g(25).standard_normal((2, 3, 4, 3, 2)),
    }


def spatial_file(path: str) -> None:
    from nt_reference import save_atomic

    out: dict[str, Any] = dict(inputs())
    names = []
    for name, kind, spec in cases():
        _, _, kernel_fn = build(spec)
        x1, x2 = out[f"x_{kind}1"], out[f"x_{kind}2"]
        k12 = kernel_fn(x1, x2, ("nngp", "ntk"))
        k11 = kernel_fn(x1, None, ("nngp", "ntk"))
        for g in ("nngp", "ntk"):
            out[f"{name}_{g}"] = np.asarray(getattr(k12, g), dtype=np.float64)
            out[f"{name}_{g}_self"] = np.asarray(getattr(k11, g), dtype=np.float64)
        out[f"{name}_spec"] = np.array(json.dumps(spec))
        out[f"{name}_input"] = np.array(kind)
        names.append(name)
    out["names"] = np.array(json.dumps(names))
    save_atomic(path, out)
    print(f"{path}: {len(names)} spatial architectures", file=sys.stderr)


if __name__ == "__main__":
    import jax

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "/work/ntref"
    spatial_file(os.path.join(out_dir, "nt_spatial.npz"))
