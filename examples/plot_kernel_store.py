"""
A resumable kernel store and conjugate-gradient regression
==========================================================

Kernels too large for memory go to disk tile by tile: ``scale.compute_kernel_store`` writes a
zarr store that records an exact fingerprint of the network and of the inputs and a checksum
per tile. A run that stops halfway (a killed process, a lost cluster) is resumed by calling the
same function again: only the missing tiles are computed. ``scale.kernel_regression`` then
solves ``(K + reg I) alpha = Y`` by preconditioned conjugate gradients, reading the kernel from
the store, and predicts on new inputs.

Everything here is written to a temporary directory that is removed at the end.
"""

import os
import tempfile
import time

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

import widelimits as wl
from widelimits import scale
from widelimits.scale import compute as compute_module

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
_ = torch.manual_seed(0)  # every draw below is reproducible

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float64)
x = (x - x.mean(0)) / (x.std(0) + 1e-6)
labels = torch.tensor(digits.target)
perm = torch.randperm(len(x))
n_train = 600 if FAST else 1200
train, test = perm[:n_train], perm[n_train:]
y = torch.nn.functional.one_hot(labels[train], 10).double() - 0.1

net = wl.Serial(wl.Dense(W_std=1.5, b_std=0.05), wl.ReLU(), wl.Dense(W_std=1.5, b_std=0.05),
                wl.ReLU(), wl.Dense(out=10))
tmp = tempfile.TemporaryDirectory()
path = os.path.join(tmp.name, "digits.zarr")

# %%
# An interrupted first run
# ------------------------
# To stand in for a crash, the tile task is wrapped so that the fifth tile raises. The tiles
# finished before it stay on disk, each with its checksum.
original_task = compute_module._tile_task
done = []


def crashing_task(*args):
    if len(done) == 4:
        raise RuntimeError("simulated crash")
    done.append(args[1:3])
    return original_task(*args)


compute_module._tile_task = crashing_task
try:
    scale.compute_kernel_store(net, x[train], path=path, tile_size=n_train // 4,
                               scheduler="synchronous", progress=False)
except RuntimeError as err:
    print(f"first run stopped: {err}")
finally:
    compute_module._tile_task = original_task

partial = scale.KernelStore.open(path)
print(f"after the crash: {len(partial.tiles()) - len(partial.pending())} of "
      f"{len(partial.tiles())} tiles on disk")

# %%
# Resume: the same call again
# ---------------------------
start = time.perf_counter()
missing = len(partial.pending())
store = scale.compute_kernel_store(net, x[train], path=path, tile_size=n_train // 4,
                                   progress=False)
print(f"resumed: computed the {missing} missing tiles in {time.perf_counter() - start:.1f} s; "
      f"{store}")

# The resumed store holds exactly the kernel computed in one go.
direct = net.kernel(x[train], None, get="ntk")
print("largest difference to the kernel computed in memory:",
      f"{(torch.as_tensor(store.read('ntk')) - direct).abs().max().item():.1e}")

# %%
# Conjugate-gradient kernel regression on the store
# -------------------------------------------------
# The test-train kernel is recomputed from ``net`` (it could be a second store); a rank-100
# pivoted-Cholesky preconditioner speeds up CG.
alpha, pred, info = scale.kernel_regression(store, y, get="ntk", net=net, x_train=x[train],
                                            x_test=x[test], diag_reg=1e-4, tol=1e-6, rank=100)
accuracy = (pred.argmax(1) == labels[test]).double().mean().item()
print(info)
print(f"test accuracy of the infinite-width network: {accuracy:.3f} on {len(test)} digits")

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.imshow(torch.as_tensor(store.read("ntk"))[:200, :200], cmap="viridis")
ax.set_title("NTK from the store (first 200 digits)")
tmp.cleanup()
