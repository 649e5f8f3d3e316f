"""
Transformer kernels on mnist1d sequences
========================================

A transformer encoder is written once from widelimits layers: a Dense embedding of each sequence
step, two ``TransformerBlock`` s (self-attention with positional embeddings, LayerNorm, a ReLU
MLP, residual connections) and global average pooling over the sequence. ``net.kernel`` gives
its infinite-width NNGP and NTK in closed form (Hron et al. 2020, "Infinite attention"), and
``net.build`` the finite transformer of the same description, whose empirical NTK approaches the
analytic one as its width grows.

The task is mnist1d (generated offline): each example is a sequence of 40 numbers (here
averaged in pairs to 20 steps) drawn from one of ten digit templates, shifted, scaled and noisy.
We compare kernel regression with the transformer's kernels to a two-layer CNN's.
"""

import os
import time

import matplotlib.pyplot as plt
import torch
from mnist1d.data import get_dataset_args, make_dataset

import widelimits as wl
from widelimits.finite import empirical_ntk

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
_ = torch.manual_seed(0)  # every draw below is reproducible

# %%
# Data: sequences (N, C=1, L=20), standardized by one scalar
# ----------------------------------------------------------
data = make_dataset(get_dataset_args())
n_train, n_test = (150, 100) if FAST else (600, 400)


def sequences(x, n):
    x = torch.as_tensor(x[:n], dtype=torch.float64)
    return x.reshape(n, 1, 20, 2).mean(-1)  # (N, 1, 20): channels first, like Conv1d


x_train, x_test = sequences(data["x"], n_train), sequences(data["x_test"], n_test)
mu, sd = x_train.mean(), x_train.std()
x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
y_train = torch.as_tensor(data["y"][:n_train])
y_test = torch.as_tensor(data["y_test"][:n_test])
targets = torch.nn.functional.one_hot(y_train, 10).double() - 0.1

# %%
# A two-block transformer and a CNN
# ---------------------------------
# Hidden widths (attention channels, MLP width) are the infinite dimension. Positional
# embeddings are added to the keys and queries (``pos_emb_type="sum"``): without them
# attention followed by global pooling would not see the order of the steps.
block = wl.TransformerBlock(pos_emb_type="sum", W_key_std=2.0, W_pos_emb_std=0.7, b_std=0.1)
transformer = wl.Serial(
    wl.Dense(W_std=1.0, b_std=0.1),  # embedding of each step
    block, block,
    wl.GlobalAvgPool(), wl.Dense(10),
)  # fmt: skip
cnn = wl.Serial(
    wl.Conv(None, 5, b_std=0.1), wl.ReLU(),
    wl.Conv(None, 5, b_std=0.1), wl.ReLU(),
    wl.GlobalAvgPool(), wl.Dense(10),
)  # fmt: skip

# %%
# Kernel regression with the NNGP and the NTK
# -------------------------------------------
# The infinitely wide network trained to convergence on the MSE loss (``t=None``).
results = {}
for name, net in [("transformer", transformer), ("CNN", cnn)]:
    start = time.perf_counter()
    predict = wl.predict.gradient_descent_mse_ensemble(net, x_train, targets, diag_reg=1e-3)
    means = predict(t=None, x_test=x_test, get=("nngp", "ntk"))
    acc = {g: (means[g].argmax(1) == y_test).double().mean().item() for g in means}
    results[name] = acc
    print(f"{name:11s} ({n_train} train, {n_test} test): NNGP accuracy {acc['nngp']:.3f}, "
          f"NTK accuracy {acc['ntk']:.3f}  [{time.perf_counter() - start:.1f} s]")

# %%
# The finite transformer of the same description
# ----------------------------------------------
# ``transformer.build`` gives the torch module (attention with one head of ``width`` key and
# value channels, MLPs of ``width`` units). Its empirical NTK on a few sequences approaches the
# analytic NTK as the width grows, with relative fluctuations of order ``1 / sqrt(width)``.
few = x_test[:8]
analytic = transformer.kernel(few, get="ntk")
widths = (32, 128) if FAST else (32, 128, 512)
errors = []
for width in widths:
    net = transformer.build((1, 20), width=width, seed=1, dtype=torch.float64)
    finite = empirical_ntk(net, few, implementation="jacobian")  # averaged over outputs
    errors.append(float(torch.linalg.norm(finite - analytic) / torch.linalg.norm(analytic)))
    print(f"width {width:4d}: relative difference of the empirical NTK {errors[-1]:.3f}")

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
k = transformer.kernel(x_test[:40][torch.argsort(y_test[:40])], get="ntk")
d = k.diagonal().sqrt()
axes[0].imshow(k / d[:, None] / d[None, :], cmap="viridis")
axes[0].set_title("transformer NTK correlation (sorted by label)")
axes[0].set_xticks([])
axes[0].set_yticks([])
axes[1].loglog(widths, errors, "o-")
axes[1].set_xlabel("width")
axes[1].set_ylabel("relative difference")
axes[1].set_title("empirical vs analytic NTK")
names = list(results)
axes[2].bar([i - 0.2 for i in range(2)], [results[n]["nngp"] for n in names], 0.4, label="NNGP")
axes[2].bar([i + 0.2 for i in range(2)], [results[n]["ntk"] for n in names], 0.4, label="NTK")
axes[2].set_xticks(range(2), names)
axes[2].set_ylabel("test accuracy")
axes[2].legend()
fig.tight_layout()
