"""The deep-linear-network experiment of ``widelimits linear`` (and the demo): run, plot, report.

`linear_experiment` builds an underdetermined random problem (`make_problem`), computes the
infinite-width limit beta_inf(t) with automatic truncation R, trains finite networks (main
scaling) at several widths and seeds with gradient flow, and measures

- ||beta_m(t) - beta_inf(t)||_F against the width m (seed mean), with the fitted exponent of m at
  each reported time and overall (of the time-averaged mean error); -1/2 is expected, so
  error x sqrt(m) should be roughly flat in m;
- ||beta_inf(t) - Y X^+||_F against t with the fitted exponential rate (the limit converges to
  the minimum-norm solution of the underdetermined problem and never leaves the row space of X);
- the first-layer law: rows of sqrt(m) U_m(t_max) at the widest width (seed ``seed``) against
  N(0, U_inf^T U_inf) (`widelimits.linear.first_layer_law`), next to the initial law N(0, I);
- the tangent kernel at initialization at every width against (q + 2) X^T X / n.

Everything it returns is JSON-serializable; `plot_width_errors`, `plot_min_norm` and
`write_report` read only that dict (or the same dict loaded back from ``results.json``).
matplotlib is imported only by the plotting functions.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .limit import infinite_width_limit
from .measure import (
    first_layer_law,
    fit_power,
    limit_tangent_kernel,
    min_norm_convergence,
    min_norm_solution,
    row_space_residual,
    tangent_kernel,
)
from .network import gradient_flow, init_network

__all__ = [
    "make_problem",
    "linear_experiment",
    "plot_width_errors",
    "plot_min_norm",
    "plot_linear",
    "report_lines",
    "write_report",
    "format_summary",
    "FLOOR",
]

FLOOR = 1e-9  # distances below FLOOR x ||Y X^+|| are left out of the rate fit (roundoff level)
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def make_problem(d: int, k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random regression problem: X (d x n) and Y (k x n), seeded by ``seed``.

    X = sqrt(n) P, with P the polar factor (all singular values 1) of a d x n matrix of iid
    N(0, 1) entries: the examples point in random directions, and for n <= d they are orthogonal
    with norm sqrt(n), so X^T X / n = I_n (a well-conditioned underdetermined problem whose
    tangent kernel at initialization is (q + 2) I_n); for n > d, X X^T / n = I_d.  Y has iid
    N(0, 1) entries.
    """
    if min(d, k, n) < 1:
        raise ValueError(f"need d, k, n >= 1; got d={d}, k={k}, n={n}")
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, n))
    P, _, Qt = np.linalg.svd(A, full_matrices=False)
    X = math.sqrt(n) * (P @ Qt)
    Y = rng.standard_normal((k, n))
    return X, Y


