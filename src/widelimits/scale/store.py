"""On-disk kernel matrices: a zarr group of tile-aligned chunks, a manifest and tile markers.

Layout of a store (a directory)::

    store.zarr/
        nngp, ntk      (N1, N2) arrays chunked in (tile, tile) blocks, uncompressed
        done           (rows, cols) uint8 array, one chunk per tile: 1 once the tile is written
        attrs          manifest: architecture, fingerprints of the inputs, dtype, tile,
                       kernels, symmetric, library version

A tile is written (both triangles for a symmetric kernel) before its marker, so a run killed at
any point leaves every marked tile complete; a later run computes only the unmarked ones. Each
tile is computed by the same code on the same slices with one torch thread, so the result is the
same bit for bit however often a run is interrupted and whichever worker computes a tile.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..predict.operators import KernelOperator

__all__ = ["KernelStore", "StaleStoreError", "fingerprint", "manifest_for"]

FORMAT = 1


class StaleStoreError(ValueError):
    """The store on disk was made for another architecture, other inputs or another version."""


def _zarr():
    try:
        import zarr
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("kernel stores need zarr: pip install 'widelimits[scale]'") from err
    return zarr


def fingerprint(x: Tensor | None) -> str | None:
    """sha256 of an input batch's dtype, shape and bytes (``None`` for ``None``)."""
    if x is None:
        return None
    arr = np.ascontiguousarray(x.detach().cpu().numpy())
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def manifest_for(
    net, x1: Tensor, x2: Tensor | None, gets, dtype, tile: int, device: str = "cpu"
) -> dict:
    """What identifies a kernel computation: everything that changes its values or layout."""
    from .. import __version__

    return {
        "format": FORMAT,
        "architecture": repr(net),
        "x1": fingerprint(x1),
        "x2": fingerprint(x2),
        "shape": [int(x1.shape[0]), int((x1 if x2 is None else x2).shape[0])],
        "kernels": list(gets),
        "dtype": str(dtype).replace("torch.", ""),
        "tile": int(tile),
        "symmetric": x2 is None,
        "device": device,
        "version": __version__,
    }


