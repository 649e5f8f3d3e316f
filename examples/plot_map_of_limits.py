"""
The map of infinite-width limits
================================

How the hyperparameters of a one-hidden-layer network ``f(x) = sum_r a_r phi(w_r . x)`` scale
with the width decides which limit it reaches. Relative to a reference width, with
``rho = width / ref_width``, take ``std(a) ~ rho^q_sigma`` and learning rates
``eta_w ~ rho^q_tilde``, ``eta_a ~ rho^(q_tilde + 2 q_sigma)``. In this
``(q_sigma, q_tilde)`` plane the dynamically stable scalings form a strip, cut into 13 regions
by where the logits at initialization vanish, stay bounded or diverge, the same for the tangent
kernel, and whether the kernel moves during training. The NTK and mean-field (MF) limits are two
points of it.

``widelimits.limits.classify`` names the region of any scaling and its properties;
``plot_plane`` draws the map; ``width_sweep`` measures the predicted width exponents on finite
networks (here a tiny sweep on a binary digits task).
"""

import os

from widelimits.limits import NAMED_POINTS, Scaling, classify, plot_plane
from widelimits.limits.sweep import SweepConfig, width_sweep

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"

# %%
# Classify the named scalings
# ---------------------------
for name, (q_sigma, q_tilde) in NAMED_POINTS.items():
    c = classify(Scaling.plane(q_sigma=q_sigma, q_tilde=q_tilde))
    print(f"{name:12s} (q_sigma, q_tilde) = ({float(q_sigma):+.2f}, {float(q_tilde):+.2f}): "
          f"{c.region or c.verdict}; logits {c.logits}, kernel {c.kernel}, "
          f"evolves {c.kernel_evolves}")
print("outside the strip:", classify(Scaling.plane(q_sigma=0, q_tilde=1)).verdict)

# %%
# The plane
# ---------
fig = plot_plane()

# %%
# A tiny width sweep
# ------------------
# Finite networks of each scaling at a few widths: the mean absolute logit and the tangent
# kernel at initialization are fitted as powers of the width and compared with the exponents
# ``classify`` predicts. (The full experiment, with training and the limit models, is
# ``widelimits limits``; this one is kept to a few seconds.)
config = SweepConfig(
    scalings=("NTK", "MF"),
    widths=(64, 256, 1024) if not FAST else (64, 256),
    seeds=1,
    steps=10,
    n_train=128,
    kernel_points=32,
    records=3,
    limits=False,
    init_seeds=3,
)
result = width_sweep(config)
for name, ex in result["exponents"].items():
    fitted, predicted = ex["fitted"], ex["predicted"]
    print(f"{name}: logits exponent fitted {fitted['logits_exponent']:+.2f} "
          f"(predicted {predicted['logits_exponent']:+.2f}), kernel exponent fitted "
          f"{fitted['kernel_exponent']:+.2f} (predicted {predicted['kernel_exponent']:+.2f})")
