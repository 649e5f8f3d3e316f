"""Checks of a parsed command line that run before any command does its work.

Every command gets the same checks of the options it has (by their argparse names): input
arrays that exist and hold numbers, an ``--key`` that names one of the arrays of an ``.npz``
file, kernel stores that are folders, an ``--arch`` that parses, and sizes that fit
(`check_output_folder` checks an output folder when a command is about to write one).  Sizes
are refused when a *lower bound* on the memory or disk they need exceeds what the machine has
available, so a refused run could not have finished; the per-pair bound is the library's own
tiling estimate.  Each failure raises `UsageError` with a message that names the option (a bad
``--arch`` raises `parse_architecture`'s `ValueError`, which does too).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["UsageError", "check_arguments", "check_output_folder"]

# argparse destinations of options that name input arrays; example arrays must hold real
# numbers, targets may also hold class labels of any kind (strings included).
EXAMPLE_ARRAYS = ("data", "data2", "test_data")
TARGET_ARRAYS = ("targets", "test_targets")
STORES = ("store", "cross")  # options that name existing kernel stores (folders)
# (argparse destination, test, what is expected) for numbers that argparse's type lets through
NUMBERS = (
    ("tol", lambda v: 0 < v < math.inf, "a positive finite number"),
    ("max_iter", lambda v: v >= 1, "at least 1"),
    ("workers", lambda v: v >= 1, "at least 1"),
)
GiB = 2**30


class UsageError(Exception):
    """A mistake in the command line, found before the command ran: ``main`` prints one line."""


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _gib(nbytes: float) -> str:
    return f"{nbytes / GiB:.3g} GiB"


def _header(f, read_all) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the ``.npy`` header at the start of the open file ``f``."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version in readers:
        shape, _, dtype = readers[version](f)
        return tuple(shape), dtype
    array = read_all()  # a rare newer format version: read it the ordinary way
    return array.shape, array.dtype


def _array_header(dest: str, path: str, key: str | None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the array in a ``.npy`` / ``.npz`` file, reading only its header."""
    option, p = _option(dest), Path(path)
    if not p.exists():
        raise UsageError(f"{option} {path}: no such file")
    if not p.is_file():
        raise UsageError(f"{option} {path} is not a file (a .npy or .npz array is needed)")
    unreadable = f"{option} {path} is not a readable .npy or .npz array"
    try:
        with open(p, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                f.seek(0)
                shape, dtype = _header(f, lambda: np.load(p, mmap_mode="r", allow_pickle=False))
                expected = f.tell() + math.prod(shape) * dtype.itemsize
                if not dtype.hasobject and p.stat().st_size < expected:
                    raise UsageError(
                        f"{option} {path} is truncated: its header announces an array of shape "
                        f"{shape}, {expected} bytes in all, but the file has "
                        f"{p.stat().st_size}"
                    )
                return shape, dtype
        if not zipfile.is_zipfile(p):
            raise UsageError(unreadable)
        with zipfile.ZipFile(p) as z:
            names = [n.removesuffix(".npy") for n in z.namelist()]
            if key is not None and key not in names:
                raise UsageError(
                    f"--key {key!r} is not an array of {option} {path}; it holds "
                    f"{', '.join(map(repr, names)) or 'no arrays'}"
                )
            if key is None and len(names) != 1:
                raise UsageError(
                    f"{option} {path} holds {len(names)} arrays: choose one with --key "
                    f"({', '.join(map(repr, names)) or 'none'})"
                )
            member = z.namelist()[names.index(key if key is not None else names[0])]
            with z.open(member) as f:
                read_all = lambda: np.lib.format.read_array(z.open(member))  # noqa: E731
                return _header(f, read_all)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"{unreadable}: {err}") from None


def _check_arrays(args: argparse.Namespace) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    found = {}
    key = getattr(args, "key", None)
    for dest in EXAMPLE_ARRAYS + TARGET_ARRAYS:
        path = getattr(args, dest, None)
        if path is None:
            continue
        shape, dtype = _array_header(dest, path, key if dest in EXAMPLE_ARRAYS else None)
        if dtype.hasobject:
            raise UsageError(
                f"{_option(dest)} {path} holds Python objects (dtype object), which are not "
                "loaded for safety: save a numeric array"
            )
        if dest in EXAMPLE_ARRAYS and dtype.kind == "c":
            raise UsageError(
                f"{_option(dest)} {path} holds complex numbers: kernels take real inputs (stack "
                "the real and imaginary parts as features)"
            )
        if dest in EXAMPLE_ARRAYS and dtype.kind not in "biuf":
            raise UsageError(f"{_option(dest)} {path} has dtype {dtype}: inputs must be numbers")
        found[dest] = (tuple(shape), dtype)
    return found


