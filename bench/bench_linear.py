"""Benchmark: the infinite-width deep linear network (rooted-path limit) against a finite width.

d = 100 inputs, k = 10 outputs, q = 2 middle layers, n = 50 examples (an underdetermined problem):
X = default_rng(seed).standard_normal((d, n)) * sqrt(n / d) (so X^T X / n has eigenvalues O(1)),
Y = standard_normal((k, n)) from the same generator, learning rate eta = 1, times 0, 0.5, ...,
t_end.
Times ``infinite_width_limit`` with R chosen automatically (tolerance ``--tol`` relative to
max_t ||beta||), then ``gradient_flow`` of one width-``--width`` network (main scaling, RK45,
rtol 1e-6) over the same times, and prints both times, the risks and ||beta_m - beta_inf|| at the
last time (absolute and relative to ||beta_inf||).

    python bench/bench_linear.py [--width 4096] [--t-end 4] [--tol 1e-4] [--no-finite]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from widelimits.linear import gradient_flow, infinite_width_limit, init_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--q", type=int, default=2)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--t-end", type=float, default=4.0)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-finite", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((args.d, args.n)) * np.sqrt(args.n / args.d)
    Y = rng.standard_normal((args.k, args.n))
    times = np.arange(0.0, args.t_end + 1e-9, 0.5)

    start = time.perf_counter()
    lim = infinite_width_limit(X, Y, args.q, 1.0, times, tol=args.tol, method="RK45",
                               rtol=1e-7, atol=1e-9)  # fmt: skip
    t_lim = time.perf_counter() - start
    print(f"limit: d={args.d} k={args.k} q={args.q} n={args.n}, roots rank(X)+rank(Y) = "
          f"{lim.Qx.shape[1]}+{lim.Qy.shape[1]}")  # fmt: skip
    for R, size, change in lim.history:
        shown = "-" if change is None else f"{change:.2e}"
        print(f"  R={R:3d}  path coordinates {size:6d}  relative change {shown}")
    print(f"  chosen R={lim.R} (layer sizes {lim.sizes}), last change {lim.last_change:.2e}, "
          f"time {t_lim:.1f} s (all R tried)")  # fmt: skip
    print("  risk(t):", " ".join(f"{r:.2e}" for r in lim.risks))
    if args.no_finite:
        return
    net = init_network(args.d, args.k, args.q, args.width, seed=args.seed)
    start = time.perf_counter()
    traj = gradient_flow(net, X, Y, 1.0, times, method="RK45", rtol=1e-6, atol=1e-8)
    t_fin = time.perf_counter() - start
    err = np.linalg.norm(traj.betas - lim.betas, axis=(1, 2))
    rel = err / np.maximum(np.linalg.norm(lim.betas, axis=(1, 2)), 1e-300)
    print(f"finite width {args.width}: time {t_fin:.1f} s ({traj.nfev} evaluations)")
    print("  risk(t):", " ".join(f"{r:.2e}" for r in traj.risks))
    print("  ||beta_m - beta_inf||(t):", " ".join(f"{e:.3f}" for e in err))
    print(f"  at t={times[-1]:g}: {err[-1]:.4f} (relative {rel[-1]:.4f}; "
          f"x sqrt(m) = {err[-1] * np.sqrt(args.width):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
