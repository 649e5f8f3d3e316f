r"""Figures, a properties table and a markdown report for a `width_sweep` result.

Everything here reads only the JSON-serializable dict that `width_sweep` returns (or the same
dict loaded back from ``results.json``), so a report can be redrawn without training again.

- `plot_sweep`: train/test loss, test accuracy, mean |logit|, total kernel and its ratio to
  initialization against the training step (log axis), one colour per scaling, one line style
  per width; the reference-width network, which is the same "default" network under every
  scaling, is drawn once in black.
- `plot_limit_distances`: the mean |f_width - f_limit| on the test set against the step, one
  panel per scaling that has a limit model, one line per width.
- `plot_exponents`: mean |logit| and total kernel at initialization against rho = width /
  ref_width on log-log axes, with `classify`'s predicted slopes as lines.
- `properties_table`: what each scaling's widest network measurably does, against the default
  network, next to `classify`'s predictions (thresholds below).
- `write_report`: all of the above into a folder (sweep.png, limits.png, exponents.png,
  results.json, report.md).

Step 0 on a log axis: it is drawn at step ``STEP0_POSITION`` = 0.5 (half a step), with its tick
labelled "0", so that the initialization stays visible.

Measured words (`properties_table`), at the largest width W against the default network
(width ref_width; if the sweep did not include the reference width, the scaling's own smallest
width is the baseline instead, named in the row):

- logits at init: ratio r = mean |logit|(W) / mean |logit|(default) at step 0, "vanish" if
  r < ``VANISH_BELOW`` (0.5), "diverge" if r > ``DIVERGE_ABOVE`` (2), else "bounded";
- kernel at init: the same rule on the total (learning-rate-weighted, summed over layers) mean
  diagonal tangent kernel at step 0;
- kernel evolves: |kernel_ratio(last step) - 1| > ``EVOLVES_BY`` (0.1), i.e. the total kernel
  moved by more than 10% of its initial value during training (the default network's change is
  reported next to it for comparison: at a finite width every kernel moves somewhat, and the
  10% threshold only separates the scalings when the widths and the training are long enough);
- feature learning: the same as kernel evolves (in the one-hidden-layer plane the hidden
  weights move by a relative Theta(1) exactly when the kernel evolves);
- finite-width-like: bounded logits, bounded kernel and an evolving kernel together, the three
  properties of the default network that a limit may keep or lose.

The ratio thresholds are deliberately coarse: with rho = 64 (widths 128 to 8192) a rho^{+-1/2}
power gives a factor 8 or 1/8, far from both thresholds, while the seed-to-seed scatter of mean
|logit| at initialization is a few tens of percent.  The fitted exponents are reported as well.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .properties import (
    DIVERGE_ABOVE,
    EVOLVES_BY,
    VANISH_BELOW,
    _config,
    _mean,
    _ref_width,
    _scalings,
    _widths,
    _yes,
    properties_table,
)

__all__ = [
    "plot_sweep",
    "plot_limit_distances",
    "plot_exponents",
    "properties_table",
    "write_report",
    "STEP0_POSITION",
    "VANISH_BELOW",
    "DIVERGE_ABOVE",
    "EVOLVES_BY",
]

STEP0_POSITION = 0.5
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:olive", "tab:cyan", "tab:gray")  # fmt: skip
_STYLES = (":", "-.", "--", "-")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


# ------------------------------------------------------------------------------------ helpers
def _x(steps) -> np.ndarray:
    s = np.asarray(steps, dtype=float)
    return np.where(s == 0, STEP0_POSITION, s)


def _log_step_axis(ax, steps) -> None:
    ax.set_xscale("log")
    last = max(max(steps), 1)
    ticks = [STEP0_POSITION] + [10**k for k in range(int(math.log10(last)) + 1)]
    ax.set_xticks(ticks, ["0"] + [f"{t:g}" for t in ticks[1:]])
    ax.set_xlabel("SGD step (log axis; step 0 drawn at 0.5)")
    ax.grid(alpha=0.3, which="both")


def _figure(nrows: int, ncols: int, size):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    return fig, axes


def _save(fig, path) -> None:
    if path is not None:
        fig.savefig(path, dpi=110)


def _width_style(result: dict) -> dict[int, tuple[str, float]]:
    """A line style and alpha per non-reference width, the widest solid and opaque."""
    others = [w for w in _widths(result) if w != _ref_width(result)]
    n = len(others)
    return {
        w: (_STYLES[max(len(_STYLES) - n + i, 0)], 0.45 + 0.55 * (i + 1) / max(n, 1))
        for i, w in enumerate(others)
    }


# -------------------------------------------------------------------------------------- plots
_PANELS = (
    ("train_loss", "train loss (BCE)", "log"),
    ("test_loss", "test loss (BCE)", "log"),
    ("test_accuracy", "test accuracy", "linear"),
    ("mean_abs_logit", "mean |logit| on the test set", "log"),
    ("kernel_total", "mean diagonal tangent kernel (total)", "log"),
    ("kernel_ratio", "kernel / kernel at init", "log"),
)


# The three panels that carry the map of limits, for a figure read on its own (the demo's):
# how the logits and the kernel's change scale with width, and what that does to accuracy.
MAP_PANELS = ("mean_abs_logit", "kernel_ratio", "test_accuracy")
_HINTS = {
    "mean_abs_logit": "mean |logit| on the test set\nabove black: grows with width; below: shrinks",
    "kernel_ratio": "tangent kernel / its value at init\nnear 1: lazy (kernel regime); grows: "
    "learns features",
    "test_accuracy": "test accuracy\n(the task is digits 0-4 vs 5-9)",
}


def plot_sweep(result: dict, path=None, panels=None):
    """The sweep's curves against the step; returns the matplotlib Figure (saved to ``path``).

    ``panels``: keys of `_PANELS` to draw (default all six: train loss, test loss, test
    accuracy, mean |logit|, total kernel on a log y axis, kernel ratio to init); `MAP_PANELS`
    gives a three-panel figure with larger type and a reading hint in each title.  Curves are
    averaged over seeds; one colour per scaling, the line style and opacity per width
    (dotted/faint = narrow, solid/opaque = widest); the network at the reference width,
    identical under every scaling, once in black as "default (width W)".  Step 0 is drawn at
    0.5 (`STEP0_POSITION`).
    """
    by_key = {row[0]: row for row in _PANELS}
    if panels is not None and not (set(panels) <= set(by_key) and len(set(panels)) > 0):
        raise ValueError(f"panels must be among {list(by_key)}, got {list(panels)}")
    chosen = list(_PANELS) if panels is None else [by_key[k] for k in dict.fromkeys(panels)]
    short = len(chosen) <= 3
    if short:
        chosen = [(key, _HINTS.get(key, title), ys) for key, title, ys in chosen]
        fig, axes = _figure(1, len(chosen), (5.8 * len(chosen), 5.2))
    else:
        fig, axes = _figure(2, 3, (15, 8.5))
        for ax in axes[len(chosen) :]:
            ax.remove()
        axes = axes[: len(chosen)]
    steps = result["steps"]
    x = _x(steps)
    ref = _ref_width(result)
    style = _width_style(result)
    for ax, (key, title, yscale) in zip(axes, chosen, strict=True):
        for i, name in enumerate(_scalings(result)):
            for w, (ls, alpha) in style.items():
                try:
                    y = _mean(result, name, w, key)
                except KeyError:
                    continue
                ax.plot(x, y, ls=ls, alpha=alpha, color=_COLORS[i % len(_COLORS)], lw=1.6)
        if ref in _widths(result):
            ax.plot(x, _mean(result, None, ref, key), color="black", lw=2.0)
        ax.set_yscale(yscale)
        ax.set_title(title)
        _log_step_axis(ax, steps)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="black", lw=2.0, label=f"default (width {ref})")]
    handles += [
        Line2D([], [], color=_COLORS[i % len(_COLORS)], lw=2.0, label=name)
        for i, name in enumerate(_scalings(result))
    ]
    handles += [
        Line2D([], [], color="0.3", ls=ls, alpha=alpha, label=f"width {w}")
        for w, (ls, alpha) in style.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8),
               fontsize=10 if short else None)  # fmt: skip
    seeds = _config(result).get("seeds", 1)
    runs = "one seed: single runs, expect noise" if seeds == 1 else f"mean over {seeds} seeds"
    fig.suptitle(
        f"Width sweep: one-hidden-layer leaky-ReLU net, lr {_config(result).get('lr')} at "
        f"width {ref}; {runs}"
    )
    _save(fig, path)
    return fig


def plot_limit_distances(result: dict, path=None):
    """Mean |f_width - f_limit| on the test set against the step, one panel per scaling with a
    limit model (log-log), one line per width (darker = wider).

    Step 0 is dropped here (unlike `plot_sweep`): the NTK and IC-MF limits start from the
    network's own initial logits, so their distance at step 0 is zero up to rounding, which a
    log axis cannot show."""
    limits = result.get("limits") or {}
    names = list(limits)
    fig, axes = _figure(1, max(len(names), 1), (5.2 * max(len(names), 1), 4.4))
    if not names:
        axes[0].text(0.5, 0.5, "no limit models computed", ha="center", va="center")
        axes[0].set_axis_off()
        _save(fig, path)
        return fig
    steps = np.asarray(result["steps"])
    keep = steps > 0
    x = steps[keep]
    for ax, name in zip(axes, names, strict=True):
        dist = limits[name]["distance"]
        widths = sorted(dist, key=int)
        for j, w in enumerate(widths):
            shade = 0.25 + 0.75 * (j + 1) / len(widths)
            names_all = _scalings(result)
            i = names_all.index(name) if name in names_all else 0
            color = _COLORS[i % len(_COLORS)]
            ax.plot(x, np.asarray(dist[w])[keep], color=color, alpha=shade, lw=1.6,
                    label=f"width {w}")  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(f"{name}: {limits[name]['model'].split(' (')[0]}", fontsize=10)
        ax.set_ylabel("mean |f_width - f_limit| (test set)")
        ax.set_xscale("log")
        ax.set_xlabel("SGD step (log axis; step 0 dropped)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Distance to the matching infinite-width limit")
    _save(fig, path)
    return fig


def plot_exponents(result: dict, path=None):
    """Mean |logit| and total kernel at initialization against rho = width / ref_width (log-log,
    mean over seeds), with the predicted power laws rho^exponent drawn through the reference
    width's value (dashed; none where the prediction is undefined)."""
    fig, axes = _figure(1, 2, (11, 4.6))
    ref = _ref_width(result)
    widths = _widths(result)
    rho = np.asarray(widths, dtype=float) / ref
    grid = np.geomspace(rho.min(), rho.max(), 50) if len(rho) else rho
    for ax, (key, exp_key, title) in zip(axes, (
        ("mean_abs_logit", "logits_exponent", "mean |logit| at init"),
        ("kernel_total", "kernel_exponent", "total tangent kernel at init"),
    ), strict=True):  # fmt: skip
        for i, name in enumerate(_scalings(result)):
            color = _COLORS[i % len(_COLORS)]
            values = [float(_mean(result, name, w, key)[0]) for w in widths]
            ex = result.get("exponents", {}).get(name, {})
            fitted = ex.get("fitted", {}).get(exp_key)
            predicted = ex.get("predicted", {}).get(exp_key)
            label = name + (f" (fit {fitted:+.2f}" if fitted is not None else " (")
            label += f", pred. {predicted:+.2f})" if predicted is not None else ")"
            ax.plot(
                rho,
                values,
                _MARKERS[i % len(_MARKERS)],
                color=color,
                label=label,
                ms=max(10 - 2 * i, 4),
                mfc="none",
                mew=1.5,
            )  # open: equal values all show
            if predicted is not None and len(rho):
                k = int(np.argmin(np.abs(np.log(rho))))  # the reference width, or the nearest
                anchor = values[k] / rho[k] ** predicted
                ax.plot(grid, anchor * grid**predicted, "--", color=color, lw=1.0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"rho = width / {ref}")
        ax.set_title(f"{title} (dashed: predicted slope)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------- report
def _num(x, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def exponent_rows(result: dict) -> list[str]:
    """The exponent table's markdown rows (also used by the tests)."""
    rows = []
    for name in _scalings(result):
        ex = result["exponents"].get(name)
        if ex is None:
            continue
        f, p = ex["fitted"], ex["predicted"]
        rows.append(
            f"| {name} | {_num(f['logits_exponent'])} | {_num(p['logits_exponent'])} | "
            f"{_num(f['kernel_exponent'])} | {_num(p['kernel_exponent'])} | {p['region']} |"
        )
    return rows


def properties_rows(table: list[dict]) -> list[str]:
    """The properties table's markdown rows."""
    return [
        f"| {r['scaling']} | {r['width']} | {r['logits_ratio']:.3g}: {r['logits']} "
        f"(pred. {r['logits_predicted'] or '-'}) | {r['kernel_ratio_init']:.3g}: {r['kernel']} "
        f"(pred. {r['kernel_predicted'] or '-'}) | {r['kernel_change']:+.3f}: "
        f"{_yes(r['kernel_evolves'])} (pred. {_yes(r['kernel_evolves_predicted'])}) | "
        f"{_at_loss_cell(r)} | "
        f"{_yes(r['feature_learning'])} (pred. {_yes(r['feature_learning_predicted'])}) | "
        f"{_yes(r['finite_width_like'])} (pred. {_yes(r['finite_width_like_predicted'])}) |"
        + (" see below |" if r.get("disagreements") else " |")
        for r in table
    ]


def _at_loss_cell(r: dict) -> str:
    if r.get("kernel_change_at_loss") is None:
        return "not reached"
    return (f"{r['kernel_change_at_loss']:+.3f} at step {r['step_at_loss']}: "
            f"{_yes(r['kernel_evolves_at_loss'])} "
            f"(pred. {_yes(r['kernel_evolves_at_loss_predicted'])})")  # fmt: skip


def write_report(result: dict, out_dir) -> dict:
    """Write sweep.png, limits.png, exponents.png, results.json and report.md into ``out_dir``
    (created if needed); returns the paths by name."""
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("sweep.png", "limits.png", "exponents.png",
                                           "results.json", "report.md")}  # fmt: skip
    plot_sweep(result, files["sweep.png"])
    plot_limit_distances(result, files["limits.png"])
    plot_exponents(result, files["exponents.png"])
    table = properties_table(result)
    files["results.json"].write_text(json.dumps(result | {"properties": table}, indent=1))
    files["report.md"].write_text("\n".join(report_lines(result, table)) + "\n")
    return {k: str(v) for k, v in files.items()}


def report_lines(result: dict, table: list[dict] | None = None, level: int = 1) -> list[str]:
    """The markdown report as lines; ``level`` is the heading level of its title."""
    c = _config(result)
    h = "#" * level
    table = properties_table(result) if table is None else table
    ref = _ref_width(result)
    lines = [
        f"{h} Width sweep: which infinite-width limit each scaling approaches",
        "",
        f"{h}# Setup",
        "",
        f"- Network: {c.get('hidden_layers', 1)} hidden layer(s), leaky ReLU (slope "
        f"{c.get('negative_slope')}), no bias, one logit; BCE loss; plain full-batch SGD with "
        f"learning rate {c.get('lr')} at the reference width {ref} (per-layer rates scaled by "
        "each scaling); " + f"{c.get('dtype')}.",
        f"- Data: scikit-learn digits, 0-4 vs 5-9, {c.get('n_train')} training images (data "
        f"seed {c.get('data_seed')}), the rest for testing.",
        f"- Scalings: {', '.join(_scalings(result))}; widths: "
        f"{', '.join(str(w) for w in _widths(result))}; {c.get('seeds')} seed(s); "
        f"{c.get('steps')} steps, {len(result['steps'])} recorded (log-spaced).",
        f"- Kernel: mean diagonal of the learning-rate-weighted tangent kernel on "
        f"{c.get('kernel_points')} training images.",
        f"- At width {ref} every scaling gives the same network: all scalings coincide at the "
        'reference width (the black "default" curve in sweep.png).',
        "",
        f"{h}# Width exponents at initialization",
        "",
        "Least-squares slopes of log(mean over seeds) against log(rho), rho = width / "
        f"{ref}, next to `classify`'s predictions.",
        "",
        "| scaling | logits, fitted | logits, predicted | kernel, fitted | kernel, predicted "
        "| region |",
        "|---|---|---|---|---|---|",
        *exponent_rows(result),
        "",
        f"{h}# Properties at the largest width",
        "",
        f"Measured against {table[0]['baseline'] if table else 'the default network'}: ratio of "
        f"mean |logit| and of the total kernel at init ('vanish' below {VANISH_BELOW}, "
        f"'diverge' above {DIVERGE_ABOVE:g}, else 'bounded'); the kernel evolves when its "
        f"relative change (of the mean diagonal) exceeds {EVOLVES_BY:.0%}, on two time scales: "
        f"after all {c.get('steps')} steps, and at the first recorded step where the training "
        f"loss is at most {table[0]['loss_target'] if table else float('nan'):.3g} (the largest "
        "final training loss of the sweep, so that every network reaches it). Feature learning "
        "= kernel evolves (fixed steps); finite-width-like = bounded logits, bounded kernel and "
        "evolving kernel. Predictions from `classify` in brackets: at fixed steps its "
        "`kernel_evolves`, at fixed loss its `kernel_evolves_at_fixed_loss` (the theory page "
        "derives both).",
        "",
        "| scaling | width | logits at init | kernel at init | kernel change, fixed steps | "
        "kernel change, fixed loss | feature learning | finite-width-like | |",
        "|---|---|---|---|---|---|---|---|---|",
        *properties_rows(table),
    ]
    if table:
        r = table[0]
        lines += [
            "",
            "The baseline network's own kernel change over training: "
            f"{r['default_kernel_change']:+.3f} "
            f"({'evolves' if r['default_kernel_evolves'] else 'below the threshold'}); at the "
            f"fixed loss (step {r['default_step_at_loss']}): "
            f"{_num(r['default_kernel_change_at_loss'], '+.3f')}.",
        ]
    notes = [d for r in table for d in r.get("disagreements", [])]
    if notes:
        lines += ["", f"{h}# Where measurement and prediction disagree", ""]
        lines += [f"- {d}." for d in notes]
    limits = result.get("limits") or {}
    if limits:
        widths = sorted({w for v in limits.values() for w in v["distance"]}, key=int)
        lines += [
            "",
            f"{h}# Distance to the limit model at the last step (step {result['steps'][-1]})",
            "",
            "Mean |f_width - f_limit| on the test set, averaged over seeds.",
            "",
            "| scaling | limit model | " + " | ".join(f"width {w}" for w in widths) + " |",
            "|---|---|" + "---|" * len(widths),
        ]
        for name, v in limits.items():
            cells = [_num(v["distance"][w][-1], ".4f") if w in v["distance"] else "-"
                     for w in widths]  # fmt: skip
            lines.append(f"| {name} | {v['model']} | " + " | ".join(cells) + " |")
    else:
        lines += ["", "Limit models were not computed (`--no-limits`)."]
    lines += [
        "",
        "![curves](sweep.png)",
        "",
        "![distances to the limits](limits.png)",
        "",
        "![exponents](exponents.png)",
    ]
    return lines
