"""What identifies a kernel store: its manifest, the store errors, and what may be deleted.

The manifest (the zarr group's ``manifest`` attribute, in ``zarr.json``) records everything that
changes a stored kernel's values or layout: the exact fingerprint of the network
(`widelimits.fingerprint`, or a name the user gives it), sha256 digests of the inputs, the shape,
kernels, dtype, tile size, symmetry, device type and the widelimits and torch versions.  It is
validated field by field whenever a store is opened (a damaged or edited manifest is refused,
and the dtype comes from an allow-list, never from ``getattr(torch, ...)``), and a store may be
deleted (``overwrite=True``) only when it is recognisably one: a directory holding our
``zarr.json`` with our marker and format, and nothing but the store's own entries.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DTYPES",
    "CorruptStoreError",
    "NotAStoreError",
    "StaleStoreError",
    "StoreError",
    "fingerprint",
    "input_digest",
    "manifest_for",
    "read_manifest",
]

MARKER = "widelimits kernel store"
FORMAT = 2  # 2: per-tile checksums and the exact network fingerprint (1: neither)
CHECKSUM = "blake2b-64"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
"""The dtypes a store may hold (an allow-list: the manifest's string is only looked up here)."""
ENTRIES = frozenset({"zarr.json", "nngp", "ntk", "done", "checksums"})
"""Everything a store directory may contain; anything else means it is not (only) a store."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_RECOMPUTE = "recompute it with overwrite=True (CLI: --overwrite) or choose another path"


class StoreError(ValueError):
    """Something is wrong with a kernel store on disk (base of the errors below)."""


class StaleStoreError(StoreError):
    """The store on disk was made for another network, other inputs or another version."""


class CorruptStoreError(StoreError):
    """The store's data or manifest is damaged: a checksum mismatch, an unreadable chunk, an
    edited or truncated manifest."""


class NotAStoreError(StoreError):
    """The path holds something that is not a widelimits kernel store (a file, a folder)."""


def input_digest(x: Tensor | None) -> str | None:
    """sha256 of an input batch's dtype, shape and bytes (``None`` for ``None``)."""
    if x is None:
        return None
    arr = np.ascontiguousarray(x.detach().cpu().numpy())
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


fingerprint = input_digest  # the name this function had before the network fingerprints


def network_identity(net, name: str | None = None) -> dict:
    """The manifest's ``network`` entry: the exact fingerprint of ``net``, or the user's name.

    Raises `widelimits.fingerprint.FingerprintError` when ``net`` cannot be fingerprinted and
    no ``name`` is given.
    """
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"fingerprint must be a non-empty string naming the network, got {name!r}"
            )
        return {"fingerprint": f"name:{name}", "parts": {}}
    from ..fingerprint import fingerprint as exact

    fp = exact(net)
    return {"fingerprint": fp.digest, "parts": fp.parts}


def manifest_for(
    net,
    x1: Tensor,
    x2: Tensor | None,
    gets,
    dtype,
    tile: int,
    device: str = "cpu",
    *,
    fingerprint: str | None = None,
) -> dict:
    """What identifies a kernel computation: everything that changes its values or layout.

    ``fingerprint``: a name for the network chosen by the user, used instead of the exact
    fingerprint (needed when the network holds something that cannot be fingerprinted).
    """
    from .. import __version__

    return {
        "store": MARKER,
        "format": FORMAT,
        "architecture": repr(net),  # for people; the fingerprint is what is compared
        "network": network_identity(net, fingerprint),
        "x1": input_digest(x1),
        "x2": input_digest(x2),
        "shape": [int(x1.shape[0]), int((x1 if x2 is None else x2).shape[0])],
        "kernels": list(gets),
        "dtype": str(dtype).replace("torch.", ""),
        "tile": int(tile),
        "symmetric": x2 is None,
        "device": device,
        "version": __version__,
        "torch": torch.__version__,
        "checksum": CHECKSUM,
    }


def grid(manifest: dict) -> tuple[int, int]:
    """Number of tile rows and columns."""
    (n1, n2), t = manifest["shape"], manifest["tile"]
    return math.ceil(n1 / t), math.ceil(n2 / t)


# -- reading and checking a manifest -----------------------------------------------------------


