"""Float64 reference values from neural-tangents 0.6.5 for widelimits' tests.

Run with the interpreter of the separate neural-tangents environment (see bench/README.md),
never with the main one::

    .nt-venv/bin/python bench/nt_reference.py OUT_DIR

It writes three files into OUT_DIR, each atomically (a temporary name, then a rename), in this
order: ``nt_architectures.npz``, ``nt_predict.npz``, ``nt_attention.npz`` and ``nt_spatial.npz``
(spatial layers; its cases and keys are described in ``bench/nt_reference_spatial.py``);
``--only`` picks one. Everything is computed with
``jax_enable_x64`` on, so all arrays are float64. Load with ``numpy.load(path)``; JSON strings
are stored as 0-d unicode arrays (``json.loads(str(data[key]))``). This script imports neither
torch nor widelimits.

Layer semantics of neural-tangents (NT) 0.6.5 that the values depend on
-----------------------------------------------------------------------
- Input kernel: ``x1 @ x2.T / d`` (d = features; for images the mean over channels, per pixel
  pair). Kernels of a net ending in ``Dense(1)`` are the per-output kernel (output axis traced).
- ``Dense(out, W_std, b_std, parameterization)``, with input kernel K (NNGP) and T (NTK) and
  ``n_in`` = channel count of the layer's input (the previous ``out``, or d at the input):
  NNGP' = W_std^2 K + b_std^2. ``'ntk'``: NTK' = NNGP' + W_std^2 T. ``'standard'``:
  NTK' = n_in K + W_std^2 T (+ 1 if a bias is present, whatever b_std), i.e. the width ``out``
  of the previous layer (and d) enters the NTK. ``b_std=None`` means no bias; the specs below
  write it as ``0.0`` (same kernel, except for the ``+ 1`` of ``'standard'``: there the spec
  key ``"bias"`` says whether NT was given a bias at all).
- Activations (elementwise, closed-form NT kernels): ``Relu``, ``Abs``, ``LeakyRelu(alpha)``
  (x if x > 0 else alpha x), ``Erf(a, b, c)`` = a erf(b x) + c, ``Gelu(approximate=False)``
  (exact x Phi(x)), ``Sin(a, b, c)`` = a sin(b x + c), ``Sign``, ``Rbf(gamma)`` =
  sqrt(2) sin(sqrt(2 gamma) x + pi/4) (NT's random-Fourier-feature map whose NNGP is
  exp(-gamma ||x1 - x2||^2)), ``Exp(a, b)`` = a exp(b x), ``Identity`` (NT's linear identity
  layer). NT applies an activation only to a Gaussian input (after a Dense/Conv, a FanInSum of
  Gaussians, or an Identity of those); otherwise it refuses.
- ``FanOut(n)`` copies the input; ``Parallel(b1, ..., bn)`` applies branch i to copy i; branches
  are independent (each should contain a Dense). ``FanInSum`` adds the kernels, ``FanInProd``
  multiplies them (both need Gaussian branch outputs of equal width). ``FanInConcat`` (channel
  axis) averages the branch kernels weighted by the branch output widths
  (``sum_i w_i K_i / sum_i w_i``, w_i = channel count of branch i: its last Dense's ``out``, or
  the width of the FanOut input for a branch without a Dense; equal widths give the plain mean).
- NT refuses an activation right after a channel-wise ``FanInConcat`` (the concatenation is
  not jointly Gaussian). Since an elementwise activation commutes with concatenation, every
  such case here is evaluated on the equivalent network with the activation(s) moved to the end
  of each branch; its spec says so (``arch{i}_nt_spec`` is the network actually given to NT).
  This is the only rewrite.
- ``Conv(out, (3, 3), padding='CIRCULAR')`` on NHWC images: the Dense rules per pixel pair
  (p, p'), applied to the mean over filter offsets e of K(p + e, p' + e), indices taken
  periodically (also when a side, 1 here, is smaller than the filter). ``Flatten`` takes the
  mean over pixels p of K(p, p); ``GlobalAvgPool`` the mean over all pixel pairs (p, p').

File (a): nt_architectures.npz
------------------------------
``x1`` = default_rng(10).standard_normal((5, 8)), ``x2`` = default_rng(11).standard_normal((4,
8)). ``n_arch``: number of architectures. For i in range(n_arch):

- ``arch{i}_spec`` (JSON): the architecture (grammar below), ``arch{i}_nt_spec`` (JSON): the
  network given to NT (differs only by the FanInConcat rewrite above), ``arch{i}_note``: a short
  description (``required:...`` for the hand-written cases, ``random`` otherwise).
- ``arch{i}_nngp``, ``arch{i}_ntk``: ``kernel_fn(x1, x2)``, shape (5, 4).
- ``arch{i}_nngp_self``, ``arch{i}_ntk_self``: ``kernel_fn(x1, None)``, shape (5, 5).

Spec grammar: ``["Serial", [layer, ...]]``, ``["Parallel", [branch, ...]]``, ``["FanOut", n]``;
every other layer is ``[name, params]`` with ``params`` a dict (possibly empty):
``["Dense", {"out", "W_std", "b_std", "bias", "parameterization"}]``, ``["Relu", {}]``,
``["Abs", {}]``, ``["Sign", {}]``, ``["Identity", {}]``, ``["LeakyRelu", {"alpha"}]``,
``["Erf", {"a", "b", "c"}]``, ``["Gelu", {"approximate": false}]``, ``["Sin", {"a", "b",
"c"}]``, ``["Rbf", {"gamma"}]``, ``["Exp", {"a", "b"}]``, ``["FanInSum", {}]``,
``["FanInConcat", {}]``, ``["FanInProd", {}]``, ``["Conv", {"out", "filter_shape", "padding",
"W_std", "b_std", "bias", "parameterization"}]``, ``["Flatten", {}]``, ``["GlobalAvgPool", {}]``.

Skipped combinations (not stored) are listed in ``refusals`` (JSON list of {"spec", "reason"}):
NT raises for an activation whose input is not Gaussian (activation after an activation, on the
raw input, or after FanInProd), for FanInSum/FanInProd of non-Gaussian or unequal-width
branches; a result with NaN or inf would also be skipped (reason ``non-finite``), and so is one
with a kernel entry above 1e6 (reason ``too large``: chains of Exp or products explode).

Circular convolution on images smaller than the filter: ``x_img`` =
default_rng(12).standard_normal((3, 1, 5, 2)) in NHWC layout (N=3, H=1, W=5, C=2; transpose
(0, 3, 1, 2) for NCHW). Network ``Conv(16, (3, 3), 'CIRCULAR', W_std=1.5, b_std=0.1), Relu,
Conv(16, (3, 3), 'CIRCULAR', W_std=1.5, b_std=0.1), Relu, {Flatten | GlobalAvgPool},
Dense(1, W_std=1.5, b_std=0.1)`` (NTK parameterization); keys ``circ_small_{flatten,gap}_{nngp,
ntk}`` = ``kernel_fn(x_img, None)`` (3, 3), ``circ_small_{flatten,gap}_spec`` (JSON). If NT
refused, ``circ_small_{flatten,gap}_refused`` holds its message instead.

File (c): nt_attention.npz
--------------------------
``GlobalSelfAttention(n_chan_out, n_chan_key, n_chan_val, n_heads, linear_scaling, W_*_std,
b_std, attention_mechanism, pos_emb_type, pos_emb_p_norm, pos_emb_decay_fn, n_chan_pos_emb,
W_pos_emb_std, val_pos_emb)`` on (N, L, C) sequences or (N, H, W, C) images (all H W positions
attend to each other). With linear scaling the logits of example x concentrate on
QK_std * (w_x K(x, x) + w_e R) (R: the embedding covariance, identity or decay(sum_i
|p_i - q_i|^p); w_x = 1, w_e = W_pos_emb_std^2 for SUM; channel shares for CONCAT, where NT reads
the channel count of the layer's input), the weights A(x) = mechanism(logits) (softmax over
keys), and NNGP' = OV_std^2 A(x) K_V A(x')^T + b_std^2, NTK' = OV_std^2 A (Theta_V + 2 K_V) A^T +
b_std^2. Square-root scaling: identity mechanism only. ``kernel_fn(..., mask_constant=c)``:
positions whose channels all equal c get no attention weight, GlobalAvgPool averages over the
other positions. Keys and inputs: tests/data/README.md.

File (b): nt_predict.npz
------------------------
Network fc_relu = ``Serial(Dense(512), Relu(), Dense(512), Relu(), Dense(1))`` (NTK
parameterization, W_std=1, no bias). ``x_train`` = default_rng(0).standard_normal((4, 16)),
``x_test`` = default_rng(1).standard_normal((3, 16)), ``y_train`` =
default_rng(3).standard_normal((4, 1)). Kernels: ``k_train_train_{nngp,ntk}`` (4, 4),
``k_test_train_{nngp,ntk}`` (3, 4), ``k_test_test_{nngp,ntk}`` (3, 3).

diag_reg scaling: with NT's default ``diag_reg_absolute_scale=False`` NT inverts
``K + diag_reg * (trace(K) / n) * I`` (K = the train-train kernel being inverted, n = 4; the
trace is that of the matrix in NT's flattened layout, here just the 4x4 kernel); with
``diag_reg_absolute_scale=True`` it inverts ``K + diag_reg * I``. Keys tagged ``rel`` use the
default (relative) scaling, ``abs`` the absolute one. ``diag_reg_scale_{nngp,ntk}`` = trace(K)/n
of the train-train kernels, i.e. the factor NT applied under ``rel``. The regularizer enters only
the inverted matrix; the NTK covariance's middle term uses the unregularized train NNGP
(checked below against a direct numpy formula: ``check_*`` keys hold the max abs differences).

Keys, with DR in {0.01, 0.1} (written ``0.01``/``0.1``), SC in {rel, abs}, G in {nngp, ntk}:

- ``ens_G_dr{DR}_{SC}_t{T}_{mean,cov}``: ``gradient_descent_mse_ensemble(kernel_fn, x_train,
  y_train, learning_rate=1.0, diag_reg=DR, diag_reg_absolute_scale=SC == 'abs')`` then
  ``predict_fn(t=..., x_test=x_test, get=G, compute_cov=True)``. ``T`` is ``inf`` (t=None, mean
  (3, 1), cov (3, 3)), ``1`` (t=1.0, same shapes) or ``0.5_3`` (t=np.array([0.5, 3.0]): mean
  (2, 3, 1), cov (2, 3, 3), leading axis = time). NT's time convention: gradient flow on the
  loss ||f - y||^2 / (2 * y.size) (y.size = 4 here) at learning_rate 1.0, so the train residual
  decays as exp(-K_reg t / y.size), K_reg the regularized train NTK (for G=nngp: the NNGP,
  i.e. training only the readout layer).
- ``gp_G_dr{DR}_{SC}_{mean,cov}``: ``gp_inference(k_train_train, y_train, diag_reg=DR,
  diag_reg_absolute_scale=SC == 'abs')`` then ``predict_fn(get=G, k_test_train=k_test_train,
  k_test_test=k_test_test)`` with the Kernel objects of ``kernel_fn`` (both nngp and ntk).
  Equal to the ensemble at t=inf (checked: ``check_gp_vs_ens``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

Spec = list[Any]

ACTIVATIONS = ("Relu", "Erf", "Gelu", "Sin", "Abs", "LeakyRelu", "Identity", "Sign", "Rbf", "Exp")
N_RANDOM_TARGET = 54  # random architectures kept, on top of the required ones
MAX_RANDOM_TRIES = 400
SEED_ARCH = 2026
MAX_ENTRY = 1e6  # larger kernels (e.g. Exp of Exp, products) make poor reference values


# --------------------------------------------------------------------------- specs and builder


def dense(
    out: int = 512,
    W_std: float = 1.0,
    b_std: float | None = None,
    parameterization: str = "ntk",
) -> Spec:
    return [
        "Dense",
        {
            "out": int(out),
            "W_std": float(W_std),
            "b_std": 0.0 if b_std is None else float(b_std),
            "bias": b_std is not None,
            "parameterization": parameterization,
        },
    ]


def act(name: str, **params: Any) -> Spec:
    defaults: dict[str, dict[str, Any]] = {
        "Erf": {"a": 1.0, "b": 1.0, "c": 0.0},
        "Gelu": {"approximate": False},
        "Sin": {"a": 1.0, "b": 1.0, "c": 0.0},
        "LeakyRelu": {"alpha": 0.1},
        "Rbf": {"gamma": 1.0},
        "Exp": {"a": 1.0, "b": 1.0},
    }
    return [name, {**defaults.get(name, {}), **params}]


def serial(*layers: Spec) -> Spec:
    return ["Serial", list(layers)]


def parallel(*branches: Spec) -> Spec:
    return ["Parallel", list(branches)]


def build(spec: Spec) -> Any:
    """The NT ``(init_fn, apply_fn, kernel_fn)`` of a spec."""
    from neural_tangents import stax

    name, arg = spec[0], spec[1] if len(spec) > 1 else {}
    if name == "Serial":
        return stax.serial(*(build(s) for s in arg))
    if name == "Parallel":
        return stax.parallel(*(build(s) for s in arg))
    if name == "FanOut":
        return stax.FanOut(int(arg))
    p = dict(arg)
    if name == "GlobalSelfAttention":
        decay = p.pop("pos_emb_decay", None)
        return stax.GlobalSelfAttention(
            **{**p, "attention_mechanism": p["attention_mechanism"].upper(),
               "pos_emb_type": p["pos_emb_type"].upper()},
            pos_emb_decay_fn=None if decay is None else DECAYS[decay],
        )  # fmt: skip
    if name in ("Dense", "Conv"):
        b_std = p["b_std"] if p["bias"] else None
        if name == "Dense":
            return stax.Dense(
                p["out"], W_std=p["W_std"], b_std=b_std, parameterization=p["parameterization"]
            )
        return stax.Conv(
            p["out"],
            tuple(p["filter_shape"]),
            padding=p["padding"],
            W_std=p["W_std"],
            b_std=b_std,
            parameterization=p["parameterization"],
        )
    simple = {
        "Relu": stax.Relu,
        "Abs": stax.Abs,
        "Sign": stax.Sign,
        "Identity": stax.Identity,
        "FanInSum": stax.FanInSum,
        "FanInConcat": stax.FanInConcat,
        "FanInProd": stax.FanInProd,
        "Flatten": stax.Flatten,
        "GlobalAvgPool": stax.GlobalAvgPool,
        "LayerNorm": stax.LayerNorm,
        "Erf": stax.Erf,
        "Gelu": stax.Gelu,
        "Sin": stax.Sin,
        "LeakyRelu": stax.LeakyRelu,
        "Rbf": stax.Rbf,
        "Exp": stax.Exp,
    }
    return simple[name](**p)


def is_elementwise(spec: Spec) -> bool:
    return spec[0] in ACTIVATIONS and spec[0] != "Identity"


def nt_rewrite(spec: Spec) -> Spec:
    """Move activations that follow a channel-wise FanInConcat into the concatenated branches.

    ``Parallel(b1, .., bn), FanInConcat, act1, .., actk`` becomes
    ``Parallel(Serial(b1, act1, .., actk), ..), FanInConcat``: the same function, since an
    elementwise activation commutes with concatenation, in a form NT accepts.
    """
    if spec[0] == "Parallel":
        return ["Parallel", [nt_rewrite(b) for b in spec[1]]]
    if spec[0] != "Serial":
        return spec
    layers = [nt_rewrite(s) for s in spec[1]]
    out: list[Spec] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer[0] == "FanInConcat" and out and out[-1][0] == "Parallel":
            j = i + 1
            while j < len(layers) and is_elementwise(layers[j]):
                j += 1
            moved = layers[i + 1 : j]
            if moved:
                branches = out[-1][1]
                new = []
                for b in branches:
                    inner = b[1] if b[0] == "Serial" else [b]
                    new.append(["Serial", [*inner, *moved]])
                out[-1] = ["Parallel", new]
            out.append(layer)
            i = j
            continue
        out.append(layer)
        i += 1
    return ["Serial", out]


# --------------------------------------------------------------------------- architectures


def required_architectures() -> list[tuple[str, Spec]]:
    d = dense
    archs: list[tuple[str, Spec]] = [
        (
            "required: FanInConcat then Erf (issue 13 case)",
            serial(
                ["FanOut", 2],
                parallel(d(512, 1.0), d(512, 2.0, 1.0)),
                ["FanInConcat", {}],
                act("Erf"),
                d(1, 1.0),
            ),
        ),
    ]
    for name in ("Relu", "Erf", "Gelu"):
        archs.append(
            (
                f"required: FanInConcat then {name}",
                serial(
                    d(512, 1.3, 0.1),
                    act("Relu"),
                    ["FanOut", 2],
                    parallel(d(512, 0.8), d(512, 1.7, 1.0)),
                    ["FanInConcat", {}],
                    act(name),
                    d(1, 1.2, 0.1),
                ),
            )
        )
    archs.append(
        (
            "required: FanInConcat of branches of different widths (128, 512), then Relu",
            serial(
                ["FanOut", 2],
                parallel(d(128, 1.0), d(512, 2.0, 1.0)),
                ["FanInConcat", {}],
                act("Relu"),
                d(1, 1.0),
            ),
        )
    )
    archs.append(
        (
            "required: FanInConcat of 3 branches of widths 64, 256, 8 (the Identity branch keeps"
            " the input width 8), then Dense",
            serial(
                ["FanOut", 3],
                parallel(serial(d(64, 1.5), act("Erf")), d(256, 0.7, 0.1), act("Identity")),
                ["FanInConcat", {}],
                d(1, 1.0),
            ),
        )
    )
    archs.append(
        (
            "required: residual block at the input (Identity branch = the raw input, width 8)",
            serial(
                ["FanOut", 2],
                parallel(serial(d(512, 1.0), act("Relu"), d(8, 1.0)), act("Identity")),
                ["FanInSum", {}],
                d(1, 1.0),
            ),
        )
    )
    archs.append(
        (
            "required: residual block after a Dense",
            serial(
                d(512, 1.0),
                ["FanOut", 2],
                parallel(serial(d(512, 1.0), act("Relu"), d(512, 1.0)), act("Identity")),
                ["FanInSum", {}],
                act("Relu"),
                d(1, 1.0),
            ),
        )
    )
    return archs


def _width(branch: Spec, width_in: int) -> int:
    """Channel count at the end of a branch (the last Dense's ``out``, else the input's)."""
    layers = branch[1] if branch[0] == "Serial" else [branch]
    outs = [layer[1]["out"] for layer in layers if layer[0] == "Dense"]
    return outs[-1] if outs else width_in


class RandomArch:
    """Random architectures from the space of NT's stax tests, mostly ones NT accepts.

    The generator tracks whether the current activations are Gaussian (NT's ``is_gaussian``) so
    that about 90% of the draws are valid; the rest exercise NT's refusals.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def _dense(self, out: int | None = None) -> Spec:
        r = self.rng
        b = [None, 0.1, 1.0][r.integers(3)]
        if out is None:
            out = int(r.choice([64, 128, 256, 512]))
        return dense(out, round(float(r.uniform(0.5, 2.0)), 3), b, self.param)

    def _act(self) -> Spec:
        r = self.rng
        name = str(r.choice(ACTIVATIONS))
        if name == "Sin":
            return act(
                name,
                a=round(float(r.uniform(0.5, 1.5)), 3),
                b=round(float(r.uniform(0.5, 2.0)), 3),
                c=round(float(r.uniform(0.0, 1.0)), 3),
            )
        if name == "Rbf":
            return act(name, gamma=round(float(r.uniform(0.3, 2.0)), 3))
        if name == "Exp":
            a, b = round(float(r.uniform(0.5, 1.5)), 3), round(float(r.uniform(0.2, 1.0)), 3)
            return act(name, a=a, b=b)
        return act(name)

    def _branch(self, g_in: bool, want_gaussian: bool, out: int | None, dense_free: bool) -> Spec:
        """One branch of 1-2 layers; Gaussian output if ``want_gaussian`` (95% of the time).

        ``dense_free``: a branch without a Dense (keeping the input's width) is allowed.
        """
        r = self.rng
        options = ["D", "DA"] + (["AD"] if g_in else [])
        options += (["I"] + (["A"] if g_in else [])) if dense_free else []
        while True:
            kind = str(r.choice(options))
            if kind == "D":
                return self._dense(out)
            if kind == "AD":
                return serial(self._act(), self._dense(out))
            if kind == "I":
                spec, g = act("Identity"), g_in
            else:
                a = self._act()
                spec = serial(self._dense(out), a) if kind == "DA" else a
                g = a[0] == "Identity"
            if g or not want_gaussian or r.uniform() < 0.05:
                return spec

    def draw(self) -> Spec:
        r = self.rng
        self.param = "standard" if r.uniform() < 0.15 else "ntk"
        layers: list[Spec] = []
        g = False  # the raw input is not Gaussian for NT
        width = 8  # channel count of the current activations
        for _ in range(int(r.integers(1, 5))):
            if r.uniform() < 0.45:
                layers.append(self._dense())
                width = layers[-1][1]["out"]
                g = True
                if r.uniform() < 0.85:
                    a = self._act()
                    layers.append(a)
                    g = a[0] == "Identity"
                continue
            k = int(r.integers(2, 4))
            fan_in = str(r.choice(["FanInSum", "FanInConcat", "FanInProd"]))
            # an activation needs a Gaussian input: never after FanInProd (but 5% of draws)
            act_after = r.uniform() < (0.05 if fan_in == "FanInProd" else 0.5)
            want_g = fan_in != "FanInConcat" or act_after
            if fan_in == "FanInConcat":
                out, dense_free = None, True
            else:  # FanInSum / FanInProd need equal widths
                out = int(r.choice([64, 128, 256, 512]))
                dense_free = r.uniform() < 0.4
                out = width if dense_free else out
            branches = [self._branch(g, want_g, out, dense_free) for _ in range(k)]
            layers += [["FanOut", k], parallel(*branches), [fan_in, {}]]
            g = fan_in == "FanInSum"
            if fan_in == "FanInConcat":
                width = sum(_width(b, width) for b in branches)
            else:
                width = out
            if act_after:
                a = self._act()
                layers.append(a)
                g = a[0] == "Identity"
        last_b = [None, 0.1, 1.0][r.integers(3)]
        layers.append(dense(1, round(float(r.uniform(0.5, 2.0)), 3), last_b, self.param))
        return serial(*layers)


# --------------------------------------------------------------------------- computing


def kernels(spec: Spec, x1: np.ndarray, x2: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    _, _, kernel_fn = build(spec)
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    return np.asarray(k.nngp, dtype=np.float64), np.asarray(k.ntk, dtype=np.float64)


def try_arch(spec: Spec, x1: np.ndarray, x2: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """Kernels of one architecture, or ({}, reason) when NT refuses or gives non-finite values."""
    import warnings

    nt_spec = nt_rewrite(spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nngp, ntk = kernels(nt_spec, x1, x2)
            nngp_s, ntk_s = kernels(nt_spec, x1, None)
    except Exception as e:  # noqa: BLE001 - NT's refusals come as several types
        return {}, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    arrays = {"nngp": nngp, "ntk": ntk, "nngp_self": nngp_s, "ntk_self": ntk_s}
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        return {}, "non-finite"
    largest = max(float(np.max(np.abs(a))) for a in arrays.values())
    if largest > MAX_ENTRY:
        return {}, f"too large: max |kernel entry| = {largest:.3g} > {MAX_ENTRY:g}"
    return arrays, ""


def save_atomic(path: str, arrays: dict[str, Any], compressed: bool = False) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def circular_small(out: dict[str, Any]) -> None:
    x_img = np.random.default_rng(12).standard_normal((3, 1, 5, 2))
    out["x_img"] = x_img

    def conv() -> Spec:
        return [
            "Conv",
            {
                "out": 16,
                "filter_shape": [3, 3],
                "padding": "CIRCULAR",
                "W_std": 1.5,
                "b_std": 0.1,
                "bias": True,
                "parameterization": "ntk",
            },
        ]

    for name, readout in (("flatten", "Flatten"), ("gap", "GlobalAvgPool")):
        spec = serial(conv(), act("Relu"), conv(), act("Relu"), [readout, {}], dense(1, 1.5, 0.1))
        out[f"circ_small_{name}_spec"] = np.array(json.dumps(spec))
        try:
            nngp, ntk = kernels(spec, x_img, None)
        except Exception as e:  # noqa: BLE001
            out[f"circ_small_{name}_refused"] = np.array(f"{type(e).__name__}: {e}")
            print(f"circ_small_{name}: refused: {e}", file=sys.stderr)
            continue
        out[f"circ_small_{name}_nngp"] = nngp
        out[f"circ_small_{name}_ntk"] = ntk


def architectures_file(path: str) -> None:
    x1 = np.random.default_rng(10).standard_normal((5, 8))
    x2 = np.random.default_rng(11).standard_normal((4, 8))
    out: dict[str, Any] = {"x1": x1, "x2": x2}
    refusals: list[dict[str, Any]] = []
    n = 0

    def keep(note: str, spec: Spec) -> bool:
        nonlocal n
        arrays, reason = try_arch(spec, x1, x2)
        if reason:
            refusals.append({"note": note, "spec": spec, "reason": reason})
            return False
        out[f"arch{n}_spec"] = np.array(json.dumps(spec))
        out[f"arch{n}_nt_spec"] = np.array(json.dumps(nt_rewrite(spec)))
        out[f"arch{n}_note"] = np.array(note)
        for key, value in arrays.items():
            out[f"arch{n}_{key}"] = value
        n += 1
        return True

    for note, spec in required_architectures():
        keep(note, spec)
    gen = RandomArch(SEED_ARCH)
    kept = 0
    for _ in range(MAX_RANDOM_TRIES):
        if kept >= N_RANDOM_TARGET:
            break
        kept += keep("random", gen.draw())
    out["n_arch"] = np.array(n)
    out["refusals"] = np.array(json.dumps(refusals))
    circular_small(out)
    save_atomic(path, out)
    print(f"{path}: {n} architectures, {len(refusals)} refused", file=sys.stderr)


def _check_ens_inf(k: dict[str, np.ndarray], y: np.ndarray, dr: float, g: str, rel: bool):
    """Direct numpy formula for the t=inf ensemble mean and covariance (NT's semantics)."""

    def reg(a: np.ndarray) -> np.ndarray:
        s = np.trace(a) / a.shape[0] if rel else 1.0
        return a + dr * s * np.eye(a.shape[0])

    kxx, ktx, ktt = k["train_train_nngp"], k["test_train_nngp"], k["test_test_nngp"]
    if g == "nngp":
        inv = np.linalg.inv(reg(kxx))
        return ktx @ inv @ y, ktt - ktx @ inv @ ktx.T
    txx, ttx = k["train_train_ntk"], k["test_train_ntk"]
    inv = np.linalg.inv(reg(txx))
    mean = ttx @ inv @ y
    cross = ttx @ inv @ ktx.T
    return mean, ktt - cross - cross.T + ttx @ inv @ kxx @ inv @ ttx.T


def predict_file(path: str) -> None:
    import neural_tangents as nt
    from neural_tangents import stax

    _, _, kernel_fn = stax.serial(
        stax.Dense(512), stax.Relu(), stax.Dense(512), stax.Relu(), stax.Dense(1)
    )
    x_train = np.random.default_rng(0).standard_normal((4, 16))
    x_test = np.random.default_rng(1).standard_normal((3, 16))
    y_train = np.random.default_rng(3).standard_normal((4, 1))
    out: dict[str, Any] = {"x_train": x_train, "x_test": x_test, "y_train": y_train}
    k_tr = kernel_fn(x_train, None, ("nngp", "ntk"))
    k_te_tr = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    k_te_te = kernel_fn(x_test, None, ("nngp", "ntk"))
    k: dict[str, np.ndarray] = {}
    for name, kern in (("train_train", k_tr), ("test_train", k_te_tr), ("test_test", k_te_te)):
        for g in ("nngp", "ntk"):
            k[f"{name}_{g}"] = np.asarray(getattr(kern, g), dtype=np.float64)
            out[f"k_{name}_{g}"] = k[f"{name}_{g}"]
    for g in ("nngp", "ntk"):
        a = k[f"train_train_{g}"]
        out[f"diag_reg_scale_{g}"] = np.array(np.trace(a) / a.shape[0])

    times = (("inf", None), ("1", 1.0), ("0.5_3", np.array([0.5, 3.0])))
    worst_formula = worst_gp = 0.0
    for dr in (0.01, 0.1):
        for sc in ("rel", "abs"):
            absolute = sc == "abs"
            ens = nt.predict.gradient_descent_mse_ensemble(
                kernel_fn,
                x_train,
                y_train,
                learning_rate=1.0,
                diag_reg=dr,
                diag_reg_absolute_scale=absolute,
            )
            gp = nt.predict.gp_inference(
                k_tr, y_train, diag_reg=dr, diag_reg_absolute_scale=absolute
            )
            for g in ("nngp", "ntk"):
                for tname, t in times:
                    res = ens(t=t, x_test=x_test, get=g, compute_cov=True)
                    mean = np.asarray(res.mean, dtype=np.float64)
                    cov = np.asarray(res.covariance, dtype=np.float64)
                    out[f"ens_{g}_dr{dr:g}_{sc}_t{tname}_mean"] = mean
                    out[f"ens_{g}_dr{dr:g}_{sc}_t{tname}_cov"] = cov
                    if t is None:
                        ref_mean, ref_cov = _check_ens_inf(k, y_train, dr, g, not absolute)
                        worst_formula = max(
                            worst_formula,
                            float(np.max(np.abs(mean - ref_mean))),
                            float(np.max(np.abs(cov - ref_cov))),
                        )
                        ens_inf = (mean, cov)
                res = gp(get=g, k_test_train=k_te_tr, k_test_test=k_te_te)
                gm = np.asarray(res.mean, dtype=np.float64)
                gc = np.asarray(res.covariance, dtype=np.float64)
                out[f"gp_{g}_dr{dr:g}_{sc}_mean"] = gm
                out[f"gp_{g}_dr{dr:g}_{sc}_cov"] = gc
                worst_gp = max(
                    worst_gp,
                    float(np.max(np.abs(gm - ens_inf[0]))),
                    float(np.max(np.abs(gc - ens_inf[1]))),
                )
    out["check_ens_inf_vs_formula"] = np.array(worst_formula)
    out["check_gp_vs_ens"] = np.array(worst_gp)
    save_atomic(path, out)
    print(
        f"{path}: {sum(1 for key in out if key.startswith(('ens_', 'gp_')))} prediction arrays;"
        f" t=inf vs numpy formula {worst_formula:.2e}, gp vs ensemble {worst_gp:.2e}",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------- attention


def _decay_exp_half(d):
    import jax.numpy as jnp

    return jnp.exp(-d / 2)


DECAYS = {"exp_half": _decay_exp_half}  # pos_emb_decay names (JSON specs hold the name)


def attention(
    mechanism: str = "softmax",
    linear_scaling: bool = True,
    pos_emb_type: str = "none",
    val_pos_emb: bool = False,
    **extra: Any,
) -> Spec:
    """A ``GlobalSelfAttention`` spec with the scales every case shares (NT's arguments)."""
    params = {
        "n_chan_out": 8, "n_chan_key": 8, "n_chan_val": 8, "n_heads": 2,
        "linear_scaling": linear_scaling, "W_key_std": 1.1, "W_query_std": 0.9,
        "W_value_std": 1.2, "W_out_std": 0.8, "b_std": 0.1,
        "attention_mechanism": mechanism, "pos_emb_type": pos_emb_type,
        "val_pos_emb": val_pos_emb, "W_pos_emb_std": 0.7,
    }  # fmt: skip
    params.update(extra)
    return ["GlobalSelfAttention", params]


def attention_cases() -> list[tuple[str, Spec, str]]:
    """``(note, spec, input)``: ``input`` is ``seq`` (x_seq), ``img`` (x_img) or ``masked``."""
    head = dense(8, 1.3, 0.1)
    tail = (act("Relu"), ["GlobalAvgPool", {}], dense(1, 1.5, 0.1))
    cases = []
    for linear in (True, False):
        for mech in ("softmax", "identity", "abs", "relu") if linear else ("identity",):
            for pos, val in (("none", False), ("sum", False), ("sum", True),
                             ("concat", False), ("concat", True)):  # fmt: skip
                note = f"{mech} linear={linear} pos={pos} val_pos_emb={val}"
                cases.append((note, serial(head, attention(mech, linear, pos, val), *tail), "seq"))
    cases += [
        ("on the raw inputs", serial(attention(), ["GlobalAvgPool", {}], dense(1, 1.5, 0.1)),
         "seq"),
        ("concat n_chan_pos_emb=4",
         serial(head, attention("softmax", True, "concat", True, n_chan_pos_emb=4), *tail), "seq"),
        ("decay exp(-d/2), p=1",
         serial(head, attention("softmax", True, "concat", True, pos_emb_p_norm=1.0,
                                pos_emb_decay="exp_half"), *tail), "seq"),
        ("2-D images, sum", serial(head, attention("softmax", True, "sum"), *tail), "img"),
        ("2-D images, identity sqrt",
         serial(head, attention("identity", False, "concat", True), *tail), "img"),
    ]  # fmt: skip
    for data in ("seq", "masked"):
        cases.append((f"transformer, 2 blocks ({data})", transformer(), data))
    two = serial(head, attention(), act("Relu"), dense(8, 1.2, 0.1),
                 attention("relu", True, "sum", True), *tail)  # fmt: skip
    cases += [
        ("masked: softmax, two layers", two, "masked"),
        ("masked: softmax concat", serial(head, attention("softmax", True, "concat"), *tail),
         "masked"),
        ("masked: identity sqrt",
         serial(head, attention("identity", False, "sum", True), *tail), "masked"),
        ("masked: abs", serial(head, attention("abs"), *tail), "masked"),
    ]  # fmt: skip
    return cases


def transformer() -> Spec:
    """Dense embedding, two post-LayerNorm encoder blocks (widelimits' TransformerBlock with
    ``mlp_W_std=1.1, mlp_b_std=0.1`` and attention ``pos_emb_type='sum', n_heads=2``), pooling."""

    def residual(branch: Spec) -> list[Spec]:
        return [["FanOut", 2], parallel(branch, ["Identity", {}]), ["FanInSum", {}]]

    def block() -> list[Spec]:
        mlp = serial(dense(8, 1.1, 0.1), act("Relu"), dense(8, 1.1, 0.1))
        return [*residual(attention(pos_emb_type="sum")), ["LayerNorm", {}], *residual(mlp),
                ["LayerNorm", {}]]  # fmt: skip

    return serial(dense(8, 1.0, 0.1), *block(), *block(), ["GlobalAvgPool", {}], dense(1))


MASK_CONSTANT = -7.0


def attention_inputs() -> dict[str, np.ndarray]:
    """Inputs in NT's channels-last layout (transpose to N, C, ... for widelimits)."""
    x_seq1 = np.random.default_rng(20).standard_normal((4, 5, 3))
    x_seq2 = np.random.default_rng(21).standard_normal((3, 5, 3))
    x_img1 = np.random.default_rng(22).standard_normal((3, 2, 3, 2))
    x_img2 = np.random.default_rng(23).standard_normal((2, 2, 3, 2))
    m1, m2 = x_seq1.copy(), x_seq2.copy()
    m1[0, 3:] = MASK_CONSTANT  # lengths 3, 5, 4, 2
    m1[2, 4:] = MASK_CONSTANT
    m1[3, 2:] = MASK_CONSTANT
    m2[1, 1:] = MASK_CONSTANT  # lengths 5, 1, 5
    return {"x_seq1": x_seq1, "x_seq2": x_seq2, "x_img1": x_img1, "x_img2": x_img2,
            "x_masked1": m1, "x_masked2": m2}  # fmt: skip


def attention_file(path: str) -> None:
    import warnings

    inputs = attention_inputs()
    out: dict[str, Any] = dict(inputs)
    out["mask_constant"] = np.array(MASK_CONSTANT)
    cases = attention_cases()
    for i, (note, spec, data) in enumerate(cases):
        _, _, kernel_fn = build(spec)
        x1, x2 = inputs[f"x_{data}1"], inputs[f"x_{data}2"]
        kw = {"mask_constant": MASK_CONSTANT} if data == "masked" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # linear scaling warns that queries are tied
            for suffix, b in (("", x2), ("_self", None)):
                k = kernel_fn(x1, b, ("nngp", "ntk"), **kw)
                out[f"att{i}_nngp{suffix}"] = np.asarray(k.nngp, dtype=np.float64)
                out[f"att{i}_ntk{suffix}"] = np.asarray(k.ntk, dtype=np.float64)
        out[f"att{i}_spec"] = np.array(json.dumps(spec))
        out[f"att{i}_note"] = np.array(note)
        out[f"att{i}_input"] = np.array(data)
    out["n_att"] = np.array(len(cases))
    save_atomic(path, out, compressed=True)  # the JSON specs are most of it
    print(f"{path}: {len(cases)} attention networks", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="/work/ntref")
    parser.add_argument(
        "--only", choices=("architectures", "predict", "attention", "spatial"), default=None
    )
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.perf_counter()
    if args.only in (None, "architectures"):
        architectures_file(os.path.join(args.out_dir, "nt_architectures.npz"))
    if args.only in (None, "predict"):
        predict_file(os.path.join(args.out_dir, "nt_predict.npz"))
    if args.only in (None, "attention"):
        attention_file(os.path.join(args.out_dir, "nt_attention.npz"))
    if args.only in (None, "spatial"):  # transposed / local / 3-D convolutions, pooling
        from nt_reference_spatial import spatial_file

        spatial_file(os.path.join(args.out_dir, "nt_spatial.npz"))
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