@dataclass
class KernelStore:
    """A kernel matrix on disk (see the module docstring).  Open with `KernelStore.open`."""

    path: Path
    group: object

    # -- creation and checks ----------------------------------------------------------------

    @classmethod
    def create_or_resume(cls, path, manifest: dict, overwrite: bool = False) -> KernelStore:
        """Open the store at ``path`` for ``manifest``, creating it if needed.

        An existing store made for another manifest raises `StaleStoreError` (naming what
        differs) unless ``overwrite``, which deletes it first.
        """
        zarr = _zarr()
        path = Path(path)
        if path.exists() and not overwrite:
            store = cls.open(path)
            store.check(manifest)
            return store
        if path.exists():
            import shutil

            shutil.rmtree(path)
        group = zarr.open_group(str(path), mode="w")
        n1, n2 = manifest["shape"]
        tile = manifest["tile"]
        for name in manifest["kernels"]:
            group.create_array(
                name, shape=(n1, n2), chunks=(tile, tile), dtype=manifest["dtype"],
                compressors=None, fill_value=float("nan"),
            )  # fmt: skip
        rows, cols = math.ceil(n1 / tile), math.ceil(n2 / tile)
        group.create_array(
            "done", shape=(rows, cols), chunks=(1, 1), dtype="uint8", compressors=None,
            fill_value=0,
        )  # fmt: skip
        group.attrs["manifest"] = manifest
        return cls(path, group)

    @classmethod
    def open(cls, path) -> KernelStore:
        """Open an existing store (read and resume)."""
        zarr = _zarr()
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no kernel store at {path}")
        group = zarr.open_group(str(path), mode="r+")
        if "manifest" not in group.attrs:
            raise StaleStoreError(f"{path} is a zarr group but not a widelimits kernel store")
        return cls(path, group)

    @property
    def manifest(self) -> dict:
        return dict(self.group.attrs["manifest"])

    def check(self, manifest: dict) -> None:
        """Raise `StaleStoreError` if this store was made for a different computation."""
        mine = self.manifest
        labels = {
            "architecture": "architecture", "x1": "inputs x1", "x2": "inputs x2",
            "shape": "kernel shape", "kernels": "set of kernels", "dtype": "dtype",
            "tile": "tile size", "symmetric": "symmetry (x2=None or not)",
            "version": "widelimits version", "format": "store format",
            "device": "device type (GPU and CPU tiles differ in the last bits)",
        }  # fmt: skip
        differ = [labels[k] for k in labels if mine.get(k) != manifest.get(k)]
        if differ:
            raise StaleStoreError(
                f"the kernel store at {self.path} was computed for a different "
                f"{', '.join(differ)}; refusing to reuse it: pass overwrite=True (CLI: "
                "--overwrite) to recompute, or choose another path"
            )

    # -- tiles --------------------------------------------------------------------------------

    @property
    def tile(self) -> int:
        return int(self.manifest["tile"])

    @property
    def shape(self) -> tuple[int, int]:
        n1, n2 = self.manifest["shape"]
        return int(n1), int(n2)

    @property
    def kernels(self) -> list[str]:
        return list(self.manifest["kernels"])

    @property
    def symmetric(self) -> bool:
        return bool(self.manifest["symmetric"])

    def tiles(self) -> list[tuple[int, int]]:
        """All tiles to compute: (i, j) block indices, j >= i for a symmetric kernel."""
        rows, cols = self.group["done"].shape
        return [(i, j) for i in range(rows) for j in range(cols) if not self.symmetric or j >= i]

    def pending(self) -> list[tuple[int, int]]:
        done = self.group["done"][...]
        return [(i, j) for i, j in self.tiles() if not done[i, j]]

    @property
    def complete(self) -> bool:
        return not self.pending()

    def bounds(self, i: int, j: int) -> tuple[slice, slice]:
        n1, n2 = self.shape
        t = self.tile
        return slice(i * t, min((i + 1) * t, n1)), slice(j * t, min((j + 1) * t, n2))

    def write_tile(self, i: int, j: int, values: dict[str, np.ndarray]) -> None:
        """Write one tile's kernels (and the mirrored tile of a symmetric kernel), then mark it."""
        rows, cols = self.bounds(i, j)
        for name, block in values.items():
            arr = self.group[name]
            arr[rows, cols] = block
            if self.symmetric and i != j:
                arr[cols, rows] = block.T
        self.group["done"][i, j] = 1

    # -- reading ------------------------------------------------------------------------------

    def _require_complete(self) -> None:
        pending = len(self.pending())
        if pending:
            raise RuntimeError(
                f"the kernel store at {self.path} is incomplete ({pending} of "
                f"{len(self.tiles())} tiles missing): run the computation again to resume it"
            )

    def read(self, name: str = "ntk", rows=slice(None), cols=slice(None)) -> Tensor:
        """A block of a finished kernel as a torch tensor (the whole matrix by default)."""
        if name not in self.kernels:
            raise KeyError(f"this store holds {self.kernels}, not {name!r}")
        self._require_complete()
        return torch.from_numpy(np.asarray(self.group[name][rows, cols]))

    def operator(self, name: str = "ntk", block_rows: int | None = None) -> StoreKernel:
        """The stored kernel as a `KernelOperator` for `widelimits.predict.cg_solve`."""
        if name not in self.kernels:
            raise KeyError(f"this store holds {self.kernels}, not {name!r}")
        self._require_complete()
        if not self.symmetric:
            raise ValueError("solvers need a symmetric kernel (a store computed with x2=None)")
        return StoreKernel(self, name, block_rows)


class StoreKernel(KernelOperator):
    """A symmetric kernel read from a `KernelStore` a band of rows at a time."""

    column_block = 256  # rows come from whole chunks: few large reads beat many small ones

    def __init__(self, store: KernelStore, name: str, block_rows: int | None = None) -> None:
        self.store, self.name = store, name
        self.array = store.group[name]
        self.shape = store.shape
        self.dtype = getattr(torch, store.manifest["dtype"])
        self.device = torch.device("cpu")
        self.block_rows = block_rows or store.tile
        self._diagonal = None

    def _bands(self):
        n = self.shape[0]
        for r0 in range(0, n, self.block_rows):
            r1 = min(r0 + self.block_rows, n)
            yield r0, r1, torch.from_numpy(np.asarray(self.array[r0:r1, :]))

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
                block = np.asarray(self.array[i * t : (i + 1) * t, i * t : (i + 1) * t])
                parts.append(torch.from_numpy(np.diagonal(block).copy()))
            self._diagonal = torch.cat(parts)
        return self._diagonal

    def columns(self, index: Tensor) -> Tensor:
        # K is symmetric: columns are rows, read in sorted order and put back.
        idx = index.cpu().numpy()
        order = np.argsort(idx)
        rows = np.asarray(self.array.get_orthogonal_selection((idx[order], slice(None))))
        out = np.empty_like(rows)
        out[order] = rows
        return torch.from_numpy(out.T.copy())
