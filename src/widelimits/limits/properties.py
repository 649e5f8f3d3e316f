r"""What the widest networks of a width sweep measurably do, next to `classify`'s predictions:
the properties table of the report (`widelimits.limits.report`, whose docstring gives the
thresholds), on two time scales (after all steps, and at a fixed training loss).

Everything here reads only the JSON-serializable dict that `width_sweep` returns.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["properties_table", "loss_target", "VANISH_BELOW", "DIVERGE_ABOVE", "EVOLVES_BY"]

VANISH_BELOW = 0.5
DIVERGE_ABOVE = 2.0
EVOLVES_BY = 0.1


# ------------------------------------------------------------------- reading a result
def _config(result: dict) -> dict:
    return result["config"]


def _ref_width(result: dict) -> int:
    return int(_config(result).get("ref_width", 128))


def _widths(result: dict) -> list[int]:
    return sorted({int(r["width"]) for r in result["runs"]})


def _scalings(result: dict) -> list[str]:
    names = list(_config(result).get("scalings", []))
    for r in result["runs"]:
        if r["scaling"] not in names:
            names.append(r["scaling"])
    return names


def _mean(result: dict, scaling: str | None, width: int, key: str) -> np.ndarray:
    """``key`` per recorded step, averaged over seeds (``scaling=None``: the first scaling
    that has runs at ``width``, used for the default network)."""
    runs = [r for r in result["runs"] if int(r["width"]) == width]
    if scaling is None and runs:
        scaling = runs[0]["scaling"]
    runs = [r for r in runs if r["scaling"] == scaling]
    if not runs:
        raise KeyError(f"no runs for scaling {scaling!r} at width {width}")
    return np.mean([np.asarray(r[key], dtype=float) for r in runs], axis=0)


def _word(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "diverge" if ratio > 0 else "undefined"
    return "vanish" if ratio < VANISH_BELOW else "diverge" if ratio > DIVERGE_ABOVE else "bounded"


def _exponent_word(exponent) -> str | None:
    if exponent is None:
        return None
    return "vanish" if exponent < 0 else "bounded" if exponent == 0 else "diverge"


def _yes(x) -> str:
    return "-" if x is None else "yes" if x else "no"



# ------------------------------------------------------------------------------ the table
def _predicted_properties(result: dict, name: str) -> dict:
    """classify's words for a named scaling (None where unknown)."""
    pred = result.get("exponents", {}).get(name, {}).get("predicted", {})
    out = {
        "logits": _exponent_word(pred.get("logits_exponent")),
        "kernel": _exponent_word(pred.get("kernel_exponent")),
        "kernel_evolves": None,
        "feature_learning": None,
        "kernel_evolves_at_loss": None,
        "note": None,
        "region": pred.get("region"),
    }
    if name == "IC-MF":  # mean-field dynamics plus a frozen Theta(1) GP draw
        out["kernel_evolves"] = out["feature_learning"] = out["kernel_evolves_at_loss"] = True
        return out
    from .classify import classify
    from .sweep import named_scaling

    try:
        c = classify(named_scaling(name, int(_config(result).get("hidden_layers", 1)),
                                   _ref_width(result)))  # fmt: skip
    except (ValueError, TypeError):
        return out
    out["kernel_evolves"] = c.kernel_evolves
    out["feature_learning"] = c.feature_learning if c.feature_learning is not None else (
        c.tp_feature_learning)  # fmt: skip
    if out["kernel_evolves"] is None and c.kernel_change_exponent is not None:  # deep abc
        out["kernel_evolves"] = c.kernel_change_exponent >= 0
    out["kernel_evolves_at_loss"] = c.kernel_evolves_at_fixed_loss
    out["note"] = c.note
    out["logits"] = out["logits"] or c.logits
    out["kernel"] = out["kernel"] or c.kernel
    return out


def _finite_like(logits, kernel, evolves):
    if None in (logits, kernel, evolves):
        return None
    return logits == "bounded" and kernel == "bounded" and bool(evolves)


