"""``widelimits kernel compute|solve``: kernel stores and CG kernel regression from the shell.

    widelimits kernel compute --arch "Dense(), ReLU(), Dense(1)" --data x.npy --out k.zarr
        [--data2 x2.npy] [--get nngp ntk] [--tile 2048] [--scheduler threads|processes|
        synchronous|tcp://host:8786] [--workers N] [--dtype float32] [--overwrite]
    widelimits kernel solve --store k.zarr --targets y.npy [--get ntk] [--diag-reg 1e-4]
        [--tol 1e-6] [--preconditioner pivoted_cholesky] [--rank 500] [--cross test.zarr]
        [--test-targets y_test.npy] [--out predictions.npy] [--in-memory auto|yes|no]
        [--memory-budget GIB]
    widelimits kernel solve --arch ... --data x.npy --targets y.npy ...   (recomputed tiles)

Arrays are ``.npy`` files, or ``.npz`` files with one array (or the one named by ``--key``).
Integer, boolean or string targets are class labels: the classes are their sorted unique values
(e.g. {-1, +1}, {3, 7, 9} or {"cat", "dog"}), encoded as centred one-hot rows in that order, and
the predicted class is the one with the largest output (the columns of the written predictions
follow the same order). Float targets are regression targets and must be finite.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_kernel"]


def _load(path: str, key: str | None = None) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {path}")
    data = np.load(p, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        names = list(data.keys())
        if key is None and len(names) != 1:
            raise ValueError(f"{path} holds {names}: choose one with --key")
        data = data[key or names[0]]
    return np.asarray(data)


def _inputs(path: str, key: str | None, dtype: str):
    import torch

    x = _load(path, key)
    return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype))


def _bars(args: argparse.Namespace) -> bool:
    """Progress bars unless --no-progress, and only when stderr is a terminal."""
    from .._progress import show_progress

    return not args.no_progress and show_progress(None)


def _fail(command: str, err: Exception) -> int:
    print(f"widelimits kernel {command}: error: {err}", file=sys.stderr)
    return 2


def _run_compute(args: argparse.Namespace) -> int:
    from ..layers.spec import parse_architecture
    from . import StaleStoreError, compute_kernel_store

    try:
        net = parse_architecture(args.arch)
        x1 = _inputs(args.data, args.key, args.dtype)
        x2 = None if args.data2 is None else _inputs(args.data2, args.key, args.dtype)
        start = time.perf_counter()
        store = compute_kernel_store(
            net, x1, x2, args.out, get=tuple(args.get), tile_size=args.tile,
            scheduler=args.scheduler, workers=args.workers, overwrite=args.overwrite,
            progress=None if _bars(args) else False,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, StaleStoreError, MemoryError) as err:
        return _fail("compute", err)
    seconds = time.perf_counter() - start
    n1, n2 = store.shape
    print(f"{store.path}: {' and '.join(store.kernels)} of shape ({n1}, {n2}), "
          f"{len(store.tiles())} tiles of {store.tile}, {seconds:.1f} s "
          f"({n1 * n2 / max(seconds, 1e-9):.3g} entries/s)")  # fmt: skip
    return 0


def _is_labels(y: np.ndarray) -> bool:
    return y.dtype.kind in "biuUS"


def _targets(y: np.ndarray, name: str = "--targets") -> tuple[np.ndarray, np.ndarray | None]:
    """Targets as a float matrix and the sorted classes (None for regression targets).

    Class labels (integers, booleans, strings) become centred one-hot rows over their sorted
    unique values; float targets must be finite (the first bad row is named).
    """
    from ..predict._checks import check_finite

    if y.ndim == 0:
        raise ValueError(f"{name} is a scalar: give one target (row) per training point")
    if _is_labels(y):
        if y.ndim != 1:
            raise ValueError(f"{name}: class labels must be a 1-D array, got shape {y.shape}")
        classes, index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{name} holds a single class {classes.tolist()}: nothing to learn")
        onehot = np.eye(len(classes))[index.reshape(-1)] - 1.0 / len(classes)
        return onehot, classes
    if y.dtype.kind not in "f":
        raise ValueError(f"{name} must hold numbers or class labels, got dtype {y.dtype}")
    check_finite(y, name)
    return y.astype(np.float64), None


def _test_targets(path: str | None, classes: np.ndarray | None) -> np.ndarray | None:
    """The --test-targets array, checked before any solve: labels iff the targets are labels."""
    if path is None:
        return None
    truth = _load(path)
    if classes is not None:
        if truth.ndim != 1 or not _is_labels(truth):
            raise ValueError(
                f"--test-targets must be a 1-D array of class labels like --targets, got dtype "
                f"{truth.dtype} and shape {truth.shape}"
            )
    else:
        _targets(truth, "--test-targets")
    return truth


def _report(pred, truth: np.ndarray, classes: np.ndarray | None) -> str:
    """Test accuracy (labels) or mean squared error (regression) of the predictions."""
    p = pred.double().numpy()
    if len(truth) != p.shape[0]:
        raise ValueError(
            f"--test-targets has {len(truth)} rows but there are {p.shape[0]} test predictions"
        )
    if classes is not None:
        predicted = classes[p.argmax(1)]
        return f"test accuracy {np.mean(predicted == truth):.4f} on {len(truth)} examples"
    if p.size != truth.size:
        raise ValueError(f"--test-targets has shape {truth.shape}, predictions {p.shape}")
    return f"test mean squared error {np.mean((p.reshape(truth.shape) - truth) ** 2):.4g}"


_IN_MEMORY = {"auto": "auto", "yes": True, "no": False}


def _oriented_cross(path: str, get: str, n: int, train_digest: str | None):
    """The --cross store as `kernel_regression` takes it, K(x_test, x_train) of shape (M, N).

    A store computed in the natural order x1 = x_train, x2 = x_test holds the transpose
    (N, M): it is recognised by its inputs' digests (x1 is the train set), or else by its
    shape, and transposed, before any solve.  A square store whose inputs cannot be matched
    is taken as (test, train).
    """
    from . import KernelStore

    cross = KernelStore.open(path)
    manifest = cross.manifest
    if get not in cross.kernels:
        raise ValueError(f"--cross {path} holds {list(cross.kernels)}, not {get!r}: use --get")
    rows, cols = cross.shape
    if train_digest is not None and manifest.get("x2") == train_digest:
        flipped = False
    elif train_digest is not None and manifest.get("x1") == train_digest:
        flipped = True
    elif cols == n:
        flipped = False
    elif rows == n:
        flipped = True
    else:
        raise ValueError(
            f"--cross {path} has shape ({rows}, {cols}) but there are {n} training points: "
            "compute it with --data TEST --data2 TRAIN (or --data TRAIN --data2 TEST)"
        )
    if not flipped:
        return path
    print(f"--cross {path} holds K(x_train, x_test) of shape ({rows}, {cols}): using its "
          "transpose", file=sys.stderr)  # fmt: skip
    return cross.read(get).T.contiguous()


def _gib(value: float | None) -> float | None:
    """--memory-budget (GiB) in bytes, checked."""
    if value is None:
        return None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"--memory-budget must be a positive number of GiB, got {value}")
    return value * 2**30


def _run_solve(args: argparse.Namespace) -> int:
    import torch

    from ..layers.spec import parse_architecture
    from . import KernelStore, kernel_regression

    try:
        y, classes = _targets(_load(args.targets))
        truth = _test_targets(args.test_targets, classes)
        if args.store is not None:
            train = KernelStore.open(args.store)
            net = x_train = None
            dtype = getattr(torch, train.manifest["dtype"])
        elif args.arch is not None and args.data is not None:
            net = parse_architecture(args.arch)
            x_train = _inputs(args.data, args.key, args.dtype)
            train, dtype = None, x_train.dtype
        else:
            raise ValueError("give --store, or --arch and --data to recompute the kernel")
        n = train.shape[0] if train is not None else x_train.shape[0]
        if y.shape[0] != n:
            raise ValueError(
                f"--targets has {y.shape[0]} rows but the training kernel is {n} x {n}: one "
                "target per training point"
            )
        x_test = None if args.test_data is None else _inputs(args.test_data, args.key, args.dtype)
        cross = args.cross
        if cross is not None:
            from .manifest import input_digest

            digest = train.manifest["x1"] if train is not None else input_digest(x_train)
            cross = _oriented_cross(cross, args.get, n, digest)
        alpha, pred, info = kernel_regression(
            train, torch.from_numpy(y).to(dtype), get=args.get, cross=cross, net=net,
            x_train=x_train, x_test=x_test, diag_reg=args.diag_reg, tol=args.tol,
            max_iter=args.max_iter, preconditioner=args.preconditioner, rank=args.rank,
            in_memory=_IN_MEMORY[args.in_memory], memory_budget=_gib(args.memory_budget),
            progress=_bars(args),
        )  # fmt: skip
        report = None if pred is None or truth is None else _report(pred, truth, classes)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, MemoryError) as err:
        return _fail("solve", err)
    print(info)
    out = alpha if pred is None else pred
    if classes is not None:
        print(f"classes (prediction columns, in order): {classes.tolist()}")
    if report is not None:
        print(report)
    if args.out is not None:
        np.save(args.out, out.double().numpy())
        what = "predictions" if pred is not None else "dual coefficients alpha"
        print(f"wrote {what} to {args.out}")
    else:
        what = "predictions" if pred is not None else "dual coefficients alpha"
        print(f"no --out given: the {what} (shape {tuple(out.shape)}) were not saved; "
              "pass --out FILE.npy to keep them")  # fmt: skip
    return 0


def add_kernel(subparsers) -> None:
    """Register ``widelimits kernel compute|solve``."""
    from . import SCHEDULERS

    p = subparsers.add_parser(
        "kernel", help="kernels into resumable on-disk stores; CG kernel regression",
        description="Large kernels tile by tile into a zarr store (resumable, parallel, on a "
        "Dask cluster with --scheduler ADDRESS), and kernel regression by preconditioned "
        "conjugate gradients on a stored or recomputed kernel. Needs the scale extra: "
        "pip install 'widelimits[scale]'.",
    )  # fmt: skip
    sub = p.add_subparsers(title="kernel commands", metavar="STEP", required=True)

    def common(q, arch_required: bool = False) -> None:
        q.add_argument("--arch", required=arch_required,
                       help='the network, e.g. "Dense(), ReLU(), Dense(1)" (comma-separated '
                       "widelimits layers with literal arguments)")  # fmt: skip
        q.add_argument("--key", help="array name inside .npz inputs")
        q.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="dtype of the inputs and kernels (default float32)")  # fmt: skip
        q.add_argument("--no-progress", action="store_true",
                       help="no progress bar (bars are drawn only when stderr is a terminal)")

    c = sub.add_parser(
        "compute", help="compute kernels into a store (resumes a partial one)",
        description="Computes the NNGP and/or NTK of --arch between --data and --data2 (or "
        "--data with itself) tile by tile into a zarr store at --out. A rerun with the same "
        "network and inputs resumes: only missing or damaged tiles are computed; a store of "
        "other inputs is refused unless --overwrite.",
    )  # fmt: skip
    common(c, arch_required=True)
    c.add_argument("--data", required=True, help="inputs x1 (.npy / .npz), (N, ...) array")
    c.add_argument("--data2", help="inputs x2 for a rectangular kernel (default: x1 itself)")
    c.add_argument("--out", required=True, help="the store's directory, e.g. k.zarr")
    c.add_argument("--get", nargs="+", choices=("nngp", "ntk"), default=["nngp", "ntk"],
                   help="kernels to compute (default: nngp ntk)")  # fmt: skip
    c.add_argument("--tile", type=int, default=2048, help="tile edge in examples (2048)")
    c.add_argument("--scheduler", default=None,
                   help=f"one of {', '.join(SCHEDULERS)} (default threads) or a Dask "
                   "scheduler address tcp://host:port")  # fmt: skip
    c.add_argument("--workers", type=int, default=None, help="local parallel tasks")
    c.add_argument("--overwrite", action="store_true",
                   help="recompute even if a store for other inputs exists at --out")  # fmt: skip
    c.set_defaults(func=_run_compute)

    s = sub.add_parser(
        "solve", help="kernel regression by preconditioned CG",
        description="Solves (K + reg I) alpha = Y by preconditioned conjugate gradients on the "
        "train kernel of --store (or recomputed from --arch and --data) and predicts "
        "K(x_test, x_train) alpha from --cross (either orientation) or --test-data. Prints "
        "the convergence report and, with --test-targets, the test accuracy or error; the "
        "predictions (alpha without test data) are saved only with --out.",
    )  # fmt: skip
    common(s)
    s.add_argument("--store", help="train kernel store (symmetric, from compute without --data2)")
    s.add_argument("--data", help="train inputs, to recompute the kernel instead of --store")
    s.add_argument("--targets", required=True,
                   help="train targets (.npy): floats (regression) or class labels (integers, "
                   "strings), one-hot over their sorted unique values")  # fmt: skip
    s.add_argument("--get", choices=("nngp", "ntk"), default="ntk",
                   help="kernel: ntk (trained-network mean, default) or nngp (posterior mean)")
    s.add_argument("--diag-reg", type=float, default=1e-4,
                   help="relative regularization (times mean diag K), default 1e-4")  # fmt: skip
    s.add_argument("--tol", type=float, default=1e-6, help="relative residual (1e-6)")
    s.add_argument("--max-iter", type=int, default=None,
                   help="most CG iterations (default: cg_solve's)")  # fmt: skip
    s.add_argument("--preconditioner", default="pivoted_cholesky",
                   choices=("pivoted_cholesky", "nystrom", "jacobi", "none"),
                   help="CG preconditioner (default pivoted_cholesky)")  # fmt: skip
    s.add_argument("--rank", type=int, default=500, help="low-rank preconditioner rank (500)")
    s.add_argument("--cross", help="test-train kernel store, computed with x1 = test, x2 = "
                   "train, or the other way round (then transposed)")  # fmt: skip
    s.add_argument("--test-data", help="test inputs, to recompute the test-train kernel")
    s.add_argument("--test-targets", help="test targets (.npy) for accuracy / error")
    s.add_argument("--out", help="write predictions (or alpha without test data) to this .npy")
    s.add_argument("--in-memory", choices=tuple(_IN_MEMORY), default="auto",
                   help="hold a stored train kernel in memory: auto (if it fits the memory "
                   "budget), yes, or no (stream it from disk at each iteration)")  # fmt: skip
    s.add_argument("--memory-budget", type=float, default=None, metavar="GIB",
                   help="memory the in-memory kernel may take, in GiB (default: 60%% of the "
                   "memory available)")  # fmt: skip
    s.set_defaults(func=_run_solve)
