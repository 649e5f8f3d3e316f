"""
Kernels of FC, residual and CNN architectures on digits
=======================================================

Each architecture below is written once from widelimits layers. ``net.kernel(x1, x2)`` returns
its closed-form infinite-width kernels: the NNGP ``K`` (the covariance of the outputs of random
networks) and the NTK ``Theta`` (the kernel that governs gradient-descent training). Kernel
regression with either kernel is the prediction of an infinitely wide network: the NNGP posterior
mean, or the infinite ensemble trained to convergence on the MSE loss.

We use scikit-learn's bundled 8x8 digits, as flat 64-vectors for the fully connected and residual
networks and as NCHW images ``(N, 1, 8, 8)`` for the convolutional one.
"""

import os
import time

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

import widelimits as wl

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
_ = torch.manual_seed(0)  # every draw below is reproducible

# %%
# Data: digits, standardized, one-hot targets centred at zero
# ------------------------------------------------------------
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float64)
x = (x - x.mean(0)) / (x.std(0) + 1e-6)
labels = torch.tensor(digits.target)
perm = torch.randperm(len(x))
n_train, n_test = (300, 200) if FAST else (600, 300)
train, test = perm[:n_train], perm[n_train : n_train + n_test]
y = torch.nn.functional.one_hot(labels, 10).double() - 0.1
x_train, x_test, y_train = x[train], x[test], y[train]
images = x.reshape(-1, 1, 8, 8)  # NCHW: channels first

# %%
# Three architectures
# -------------------
# Hidden widths (and the CNN's hidden channels) are the infinite dimension, so no width appears.
fc = wl.Serial(
    wl.Dense(W_std=1.5, b_std=0.05), wl.ReLU(),
    wl.Dense(W_std=1.5, b_std=0.05), wl.ReLU(),
    wl.Dense(out=10),
)  # fmt: skip
block = wl.Serial(wl.ReLU(), wl.Dense(W_std=1.5, b_std=0.05))
resnet = wl.Serial(
    wl.Dense(W_std=1.5, b_std=0.05),
    wl.Residual(block), wl.Residual(block),
    wl.ReLU(), wl.Dense(out=10),
)  # fmt: skip
cnn = wl.Serial(
    wl.Conv(None, 3), wl.ReLU(),
    wl.Conv(None, 3), wl.ReLU(),
    wl.Flatten(), wl.Dense(10),
)  # fmt: skip
# ``wl.GlobalAvgPool()`` in place of ``Flatten`` gives the translation-invariant kernel, which
# tracks every pair of pixels and costs about 64 times more on 8x8 images.

# %%
# Kernel regression with the NNGP and the NTK
# -------------------------------------------
# The infinite ensemble at infinite training time, ``t=None``; its mean is
# ``Theta(x*, X) Theta(X, X)^{-1} Y`` (``K`` in place of ``Theta`` for the NNGP).
results = {}
for name, net, xs in [
    ("FC", fc, (x_train, x_test)),
    ("Residual", resnet, (x_train, x_test)),
    ("CNN", cnn, (images[train], images[test])),
]:
    start = time.perf_counter()
    xtr, xte = xs
    ytr, yte = y_train, labels[test]
    predict = wl.predict.gradient_descent_mse_ensemble(net, xtr, ytr, diag_reg=1e-4)
    means = predict(t=None, x_test=xte, get=("nngp", "ntk"))
    acc = {g: (means[g].argmax(1) == yte).double().mean().item() for g in means}
    results[name] = acc
    print(f"{name:9s} ({len(xtr)} train, {len(xte)} test): NNGP accuracy {acc['nngp']:.3f}, "
          f"NTK accuracy {acc['ntk']:.3f}  [{time.perf_counter() - start:.1f} s]")

# %%
# The kernels themselves
# -----------------------
# The NTK of each architecture on 40 test digits sorted by label, normalized to unit
# diagonal. The block structure shows that digits of the same class are more similar under
# each kernel.
order = torch.argsort(labels[test][:40])
fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
for ax, (name, net, xs) in zip(
    axes[:3],
    [("FC", fc, x_test[:40]), ("Residual", resnet, x_test[:40]), ("CNN", cnn, images[test][:40])],
    strict=True,
):
    k = net.kernel(xs[order], None, get="ntk")
    d = k.diagonal().sqrt()
    ax.imshow(k / d[:, None] / d[None, :], cmap="viridis")  # normalized: a correlation
    ax.set_title(f"NTK correlation, {name}")
    ax.set_xticks([])
    ax.set_yticks([])
names = list(results)
axes[3].bar([i - 0.2 for i in range(3)], [results[n]["nngp"] for n in names], 0.4, label="NNGP")
axes[3].bar([i + 0.2 for i in range(3)], [results[n]["ntk"] for n in names], 0.4, label="NTK")
axes[3].set_xticks(range(3), names)
axes[3].set_ylim(0.8, 1.0)
axes[3].set_ylabel("test accuracy")
axes[3].legend()
fig.tight_layout()
