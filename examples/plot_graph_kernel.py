"""
Graph neural tangent kernel: telling random-graph models apart
==============================================================

A graph network alternates a per-node layer (``Conv(kernel_size=1)``, a Dense layer shared by
the nodes) with an aggregation over each node's neighbours (``Aggregate``), and pools the nodes at
the end. Its infinite-width kernels are graph neural tangent kernels (Du et al. 2019). Each
example is a graph: node features ``(C, V)`` and an adjacency matrix, passed along with the
examples as ``net.kernel(x1, x2, pattern=(A1, A2))``.

The task is structural: graphs drawn from the Erdos-Renyi model (edges placed uniformly at
random) against graphs from the Barabasi-Albert model (preferential attachment: a few hubs), with
the same number of nodes and edges, and constant node features, so only the structure tells
them apart. The graphs are generated here, offline.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import widelimits as wl

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
rng = np.random.default_rng(0)  # every draw below is reproducible
V, M = 16, 2  # nodes per graph; edges added per new node in the Barabasi-Albert model


# %%
# Two random-graph models with the same number of edges
# ------------------------------------------------------
def barabasi_albert(n: int, m: int) -> np.ndarray:
    a = np.zeros((n, n))
    a[: m + 1, : m + 1] = 1 - np.eye(m + 1)  # a small clique to start from
    for new in range(m + 1, n):
        degree = a[:new].sum(1)
        targets = rng.choice(new, size=m, replace=False, p=degree / degree.sum())
        a[new, targets] = a[targets, new] = 1
    return a


def erdos_renyi(n: int, edges: int) -> np.ndarray:
    a = np.zeros((n, n))
    pairs = np.array(np.triu_indices(n, 1)).T
    chosen = pairs[rng.choice(len(pairs), size=edges, replace=False)]
    a[chosen[:, 0], chosen[:, 1]] = a[chosen[:, 1], chosen[:, 0]] = 1
    return a


n_graphs = 80 if FAST else 200
graphs, labels = [], []
for i in range(n_graphs):
    ba = barabasi_albert(V, M)
    graph = ba if i % 2 else erdos_renyi(V, int(ba.sum()) // 2)
    graphs.append(graph + np.eye(V))  # each node also keeps its own features
    labels.append(1.0 if i % 2 else -1.0)
pattern = torch.tensor(np.stack(graphs))
y = torch.tensor(labels, dtype=torch.float64)
x = torch.ones(n_graphs, 1, V, dtype=torch.float64)  # constant node features (N, C, V)
n_train = n_graphs // 2
train, test = slice(0, n_train), slice(n_train, None)

# %%
# The graph network and its kernels
# ---------------------------------
# Hidden channels are the infinite dimension. Every ``Aggregate`` reads the same pattern.
gnn = wl.Serial(
    wl.Conv(None, 1, W_std=1.5, b_std=0.1), wl.ReLU(), wl.Aggregate(),
    wl.Conv(None, 1, W_std=1.5, b_std=0.1), wl.ReLU(), wl.Aggregate(),
    wl.Conv(None, 1, W_std=1.5, b_std=0.1), wl.ReLU(),
    wl.GlobalAvgPool(), wl.Dense(1),
)  # fmt: skip
k_train = gnn.kernel(x[train], pattern=pattern[train])
k_test = gnn.kernel(x[test], x[train], pattern=(pattern[test], pattern[train]))

# %%
# Kernel regression: the infinitely wide network trained to convergence
# ---------------------------------------------------------------------
# The mean prediction of the infinite ensemble trained on the MSE loss is
# ``Theta(x*, X) Theta(X, X)^{-1} y`` (``K`` for the NNGP posterior mean).
for get in ("nngp", "ntk"):
    kt = getattr(k_train, get)
    reg = 1e-6 * kt.diagonal().mean() * torch.eye(n_train, dtype=torch.float64)
    prediction = getattr(k_test, get) @ torch.linalg.solve(kt + reg, y[train])
    accuracy = (prediction.sign() == y[test]).double().mean().item()
    print(f"{get.upper()}: test accuracy {accuracy:.2f} on {n_graphs - n_train} graphs")

# A network without aggregation sees only constant node features: every graph looks the same.
plain = wl.Serial(wl.Conv(None, 1), wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1))
flat = plain.kernel(x[:4], get="nngp")
print(f"without Aggregate the kernel is constant: spread {float(flat.max() - flat.min()):.1e}")

# %%
# The kernel between graphs, sorted by model
# ------------------------------------------
order = torch.argsort(y[train])
fig, ax = plt.subplots(figsize=(4.5, 4))
image = ax.imshow(k_train.ntk[order][:, order].numpy(), cmap="viridis")
ax.set_title("NTK between training graphs\n(Erdos-Renyi first, then Barabasi-Albert)")
ax.set_xticks([])
ax.set_yticks([])
fig.colorbar(image, ax=ax)
fig.tight_layout()
plt.show()
