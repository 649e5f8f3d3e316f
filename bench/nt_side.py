"""Reference timings from neural-tangents, for comparison with widelimits.

Run with the interpreter of the separate neural-tangents environment
(see bench/README.md), never with the main one::

    .nt-venv/bin/python bench/nt_side.py fc --n 4000 --d 3072 --depth 2
    .nt-venv/bin/python bench/nt_side.py cnn --n 10 --gap
    .nt-venv/bin/python bench/nt_side.py attention --n 100 --length 16 --pos sum
    .nt-venv/bin/python bench/nt_side.py empirical --out 10 --impl 3 [--full]
    .nt-venv/bin/python bench/nt_side.py predict --n-train 1000 --n-test 500
    .nt-venv/bin/python bench/nt_side.py graph --n 100 --nodes 32 [--sparse]

Each run prints exactly one JSON line on stdout. ``compile_s`` is the wall time
of the first call (tracing, compilation and one evaluation); ``best_s`` is the
best of ``--repeats`` further calls. ``--save PATH`` writes the inputs and the
computed arrays to an ``.npz`` file for value comparisons.

This script deliberately imports neither torch nor widelimits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def _enable_x64_if_needed(dtype: str) -> None:
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def _inputs(shape: tuple[int, ...], dtype: str, seed: int = 0) -> Any:
    """Standard normal data from ``default_rng(seed)``, already on the JAX device.

    Call only after ``_enable_x64_if_needed`` so that float64 is kept.
    """
    import jax

    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return jax.block_until_ready(jax.device_put(data))


def _block(tree: Any) -> Any:
    import jax

    return jax.block_until_ready(tree)


def _time_calls(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Time a first call, then return the best of ``repeats`` further calls."""
    start = time.perf_counter()
    result = _block(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = _block(fn())
        best = min(best, time.perf_counter() - start)
    return first, best, result


def _mlp(depth: int, width: int, out: int):
    from neural_tangents import stax

    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width), stax.Relu()]
    layers.append(stax.Dense(out))
    return stax.serial(*layers)