def properties_table(result: dict) -> list[dict]:
    """Per scaling, what its widest network measurably does against the default network.

    One dict per scaling with: ``scaling``, ``width`` (the largest), ``baseline`` (what it is
    compared with), ``region`` (predicted); ``logits_ratio``, ``logits`` (measured word),
    ``logits_fitted_exponent``, ``logits_predicted`` (classify's word); the same for the kernel
    at init (``kernel_ratio_init``, ``kernel``, ...); ``kernel_change`` (kernel_ratio at the last
    step minus 1), ``kernel_evolves``, ``default_kernel_change``, ``default_kernel_evolves``,
    ``kernel_evolves_predicted``; ``feature_learning`` (= kernel_evolves) and its prediction;
    ``finite_width_like`` (bounded logits, bounded kernel and evolving kernel) and its
    prediction.  Thresholds: module docstring.
    """
    ref = _ref_width(result)
    widths = _widths(result)
    has_default = ref in widths
    target = loss_target(result)
    rows = []
    for name in _scalings(result):
        own = sorted({int(r["width"]) for r in result["runs"] if r["scaling"] == name})
        if not own:
            continue
        w = own[-1]
        base_w, base_scaling = (ref, None) if has_default else (own[0], name)
        base = {
            key: _mean(result, base_scaling, base_w, key)
            for key in ("mean_abs_logit", "kernel_total", "kernel_ratio", "train_loss")
        }
        mine = {key: _mean(result, name, w, key) for key in base}
        logits_ratio = float(mine["mean_abs_logit"][0] / base["mean_abs_logit"][0])
        kernel_ratio = float(mine["kernel_total"][0] / base["kernel_total"][0])
        change = float(mine["kernel_ratio"][-1] - 1)
        default_change = float(base["kernel_ratio"][-1] - 1)
        evolves = abs(change) > EVOLVES_BY
        at_loss, step_at_loss = _at_loss(result, mine, target)
        default_at_loss, default_step = _at_loss(result, base, target)
        fitted = result.get("exponents", {}).get(name, {}).get("fitted", {})
        pred = _predicted_properties(result, name)
        logits, kernel = _word(logits_ratio), _word(kernel_ratio)
        rows.append(
            {
                "scaling": name,
                "width": w,
                "baseline": f"default (width {ref})" if has_default else f"{name} width {base_w}",
                "region": pred["region"],
                "logits_ratio": logits_ratio,
                "logits": logits,
                "logits_fitted_exponent": fitted.get("logits_exponent"),
                "logits_predicted": pred["logits"],
                "kernel_ratio_init": kernel_ratio,
                "kernel": kernel,
                "kernel_fitted_exponent": fitted.get("kernel_exponent"),
                "kernel_predicted": pred["kernel"],
                "kernel_change": change,
                "kernel_evolves": evolves,
                "default_kernel_change": default_change,
                "default_kernel_evolves": abs(default_change) > EVOLVES_BY,
                "kernel_evolves_predicted": pred["kernel_evolves"],
                "feature_learning": evolves,
                "feature_learning_predicted": pred["feature_learning"],
                "loss_target": target,
                "step_at_loss": step_at_loss,
                "kernel_change_at_loss": at_loss,
                "kernel_evolves_at_loss": None if at_loss is None else abs(at_loss) > EVOLVES_BY,
                "default_step_at_loss": default_step,
                "default_kernel_change_at_loss": default_at_loss,
                "kernel_evolves_at_loss_predicted": pred["kernel_evolves_at_loss"],
                "note": pred["note"],
                "finite_width_like": _finite_like(logits, kernel, evolves),
                "finite_width_like_predicted": _finite_like(
                    pred["logits"], pred["kernel"], pred["kernel_evolves"]
                ),
            }
        )
    for row in rows:
        row["disagreements"] = _disagreements(row)
    return rows


def loss_target(result: dict) -> float:
    """The fixed training loss of the table: the largest last-step training loss over all
    networks (mean over seeds), so that every network reaches it."""
    finals = [float(_mean(result, name, w, "train_loss")[-1])
              for name in _scalings(result) for w in _widths(result)
              if any(r["scaling"] == name and int(r["width"]) == w for r in result["runs"])]
    return max(finals)


def _at_loss(result: dict, means: dict, target: float) -> tuple[float | None, int | None]:
    """(kernel ratio - 1, step) at the first recorded step whose training loss is <= target."""
    hits = np.flatnonzero(means["train_loss"] <= target + 1e-12)
    if not len(hits):
        return None, None
    i = int(hits[0])
    return float(means["kernel_ratio"][i] - 1), int(result["steps"][i])


def _disagreements(row: dict) -> list[str]:
    """One sentence per property whose measurement differs from its prediction."""
    out = []
    for key, label in (("logits", "logits at init"), ("kernel", "kernel at init"),
                       ("kernel_evolves", "kernel evolves and feature learning (fixed steps)"),
                       ("kernel_evolves_at_loss", "kernel evolves (fixed loss)")):  # fmt: skip
        measured, predicted = row[key], row[f"{key}_predicted"]
        if measured is None or predicted is None or measured == predicted:
            continue
        text = f"{row['scaling']}, {label}: measured {_yes(measured)}, predicted {_yes(predicted)}"
        if key == "kernel_evolves" and row.get("note"):
            text += f". classify: {row['note']}"
        out.append(text)
    return out
