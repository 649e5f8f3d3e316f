r"""Scale: kernels and kernel regression past one machine's memory.

- `compute_kernel_store`: kernels tile by tile into a resumable zarr store (`KernelStore`), on
  this machine's cores or a Dask cluster.  A store records the exact fingerprint of the network
  and of the inputs (a mismatch: `StaleStoreError`) and a checksum per tile, verified when read
  (damage: `CorruptStoreError`); a resume recomputes only missing or damaged tiles, and
  ``overwrite`` deletes only a widelimits store (anything else: `NotAStoreError`);
- `kernel_regression`: preconditioned conjugate gradients over a stored or recomputed kernel
  (`RecomputedKernel`), with predictions at :math:`t = \infty`.

Needs the ``scale`` extra (zarr, dask[distributed]): ``pip install 'widelimits[scale]'``.
"""

from ..fingerprint import FingerprintError
from .compute import SCHEDULERS, compute_kernel_store
from .solve import RecomputedKernel, kernel_regression
from .store import (
    CorruptStoreError,
    KernelStore,
    NotAStoreError,
    StaleStoreError,
    StoreError,
    StoreKernel,
)

__all__ = [
    "SCHEDULERS",
    "CorruptStoreError",
    "FingerprintError",
    "KernelStore",
    "NotAStoreError",
    "RecomputedKernel",
    "StaleStoreError",
    "StoreError",
    "StoreKernel",
    "compute_kernel_store",
    "kernel_regression",
]
