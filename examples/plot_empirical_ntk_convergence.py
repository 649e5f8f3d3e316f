"""
The empirical NTK of an ordinary nn.Module converges to the analytic one
========================================================================

``wl.from_module(model, x)`` translates a PyTorch model you already have (here a plain MLP and a
small ResNet-like CNN, written without widelimits) into its infinite-width description, with the
weight scales of PyTorch's default initialization. ``wl.finite.empirical_ntk(model, x)`` is the
model's own tangent kernel ``sum_p df(x)/dp df(x')/dp``. As the hidden widths grow the two meet,
with a relative distance falling like ``width^(-1/2)``;
``wl.finite.distance_to_limit`` measures that over 1x, 2x, 4x wider copies of the model.
"""

import os

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from torch import nn

import widelimits as wl

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
_ = torch.manual_seed(0)  # every draw below is reproducible

digits = load_digits()
x = torch.tensor(digits.data[:16], dtype=torch.float64)
x = (x - x.mean()) / x.std()
images = x.reshape(-1, 1, 8, 8)

# %%
# Two ordinary PyTorch models
# ---------------------------
mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                    nn.Linear(128, 1)).double()


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(torch.relu(self.conv1(torch.relu(h))))


class SmallResNet(nn.Module):
    """A stem, two residual blocks, global average pooling (no MaxPool: it has no closed form)."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.Sequential(Block(channels), Block(channels))
        self.head = nn.Linear(channels, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(img))
        return self.head(torch.relu(h).mean(dim=(2, 3)))


resnet = SmallResNet(8).double()

# %%
# One network against its limit
# -----------------------------
for name, model, inputs in [("MLP", mlp, x), ("ResNet", resnet, images[:8])]:
    limit = wl.from_module(model, inputs).kernel(inputs, None, get="ntk")
    theta = wl.finite.empirical_ntk(model, inputs)
    err = ((theta - limit).norm() / limit.norm()).item()
    print(f"{name}: relative distance of the empirical NTK to the analytic one {err:.3f}")

# %%
# Distance against width
# ----------------------
# For each width factor, ``n_networks`` freshly initialized copies (seeded) are compared with
# the analytic kernel; the exponent is fitted on log-log axes.
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
n_networks = 2 if FAST else 4
for ax, (name, model, inputs, factors) in zip(
    axes,
    [("MLP", mlp, x, (1, 4, 16)), ("ResNet", resnet, images[:6], (1, 4, 16))],
    strict=True,
):
    dist = wl.finite.distance_to_limit(model, inputs, factors=factors, n_networks=n_networks)
    print(f"{name}: NTK distance {', '.join(f'{e:.3f}' for e in dist.ntk_error)} at width "
          f"factors {factors}; fitted exponent {dist.ntk_exponent:.2f}")
    dist.plot(ax=ax)
    ax.set_title(name)
fig.tight_layout()
