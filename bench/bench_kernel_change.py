"""Width sweep of the training-time properties of the map of limits (slow; not a test).

Part 1, the one-hidden-layer plane: NTK, MF and sym-default, BCE and MSE, full-batch gradient
descent (lr 0.02 at the reference width 128) on digits 0-4 vs 5-9. Measured exactly
(`widelimits.limits.dynamics`): the relative change of the learning-rate-weighted tangent kernel
and of the hidden weights, at fixed numbers of steps and at a fixed training loss (the loss the
reference-width network, the same under every scaling, reaches after ``--steps`` steps), with
fitted width exponents next to `classify`'s predictions.

Part 2, deep MLPs (2 and 3 hidden layers) under NTK, standard (rate 1/width) and muP: width
exponents of the logits and the kernel at init and of the feature update (last hidden
features) after one step, against `classify` (Tensor-Programs r and the abc exponents).

    python bench/bench_kernel_change.py [--widths 128 512 2048 8192] [--steps 200]
        [--seeds 2] [--out docs/limits-example]

writes kernel-change.json and kernel-change.png (the figure on the theory page) into --out.
The run on the theory page (``--steps 100 --seeds 1 --n-train 128 --deep-widths 256 512 1024
2048 --deep-seeds 6``) took 15 minutes on the loaded 2-core machine; the defaults about 4x that.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from widelimits.limits import Scaling, classify
from widelimits.limits.dynamics import fit_exponent, run_dynamics
from widelimits.limits.sweep import load_binary_task

REF = 128
PLANE = {"NTK": (-0.5, 0.0), "MF": (-1.0, 1.0), "sym-default": (-0.5, 0.5)}
FIXED_STEPS = (1, 4, 16, 64)
FIXED_LOSS_CAP = 3000


def _mean(runs, key, index=-1, layer=None):
    vals = [r[key][index] if layer is None else r[key][index][layer] for r in runs]
    return float(np.mean(vals))


def plane_part(args, x, y, kx) -> dict:
    out = {}
    record = sorted({*FIXED_STEPS, args.steps})
    for loss in ("bce", "mse"):
        # all scalings coincide at the reference width: one target loss per loss function
        ref = run_dynamics(Scaling.ntk(ref_width=REF), REF, x, y, loss, args.steps, [], kx)
        target = ref["loss"][-1]
        for name, point in PLANE.items():
            scaling = Scaling.plane(*point, ref_width=REF)
            c = classify(point)
            steps_rows, loss_rows = {}, {}
            for w in args.widths:
                runs = [run_dynamics(scaling, w, x, y, loss, args.steps, record, kx, seed=s)
                        for s in range(args.seeds)]  # fmt: skip
                steps_rows[str(w)] = {
                    str(t): {"kernel": _mean(runs, "kernel_change", i),
                             "weight": _mean(runs, "weight_change", i, 0),
                             "loss": _mean(runs, "loss", i),
                             "derivative_sum": _mean(runs, "derivative_sum", i)}
                    for i, t in enumerate(record) if all(len(r["steps"]) > i for r in runs)
                }  # fmt: skip
                fixed = [run_dynamics(scaling, w, x, y, loss, FIXED_LOSS_CAP, [], kx, seed=s,
                                      target_loss=target) for s in range(args.seeds)]  # fmt: skip
                loss_rows[str(w)] = {"kernel": _mean(fixed, "kernel_change"),
                                "weight": _mean(fixed, "weight_change", layer=0),
                                "steps": _mean(fixed, "steps"),
                                "derivative_sum": _mean(fixed, "derivative_sum"),
                                "reached": all(r["reached"] for r in fixed)}  # fmt: skip
                last = steps_rows[str(w)].get(str(args.steps), {}).get("kernel", float("nan"))
                print(f"{loss} {name:11s} width {w:6d}: kernel change after {args.steps} steps "
                      f"{last:.3g}, at loss {target:.3g}: {loss_rows[str(w)]['kernel']:.3g} "
                      f"({loss_rows[str(w)]['steps']:.0f} steps)", flush=True)  # fmt: skip
            fits = {}
            for t in record:
                ok = [w for w in args.widths if str(t) in steps_rows[str(w)]]
                if len(ok) >= 2:
                    for key in ("kernel", "weight"):
                        vals = [steps_rows[str(w)][str(t)][key] for w in ok]
                        fits[f"{key}@{t}"] = fit_exponent(ok, vals, REF)
            reached = [w for w in args.widths if loss_rows[str(w)]["reached"]]
            if len(reached) >= 2:
                for key in ("kernel", "weight"):
                    vals = [loss_rows[str(w)][key] for w in reached]
                    fits[f"{key}@loss"] = fit_exponent(reached, vals, REF)
            out[f"{loss}/{name}"] = {
                "loss": loss, "scaling": name, "target_loss": target, "fixed_steps": steps_rows,
                "fixed_loss": loss_rows, "fitted": fits,
                "predicted": {"weight@steps": float(c.weight_change_exponent),
                              "kernel@steps": float(c.kernel_change_exponent),
                              "weight@loss": float(c.fixed_loss_weight_exponent),
                              "kernel@loss": 2 * float(c.fixed_loss_weight_exponent),
                              "mse_verdict": c.mse_verdict, "note": c.note},
            }  # fmt: skip
    return out


def deep_part(args, x, y, kx) -> dict:
    out = {}
    for depth in (2, 3):
        for name in ("NTK", "standard", "muP"):
            scaling = getattr(Scaling, {"NTK": "ntk", "standard": "standard", "muP": "mup"}[name])(
                depth, REF
            )
            c = classify(scaling)
            rows = {}
            for w in args.deep_widths:
                runs = [run_dynamics(scaling, w, x, y, "bce", 1, None, kx, seed=s)
                        for s in range(args.deep_seeds)]  # fmt: skip
                rows[w] = {"logits": float(np.mean([r["logit_scale"] for r in runs])),
                           "kernel": float(np.mean([r["kernel_scale"] for r in runs])),
                           "feature": _mean(runs, "feature_change")}  # fmt: skip
            fitted = {k: fit_exponent(args.deep_widths, [rows[w][k] for w in args.deep_widths], REF)
                      for k in ("logits", "kernel", "feature")}  # fmt: skip
            predicted = {"logits": float(c.logits_exponent), "kernel": float(c.kernel_exponent),
                         "feature": float(c.feature_update_exponent)}  # fmt: skip
            out[f"{name}/L={depth}"] = {"rows": rows, "fitted": fitted, "predicted": predicted,
                                       "r": float(c.r)}  # fmt: skip
            print(f"depth {depth} {name:8s} " + "  ".join(
                f"{k} {fitted[k]:+.2f} (pred. {predicted[k]:+.2f})" for k in fitted), flush=True)
    return out


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    colors = {"NTK": "tab:blue", "MF": "tab:orange", "sym-default": "tab:green"}
    steps = result["config"]["steps"]
    for row, loss in enumerate(("bce", "mse")):
        for name, color in colors.items():
            v = result["plane"][f"{loss}/{name}"]
            widths = sorted(int(w) for w in v["fixed_loss"])
            rho = np.asarray(widths) / REF
            for t, style in (("1", ":"), (str(steps), "-")):
                ok = [w for w in widths if t in v["fixed_steps"][str(w)]]
                vals = [v["fixed_steps"][str(w)][t]["kernel"] for w in ok]
                axes[row, 0].loglog(np.asarray(ok) / REF, vals, style, marker="o", ms=3,
                                    color=color, label=f"{name}, step {t}")  # fmt: skip
            fl = [v["fixed_loss"][str(w)] for w in widths]
            for col, key in ((1, "kernel"), (2, "weight")):
                vals = np.asarray([f[key] for f in fl])
                axes[row, col].loglog(rho, vals, "-", marker="o", ms=3, color=color, label=name)
                slope = v["predicted"][f"{key}@loss"]
                axes[row, col].loglog(rho, vals[0] * rho**slope, "--", color=color, lw=0.8)
        target = result["plane"][f"{loss}/NTK"]["target_loss"]
        axes[row, 0].set_title(f"{loss.upper()}: kernel change at fixed steps")
        axes[row, 1].set_title(f"{loss.upper()}: kernel change at loss {target:.3g}")
        axes[row, 2].set_title(f"{loss.upper()}: weight change at loss {target:.3g}")
        for ax in axes[row]:
            ax.set_xlabel("rho = width / 128")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.suptitle("Relative change of the tangent kernel and hidden weights (dashed: predicted "
                 "slope at fixed loss)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[128, 512, 2048, 8192])
    p.add_argument("--deep-widths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--deep-seeds", type=int, default=4)
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-deep", action="store_true")
    p.add_argument("--out", default="docs/limits-example")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y, _, _ = load_binary_task(1024, 0, torch.float64)
    x, y = x[: args.n_train], y[: args.n_train]
    kx = x[:64]
    start = time.perf_counter()
    result = {"config": {k: v for k, v in vars(args).items() if k != "out"}}
    result["plane"] = plane_part(args, x, y, kx)
    if not args.skip_deep:
        result["deep"] = deep_part(args, x, y, kx)
    result["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel-change.json").write_text(json.dumps(result, indent=1))
    figure(result, out / "kernel-change.png")
    print(f"wrote {out / 'kernel-change.json'} and {out / 'kernel-change.png'} "
          f"({result['seconds']:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
