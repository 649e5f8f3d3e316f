"""On-disk kernel matrices: a zarr group of tile-aligned chunks, a manifest, checksums, markers.

Layout of a store (a directory)::

    store.zarr/
        zarr.json      the manifest (`widelimits.scale.manifest`): exact fingerprint of the
                       network, sha256 of the inputs, shape, kernels, dtype, tile, symmetry,
                       device type, versions
        nngp, ntk      (N1, N2) arrays chunked in (tile, tile) blocks, uncompressed
        checksums      (rows, cols, kernels) uint64: blake2b-64 of each chunk's values
        done           (rows, cols) uint8 array, one chunk per tile: 1 once the tile is written

What a store guarantees:

- a tile is written (both triangles for a symmetric kernel), then its checksums, then its
  marker, each chunk by an atomic file replacement, so a run killed at any point leaves every
  marked tile complete and checksummed; a later run computes only the unmarked ones;
- every chunk is verified against its checksum the first time a `KernelStore` object reads it
  (`read`, `operator` and so `kernel_regression`; ``verify=False`` skips this): a changed,
  truncated or deleted chunk raises `CorruptStoreError` naming its tiles, never NaNs or garbage;
- resuming (`compute_kernel_store` again) verifies every marked tile (one read of the store)
  and recomputes the damaged ones with the missing ones;
- each tile is computed by the same code on the same slices with one torch thread, so the
  result is the same bit for bit however often a run is interrupted or repaired and whichever
  worker computes a tile;
- ``overwrite`` deletes only a directory that is recognisably a store (`manifest.deletable`).
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..predict.operators import KernelOperator
from .manifest import (
    DTYPES,
    CorruptStoreError,
    NotAStoreError,
    StaleStoreError,
    StoreError,
    deletable,
    fingerprint,
    grid,
    manifest_for,
    read_manifest,
)

__all__ = [
    "CorruptStoreError",
    "KernelStore",
    "NotAStoreError",
    "StaleStoreError",
    "StoreError",
    "StoreKernel",
    "fingerprint",
    "manifest_for",
]

_LABELS = {
    "network": "architecture", "x1": "inputs x1", "x2": "inputs x2", "shape": "kernel shape",
    "kernels": "set of kernels", "dtype": "dtype", "tile": "tile size",
    "symmetric": "symmetry (x2=None or not)", "version": "widelimits version",
    "torch": "torch version", "format": "store format",
    "device": "device type (GPU and CPU tiles differ in the last bits)",
}  # fmt: skip


def _zarr():
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("kernel stores need zarr: pip install 'widelimits[scale]'") from err
    return zarr


def checksum(block: np.ndarray) -> int:
    """blake2b-64 of a block's values (C order), as an unsigned integer; never 0 in practice,
    the value of a checksum never written."""
    data = np.ascontiguousarray(block).reshape(-1).view(np.uint8)  # no copy when contiguous
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _chunk_range(sel, n: int, t: int) -> range | list[int]:
    """Indices of the chunks (of edge ``t`` along an axis of length ``n``) that ``sel`` reads."""
    if isinstance(sel, slice):
        idx = range(*sel.indices(n))
        if not idx:
            return range(0)
        lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1])
        return range(lo // t, hi // t + 1)
    idx = np.asarray(sel).reshape(-1).astype(np.int64) % max(n, 1)
    return sorted({int(i) // t for i in idx})


class KernelStore:
    """A kernel matrix on disk (see the module docstring).  Open with `KernelStore.open`.

    ``verify`` (default True): check each chunk against its checksum when first read.
    """

    def __init__(self, path: Path, group, manifest: dict, verify: bool = True) -> None:
        self.path, self.group, self.verify = Path(path), group, bool(verify)
        self._manifest = manifest
        self._verified: set[tuple[str, int, int]] = set()  # chunks checked by this object
        self._arrays: dict = {}
        self._complete = False  # seen complete (reads then skip re-reading the markers)

    def __repr__(self) -> str:
        return (
            f"KernelStore({str(self.path)!r}, kernels={self.kernels}, shape={self.shape}, "
            f"tile={self.tile}, {len(self.tiles()) - len(self.pending())}/{len(self.tiles())} "
            "tiles done)"
        )

    # -- creation and checks ----------------------------------------------------------------

    @classmethod
    def create_or_resume(cls, path, manifest: dict, overwrite: bool = False) -> KernelStore:
        """Open the store at ``path`` for ``manifest``, creating it if needed.

        An existing store made for another manifest raises `StaleStoreError` (naming what
        differs) unless ``overwrite``, which deletes it first; ``overwrite`` deletes only a
        recognisable store (else `NotAStoreError`, nothing deleted).  Anything else at ``path``
        (a file, a folder that is not an empty one or a store) is refused, and left untouched.
        """
        zarr = _zarr()
        path = Path(path)
        empty_dir = path.is_dir() and not path.is_symlink() and not any(path.iterdir())
        if (path.exists() or path.is_symlink()) and not empty_dir:
            if not overwrite:
                store = cls.open(path)
                store.check(manifest)
                return store
            deletable(path)
            shutil.rmtree(path)
        # the manifest first (one atomic write of zarr.json), then the arrays
        group = zarr.open_group(str(path), mode="w", attributes={"manifest": manifest})
        n1, n2 = manifest["shape"]
        tile = manifest["tile"]
        rows, cols = grid(manifest)
        for name in manifest["kernels"]:
            group.create_array(
                name, shape=(n1, n2), chunks=(tile, tile), dtype=manifest["dtype"],
                compressors=None, fill_value=float("nan"),
            )  # fmt: skip
        k = len(manifest["kernels"])
        group.create_array(
            "checksums", shape=(rows, cols, k), chunks=(1, 1, k), dtype="uint64",
            compressors=None, fill_value=0,
        )  # fmt: skip
        group.create_array(
            "done", shape=(rows, cols), chunks=(1, 1), dtype="uint8", compressors=None,
            fill_value=0,
        )  # fmt: skip
        return cls(path, group, read_manifest(path))

    @classmethod
    def open(cls, path, verify: bool = True) -> KernelStore:
        """Open an existing store (read and resume); ``verify``: see the class docstring.

        Raises:
            FileNotFoundError: nothing at ``path``.
            NotAStoreError: ``path`` is a file or a folder that is not a kernel store.
            CorruptStoreError: the manifest or the arrays' metadata is damaged or edited.
            StaleStoreError: a store of an older format.
        """
        zarr = _zarr()
        path = Path(path)
        manifest = read_manifest(path)
        try:
            group = zarr.open_group(str(path), mode="r+")
        except Exception as err:  # noqa: BLE001 - zarr raises many kinds on damaged metadata
            raise CorruptStoreError(f"cannot open the kernel store at {path}: {err}") from err
        n1, n2 = manifest["shape"]
        rows, cols = grid(manifest)
        k, t = len(manifest["kernels"]), manifest["tile"]
        want = {name: ((n1, n2), (t, t), manifest["dtype"]) for name in manifest["kernels"]}
        want["checksums"] = ((rows, cols, k), (1, 1, k), "uint64")
        want["done"] = ((rows, cols), (1, 1), "uint8")
        problems = []
        for name, (shape, chunks, dtype) in want.items():
            try:
                arr = group[name]
                got = (tuple(arr.shape), tuple(arr.chunks), str(arr.dtype))
            except Exception as err:  # noqa: BLE001
                problems.append(f"array {name!r} is missing or unreadable ({err})")
                continue
            if got != (shape, chunks, dtype):
                problems.append(
                    f"array {name!r} has shape, chunks, dtype {got}, not {(shape, chunks, dtype)}"
                )
        if problems:
            raise CorruptStoreError(
                f"the kernel store at {path} is damaged: {'; '.join(problems)}; recompute it "
                "with overwrite=True (CLI: --overwrite)"
            )
        return cls(path, group, manifest, verify)

    @property
    def manifest(self) -> dict:
        return dict(self._manifest)

    def check(self, manifest: dict) -> None:
        """Raise `StaleStoreError` if this store was made for a different computation."""
        mine = self._manifest
        differ = [_LABELS[k] for k in _LABELS if mine.get(k) != manifest.get(k)]
        if not differ:
            return
        detail = ""
        old, new = mine["network"], manifest["network"]
        if old != new:
            from ..fingerprint import Fingerprint

            def said(n: dict) -> str:
                fp = n["fingerprint"]
                return f"the name {fp[5:]!r}" if fp.startswith("name:") else "its exact fingerprint"

            if old["fingerprint"].startswith("name:") or new["fingerprint"].startswith("name:"):
                detail = f" (the store knows the network by {said(old)}, this call by {said(new)})"
            else:
                where = Fingerprint(new["fingerprint"], new["parts"]).differences(old["parts"])
                detail = f" (it differs at {', '.join(where)})" if where else ""
        raise StaleStoreError(
            f"the kernel store at {self.path} was computed for a different "
            f"{', '.join(differ)}{detail}; refusing to reuse it: pass overwrite=True (CLI: "
            "--overwrite) to recompute, or choose another path"
        )

    # -- tiles --------------------------------------------------------------------------------

    @property
    def tile(self) -> int:
        return int(self._manifest["tile"])

    @property
    def shape(self) -> tuple[int, int]:
        n1, n2 = self._manifest["shape"]
        return int(n1), int(n2)

    @property
    def kernels(self) -> list[str]:
        return list(self._manifest["kernels"])

    @property
    def symmetric(self) -> bool:
        return bool(self._manifest["symmetric"])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self._manifest["dtype"]]

    def tiles(self) -> list[tuple[int, int]]:
        """All tiles to compute: (i, j) block indices, j >= i for a symmetric kernel."""
        rows, cols = grid(self._manifest)
        return [(i, j) for i in range(rows) for j in range(cols) if not self.symmetric or j >= i]

    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def _grid(self, name: str, fill, rows=slice(None), cols=slice(None)) -> np.ndarray:
        """The per-tile array ``name`` (done, checksums) read over tile rows ``rows`` and
        columns ``cols`` (``fill`` elsewhere); unreadable chunks read as ``fill``, so that
        their tiles count as not done / damaged."""
        arr = self._array(name)
        out = np.full(arr.shape, fill, dtype=arr.dtype)
        try:
            out[rows, cols] = arr[rows, cols]
        except Exception:  # noqa: BLE001 - a damaged chunk: read the others one by one
            for i in range(arr.shape[0])[rows]:
                for j in range(arr.shape[1])[cols]:
                    try:
                        out[i, j] = arr[i, j]
                    except Exception:  # noqa: BLE001, S112
                        continue
        return out

    def pending(self) -> list[tuple[int, int]]:
        """Tiles without a valid marker (a damaged marker counts as missing)."""
        done = self._grid("done", 0)
        return [(i, j) for i, j in self.tiles() if done[i, j] != 1]

    @property
    def complete(self) -> bool:
        return not self.pending()

    def bounds(self, i: int, j: int) -> tuple[slice, slice]:
        n1, n2 = self.shape
        t = self.tile
        return slice(i * t, min((i + 1) * t, n1)), slice(j * t, min((j + 1) * t, n2))

    def _chunks_of(self, i: int, j: int) -> list[tuple[int, int]]:
        """The chunks tile (i, j) writes: itself, and its mirror for a symmetric kernel."""
        return [(i, j), (j, i)] if self.symmetric and i != j else [(i, j)]

    def _owner(self, r: int, c: int) -> tuple[int, int]:
        return (min(r, c), max(r, c)) if self.symmetric else (r, c)

    def write_tile(self, i: int, j: int, values: dict[str, np.ndarray]) -> None:
        """Write one tile's kernels (and the mirrored tile of a symmetric kernel), then their
        checksums, then the marker."""
        if sorted(values) != sorted(self.kernels):
            raise ValueError(f"a tile needs the kernels {self.kernels}, got {sorted(values)}")
        dtype = np.dtype(self._manifest["dtype"])
        sums = {c: np.zeros(len(self.kernels), dtype=np.uint64) for c in self._chunks_of(i, j)}
        for k, name in enumerate(self.kernels):
            block = np.ascontiguousarray(values[name], dtype=dtype)
            arr = self._array(name)
            for r, c in sums:
                data = block if (r, c) == (i, j) else np.ascontiguousarray(block.T)
                arr[self.bounds(r, c)] = data
                sums[r, c][k] = checksum(data)
        for (r, c), s in sums.items():
            self._array("checksums")[r, c, :] = s
        self._array("done")[i, j] = 1

    # -- verification -------------------------------------------------------------------------

    def _chunk_ok(self, name: str, r: int, c: int, sums: np.ndarray) -> bool:
        try:
            block = np.asarray(self._array(name)[self.bounds(r, c)])
        except Exception:  # noqa: BLE001 - a truncated or unreadable chunk
            return False
        return checksum(block) == int(sums[r, c, self.kernels.index(name)])

    def damaged_tiles(self, tiles=None) -> list[tuple[int, int]]:
        """Marked tiles (or the given ones) whose chunks do not match their checksums.

        Reads every chunk of those tiles once: a pass over the whole store by default.
        """
        if tiles is None:
            done = self._grid("done", 0)
            tiles = [(i, j) for i, j in self.tiles() if done[i, j] == 1]
        sums = self._grid("checksums", 0)
        return [
            (i, j) for i, j in tiles
            if not all(self._chunk_ok(n, r, c, sums)
                       for n in self.kernels for r, c in self._chunks_of(i, j))
        ]  # fmt: skip

    def unmark(self, tiles) -> None:
        """Mark tiles as not done (a resume recomputes them)."""
        self._complete = False
        for i, j in tiles:
            self._array("done")[i, j] = 0

    def _verify(self, name: str, rows, cols, verify: bool | None, read=None) -> None:
        """Check the chunks of ``name`` that ``[rows, cols]`` reads, once per chunk; ``read``:
        ``(values, row0, col0)``, those chunks already read (from row0, col0 on)."""
        if not (self.verify if verify is None else verify):
            return
        n1, n2 = self.shape
        todo = [
            (r, c) for r in _chunk_range(rows, n1, self.tile)
            for c in _chunk_range(cols, n2, self.tile) if (name, r, c) not in self._verified
        ]  # fmt: skip
        if not todo:
            return
        r_, c_ = [r for r, _ in todo], [c for _, c in todo]
        sums = self._grid("checksums", 0, slice(min(r_), max(r_) + 1), slice(min(c_), max(c_) + 1))
        # one read of the chunks' bounding box (as large as the read it precedes), hashed chunk
        # by chunk; chunk by chunk reads only where that read fails (a truncated chunk)
        t = self.tile
        r0, c0 = min(r_) * t, min(c_) * t
        box = None
        if read is not None:
            box, r0, c0 = read
        elif 2 * len(todo) >= (max(r_) - min(r_) + 1) * (max(c_) - min(c_) + 1):  # not sparse
            try:
                box = np.asarray(self._array(name)[r0 : (max(r_) + 1) * t, c0 : (max(c_) + 1) * t])
            except Exception:  # noqa: BLE001, S110
                pass
        k = self.kernels.index(name)

        def ok(r: int, c: int) -> bool:
            if box is None:
                return self._chunk_ok(name, r, c, sums)
            rows, cols = self.bounds(r, c)
            block = box[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]
            return checksum(block) == int(sums[r, c, k])

        bad = sorted({self._owner(r, c) for r, c in todo if not ok(r, c)})
        if bad:
            shown = ", ".join(map(str, bad[:8])) + (f" and {len(bad) - 8} more" if bad[8:] else "")
            raise CorruptStoreError(
                f"the kernel store at {self.path} is damaged: the {name} data of tile(s) {shown} "
                "does not match its checksum (a changed, truncated or deleted chunk); run the "
                "same computation again (compute_kernel_store, or `widelimits kernel compute`) "
                "to recompute the damaged tiles, or pass verify=False to read it as it is"
            )
        self._verified.update((name, r, c) for r, c in todo)

    def _get(self, name: str, rows, cols) -> np.ndarray:
        try:
            return np.asarray(self._array(name)[rows, cols])
        except Exception as err:  # noqa: BLE001 - only reachable with verify=False
            raise CorruptStoreError(
                f"cannot read {name} from the kernel store at {self.path} ({err}): it is "
                "damaged; run the same computation again to repair it"
            ) from err

    # -- reading ------------------------------------------------------------------------------

    def read_rows(
        self, name: str, r0: int, r1: int, *, verify: bool | None = None, out=None
    ) -> np.ndarray:
        """Rows ``r0:r1`` (``r0`` on a tile edge) of a finished kernel, all columns, with their
        chunks verified (``verify``: as in `read`) from this same read: one pass over the disk,
        where `read` reads twice.  ``out``: a C-contiguous numpy array of that shape and the
        store's dtype to read into (no other copy is made).  A band that cannot be read is
        verified chunk by chunk, so the error names its damaged tiles."""
        self._require(name)
        if r0 % self.tile:
            raise ValueError(f"r0 must be a multiple of the tile size {self.tile}, got {r0}")
        rows = slice(r0, r1)
        try:
            if out is None:
                values = np.asarray(self._array(name)[rows, :])
            else:
                from zarr.core.buffer.cpu import NDBuffer

                self._array(name).get_basic_selection(
                    (rows, slice(None)), out=NDBuffer.from_numpy_array(out)
                )
                values = out
        except Exception:  # noqa: BLE001 - a truncated chunk: find and name it, else re-raise
            self._verify(name, rows, slice(None), verify)
            values = self._get(name, rows, slice(None))
            if out is not None:
                out[...] = values
                values = out
        self._verify(name, rows, slice(None), verify, read=(values, r0, 0))
        return values

    def _require_complete(self) -> None:
        if self._complete:
            return
        pending = len(self.pending())
        self._complete = not pending
        if pending:
            raise RuntimeError(
                f"the kernel store at {self.path} is incomplete ({pending} of "
                f"{len(self.tiles())} tiles missing): run the computation again to resume it"
            )

    def _require(self, name: str) -> None:
        if name not in self.kernels:
            raise KeyError(f"this store holds {self.kernels}, not {name!r}")
        self._require_complete()

    def read(
        self, name: str = "ntk", rows=slice(None), cols=slice(None), *, verify: bool | None = None
    ) -> Tensor:
        """A block of a finished kernel as a torch tensor (the whole matrix by default).

        ``verify`` (default: the store's): check the chunks read against their checksums.
        """
        self._require(name)
        self._verify(name, rows, cols, verify)
        return torch.from_numpy(self._get(name, rows, cols))

    def operator(
        self, name: str = "ntk", block_rows: int | None = None, *, verify: bool | None = None
    ) -> StoreKernel:
        """The stored kernel as a `KernelOperator` for `widelimits.predict.cg_solve`."""
        self._require(name)
        if not self.symmetric:
            raise ValueError("solvers need a symmetric kernel (a store computed with x2=None)")
        return StoreKernel(self, name, block_rows, verify=verify)


class StoreKernel(KernelOperator):
    """A symmetric kernel read from a `KernelStore` a band of rows at a time (each chunk is
    verified against its checksum when first read, unless ``verify=False``)."""

    column_block = 256  # rows come from whole chunks: few large reads beat many small ones

    def __init__(
        self,
        store: KernelStore,
        name: str,
        block_rows: int | None = None,
        *,
        verify: bool | None = None,
    ) -> None:
        self.store, self.name = store, name
        self.verify = store.verify if verify is None else bool(verify)
        self.array = store._array(name)
        self.shape = store.shape
        self.dtype = store.dtype
        self.device = torch.device("cpu")
        self.block_rows = block_rows or store.tile
        self._diagonal = None

    def _read(self, rows, cols) -> np.ndarray:
        self.store._verify(self.name, rows, cols, self.verify)
        return self.store._get(self.name, rows, cols)

    def _bands(self):
        n = self.shape[0]
        for r0 in range(0, n, self.block_rows):
            r1 = min(r0 + self.block_rows, n)
            yield r0, r1, torch.from_numpy(self._read(slice(r0, r1), slice(None)))

    def matmul(self, v: Tensor) -> Tensor:
        out = torch.empty(self.shape[0], v.shape[1], dtype=v.dtype)
        for r0, r1, band in self._bands():
            out[r0:r1] = band.to(v.dtype) @ v
        return out

    def diagonal(self) -> Tensor:
        if self._diagonal is None:
            t = self.store.tile
            parts = []
            for i in range(math.ceil(self.shape[0] / t)):
                block = self._read(slice(i * t, (i + 1) * t), slice(i * t, (i + 1) * t))
                parts.append(torch.from_numpy(np.diagonal(block).copy()))
            self._diagonal = torch.cat(parts)
        return self._diagonal

    def columns(self, index: Tensor) -> Tensor:
        # K is symmetric: columns are rows, read in sorted order and put back.
        idx = index.cpu().numpy()
        order = np.argsort(idx)
        self.store._verify(self.name, idx, slice(None), self.verify)
        try:
            rows = np.asarray(self.array.get_orthogonal_selection((idx[order], slice(None))))
        except Exception as err:  # noqa: BLE001 - only reachable with verify=False
            raise CorruptStoreError(
                f"cannot read the kernel store at {self.store.path}: {err}"
            ) from err
        out = np.empty_like(rows)
        out[order] = rows
        return torch.from_numpy(out.T.copy())