def _check_kernel_sizes(args: argparse.Namespace, net, shapes: dict) -> None:
    """One pair of examples must fit the library's tile budget; a store must fit its disk."""
    import torch

    from ._compute import _layout, _pair_entries, _tile_edge, available_memory

    shape = shapes["data"][0]
    if len(shape) not in (2, 3, 4):
        return  # the library explains the expected shapes
    itemsize = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
    x = torch.empty(shape, device="meta")
    try:
        _tile_edge(
            None, None, torch.device("cpu"), itemsize, _pair_entries(x, layout := _layout(net, x)),
            layout,
        )
    except MemoryError as err:
        raise UsageError(f"--arch on --data of shape {shape}: {err}") from None
    if not hasattr(args, "tile"):  # only `kernel compute` writes a store (at --out)
        return
    n1 = shape[0]
    n2 = shapes["data2"][0][0] if "data2" in shapes else n1
    gets = len(args.get)
    # the store's chunks are whole tiles, even where the kernel is smaller than one tile
    tile_bytes = args.tile**2 * itemsize * gets
    if tile_bytes > (free_memory := available_memory(torch.device("cpu"))):
        raise UsageError(
            f"--tile {args.tile}: one tile of {args.tile} x {args.tile} kernel entries needs "
            f"{_gib(tile_bytes)} of memory, but {_gib(free_memory)} are available: use a "
            "smaller --tile"
        )
    out = Path(args.out).expanduser().absolute()
    folder = out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    # a store being resumed already holds part of its data
    held = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.is_dir() else 0
    needed = n1 * n2 * itemsize * gets - held
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UsageError(
            f"--out {args.out}: a store of {n1} x {n2} kernel entries ({' and '.join(args.get)}) "
            f"needs {_gib(needed)} more on disk, but {_gib(free)} are free there: choose another "
            "folder or fewer examples"
        )


def _check_rows(shapes: dict) -> None:
    """Targets have one row per example of the inputs they go with."""
    for examples, targets in (("data", "targets"), ("test_data", "test_targets")):
        if examples in shapes and targets in shapes:
            n, m = shapes[examples][0][:1], shapes[targets][0][:1]
            if not m:
                raise UsageError(
                    f"{_option(targets)} holds a scalar: give one target (row) per example of "
                    f"{_option(examples)}"
                )
            if n != m:
                raise UsageError(
                    f"{_option(targets)} has {m[0] if m else 'no'} rows but {_option(examples)} "
                    f"has {n[0] if n else 'no'} examples: give one target row per example"
                )


def _check_numbers(args: argparse.Namespace) -> None:
    """Numeric options whose argparse type accepts values that cannot work."""
    for dest, valid, expected in NUMBERS:
        value = getattr(args, dest, None)
        if value is not None and not valid(value):
            raise UsageError(f"{_option(dest)} must be {expected}, got {value}")


def _check_training_sizes(args: argparse.Namespace) -> None:
    """`linear` and `limits sweep`: the networks' parameters alone must fit in memory."""
    import torch

    from ._compute import available_memory

    if not hasattr(args, "widths"):
        return
    widths = args.widths or []
    free = available_memory(torch.device("cpu"))
    m = max(widths, default=0)
    if hasattr(args, "t_max"):  # linear: float64 weights q m^2 + (d + k) m, twice (RK45 state)
        # options left unset take defaults of at least these
        q, d, k, n = args.q or 0, args.d or 1, args.k or 1, args.n or 1
        checks = [("--widths", m, 16 * (q * m * m + (d + k) * m)), ("--d", d, 8 * d * n)]
    else:  # limits sweep: float32 64-pixel inputs, width m and n_train activations
        n_train = getattr(args, "n_train", None) or 1
        particles = getattr(args, "limit_particles", None) or 0
        checks = [("--widths", m, 4 * m * (65 + n_train)), ("--limit-particles", particles,
                                                             4 * 65 * particles)]  # fmt: skip
    for option, value, needed in checks:
        if needed > free:
            raise UsageError(
                f"{option} {value} needs at least {_gib(needed)} of memory, but "
                f"{_gib(free)} are available: use smaller sizes"
            )


def _check_stores(args: argparse.Namespace) -> None:
    named = [(d, getattr(args, d, None)) for d in STORES]
    if hasattr(args, "tile"):  # `kernel compute` writes its store at --out
        named.append(("out", args.out))
    for dest, path in named:
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise UsageError(f"{_option(dest)} {path} is a file, but a kernel store is a folder")


def check_arguments(args: argparse.Namespace) -> None:
    """Raise `UsageError` for options of ``args`` that cannot work (see the module docstring)."""
    _check_numbers(args)
    shapes = _check_arrays(args)
    _check_rows(shapes)
    _check_stores(args)
    if getattr(args, "arch", None) is not None:
        from .layers.spec import parse_architecture

        net = parse_architecture(args.arch, "--arch")  # its ValueError names --arch
        if "data" in shapes:
            _check_kernel_sizes(args, net, shapes)
    _check_training_sizes(args)


def check_output_folder(path: str, option: str = "--out") -> None:
    """`UsageError` naming ``option`` if the folder ``path`` cannot be created or written to."""
    out = Path(path).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder: choose a folder")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, so the folder cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {parent} is not writable")
