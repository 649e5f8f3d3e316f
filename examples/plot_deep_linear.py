"""
The deep linear limit and min-norm convergence
==============================================

A deep linear network ``beta = V^T M_q ... M_1 U`` with ``q`` hidden-to-hidden layers of width
``m`` (all entries ``N(0, 1/m)`` at initialization) is trained by gradient flow on the squared
loss of a regression problem ``beta X ~ Y`` with more input dimensions than examples.
As ``m`` grows, the trajectory ``beta_m(t)`` becomes deterministic: ``widelimits.linear``
computes the limit ``beta_inf(t)`` exactly on a basis of rooted paths, truncated automatically,
and the finite networks approach it like ``m^(-1/2)``. In the limit, training converges to the
minimum-norm interpolant ``Y X^+`` exponentially fast: initialization leaves no trace in
directions the data do not visit.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

from widelimits import linear

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"

# %%
# A random underdetermined problem
# --------------------------------
# Seeded: d = 20 inputs, k = 3 outputs, n = 10 examples.
rng = np.random.default_rng(0)
d, k, n, q, eta = 20, 3, 10, 1, 1.0
A = rng.standard_normal((d, n))
P, _, Qt = np.linalg.svd(A, full_matrices=False)
X = np.sqrt(n) * (P @ Qt)  # examples in orthogonal directions, X^T X / n = I
Y = rng.standard_normal((k, n))
times = np.linspace(0.0, 5.0, 21)

# %%
# The infinite-width limit and its distance to the min-norm solution
# ------------------------------------------------------------------
limit = linear.infinite_width_limit(X, Y, q, eta, times)
dist, rate = linear.min_norm_convergence(limit.betas, times, X, Y, fit_from=1.0)
print(f"limit: truncation R = {limit.R}, final risk {limit.risks[-1]:.2e}")
print(f"||beta_inf(t) - Y X^+||: {dist[0]:.3f} at t=0, {dist[-1]:.2e} at t={times[-1]:g}; "
      f"exponential rate {rate:.2f}")
print(f"row-space residual of beta_inf at the end: "
      f"{linear.row_space_residual(limit.betas[-1], X):.2e}")

# %%
# Finite widths against the limit
# -------------------------------
widths = (16, 64) if FAST else (16, 64, 256)
errors = linear.width_errors(X, Y, q, eta, times, widths, seeds=(0, 1, 2, 3), limit=limit)
for m, e in zip(widths, errors.mean, strict=True):
    print(f"width {m:4d}: max_t ||beta_m(t) - beta_inf(t)|| = {e.max():.3f}")
print(f"fitted width exponent {errors.slope:.2f} (theory -1/2)")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.semilogy(times, dist)
ax1.set(xlabel="t", ylabel="||beta_inf(t) - Y X^+||", title="min-norm convergence")
for m, e in zip(widths, errors.mean, strict=True):
    ax2.plot(times, e, label=f"width {m}")
ax2.set(xlabel="t", ylabel="||beta_m(t) - beta_inf(t)||", title="finite widths vs the limit")
ax2.legend()
fig.tight_layout()
