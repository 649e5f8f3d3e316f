"""Float64 reference values from neural-tangents 0.6.5 for widelimits' graph and pixel-map layers.

The companion of ``bench/nt_reference.py`` (same environment, same conventions), for
``Aggregate``, ``LayerNorm`` over spatial axes, ``FanInConcat`` along a spatial axis, ``Index``,
``DotGeneral`` and ``repeat``.  Run with the interpreter of the neural-tangents environment
(see bench/README.md)::

    .nt-venv/bin/python bench/nt_reference_graph.py tests/data

It writes ``nt_graph.npz`` atomically, everything in float64 (``jax_enable_x64``).  It imports
neither torch nor widelimits.

Contents
--------
Inputs, stored channels-last as NT takes them (transpose to channels-first for widelimits):
``seq1`` = default_rng(20).standard_normal((5, 7, 3)) and ``seq2`` = default_rng(21)
.standard_normal((4, 7, 3)) (N, L, C); ``grid1`` = default_rng(22).standard_normal((3, 3, 2, 2))
and ``grid2`` (default_rng(23), (2, 3, 2, 2)) (N, H, W, C); ``flat1`` = seq1 reshaped (5, 21),
``flat2`` = seq2 reshaped (4, 21).  Graph patterns: ``adj1`` (5, 7, 7) and ``adj2`` (4, 7, 7),
dense weighted adjacencies (Bernoulli(0.4) arcs with weights uniform in [0.5, 1.5], from
default_rng(24) and (25)); ``edges1`` (5, E, 2) and ``edges2`` (4, E, 2), integer edge lists
(tail, head), padded with -1, of random multigraphs (default_rng(26), (27));
``gadj1`` (3, 3, 2, 3, 2), ``gadj2`` (2, 3, 2, 3, 2): dense patterns over a 3 x 2 node grid
(default_rng(28), (29)); ``dot_rhs`` (7, 5) = default_rng(30).standard_normal / sqrt(7).

For every case ``<name>`` (listed in ``cases``, a JSON list): ``<name>_nngp``, ``<name>_ntk``
= kernel_fn(a1, a2) and ``<name>_nngp_self``, ``<name>_ntk_self`` = kernel_fn(a1, None), where
(a1, a2) are the case's inputs, and ``<name>_net``: a one-line description of the NT network.
With ``c(o, f)`` = ``Conv(o, f, padding='SAME', W_std=1.5, b_std=0.1)`` (NTK parameterization)
and ``d1`` = ``Dense(1, W_std=1.5, b_std=0.1)``:

- ``agg_dense``: seq + adj: c(16, (1,)), Relu, Aggregate(aggregate_axis=1), c(16, (1,)), Relu,
  Aggregate, GlobalAvgPool, d1 (patterns (adj1, adj2); self: (adj1, adj1)).
- ``agg_sparse``: the same network with implementation='SPARSE' on (edges1, edges2).
- ``agg_flatten``: seq + adj: c(16, (3,)), Relu, Aggregate, c(16, (1,)), Relu, Flatten, d1.
- ``agg_grid``: grid + gadj: c(16, (1, 1)), Relu, Aggregate(aggregate_axis=(1, 2)), Relu after
  c(16, (1, 1)), GlobalAvgPool, d1.
- ``ln_spatial_gap`` / ``ln_spatial_flat``: seq: c(16, (3,)), LayerNorm(axis=(1, 2)), Relu,
  c(16, (3,)), Relu, GlobalAvgPool / Flatten, d1.
- ``concat_spatial_gap`` / ``concat_spatial_flat``: seq: c(16, (3,)), Relu, FanOut(2),
  parallel(c(16, (1,)), c(16, (3,))), FanInConcat(axis=1), Relu, c(16, (3,)), Relu,
  GlobalAvgPool / Flatten, d1.
- ``index_slice``: seq: c(16, (3,)), Relu, c(16, (3,)), Index(Slice[:, 5:1:-2]), Relu,
  c(16, (3,)), Relu, GlobalAvgPool, d1.
- ``index_token``: seq: c(16, (3,)), Relu, c(16, (3,)), Index(Slice[:, 3]), Relu, d1.
- ``dot_general``: ``seqT1``, ``seqT2`` = seq1, seq2 channels first (N, C, L): c(16, (3,)) with
  dimension_numbers ('NCH', 'OIH', 'NCH'), DotGeneral(rhs=dot_rhs, dimension_numbers=(((2,),
  (0,)), ((), ())), channel_axis=1) (output (N, C, 5)), Relu, GlobalAvgPool(channel_axis=1),
  Dense(1, W_std=1.5, b_std=0.1, channel_axis=1).
- ``repeat``: flat: Dense(16, 1.5, 0.1), repeat(serial(Relu, Dense(16, 1.5, 0.1)), 3), Relu, d1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nt_reference import save_atomic  # noqa: E402

W, B = 1.5, 0.1


def inputs() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "seq1": np.random.default_rng(20).standard_normal((5, 7, 3)),
        "seq2": np.random.default_rng(21).standard_normal((4, 7, 3)),
        "grid1": np.random.default_rng(22).standard_normal((3, 3, 2, 2)),
        "grid2": np.random.default_rng(23).standard_normal((2, 3, 2, 2)),
    }
    out["flat1"], out["flat2"] = out["seq1"].reshape(5, 21), out["seq2"].reshape(4, 21)
    out["seqT1"], out["seqT2"] = out["seq1"].transpose(0, 2, 1), out["seq2"].transpose(0, 2, 1)
    for name, n, seed in (("adj1", 5, 24), ("adj2", 4, 25)):
        rng = np.random.default_rng(seed)
        out[name] = (rng.random((n, 7, 7)) < 0.4) * rng.uniform(0.5, 1.5, (n, 7, 7))
    n_edges = 12
    for name, n, seed in (("edges1", 5, 26), ("edges2", 4, 27)):
        rng = np.random.default_rng(seed)
        edges = rng.integers(0, 7, (n, n_edges, 2))
        for i in range(n):  # a different number of real edges per graph, the rest padding
            edges[i, n_edges - i :] = -1
        out[name] = edges
    for name, n, seed in (("gadj1", 3, 28), ("gadj2", 2, 29)):
        out[name] = (np.random.default_rng(seed).random((n, 3, 2, 3, 2)) < 0.5).astype(float)
    out["dot_rhs"] = np.random.default_rng(30).standard_normal((7, 5)) / np.sqrt(7)
    return out


def cases(x: dict[str, np.ndarray]) -> dict[str, tuple[Any, str, str, tuple | None]]:
    """name -> (NT layer, input name prefix, description, (pattern1, pattern2) or None)."""
    from neural_tangents import stax

    def c(o, f):
        return stax.Conv(o, f, padding="SAME", W_std=W, b_std=B)

    d1 = stax.Dense(1, W_std=W, b_std=B)
    out = {}
    agg = stax.Aggregate(aggregate_axis=1)
    out["agg_dense"] = (
        stax.serial(c(16, (1,)), stax.Relu(), agg, c(16, (1,)), stax.Relu(), agg,
                    stax.GlobalAvgPool(), d1),
        "seq", "conv1 relu agg conv1 relu agg gap dense", (x["adj1"], x["adj2"]),
    )  # fmt: skip
    sparse = stax.Aggregate(aggregate_axis=1, implementation="SPARSE")
    out["agg_sparse"] = (
        stax.serial(c(16, (1,)), stax.Relu(), sparse, c(16, (1,)), stax.Relu(), sparse,
                    stax.GlobalAvgPool(), d1),
        "seq", "agg_dense with edge lists", (x["edges1"], x["edges2"]),
    )  # fmt: skip
    out["agg_flatten"] = (
        stax.serial(c(16, (3,)), stax.Relu(), agg, c(16, (1,)), stax.Relu(), stax.Flatten(), d1),
        "seq", "conv3 relu agg conv1 relu flatten dense", (x["adj1"], x["adj2"]),
    )  # fmt: skip
    grid = stax.Aggregate(aggregate_axis=(1, 2))
    out["agg_grid"] = (
        stax.serial(c(16, (1, 1)), stax.Relu(), grid, c(16, (1, 1)), stax.Relu(),
                    stax.GlobalAvgPool(), d1),
        "grid", "2-d node grid: conv1 relu agg conv1 relu gap dense", (x["gadj1"], x["gadj2"]),
    )  # fmt: skip
    for tail, pool in (("gap", stax.GlobalAvgPool()), ("flat", stax.Flatten())):
        out[f"ln_spatial_{tail}"] = (
            stax.serial(c(16, (3,)), stax.LayerNorm(axis=(1, 2)), stax.Relu(), c(16, (3,)),
                        stax.Relu(), pool, d1),
            "seq", f"conv3 layernorm(L, C) relu conv3 relu {tail} dense", None,
        )  # fmt: skip
        out[f"concat_spatial_{tail}"] = (
            stax.serial(c(16, (3,)), stax.Relu(), stax.FanOut(2),
                        stax.parallel(c(16, (1,)), c(16, (3,))), stax.FanInConcat(axis=1),
                        stax.Relu(), c(16, (3,)), stax.Relu(), pool, d1),
            "seq", f"conv3 relu fanout(conv1, conv3) concat(L) relu conv3 relu {tail} dense",
            None,
        )  # fmt: skip
    out["index_slice"] = (
        stax.serial(c(16, (3,)), stax.Relu(), c(16, (3,)), stax.Index(stax.Slice[:, 5:1:-2]),
                    stax.Relu(), c(16, (3,)), stax.Relu(), stax.GlobalAvgPool(), d1),
        "seq", "conv3 relu conv3 index[:, 5:1:-2] relu conv3 relu gap dense", None,
    )  # fmt: skip
    out["index_token"] = (
        stax.serial(c(16, (3,)), stax.Relu(), c(16, (3,)), stax.Index(stax.Slice[:, 3]),
                    stax.Relu(), d1),
        "seq", "conv3 relu conv3 index[:, 3] relu dense", None,
    )  # fmt: skip
    ncl = ("NCH", "OIH", "NCH")
    out["dot_general"] = (
        stax.serial(stax.Conv(16, (3,), padding="SAME", W_std=W, b_std=B, dimension_numbers=ncl),
                    stax.DotGeneral(rhs=x["dot_rhs"], dimension_numbers=(((2,), (0,)), ((), ())),
                                    channel_axis=1),
                    stax.Relu(), stax.GlobalAvgPool(channel_axis=1),
                    stax.Dense(1, W_std=W, b_std=B, channel_axis=1)),
        "seqT", "(channels first) conv3 dotgeneral(L -> 5) relu gap dense", None,
    )  # fmt: skip
    block = stax.serial(stax.Relu(), stax.Dense(16, W_std=W, b_std=B))
    out["repeat"] = (
        stax.serial(stax.Dense(16, W_std=W, b_std=B), stax.repeat(block, 3), stax.Relu(), d1),
        "flat", "dense repeat(relu dense, 3) relu dense", None,
    )  # fmt: skip
    return out


def graph_file(path: str) -> None:
    x = inputs()
    arrays: dict[str, Any] = dict(x)
    names = []
    for name, (layer, prefix, note, pattern) in cases(x).items():
        kernel_fn = layer[2]
        a1, a2 = x[f"{prefix}1"], x[f"{prefix}2"]
        kw = {} if pattern is None else {"pattern": pattern}
        kw_self = {} if pattern is None else {"pattern": (pattern[0], pattern[0])}
        try:
            k = kernel_fn(a1, a2, ("nngp", "ntk"), **kw)
            ks = kernel_fn(a1, None, ("nngp", "ntk"), **kw_self)
        except Exception as e:  # noqa: BLE001 - recorded, not hidden
            print(f"{name}: NT refused: {e}", file=sys.stderr)
            arrays[f"{name}_refused"] = np.array(str(e))
            continue
        arrays[f"{name}_nngp"], arrays[f"{name}_ntk"] = np.asarray(k[0]), np.asarray(k[1])
        arrays[f"{name}_nngp_self"], arrays[f"{name}_ntk_self"] = (
            np.asarray(ks[0]), np.asarray(ks[1]),
        )  # fmt: skip
        arrays[f"{name}_net"] = np.array(note)
        names.append(name)
    arrays["cases"] = np.array(json.dumps(names))
    save_atomic(path, arrays)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="/work/ntref")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.perf_counter()
    graph_file(os.path.join(args.out_dir, "nt_graph.npz"))
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
