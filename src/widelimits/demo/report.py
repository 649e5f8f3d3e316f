"""The ``report.md`` and the stdout summary of the ``widelimits demo``."""

from __future__ import annotations

import math
from pathlib import Path

# ----------------------------------------------------------------------------------- outputs


def _exp(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _pct(x: float) -> str:
    return "diverged" if not math.isfinite(x) else f"{100 * x:.2f}%"


def write_report(results: dict, path: Path) -> None:
    """A short markdown report: setup, accuracy table, NTK error table and slope, timings."""
    s, t = results["setup"], results["timings"]
    lines = [
        "# widelimits demo: infinite-width kernels vs finite networks on digits",
        "",
        f"widelimits {s['version']}, torch {s['torch']}, Python {s['python']}; "
        f"`widelimits demo{' --quick' if s['quick'] else ''} --seed {s['seed']}`.",
        "",
        "## Setup",
        "",
        f"- Data: scikit-learn's 8x8 digits, stratified half/half split (seed {s['seed']}): "
        f"{s['n_train']} train / {s['n_test']} test images. Pixels scaled to [0, 1], centred on "
        "the training means, divided by one global scale (mean squared feature 1).",
        f"- Network: `{s['network']}` (NTK parametrization, ReLU; the smaller readout scale keeps "
        "the random initial function small against the targets).",
        "- Targets: one-hot minus 0.1. Kernels in float64; kernel regression and uncertainties "
        "from `widelimits.predict` with relative diagonal regularization (`diag_reg`) "
        f"{s['ridge']:g} x mean(diag K).",
        f"- Finite networks: float32, plain mini-batch SGD, batch {s['batch_size']}, "
        f"{s['epochs']} epochs ({s['steps']} steps), loss ||f - Y||^2 / (2 Y.size), learning rate "
        f"{s['lr']:.4g} = {s['lr_fraction']} x the gradient-descent stability edge "
        "2 Y.size / lambda_max(Theta) of the analytic NTK; weight seed "
        f"{s['seed']}.",
        f"- NTK error: traced empirical NTK at initialization on {s['ntk_points']} test images, "
        f"{s['ntk_seeds']} networks per width, against the analytic NTK "
        "(`widelimits.finite.empirical_ntk`, structured path).",
        "",
        "## Test accuracy",
        "",
        "| model | width | test accuracy | final train loss | time |",
        "|---|---|---|---|---|",
        f"| NNGP kernel regression | inf | {_pct(results['nngp_accuracy'])} | | |",
        f"| NTK kernel regression | inf | {_pct(results['ntk_accuracy'])} | | |",
        f"| NTK, {s['steps']} steps of full-batch GD (mean) | inf | "
        f"{_pct(results['ntk_gd_accuracy'])} | | |",
    ]
    for r in results["finite"]:
        lines.append(
            f"| SGD-trained network | {r['width']} | {_pct(r['accuracy'])} | "
            f"{r['train_loss']:.4f} | {r['seconds']:.1f} s |"
        )
    lines += _uncertainty_section(results, s) + _curve_section(results["training_curve"])
    lines += _limits_section(results["map_of_limits"])
    ne = results["ntk_error"]
    lines += [
        "",
        "## Empirical NTK vs analytic NTK at initialization",
        "",
        "| width | relative Frobenius error (mean) | std over seeds |",
        "|---|---|---|",
    ]
    lines += [f"| {r['width']} | {r['mean']:.4f} | {r['std']:.4f} |" for r in ne["rows"]]
    lines += [
        "",
        f"Fitted slope of log(error) against log(width): **{ne['slope']:.3f}** (theory: -0.5).",
        "",
        "## Timings",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in t.items()]
    lines += ["", "![demo figure](demo.png)"]
    lines += _linear_section(results["linear"])
    path.write_text("\n".join(lines + [""]))


def _linear_section(linear: dict) -> list[str]:
    from ..linear.report import report_lines

    lines = report_lines(linear, level=2)
    lines[0] = "## Deep linear networks"
    return [
        "",
        *lines,
        "",
        "`widelimits linear` runs the same experiment at larger sizes.",
    ]


def _uncertainty_section(results: dict, s: dict) -> list[str]:
    unc = results["uncertainty"]
    names = (
        ("ntk_ensemble", "NTK-trained infinite ensemble"),
        ("nngp_posterior", "NNGP posterior"),
    )
    lines = [
        "",
        "## Predictions with uncertainty (t = inf)",
        "",
        "Predictive std of a test point: sqrt of the diagonal of the covariance over test points "
        "(shared by the 10 outputs). NTK: `gradient_descent_mse_ensemble(..., compute_cov=True)` "
        "at t = inf, the distribution over random initializations of infinitely wide networks "
        "trained to convergence; NNGP: the Bayesian posterior from `gp_inference`. The ensemble "
        "agrees with `gp_inference(get='ntk')` to "
        f"{unc['ensemble_vs_gp_inference']['mean_max_abs_diff']:.1e} (mean, absolute) and "
        f"{unc['ensemble_vs_gp_inference']['cov_max_rel_diff']:.1e} (covariance, relative).",
        "",
        "| model | test accuracy | errors | mean std, correct | mean std, incorrect | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in names:
        u = unc[key]
        ratio = u["mean_std_incorrect"] / u["mean_std_correct"]
        lines.append(
            f"| {name} | {_pct(u['accuracy'])} | {u['n_incorrect']} | "
            f"{u['mean_std_correct']:.4f} | {u['mean_std_incorrect']:.4f} | {ratio:.2f} |"
        )
    n = len(unc["ntk_ensemble"]["bins"])
    lines += [
        "",
        f"Accuracy in {n} equal-count bins of test points sorted by predictive std "
        f"(about {s['n_test'] // n} points per bin):",
        "",
        "| std quantile | NTK std range | NTK accuracy | NNGP std range | NNGP accuracy |",
        "|---|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(
        zip(unc["ntk_ensemble"]["bins"], unc["nngp_posterior"]["bins"], strict=True)
    ):
        lines.append(
            f"| {100 * i // n}-{100 * (i + 1) // n}% | {a['std_low']:.4f}-{a['std_high']:.4f} | "
            f"{_pct(a['accuracy'])} | {b['std_low']:.4f}-{b['std_high']:.4f} | "
            f"{_pct(b['accuracy'])} |"
        )
    return lines


def _curve_section(curve: dict) -> list[str]:
    fin, inf, ens = curve["finite"], curve["infinite_same_f0"], curve["infinite_ensemble_mean"]
    lines = [
        "",
        "## Training curve: finite network vs infinite width",
        "",
        f"A width-{curve['width']} network (float32, same description, seed and learning rate "
        f"{curve['lr']:.4g}) trained by **full-batch gradient descent** ({fin['seconds']:.1f} s), "
        "not mini-batch SGD: full-batch GD is exactly the dynamics that "
        "`gradient_descent_mse(ntk_train, y_train, lr)(t=steps, ..., discrete=True)` solves in "
        "closed form, so the comparison has no SGD noise. The infinite-width curve starts from "
        "the same initial outputs f0 as the finite net (linearized dynamics with the analytic "
        "NTK); the ensemble-mean curve starts from f0 = 0. Losses are ||f - Y||^2 / (2 Y.size).",
        "",
        "| step | train loss, finite | train loss, inf (same f0) | test loss, finite | "
        "test loss, inf (same f0) | test loss, ensemble mean | test acc, finite | "
        "test acc, inf (same f0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, step in enumerate(fin["steps"]):
        lines.append(
            f"| {step} | {fin['train_loss'][i]:.5f} | {inf['train_loss'][i]:.5f} | "
            f"{fin['test_loss'][i]:.5f} | {inf['test_loss'][i]:.5f} | {ens['test_loss'][i]:.5f} | "
            f"{_pct(fin['test_accuracy'][i])} | {_pct(inf['test_accuracy'][i])} |"
        )
    lines += [
        "",
        "Largest relative gap between the finite and infinite-width test loss over the recorded "
        f"steps: **{curve['max_rel_test_loss_gap']:.3f}** (at the last step: "
        f"{curve['final_rel_test_loss_gap']:.3f}).",
    ]
    return lines


def _limits_section(sweep: dict) -> list[str]:
    from ..limits.report import exponent_rows, properties_rows

    c = sweep["config"]
    return [
        "",
        "## The map of limits",
        "",
        f"A one-hidden-layer leaky-ReLU({c['negative_slope']}) network without bias, one logit, "
        f"trained on digits 0-4 vs 5-9 ({c['n_train']} training images) with BCE and "
        f"{c['steps']} steps of full-batch SGD (learning rate {c['lr']} at the reference width "
        f"{c['ref_width']}), under the scalings {', '.join(c['scalings'])} at widths "
        f"{', '.join(map(str, c['widths']))} ({sweep['seconds']:.1f} s). All scalings coincide "
        f"at the reference width {c['ref_width']}; they differ in how the network changes as "
        "the width grows. Curves in limits.png; `widelimits limits sweep` runs larger sweeps.",
        "",
        "Width exponents at initialization (slope of log value against log(width / "
        f"{c['ref_width']}), one seed) against `classify`'s predictions:",
        "",
        "| scaling | logits, fitted | logits, predicted | kernel, fitted | kernel, predicted "
        "| region |",
        "|---|---|---|---|---|---|",
        *exponent_rows(sweep),
        "",
        "Measured at the widest network against the default (width "
        f"{c['ref_width']}) network: mean |logit| and total kernel ratios at init ('vanish' "
        "below 0.5, 'diverge' above 2), the kernel's relative change (evolves above 10%) after "
        "all steps and at the first step where the training loss reaches the largest final "
        "loss of the sweep; `classify`'s words in brackets (at fixed steps its "
        "`kernel_evolves`, at fixed loss its `kernel_evolves_at_fixed_loss`). Short training "
        "and small widths blur the distinctions that the exponents predict for rho -> infinity.",
        "",
        "| scaling | width | logits at init | kernel at init | kernel change, fixed steps | "
        "kernel change, fixed loss | feature learning | finite-width-like | |",
        "|---|---|---|---|---|---|---|---|---|",
        *properties_rows(sweep["properties"]),
        *_disagreement_lines(sweep["properties"]),
        "",
        "![map of limits](limits.png)",
    ]


def _disagreement_lines(table: list[dict]) -> list[str]:
    """Where a measured property differs from `classify`'s prediction, with classify's note."""
    notes = [d for r in table for d in r.get("disagreements", [])]
    if not notes:
        return []
    return ["", "Where measurement and prediction disagree:", ""] + [f"- {d}." for d in notes]


def format_summary(results: dict) -> str:
    """The concise summary the CLI prints to stdout."""
    s, c = results["setup"], results["training_curve"]
    lin = results["linear"]
    finite = ", ".join(f"{r['width']}: {_pct(r['accuracy'])}" for r in results["finite"])
    errs = ", ".join(f"{r['width']}: {r['mean']:.3f}" for r in results["ntk_error"]["rows"])
    return "\n".join(
        [
            f"widelimits demo on digits ({s['n_train']} train / {s['n_test']} test), "
            f"{s['hidden_layers']}-hidden-layer ReLU net",
            f"  NNGP kernel regression  test accuracy {_pct(results['nngp_accuracy'])}",
            f"  NTK kernel regression   test accuracy {_pct(results['ntk_accuracy'])}",
            f"  NTK after {s['steps']} GD steps  test accuracy {_pct(results['ntk_gd_accuracy'])}",
            f"  SGD-trained nets ({s['epochs']} epochs, lr {s['lr']:.3g}) by width: {finite}",
            f"  empirical NTK relative error by width: {errs}",
            f"  fitted slope {results['ntk_error']['slope']:.3f} (theory -0.5)",
            *(
                f"  {name} predictive std: correct {u['mean_std_correct']:.4f}, "
                f"incorrect {u['mean_std_incorrect']:.4f} ({u['n_incorrect']} errors)"
                for name, u in (
                    ("NTK ensemble", results["uncertainty"]["ntk_ensemble"]),
                    ("NNGP posterior", results["uncertainty"]["nngp_posterior"]),
                )
            ),
            f"  full-batch GD, width {c['width']}, {c['finite']['steps'][-1]} steps: test loss "
            f"{c['finite']['test_loss'][-1]:.4f} (finite) vs "
            f"{c['infinite_same_f0']['test_loss'][-1]:.4f} (infinite width, same f0); "
            f"max relative gap {c['max_rel_test_loss_gap']:.3f}",
            "  map of limits, fitted (predicted) logits / kernel exponents: "
            + "; ".join(
                f"{name} {_exp(e['fitted']['logits_exponent'])} "
                f"({_exp(e['predicted']['logits_exponent'])}) / "
                f"{_exp(e['fitted']['kernel_exponent'])} "
                f"({_exp(e['predicted']['kernel_exponent'])})"
                for name, e in results["map_of_limits"]["exponents"].items()
            ),
            f"  deep linear networks (q = {lin['setup']['q']}): width exponent "
            f"{lin['width_errors']['slope']:.3f} (theory -0.5), min-norm rate "
            f"{lin['min_norm']['rate']:.3f}, R = {lin['limit']['R']}",
            f"  total time {results['timings']['total']:.1f} s",
            f"  wrote {results['files']['report']}, {results['files']['figure']}, "
            f"{results['files']['limits_figure']} and {results['files']['linear_figure']}",
        ]
    )
