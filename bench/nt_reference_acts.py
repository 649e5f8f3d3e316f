"""Float64 reference values from neural-tangents 0.6.5 for widelimits' activation tests.

The companion of ``nt_reference.py`` (same environment, same conventions, float64 with
``jax_enable_x64``); run with the neural-tangents interpreter (see bench/README.md)::

    .nt-venv/bin/python bench/nt_reference_acts.py OUT_DIR

It writes ``nt_acts.npz`` into OUT_DIR atomically. It imports neither torch nor widelimits.

Inputs: ``x1`` = default_rng(20).standard_normal((5, 8)), ``x2`` = default_rng(21)
.standard_normal((4, 8)), ``x_img`` = default_rng(22).standard_normal((3, 4, 4, 2)) (NHWC;
transpose (0, 3, 1, 2) for NCHW), ``x_img2`` = default_rng(23).standard_normal((2, 4, 4, 2)).

Keys ``{case}_{nngp,ntk}`` hold ``kernel_fn(a, b)`` and ``{case}_self_{nngp,ntk}``
``kernel_fn(a, None)``; ``{case}_spec`` (JSON) is the network in ``nt_reference``'s spec
grammar plus the layers below. Cases (a, b = x1, x2 unless the case says images: x_img,
x_img2):

- ``gabor_fc``: Dense(512, 1.5, 0.1), Gabor, Dense(512, 1.2, 0.1), Gabor, Dense(1).
- ``expnorm_fc_{0,1}``: Dense(512, 1.5, 0.1), ExpNormalized(gamma, shift), Dense(1, 1.0, 0.1)
  with (gamma, shift) = (1, -1), (2.5, 0.3).
- ``acts_cnn`` (images): Conv(64, (3, 3), SAME, 1.5, 0.1), Gabor, Conv(64, (3, 3), SAME, 1.2),
  ExpNormalized(1.5, -1), GlobalAvgPool, Dense(1).
- ``standard_s_fc``: Dense(4, 1.5, 0.1, 'standard', s=(1, 3)), Relu, Dense(5, 1.2, 0.2,
  'standard', s=(3, 2)), Relu, Dense(1, 0.9, 0.1, 'standard', s=(2, 1)); also
  ``standard_s_fc_nobias`` with b_std None everywhere.
- ``standard_s_cnn`` (images): Conv(3, (3, 3), SAME, 1.3, 0.2, 'standard', s=(1, 2)), Relu,
  Conv(4, (3, 3), SAME, 1.1, 0.1, 'standard', s=(2, 3)), Relu, GlobalAvgPool, Dense(1, 1.0,
  0.1, 'standard', s=(3, 1)).

neural-tangents' known defects, stored to show them (not as values to match):

- ``defect_sign_pool`` (images, x_img vs x_img2 and self): Conv(8, (3, 3), SAME, 1.5, 0.1), Sign,
  GlobalAvgPool, Dense(16, 1.0, 0.1), Relu, Dense(1). NT sets every pixel pair of an example's
  self-covariance to 1 after Sign, so the pooled variances, and everything after the ReLU, are
  wrong.
- ``defect_rmono{n}_self_nngp`` for n in 0..3: Dense(8, 1.0, 0.1), RectifiedMonomial(n),
  Dense(1) on (x1, None) (NaN on the diagonal); ``defect_rmono{n}_near_{nngp,ntk}``: on (x1,
  x1 + 1e-6 * default_rng(24).standard_normal((5, 8))), correlations 1 - O(1e-12).
- ``defect_gelu_approx``: Dense(8, 1.0, 0.1), Gelu(approximate=True), Dense(1) on (x1, x2),
  and ``defect_gelu_exact`` with approximate=False: equal, although the functions differ.
- ``defect_hermite3``: Dense(8, 1.5, 0.1), Hermite(3), Dense(1) on (x1, x2): NT's kernel
  assumes unit variance (here the variances are 1.5^2 |x|^2 / 8 + 0.01).
- ``dropout_{none,copy,same}_{nngp,ntk}``: Dense(8), Relu, Dropout(0.8, 'train'), Dense(1) on
  (x1, None), (x1, x1.copy()) and (x1, x1) (NT rescales matching pairs in all three).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any

import numpy as np
from nt_reference import act, dense, save_atomic, serial

Spec = list[Any]


def _std(out: int, W_std: float, b_std: float | None, s: tuple[int, int]) -> Spec:
    spec = dense(out, W_std, b_std, "standard")
    spec[1]["s"] = list(s)
    return spec


def _conv(
    out: int,
    W_std: float,
    b_std: float | None,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Spec:
    return [
        "Conv",
        {
            "out": out, "filter_shape": [3, 3], "padding": "SAME", "W_std": W_std,
            "b_std": 0.0 if b_std is None else b_std, "bias": b_std is not None,
            "parameterization": parameterization, "s": list(s),
        },
    ]  # fmt: skip


def build(spec: Spec) -> Any:
    """NT's layers of a spec (nt_reference's grammar, with ``s`` and the layers above)."""
    from neural_tangents import stax

    name = spec[0]
    if name == "Serial":
        return stax.serial(*(build(s) for s in spec[1]))
    p = dict(spec[1]) if len(spec) > 1 else {}
    if name in ("Dense", "Conv"):
        b_std = p["b_std"] if p["bias"] else None
        common = dict(
            W_std=p["W_std"], b_std=b_std, parameterization=p["parameterization"],
            s=tuple(p.get("s", (1, 1))),
        )  # fmt: skip
        if name == "Dense":
            return stax.Dense(p["out"], **common)
        return stax.Conv(p["out"], tuple(p["filter_shape"]), padding=p["padding"], **common)
    if name == "Dropout":
        return stax.Dropout(p["rate"], mode="train")
    return getattr(stax, name)(**p)


def kernels(spec: Spec, a: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    _, _, kernel_fn = build(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = kernel_fn(a, b, ("nngp", "ntk"))
    return np.asarray(k.nngp, dtype=np.float64), np.asarray(k.ntk, dtype=np.float64)


def acts_file(path: str) -> None:
    rng = np.random.default_rng
    x1, x2 = rng(20).standard_normal((5, 8)), rng(21).standard_normal((4, 8))
    img, img2 = rng(22).standard_normal((3, 4, 4, 2)), rng(23).standard_normal((2, 4, 4, 2))
    out: dict[str, Any] = {"x1": x1, "x2": x2, "x_img": img, "x_img2": img2}

    def case(name: str, spec: Spec, images: bool = False, pair: bool = True) -> None:
        a, b = (img, img2) if images else (x1, x2)
        out[f"{name}_spec"] = np.array(json.dumps(spec))
        if pair:
            out[f"{name}_nngp"], out[f"{name}_ntk"] = kernels(spec, a, b)
        out[f"{name}_self_nngp"], out[f"{name}_self_ntk"] = kernels(spec, a, None)

    gabor = ["Gabor", {}]
    case("gabor_fc", serial(dense(512, 1.5, 0.1), gabor, dense(512, 1.2, 0.1), gabor, dense(1)))
    for i, (gamma, shift) in enumerate(((1.0, -1.0), (2.5, 0.3))):
        expn = ["ExpNormalized", {"gamma": gamma, "shift": shift}]
        case(f"expnorm_fc_{i}", serial(dense(512, 1.5, 0.1), expn, dense(1, 1.0, 0.1)))
    expn = ["ExpNormalized", {"gamma": 1.5, "shift": -1.0}]
    cnn = serial(
        _conv(64, 1.5, 0.1), gabor, _conv(64, 1.2, None), expn, ["GlobalAvgPool", {}], dense(1)
    )
    case("acts_cnn", cnn, images=True)
    fc = serial(
        _std(4, 1.5, 0.1, (1, 3)), act("Relu"), _std(5, 1.2, 0.2, (3, 2)), act("Relu"),
        _std(1, 0.9, 0.1, (2, 1)),
    )  # fmt: skip
    case("standard_s_fc", fc)
    fc_nobias = serial(
        _std(4, 1.5, None, (1, 3)), act("Relu"), _std(5, 1.2, None, (3, 2)), act("Relu"),
        _std(1, 0.9, None, (2, 1)),
    )  # fmt: skip
    case("standard_s_fc_nobias", fc_nobias)
    cnn_s = serial(
        _conv(3, 1.3, 0.2, "standard", (1, 2)), act("Relu"),
        _conv(4, 1.1, 0.1, "standard", (2, 3)), act("Relu"), ["GlobalAvgPool", {}],
        _std(1, 1.0, 0.1, (3, 1)),
    )  # fmt: skip
    case("standard_s_cnn", cnn_s, images=True)

    # neural-tangents' defects
    sign = serial(
        _conv(8, 1.5, 0.1), ["Sign", {}], ["GlobalAvgPool", {}], dense(16, 1.0, 0.1),
        act("Relu"), dense(1),
    )  # fmt: skip
    case("defect_sign_pool", sign, images=True)
    near = x1 + 1e-6 * rng(24).standard_normal((5, 8))
    out["x1_near"] = near
    for n in range(4):
        spec = serial(dense(8, 1.0, 0.1), ["RectifiedMonomial", {"degree": n}], dense(1))
        case(f"defect_rmono{n}", spec, pair=False)
        out[f"defect_rmono{n}_near_nngp"], out[f"defect_rmono{n}_near_ntk"] = kernels(
            spec, x1, near
        )
    for name, approximate in (("approx", True), ("exact", False)):
        spec = serial(dense(8, 1.0, 0.1), ["Gelu", {"approximate": approximate}], dense(1))
        case(f"defect_gelu_{name}", spec)
    case("defect_hermite3", serial(dense(8, 1.5, 0.1), ["Hermite", {"degree": 3}], dense(1)))
    drop = serial(dense(8), act("Relu"), ["Dropout", {"rate": 0.8}], dense(1))
    out["dropout_spec"] = np.array(json.dumps(drop))
    for name, b in (("none", None), ("copy", x1.copy()), ("same", x1)):
        out[f"dropout_{name}_nngp"], out[f"dropout_{name}_ntk"] = kernels(drop, x1, b)
    save_atomic(path, out)
    print(f"{path}: {len(out)} arrays", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    out_dir = (argv if argv is not None else sys.argv[1:] or ["/work/ntref"])[0]
    os.makedirs(out_dir, exist_ok=True)
    acts_file(os.path.join(out_dir, "nt_acts.npz"))


if __name__ == "__main__":
    main()
