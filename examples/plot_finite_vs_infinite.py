r"""
A finite network trained next to its infinite-width prediction
===============================================================

``net.build(in_features, width)`` turns a widelimits description into an ordinary
``torch.nn.Module`` whose empirical NTK tends to the analytic one as the width grows. Trained by
full-batch gradient descent on the loss ``||f - y||^2 / (2 y.numel())`` with learning rate
``eta``, a wide network follows the linear dynamics of its NTK ``Theta``:

.. math::

    f_t(x) = f_0(x) + \Theta(x, X)\,\Theta^{-1}\bigl(I - e^{-\eta' \Theta t}\bigr)(Y - f_0(X)),
    \qquad \eta' = \eta / \text{y.numel()},

which ``widelimits.predict.gradient_descent_mse`` evaluates in closed form (``discrete=True``
makes ``t`` count gradient-descent steps). Starting the prediction from the network's own
initial outputs ``f_0`` isolates the effect of finite width on the dynamics; the gap shrinks
like ``width^(-1/2)``.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits

import widelimits as wl

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"
_ = torch.manual_seed(0)  # every draw below is reproducible

# %%
# Data: 10-class digits with centred one-hot targets
# --------------------------------------------------
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float64)
x = (x - x.mean(0)) / (x.std(0) + 1e-6)
perm = torch.randperm(len(x))
n_train, n_test = (64, 64) if FAST else (128, 128)
x_train, x_test = x[perm[:n_train]], x[perm[n_train : n_train + n_test]]
y_train = torch.nn.functional.one_hot(torch.tensor(digits.target)[perm[:n_train]], 10) - 0.1
y_train = y_train.double()

net = wl.Serial(wl.Dense(W_std=1.5, b_std=0.05), wl.ReLU(), wl.Dense(out=10, W_std=1.5,
                                                                      b_std=0.05))

# %%
# The closed-form predictor from the analytic NTK
# -----------------------------------------------
steps = 150 if FAST else 300
k_train = net.kernel(x_train, None, get="ntk")
# half the largest stable rate, 2 y.numel() / lambda_max(Theta)
lr = 0.5 * wl.predict.max_learning_rate(k_train, y_train.numel())
print(f"learning rate {lr:.1f}")
k_test = net.kernel(x_test, x_train, get="ntk")
predictor = wl.predict.gradient_descent_mse(k_train, y_train, learning_rate=lr)
record = list(range(0, steps + 1, steps // 30))


def train(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-batch gradient descent; the test outputs at the recorded steps."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with torch.no_grad():
        f0_train, f0_test = model(x_train), model(x_test)
    outs = []
    for step in range(steps + 1):
        if step in record:
            with torch.no_grad():
                outs.append(model(x_test))
        if step == steps:
            break
        opt.zero_grad()
        loss = ((model(x_train) - y_train) ** 2).sum() / (2 * y_train.numel())
        loss.backward()
        opt.step()
    return f0_train, f0_test, torch.stack(outs)


# %%
# Train finite networks of growing width beside the prediction
# ------------------------------------------------------------
widths = (64, 256, 1024) if FAST else (64, 256, 1024, 4096)
gaps = []
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for width in widths:
    model = net.build(64, width, seed=0, dtype=torch.float64)
    f0_train, f0_test, finite = train(model)
    _, infinite = predictor(t=torch.tensor(record, dtype=torch.float64), fx_train_0=f0_train,
                            fx_test_0=f0_test, k_test_train=k_test, discrete=True)
    gap = ((finite - infinite).norm(dim=(1, 2)) / infinite.norm(dim=(1, 2)).clamp_min(1e-12))
    gaps.append(gap[-1].item())
    print(f"width {width:5d}: relative gap to the infinite-width prediction after {steps} steps "
          f"{gap[-1].item():.3f}")
    ax1.plot(record[1:], gap[1:], label=f"width {width}")
slope = float(np.polyfit(np.log(widths), np.log(gaps), 1)[0])
print(f"fitted width exponent of the gap: {slope:.2f} (theory: about -0.5)")
ax1.set(xlabel="gradient-descent step", ylabel="relative gap (test outputs)", yscale="log")
ax1.legend()
ax2.loglog(widths, gaps, "o-", label=f"slope {slope:.2f}")
ax2.set(xlabel="width", ylabel=f"gap after {steps} steps")
ax2.legend()
fig.tight_layout()
