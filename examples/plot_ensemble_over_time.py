"""
An infinite ensemble's mean and uncertainty over training time
==============================================================

Train infinitely many infinitely wide networks, each from its own random initialization, by
gradient descent on the MSE loss. Their outputs stay Gaussian at every time ``t``: the mean and
covariance have closed forms in the NNGP ``K`` and the NTK ``Theta``
(``widelimits.predict.gradient_descent_mse_ensemble``). At ``t = 0`` the ensemble is the prior
(mean zero, variance ``K(x, x)``); as ``t`` grows the mean fits the training points and the
uncertainty there shrinks to zero, while it stays large away from the data.

Data: a noisy sine on 12 points of the real line, the input given as ``(x, 1)`` so that the
network sees a constant feature too.
"""

import os

import matplotlib.pyplot as plt
import torch

import widelimits as wl

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
_ = torch.manual_seed(0)  # every draw below is reproducible

# %%
# Data and network
# ----------------
n_test = 100 if FAST else 200
x_train = torch.linspace(-2.5, 2.5, 12, dtype=torch.float64)
x_train = x_train + 0.1 * torch.randn(12, dtype=torch.float64)
y_train = (torch.sin(2 * x_train) + 0.05 * torch.randn(12, dtype=torch.float64))[:, None]
x_test = torch.linspace(-4, 4, n_test, dtype=torch.float64)


def features(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x, torch.ones_like(x)], dim=1)


net = wl.Serial(
    wl.Dense(W_std=1.5, b_std=0.05), wl.Erf(),
    wl.Dense(W_std=1.5, b_std=0.05), wl.Erf(),
    wl.Dense(out=1, W_std=1.5, b_std=0.05),
)  # fmt: skip

# %%
# The ensemble at several training times
# --------------------------------------
# ``t`` counts gradient-flow time with learning rate 1 on the loss ``||f - y||^2 / (2 N)``;
# ``t=None`` is the end of training. ``compute_cov=True`` returns a ``Gaussian`` with ``mean``
# (M, 1) and ``covariance`` (M, M).
predict = wl.predict.gradient_descent_mse_ensemble(net, features(x_train), y_train, diag_reg=1e-6)
times = [0.0, 10.0, 100.0, 1000.0, None]
fig, axes = plt.subplots(1, len(times), figsize=(16, 3.2), sharey=True)
for ax, t in zip(axes, times, strict=True):
    g = predict(t=t, x_test=features(x_test), get="ntk", compute_cov=True)
    mean = g.mean[:, 0]
    std = g.covariance.diagonal().clamp_min(0).sqrt()
    on_train = predict(t=t, x_test=features(x_train), get="ntk", compute_cov=True)
    train_mse = ((on_train.mean - y_train) ** 2).mean().item()
    train_std = on_train.covariance.diagonal().clamp_min(0).sqrt().mean().item()
    label = "inf" if t is None else f"{t:g}"
    print(f"t = {label:>5}: training MSE {train_mse:.2e}, std on training points {train_std:.3f}, "
          f"std at x = 4: {std[-1].item():.3f}")
    ax.fill_between(x_test, mean - 2 * std, mean + 2 * std, alpha=0.3, label="mean +- 2 std")
    ax.plot(x_test, mean, label="ensemble mean")
    ax.plot(x_train, y_train[:, 0], "k.", label="training data")
    ax.set_title(f"t = {label}")
    ax.set_xlabel("x")
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()

# %%
# Readout-only training (the NNGP)
# --------------------------------
# With ``get="nngp"`` only the last layer is trained; at ``t=None`` the ensemble is the NNGP
# posterior (``wl.predict.gp_inference``), whose variance on the training points is the
# regularizer only.
post = predict(t=None, x_test=features(x_train), get="nngp", compute_cov=True)
print("NNGP posterior std on the training points:",
      f"{post.covariance.diagonal().clamp_min(0).sqrt().mean().item():.2e}")
