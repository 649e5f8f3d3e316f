"""Scale: kernels and kernel regression past one machine's memory.

- `compute_kernel_store`: kernels tile by tile into a resumable zarr store (`KernelStore`), on
  this machine's cores or a Dask cluster;
- `kernel_regression`: preconditioned conjugate gradients over a stored or recomputed kernel
  (`RecomputedKernel`), with predictions at t = infinity.

Needs the ``scale`` extra (zarr, dask[distributed]): ``pip install 'widelimits[scale]'``.
"""

from .compute import SCHEDULERS, compute_kernel_store
from .solve import RecomputedKernel, kernel_regression
from .store import KernelStore, StaleStoreError, StoreKernel

__all__ = [
    "SCHEDULERS",
    "KernelStore",
    "RecomputedKernel",
    "StaleStoreError",
    "StoreKernel",
    "compute_kernel_store",
    "kernel_regression",
]
