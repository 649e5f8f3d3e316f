r"""
A linearized network trained beside the network
===============================================

``wl.finite.linearize(model)`` is the first-order Taylor model of ``model`` in its parameters,

.. math::

    f_{\rm lin}(x; \theta) = f(x; \theta_0) + J(x; \theta_0)\,(\theta - \theta_0),

an ordinary trainable ``nn.Module`` (one Jacobian-vector product per forward pass, no stored
Jacobian). Trained by gradient descent on the MSE loss it follows exactly the kernel dynamics
of the network's empirical NTK at initialization. Trained side by side with the same optimizer,
the network and its linearization stay close, and closer the wider the network: this is the
lazy-training regime behind the NTK limit.
"""

import os

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

import widelimits as wl

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
_ = torch.manual_seed(0)  # every draw below is reproducible

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32)
x = (x - x.mean(0)) / (x.std(0) + 1e-6)
perm = torch.randperm(len(x))
n_train = 64 if FAST else 128
x_train = x[perm[:n_train]]
y_train = (torch.tensor(digits.target)[perm[:n_train]] >= 5).float()[:, None] * 2 - 1  # +-1
x_test = x[perm[n_train : n_train + 100]]

net = wl.Serial(wl.Dense(W_std=1.5, b_std=0.05), wl.ReLU(), wl.Dense(W_std=1.5, b_std=0.05),
                wl.ReLU(), wl.Dense(out=1))


def mse(f: torch.Tensor) -> torch.Tensor:
    return ((f - y_train) ** 2).mean() / 2


# %%
# Train both with the same optimizer and steps
# --------------------------------------------
steps = 50 if FAST else 100
widths = (64, 256) if FAST else (64, 256, 1024)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for width in widths:
    model = net.build(64, width, seed=0)
    lin = wl.finite.linearize(model)  # built before training: expanded around theta_0
    opt_model = torch.optim.SGD(model.parameters(), lr=1.0)
    opt_lin = torch.optim.SGD(lin.parameters(), lr=1.0)
    loss_model, loss_lin, gap = [], [], []
    for _ in range(steps):
        for m, opt, losses in ((model, opt_model, loss_model), (lin, opt_lin, loss_lin)):
            opt.zero_grad()
            loss = mse(m(x_train))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            f, g = model(x_test), lin(x_test)
            gap.append(((f - g).norm() / f.norm()).item())
    print(f"width {width:5d}: final training loss network {loss_model[-1]:.4f}, linearized "
          f"{loss_lin[-1]:.4f}; relative test-output gap {gap[-1]:.3f}")
    line = ax1.plot(loss_model, label=f"network, width {width}")[0]
    ax1.plot(loss_lin, "--", color=line.get_color(), label=f"linearized, width {width}")
    ax2.plot(gap, color=line.get_color(), label=f"width {width}")
ax1.set(xlabel="step", ylabel="training loss", yscale="log")
ax1.legend(fontsize=7)
ax2.set(xlabel="step", ylabel="relative gap, network vs linearized", yscale="log")
ax2.legend()
fig.tight_layout()