def _save(path: str | None, **arrays: Any) -> None:
    if path:
        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def run_fc(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    _enable_x64_if_needed(args.dtype)
    _, _, kernel_fn = _mlp(args.depth, args.width, 1)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    x = _inputs((args.n, args.d), args.dtype)

    first, best, k = _time_calls(lambda: kernel_fn(x, None, ("nngp", "ntk")), args.repeats)
    _save(args.save, x=x, nngp=k.nngp, ntk=k.ntk)
    return {
        "n": args.n,
        "d": args.d,
        "depth": args.depth,
        "width": args.width,
        "dtype": args.dtype,
        "compile_s": first,
        "best_s": best,
    }


def run_cnn(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    from neural_tangents import stax

    _enable_x64_if_needed(args.dtype)
    readout = stax.Flatten() if args.flatten else stax.GlobalAvgPool()
    _, _, kernel_fn = stax.serial(
        stax.Conv(args.channels, (3, 3), padding="SAME"),
        stax.Relu(),
        stax.Conv(args.channels, (3, 3), padding="SAME"),
        stax.Relu(),
        readout,
        stax.Dense(10),
    )
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    x = _inputs((args.n, args.size, args.size, 3), args.dtype)

    first, best, k = _time_calls(lambda: kernel_fn(x, None, ("nngp", "ntk")), args.repeats)
    _save(args.save, x=x, nngp=k.nngp, ntk=k.ntk)
    return {
        "n": args.n,
        "size": args.size,
        "readout": "flatten" if args.flatten else "gap",
        "dtype": args.dtype,
        "compile_s": first,
        "best_s": best,
    }


def run_empirical(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    import neural_tangents as nt

    _enable_x64_if_needed(args.dtype)
    init_fn, apply_fn, _ = _mlp(2, args.width, args.out)
    x = _inputs((args.n, args.d), args.dtype)
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    trace_axes = () if args.full else (-1,)
    ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=trace_axes, implementation=args.impl))

    first, best, ntk = _time_calls(lambda: ntk_fn(x, None, params), args.repeats)
    _save(args.save, x=x, ntk=ntk)
    return {
        "n": args.n,
        "d": args.d,
        "out": args.out,
        "impl": args.impl,
        "full": args.full,
        "dtype": args.dtype,
        "compile_s": first,
        "best_s": best,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_predict(args: argparse.Namespace) -> dict[str, Any]:
    import neural_tangents as nt

    _enable_x64_if_needed(args.dtype)
    _, _, kernel_fn = _mlp(2, args.width, 1)
    x_train = _inputs((args.n_train, args.d), args.dtype, seed=0)
    x_test = _inputs((args.n_test, args.d), args.dtype, seed=1)
    y_train = _inputs((args.n_train, 1), args.dtype, seed=2)

    def predict() -> Any:
        # The predictor caches the train-train kernel, so build it anew on
        # every call to time the whole computation.
        predict_fn = nt.predict.gradient_descent_mse_ensemble(
            kernel_fn, x_train, y_train, diag_reg=args.diag_reg
        )
        return predict_fn(t=None, x_test=x_test, get="ntk", compute_cov=False)

    first, best, mean = _time_calls(predict, args.repeats)
    _save(args.save, x_train=x_train, x_test=x_test, y_train=y_train, mean=mean)
    return {
        "n_train": args.n_train,
        "n_test": args.n_test,
        "d": args.d,
        "dtype": args.dtype,
        "compile_s": first,
        "best_s": best,
    }


def graph_patterns(n: int, nodes: int, edges: int, seed: int = 1) -> tuple[Any, Any]:
    """Random directed multigraphs: (N, nodes, nodes) edge counts and the (N, edges, 2) list."""
    rng = np.random.default_rng(seed)
    lists = rng.integers(0, nodes, (n, edges, 2))
    dense = np.zeros((n, nodes, nodes))
    for i in range(n):
        np.add.at(dense[i], (lists[i, :, 0], lists[i, :, 1]), 1.0)
    return dense, lists


def run_graph(args: argparse.Namespace) -> dict[str, Any]:
    """A two-layer graph network: [Conv(1), Relu, Aggregate] x 2, GlobalAvgPool, Dense(10)."""
    import jax
    from neural_tangents import stax

    _enable_x64_if_needed(args.dtype)
    implementation = "SPARSE" if args.sparse else "DENSE"
    agg = stax.Aggregate(aggregate_axis=1, implementation=implementation)
    _, _, kernel_fn = stax.serial(
        stax.Conv(args.channels, (1,)), stax.Relu(), agg,
        stax.Conv(args.channels, (1,)), stax.Relu(), agg,
        stax.GlobalAvgPool(), stax.Dense(10),
    )  # fmt: skip
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    x = _inputs((args.n, args.nodes, args.features), args.dtype)
    dense, lists = graph_patterns(args.n, args.nodes, args.edges)
    pattern = lists if args.sparse else dense.astype(args.dtype)
    pattern = _block(jax.device_put(pattern))

    first, best, k = _time_calls(
        lambda: kernel_fn(x, None, ("nngp", "ntk"), pattern=(pattern, pattern)), args.repeats
    )
    _save(args.save, x=x, dense=dense, lists=lists, nngp=k.nngp, ntk=k.ntk)
    return {
        "n": args.n,
        "nodes": args.nodes,
        "edges": args.edges,
        "implementation": implementation,
        "dtype": args.dtype,
        "compile_s": first,
        "best_s": best,
    }


def run_attention(args: argparse.Namespace) -> dict[str, Any]:
    import jax
    from neural_tangents import stax

    _enable_x64_if_needed(args.dtype)
    linear = args.mechanism != "identity-sqrt"
    mechanism = "IDENTITY" if not linear else args.mechanism.upper()
    _, _, kernel_fn = stax.serial(
        stax.Dense(args.channels, b_std=0.1),
        stax.GlobalSelfAttention(
            args.channels, args.channels, args.channels, 1, linear_scaling=linear,
            attention_mechanism=mechanism, pos_emb_type=args.pos.upper(), b_std=0.1,
        ),
        stax.Relu(),
        stax.GlobalAvgPool(),
        stax.Dense(1),
    )  # fmt: skip
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    x = _inputs((args.n, args.length, 3), args.dtype)

    first, best, k = _time_calls(lambda: kernel_fn(x, None, ("nngp", "ntk")), args.repeats)
    _save(args.save, x=x, nngp=k.nngp, ntk=k.ntk)
    return {
        "n": args.n,
        "length": args.length,
        "mechanism": args.mechanism,
        "pos": args.pos,
        "dtype": args.dtype,
        "compile_s": first,
        "best_s": best,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="case", required=True)

    def add_case(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--save", metavar="PATH", help="write arrays to this .npz")
        return p

    p = add_case("fc", "analytic kernel of a ReLU MLP")
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--width", type=int, default=512)
    p.set_defaults(run=run_fc)

    p = add_case("cnn", "analytic kernel of a two-layer ReLU CNN")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--size", type=int, default=8, help="image height and width")
    p.add_argument("--channels", type=int, default=256)
    readout = p.add_mutually_exclusive_group()
    readout.add_argument("--gap", action="store_true", help="global average pool")
    readout.add_argument("--flatten", action="store_true")
    p.set_defaults(run=run_cnn)

    p = add_case("attention", "analytic kernel of Dense, GlobalSelfAttention, Relu, pooling")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--length", type=int, default=16, help="sequence length")
    p.add_argument("--channels", type=int, default=256)
    p.add_argument(
        "--mechanism", choices=("softmax", "identity", "abs", "relu", "identity-sqrt"),
        default="softmax",
    )  # fmt: skip
    p.add_argument("--pos", choices=("none", "sum", "concat"), default="sum")
    p.set_defaults(run=run_attention)

    p = add_case("empirical", "empirical NTK of a finite ReLU MLP")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--out", type=int, default=1)
    p.add_argument("--impl", type=int, choices=(1, 2, 3), default=1)
    p.add_argument(
        "--full", action="store_true", help="full (N, N, out, out) blocks: trace_axes=()"
    )
    p.set_defaults(run=run_empirical)

    p = add_case("predict", "infinite-time NTK-GP mean prediction")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--diag-reg", type=float, default=1e-4)
    p.set_defaults(run=run_predict)

    p = add_case("graph", "analytic kernel of a two-layer graph network (Aggregate)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--nodes", type=int, default=32)
    p.add_argument("--edges", type=int, default=32, help="edges per graph")
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--sparse", action="store_true", help="edge lists (implementation='SPARSE')")
    p.set_defaults(run=run_graph)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    report = {"case": args.case, **args.run(args)}

    import jax
    import neural_tangents as nt

    report.update(
        backend=jax.default_backend(),
        jax=jax.__version__,
        neural_tangents=getattr(nt, "__version__", "unknown"),
    )
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