def _group_json(path: Path) -> dict:
    """The parsed ``zarr.json`` of the directory ``path`` (errors name the path)."""
    if not path.exists():
        raise FileNotFoundError(f"no kernel store at {path}")
    if not path.is_dir():
        raise NotAStoreError(f"{path} is a file, not a widelimits kernel store (a directory)")
    meta = path / "zarr.json"
    if not meta.is_file():
        raise NotAStoreError(
            f"{path} is not a widelimits kernel store: it has no zarr.json manifest"
        )
    try:
        doc = json.loads(meta.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptStoreError(
            f"the manifest {meta} is not valid JSON ({err}): the store is damaged; {_RECOMPUTE}"
        ) from err
    if not isinstance(doc, dict):
        raise CorruptStoreError(f"the manifest {meta} is not a JSON object; {_RECOMPUTE}")
    return doc


def _raw_manifest(path: Path) -> dict:
    doc = _group_json(path)
    attrs = doc.get("attributes")
    manifest = attrs.get("manifest") if isinstance(attrs, dict) else None
    if doc.get("node_type") != "group" or manifest is None:
        raise NotAStoreError(
            f"{path} is a zarr node but not a widelimits kernel store (no manifest in zarr.json)"
        )
    if not isinstance(manifest, dict):
        raise CorruptStoreError(
            f"the manifest of the kernel store at {path} is not a JSON object; {_RECOMPUTE}"
        )
    return manifest


def _problems(m: dict) -> list[str]:
    """What is wrong with the fields of a format-2 manifest (empty: nothing)."""

    def positive_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    def network(v) -> bool:
        return (
            isinstance(v, dict) and isinstance(v.get("fingerprint"), str)
            and isinstance(v.get("parts"), dict)
            and all(isinstance(k, str) and isinstance(p, str) for k, p in v["parts"].items())
        )  # fmt: skip

    rules = {
        "architecture": (lambda v: isinstance(v, str), "a string"),
        "network": (network, "a fingerprint and its parts"),
        "x1": (lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)), "a sha256 digest"),
        "x2": (
            lambda v: v is None or (isinstance(v, str) and bool(_HEX64.fullmatch(v))),
            "a sha256 digest or null",
        ),
        "shape": (
            lambda v: isinstance(v, list) and len(v) == 2 and all(map(positive_int, v)),
            "two positive integers",
        ),
        "kernels": (
            lambda v: (
                isinstance(v, list)
                and 0 < len(v) == len(set(map(str, v)))
                and all(k in ("nngp", "ntk") for k in v)
            ),
            "a list of distinct kernels among 'nngp', 'ntk'",
        ),  # fmt: skip
        "dtype": (lambda v: isinstance(v, str) and v in DTYPES, f"one of {', '.join(DTYPES)}"),
        "tile": (positive_int, "a positive integer"),
        "symmetric": (lambda v: isinstance(v, bool), "true or false"),
        "device": (lambda v: isinstance(v, str), "a string"),
        "version": (lambda v: isinstance(v, str), "a string"),
        "torch": (lambda v: isinstance(v, str), "a string"),
        "checksum": (lambda v: v == CHECKSUM, repr(CHECKSUM)),
    }
    out = []
    for key, (ok, what) in rules.items():
        if key not in m:
            out.append(f"{key!r} is missing")
        elif not ok(m[key]):
            out.append(f"{key!r} is {json.dumps(m[key])[:80]}, not {what}")
    if not out and m["symmetric"] and m["shape"][0] != m["shape"][1]:
        out.append(f"'symmetric' is true but 'shape' {m['shape']} is not square")
    return out


def read_manifest(path) -> dict:
    """The validated manifest of the store at ``path``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        NotAStoreError: a file, or a directory that is not a kernel store.
        StaleStoreError: a store of an older format.
        CorruptStoreError: a manifest that is not valid JSON, lacks fields or holds bad values.
    """
    path = Path(path)
    m = _raw_manifest(path)
    if m.get("format") == 1 and "store" not in m:
        raise StaleStoreError(
            f"the kernel store at {path} was made by an older widelimits (store format 1, "
            f"without checksums or an exact network fingerprint); {_RECOMPUTE}"
        )
    if m.get("store") != MARKER or m.get("format") != FORMAT:
        raise CorruptStoreError(
            f"the manifest of the kernel store at {path} has store marker "
            f"{json.dumps(m.get('store'))[:60]} and format {json.dumps(m.get('format'))[:20]}, "
            f"not {MARKER!r} and {FORMAT}: it is damaged or from another program; {_RECOMPUTE}"
        )
    problems = _problems(m)
    if problems:
        raise CorruptStoreError(
            f"the manifest of the kernel store at {path} is damaged or was edited: "
            f"{'; '.join(problems)}; {_RECOMPUTE}"
        )
    return m


def deletable(path: Path) -> None:
    """Raise `NotAStoreError` unless ``path`` is recognisably a widelimits store (see module)."""
    if path.is_symlink():
        raise NotAStoreError(
            f"refusing to delete {path}: it is a symbolic link, not a kernel store; remove it "
            "yourself or choose another path"
        )
    try:
        m = _raw_manifest(path)
    except StoreError as err:
        raise NotAStoreError(
            f"refusing to delete {path} (overwrite): it is not recognisably a widelimits kernel "
            f"store ({err}); nothing was deleted: remove it yourself if you are sure, or choose "
            "another path"
        ) from err
    ours = (m.get("store") == MARKER and m.get("format") in (1, FORMAT)) or (
        m.get("format") == 1 and "architecture" in m
    )
    extra = sorted(p.name for p in path.iterdir() if p.name not in ENTRIES)
    if not ours or extra:
        why = f"it holds {extra[:5]}, which a store never holds" if extra else "no store marker"
        raise NotAStoreError(
            f"refusing to delete {path} (overwrite): {why}; nothing was deleted: remove it "
            "yourself if you are sure, or choose another path"
        )