def _log(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def linear_experiment(
    *,
    q: int = 1,
    d: int = 20,
    k: int = 3,
    n: int = 10,
    widths: Sequence[int] = (64, 128, 256, 512, 1024),
    seeds: int = 4,
    t_max: float = 5.0,
    eta: float = 1.0,
    seed: int = 0,
    time_points: int = 41,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    progress: bool = False,
) -> dict:
    """Run the experiment described in the module docstring; returns a JSON-serializable dict.

    Args:
        q, d, k, n: middle layers, inputs, outputs and examples of `make_problem` (n < d for an
            underdetermined problem).
        widths: finite widths; seeds: networks per width (seeds ``seed .. seed + seeds - 1``).
        t_max, eta: gradient flow up to time ``t_max`` with rate ``eta``.
        seed: seeds the problem and the first network.
        time_points: the limit is reported on ``time_points`` equally spaced times in
            [0, t_max] (the min-norm curve; time_points - 1 a multiple of 4); the finite
            networks at t = 0, t_max / 4, t_max / 2 and t_max.
        rtol, atol: tolerances of the finite networks' RK45 integration (well below their
            O(m^-1/2) distance to the limit).
        progress: progress lines on stderr.
    """
    start = time.perf_counter()
    widths = sorted({int(w) for w in widths})
    if len(widths) < 2:
        raise ValueError("need at least two distinct widths to fit the width exponent")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1; got {seeds}")
    if not (t_max > 0 and math.isfinite(t_max)):
        raise ValueError(f"t_max must be a positive finite time; got {t_max}")
    if time_points < 5 or (time_points - 1) % 4:
        raise ValueError(f"time_points - 1 must be a positive multiple of 4; got {time_points}")
    X, Y = make_problem(d, k, n, seed)
    times = np.linspace(0.0, t_max, time_points)
    quarter = (time_points - 1) // 4
    err_idx = np.array([0, quarter, 2 * quarter, 4 * quarter])
    err_times = times[err_idx]

    _log(f"      infinite-width limit, q = {q}, automatic R", progress)
    lim = infinite_width_limit(X, Y, q, eta, times)
    star = min_norm_solution(X, Y)
    star_norm = float(np.linalg.norm(star))
    dist, _ = min_norm_convergence(lim.betas, times, X, Y)
    fit_from = t_max / 4
    use = (times >= fit_from) & (dist > FLOOR * star_norm)
    if use.sum() >= 2:
        slope, intercept = np.polyfit(times[use], np.log(dist[use]), 1)
        rate, intercept = float(-slope), float(intercept)
    else:
        rate, intercept = float("nan"), float("nan")
    _log(f"      R = {lim.R}, min-norm rate {rate:.3f} ({lim.seconds:.1f} s)", progress)

    seed_list = [seed + s for s in range(seeds)]
    errors = np.empty((len(widths), seeds, len(err_times)))
    kernel_rows, law = [], None
    K_inf = limit_tangent_kernel(X, k, q)
    t_widths = time.perf_counter()
    for w, m in enumerate(widths):
        t0 = time.perf_counter()
        for s, sd in enumerate(seed_list):
            net = init_network(d, k, q, m, seed=sd)
            if s == 0:
                K = tangent_kernel(net, X)
                kernel_rows.append(
                    {
                        "width": m,
                        "rel_error": float(np.linalg.norm(K - K_inf) / np.linalg.norm(K_inf)),
                    }
                )
            traj = gradient_flow(net, X, Y, eta, err_times, method="RK45", rtol=rtol, atol=atol)
            errors[w, s] = np.linalg.norm(traj.betas - lim.betas[err_idx], axis=(1, 2))
            if s == 0 and w == len(widths) - 1:
                cov = lim.input_gram(-1)
                res = first_layer_law(traj.Us[-1], cov, seed=seed)
                initial = first_layer_law(traj.Us[-1], np.eye(d), seed=seed)
                law = {
                    "width": m,
                    "time": float(err_times[-1]),
                    "cov_error": res["cov_error"],
                    "cov_error_initial_law": initial["cov_error"],
                    "law_moved": float(np.linalg.norm(cov - np.eye(d)) / math.sqrt(d)),
                    "ks_pvalues": [float(p) for p in res["ks_pvalues"]],
                    "ks_stats": [float(x) for x in res["ks_stats"]],
                    "expected_cov_error": math.sqrt((d + 1) / m),
                }
                # the law moves only inside col(X) (rank r): the same check restricted there
                Qx = lim.Qx
                r = Qx.shape[1]
                sub = first_layer_law(traj.Us[-1] @ Qx, Qx.T @ cov @ Qx, seed=seed)
                sub0 = first_layer_law(traj.Us[-1] @ Qx, np.eye(r), seed=seed)
                law["in_span"] = {
                    "rank": r,
                    "cov_error": sub["cov_error"],
                    "cov_error_initial_law": sub0["cov_error"],
                    "law_moved": float(np.linalg.norm(Qx.T @ cov @ Qx - np.eye(r)) / math.sqrt(r)),
                    "expected_cov_error": math.sqrt((r + 1) / m),
                    "ks_pvalues": [float(p) for p in sub["ks_pvalues"]],
                }
        _log(
            f"      width {m}: mean error {errors[w, :, 1:].mean():.4g} "
            f"({time.perf_counter() - t0:.1f} s)",
            progress,
        )
    mean = errors.mean(axis=1)
    w_arr = np.asarray(widths, dtype=np.float64)
    slopes = [fit_power(w_arr, mean[:, t]) for t in range(len(err_times))]
    later = mean[:, 1:].mean(axis=1) if len(err_times) > 1 else mean[:, 0]
    overall = fit_power(w_arr, later)
    prefactor = float(np.exp(np.polyfit(np.log(w_arr), np.log(later), 1)[1]))
    kernel_slope = fit_power(w_arr, [r["rel_error"] for r in kernel_rows])
    return {
        "setup": {
            "q": q,
            "d": d,
            "k": k,
            "n": n,
            "eta": eta,
            "t_max": t_max,
            "seed": seed,
            "widths": widths,
            "seeds": seed_list,
            "time_points": time_points,
            "integrator": f"RK45, rtol {rtol:g}, atol {atol:g}",
            "problem": "X = sqrt(n) x polar factor of a d x n Gaussian matrix "
            "(X^T X / n = I_n when n <= d), Y iid N(0, 1)",
            "underdetermined": n < d,
        },  # fmt: skip
        "limit": {
            "R": lim.R,
            "last_change": lim.last_change,
            "history": [[int(r), int(c), ch] for r, c, ch in lim.history],
            "sizes": [int(x) for x in lim.sizes],
            "seconds": lim.seconds,
            "times": times.tolist(),
            "beta_norm": np.linalg.norm(lim.betas, axis=(1, 2)).tolist(),
            "risks": lim.risks.tolist(),
            "row_space_residual": max(row_space_residual(b, X) for b in lim.betas),
        },
        "width_errors": {
            "widths": widths,
            "times": err_times.tolist(),
            "errors": errors.tolist(),
            "mean": mean.tolist(),
            "std": errors.std(axis=1).tolist(),
            "scaled": (mean * np.sqrt(w_arr)[:, None]).tolist(),
            "slopes": slopes,
            "slope": overall,
            "prefactor": prefactor,
            "seconds": time.perf_counter() - t_widths,
        },
        "min_norm": {
            "times": times.tolist(),
            "distance": dist.tolist(),
            "rate": rate,
            "intercept": intercept,
            "fit_from": fit_from,
            "floor": FLOOR,
            "norm_star": star_norm,
            "final_relative": float(dist[-1] / star_norm),
        },
        "first_layer_law": law,
        "tangent_kernel": {"rows": kernel_rows, "slope": kernel_slope},
        "seconds": time.perf_counter() - start,
    }


# -------------------------------------------------------------------------------------- plots
def _figure(ncols: int, size):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, np.atleast_1d(fig.subplots(1, ncols))


_MARKERS = ("o", "s", "^", "D", "v", "P")
_LINES = ("-", "--", "-.", ":")


def coincides_with(columns) -> list[int | None]:
    """For each column, the first earlier column equal to it within 1% (else None): curves
    that would hide under another on the plot (e.g. all times after both flows converged)."""
    columns = np.asarray(columns, dtype=float)
    same: list[int | None] = []
    for j in range(columns.shape[1]):
        col = columns[:, j]
        equal = (i for i in range(j) if np.allclose(col, columns[:, i], rtol=1e-2, atol=0))
        same.append(next(equal, None))
    return same


def _draw_width_errors(ax1, ax2, result: dict) -> None:
    we = result["width_errors"]
    w = np.asarray(we["widths"], dtype=float)
    mean, scaled = np.asarray(we["mean"]), np.asarray(we["scaled"])
    times, same = we["times"], coincides_with(mean)
    for t, tm in enumerate(times):
        # a marker, line style and size per time, shrinking: coinciding curves stay visible
        c, mk, ls = _COLORS[t % len(_COLORS)], _MARKERS[t % 6], _LINES[t % 4]
        ms = max(3.0, 9.0 - 2.0 * t)
        note = "" if same[t] is None else f", same as t = {times[same[t]]:g}"
        ax1.plot(w, scaled[:, t], marker=mk, ls=ls, ms=ms, color=c, label=f"t = {tm:g}{note}")
        ax2.plot(w, mean[:, t], mk, ms=ms, color=c,
                 label=f"t = {tm:g} (slope {we['slopes'][t]:.2f}){note}")  # fmt: skip
    later = mean[:, 1:].mean(axis=1) if mean.shape[1] > 1 else mean[:, 0]
    ax2.plot(w, later, "s", ms=12, color="k", mfc="none", label="mean over t > 0")
    ax2.plot(w, we["prefactor"] * w ** we["slope"], "-", color="k",
             label=f"fit: slope {we['slope']:.3f}")  # fmt: skip
    ax2.plot(w, later[0] * (w / w[0]) ** -0.5, ":", color="gray", label="$m^{-1/2}$")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(w, [str(int(v)) for v in w])
        ax.set_xlabel("width m")
        ax.grid(alpha=0.3, which="both")
    ax1.set_ylim(bottom=0)
    ax1.set_ylabel(r"$\sqrt{m}\,\|\beta_m(t) - \beta_\infty(t)\|_F$ (seed mean)")
    ax1.set_title("error x sqrt(m): flat if the error is $O(m^{-1/2})$")
    legend = ax1.legend(fontsize=8)
    if any(j is not None for j in same):
        legend.set_title("'same as': within 1%, drawn on top\n(both flows have converged)",
                         prop={"size": 7})  # fmt: skip
    ax2.set_yscale("log")
    ax2.set_ylabel(r"$\|\beta_m(t) - \beta_\infty(t)\|_F$ (seed mean)")
    ax2.set_title("error against width (log-log)")
    ax2.legend(fontsize=8)


def _draw_min_norm(ax, result: dict) -> None:
    mn = result["min_norm"]
    t, dist = np.asarray(mn["times"]), np.asarray(mn["distance"])
    keep = dist > 0
    ax.plot(t[keep], dist[keep], "o-", ms=3, color="tab:blue",
            label=r"$\|\beta_\infty(t) - Y X^+\|_F$")  # fmt: skip
    if math.isfinite(mn["rate"]):
        tt = t[t >= mn["fit_from"]]
        ax.plot(tt, np.exp(mn["intercept"] - mn["rate"] * tt), "--", color="tab:red",
                label=f"fit: exp(-{mn['rate']:.3f} t)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("time t")
    ax.set_ylabel("distance to the minimum-norm solution")
    s = result["setup"]
    ax.set_title(f"infinite-width limit (q = {s['q']}, R = {result['limit']['R']})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def plot_width_errors(result: dict, path=None):
    """Two panels: error x sqrt(m) against m (log x axis), one line per time; the error against m
    on log-log axes with the fitted slope.  Returns the matplotlib Figure (saved to ``path``)."""
    fig, (ax1, ax2) = _figure(2, (10, 4.2))
    _draw_width_errors(ax1, ax2, result)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_min_norm(result: dict, path=None):
    """||beta_inf(t) - Y X^+||_F against t (log y axis) with the fitted exponential rate.
    Returns the matplotlib Figure (saved to ``path``)."""
    fig, (ax,) = _figure(1, (5, 4.2))
    _draw_min_norm(ax, result)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_linear(result: dict, path=None):
    """All three panels side by side (linear.png)."""
    fig, (ax1, ax2, ax3) = _figure(3, (15, 4.4))
    _draw_width_errors(ax1, ax2, result)
    _draw_min_norm(ax3, result)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


# ------------------------------------------------------------------------------------- report
def _change(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def width_rows(result: dict) -> list[str]:
    """Table rows: width, then error (seed mean) and error x sqrt(m) at each time."""
    we = result["width_errors"]
    return [
        f"| {m} | "
        + " | ".join(f"{e:.4f} | {s:.3f}" for e, s in zip(row, srow, strict=True))
        + " |"
        for m, row, srow in zip(we["widths"], we["mean"], we["scaled"], strict=True)
    ]


def slope_row(result: dict) -> str:
    """The fitted exponent of m at each time, under the error columns of `width_rows`."""
    cells = []
    for s in result["width_errors"]["slopes"]:
        cells += [f"{s:.3f}", ""]
    return "| fitted exponent | " + " | ".join(cells) + " |"


def report_lines(result: dict, level: int = 1) -> list[str]:
    """The markdown report as lines; ``level`` is the heading level of its title."""
    h = "#" * level
    s, lim, we = result["setup"], result["limit"], result["width_errors"]
    mn, law, tk = result["min_norm"], result["first_layer_law"], result["tangent_kernel"]
    times = ", ".join(f"{t:g}" for t in we["times"])
    lines = [
        f"{h} Deep linear networks: finite widths against the infinite-width limit",
        "",
        f"{h}# Setup",
        "",
        f"- Problem (seed {s['seed']}): d = {s['d']} inputs, k = {s['k']} outputs, n = {s['n']} "
        f"examples ({'underdetermined, n < d' if s['underdetermined'] else 'NOT underdetermined'}"
        f"); {s['problem']}.",
        f"- Network: q = {s['q']} middle layer(s), main scaling (all weights N(0, 1/m), "
        f"beta = V^T M_q ... M_1 U); gradient flow with rate eta = {s['eta']:g} up to t = "
        f"{s['t_max']:g}; risk ||beta X - Y||^2 / (2n).",
        f"- Limit: `infinite_width_limit` with automatic truncation on {s['time_points']} times; "
        f"finite networks: widths {', '.join(map(str, s['widths']))}, {len(s['seeds'])} seed(s) "
        f"each ({s['integrator']}), compared at t = {times}.",
        f"- Total time {result['seconds']:.1f} s (finite networks {we['seconds']:.1f} s, limit "
        f"{lim['seconds']:.1f} s).",
        "",
        f"{h}# Distance to the limit against width",
        "",
        "||beta_m(t) - beta_inf(t)||_F, mean over seeds, and the same times sqrt(m) (roughly "
        "constant in m when the error is O(m^-1/2)).",
        "",
        "| width | " + " | ".join(f"t = {t:g} | x sqrt(m)" for t in we["times"]) + " |",
        "|---|" + "---|---|" * len(we["times"]),
        *width_rows(result),
        slope_row(result),
        "",
        f"Fitted width exponent of the error averaged over t > 0: **{we['slope']:.3f}** "
        "(expected -0.5).",
        "",
        f"{h}# Convergence to the minimum-norm solution",
        "",
        f"||beta_inf(t) - Y X^+||_F falls from {mn['distance'][0]:.4g} to "
        f"{mn['distance'][-1]:.3g} at t = {s['t_max']:g} ({mn['final_relative']:.2e} of "
        f"||Y X^+||_F = {mn['norm_star']:.4g}). Fitted exponential rate (least squares of log "
        f"distance for t >= {mn['fit_from']:g}): **{mn['rate']:.3f}**. beta_inf stays in the row "
        f"space of X: max_t ||beta_inf (I - X X^+)||_F = {lim['row_space_residual']:.1e}.",
        "",
        f"{h}# Truncation of the limit",
        "",
        f"Chosen R = **{lim['R']}**, last relative change {_change(lim['last_change'])} (layer "
        f"sizes of the reduced limit network: {', '.join(map(str, lim['sizes']))}).",
        "",
        "| R | path coordinates | relative change |",
        "|---|---|---|",
        *(f"| {r} | {c} | {_change(ch)} |" for r, c, ch in lim["history"]),
        "",
        f"{h}# First-layer law",
        "",
    ]
    if law is not None:
        lines += [
            f"Rows of sqrt(m) U_m(t = {law['time']:g}) at width {law['width']} (seed "
            f"{s['seeds'][0]}) against the predicted N(0, U_inf^T U_inf), which has moved away "
            f"from the initial N(0, I) by ||U_inf^T U_inf - I||_F / sqrt(d) = "
            f"{law['law_moved']:.3f}: relative covariance error **{law['cov_error']:.4f}** "
            f"(sampling level about sqrt((d + 1) / m) = {law['expected_cov_error']:.3f}; the "
            f"initial law N(0, I) gives {law['cov_error_initial_law']:.4f}); KS p-values of "
            f"{len(law['ks_pvalues'])} random standardized projections: "
            + ", ".join(f"{p:.3f}" for p in law["ks_pvalues"])
            + ".",
        ]
        sp = law["in_span"]
        lines += [
            "",
            f"The law moves only inside the column space of X (rank {sp['rank']}); restricted to "
            f"it (rows of sqrt(m) U_m Q_x, Q_x an orthonormal basis): the law moved by "
            f"{sp['law_moved']:.3f}, relative covariance error **{sp['cov_error']:.4f}** "
            f"(sampling level about {sp['expected_cov_error']:.3f}; the initial law gives "
            f"{sp['cov_error_initial_law']:.4f}); KS p-values "
            + ", ".join(f"{p:.3f}" for p in sp["ks_pvalues"])
            + ".",
        ]
    lines += [
        "",
        f"{h}# Tangent kernel at initialization",
        "",
        "Relative Frobenius distance of the finite network's tangent kernel (seed "
        f"{s['seeds'][0]}) to delta_ab (q + 2) X^T X / n:",
        "",
        "| width | relative error |",
        "|---|---|",
        *(f"| {r['width']} | {r['rel_error']:.4f} |" for r in tk["rows"]),
        "",
        f"Fitted exponent: {tk['slope']:.3f} (expected -0.5).",
        "",
        "![deep linear networks](linear.png)",
    ]
    return lines


def write_report(result: dict, out_dir) -> dict:
    """Write linear.png, results.json and report.md into ``out_dir`` (created if needed);
    returns the paths by name."""
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("linear.png", "results.json", "report.md")}
    plot_linear(result, files["linear.png"])
    files["results.json"].write_text(json.dumps(result, indent=1))
    files["report.md"].write_text("\n".join(report_lines(result)) + "\n")
    return {k: str(v) for k, v in files.items()}


def format_summary(result: dict) -> str:
    """A few lines for stdout: width exponent, min-norm rate, R."""
    we, mn, lim = result["width_errors"], result["min_norm"], result["limit"]
    per_time = ", ".join(
        f"t={t:g}: {s:.3f}" for t, s in zip(we["times"], we["slopes"], strict=True)
    )
    return "\n".join(
        [
            f"width exponent of ||beta_m - beta_inf|| {we['slope']:.3f} (expected -0.5); "
            f"per time {per_time}",
            f"min-norm convergence rate {mn['rate']:.3f} (distance at t = "
            f"{result['setup']['t_max']:g}: {mn['distance'][-1]:.3g})",
            f"truncation R = {lim['R']} (last relative change {_change(lim['last_change'])})",
        ]
    )
