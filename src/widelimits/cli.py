"""The ``widelimits`` command line: a thin layer over the public API.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its options and sets
``func`` to a ``_run_<name>(args) -> int`` handler; add a new one to ``SUBCOMMANDS``.

    widelimits --version
    widelimits demo [--out DIR] [--quick] [--seed N]    (DIR: ./widelimits-out/demo)
    widelimits limits plane [--out DIR]
    widelimits limits sweep [--out DIR] [--scalings ...] [--widths ...] [--quick] ...
    widelimits linear [--out DIR] [--q 1] [--d 20] [--k 3] [--n 10] [--widths ...] [--quick] ...
    widelimits kernel compute|solve ...   (see widelimits/scale/cli.py)
    widelimits --traceback COMMAND ...    (full tracebacks of errors, for debugging)

Before a command runs, `check_arguments` checks the options it has (input files, ``--key``,
``--arch``, sizes that cannot fit).  A mistake in the command line or its inputs prints one line,
``widelimits: error: ...`` naming the option, and exits with status 2, as argparse does; see
`USER_ERRORS` for what counts as one.

Each command writes into its own folder, ``./widelimits-out/<command>`` unless ``--out`` says
otherwise (``limits plane`` and ``limits sweep`` share ``./widelimits-out/limits``: their files
differ), so ``linear`` never replaces the demo's report.  A rerun into a folder that already
holds a report replaces it, saying so on stderr before it starts (`announce_replacement`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from ._cli_checks import UsageError, check_arguments, check_output_folder

__all__ = ["main", "build_parser", "UsageError", "USER_ERRORS"]


def _missing_extras(command: str, modules: tuple[str, ...] = ("matplotlib",)) -> bool:
    """True (after saying what to install) when an optional dependency of ``command`` is
    missing; otherwise selects matplotlib's file-only backend."""
    import importlib

    try:
        for name in modules:
            importlib.import_module(name)
    except ImportError:
        print(f"widelimits {command} needs {' and '.join(modules)}: "
              "pip install 'widelimits[demo]'", file=sys.stderr)  # fmt: skip
        return True
    import matplotlib

    matplotlib.use("Agg")
    return False


# Each command writes into its own folder by default, so one never replaces another's report.
OUT_ROOT = "./widelimits-out"
REPLACES_HELP = "; an existing report there is replaced, with a notice on stderr"


def _out_option(parser: argparse.ArgumentParser, command: str) -> None:
    """``--out DIR``, default ``./widelimits-out/<command>``."""
    default = f"{OUT_ROOT}/{command}"
    parser.add_argument("--out", default=default, metavar="DIR",
                        help=f"output folder (default: {default}){REPLACES_HELP}")  # fmt: skip


def announce_replacement(command: str, out: str, names: Sequence[str]) -> list[str]:
    """Say on stderr, before ``command`` runs, which of the files ``names`` already in the
    folder ``out`` it will replace (a previous run's report); returns their paths."""
    folder = Path(out).expanduser().absolute()
    existing = [str(folder / n) for n in names if (folder / n).is_file()]
    if existing:
        print(f"widelimits {command}: replacing the previous {', '.join(existing)} "
              "(choose another --out to keep them)", file=sys.stderr)  # fmt: skip
    return existing


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _run_demo(args: argparse.Namespace) -> int:
    try:
        from .demo import format_summary, run_demo
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        print(f"widelimits demo: {err}", file=sys.stderr)
        return 1
    if _missing_extras("demo", ("sklearn", "matplotlib")):
        return 1
    check_output_folder(args.out)
    announce_replacement("demo", args.out, ("report.md", "results.json"))
    results = run_demo(
        args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
        threads=args.threads,
    )  # fmt: skip
    print(format_summary(results))
    return 0


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="kernels vs finite networks on scikit-learn's digits (offline, 1-3 minutes)",
        description=(
            "Closed-form NNGP/NTK kernel regression and SGD-trained finite networks of growing "
            "width on scikit-learn's bundled digits, plus the empirical NTK's convergence to "
            "the analytic NTK, predictive uncertainties of the infinite ensemble and NNGP "
            "posterior, and a finite network's gradient-descent training curve next to the "
            "infinite-width prediction, and a small width sweep over the map of "
            "infinite-width limits, and deep linear networks against their deterministic "
            "infinite-width limit. Writes demo.png, limits.png, linear.png, report.md and "
            "results.json."
        ),
    )
    _out_option(p, "demo")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (under 15 s on an idle machine), for tests",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and networks (default 0)")
    p.add_argument(
        "--threads", type=_positive_int, default=None, metavar="N",
        help="torch threads for the networks of width >= 2048 (default: torch's setting; "
        "everything else runs on one thread, faster for small matrices; use 1 on a busy "
        "machine)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output on stderr (bars are drawn only when stderr is a "
                   "terminal; status lines always)")  # fmt: skip
    p.set_defaults(func=_run_demo)


# --------------------------------------------------------------------------------- limits
SWEEP_SCALINGS = ("NTK", "MF", "sym-default", "IC-MF", "standard", "muP")
# --quick: tiny sizes (about 10 s single-threaded on an idle machine), for tests
QUICK_SWEEP = dict(
    scalings=["NTK", "MF", "sym-default", "IC-MF"], widths=[128, 512], seeds=1, steps=30,
    n_train=256, records=8, kernel_points=32, limit_particles=1024,
)  # fmt: skip


def _run_limits_plane(args: argparse.Namespace) -> int:
    if _missing_extras("limits plane"):
        return 1
    from .limits import REGIONS, classify, plot_plane

    check_output_folder(args.out)
    announce_replacement("limits plane", args.out, ("plane.png",))
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_plane()
    fig.savefig(out / "plane.png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    print(f"{'#':>2}  {'region':40s}  {'(q_sigma, q_tilde)':18s}  {'logits':7s}  {'kernel':7s}  "
          "kernel evolves  initial logits kept  evolves at fixed loss")  # fmt: skip
    for region in REGIONS:
        c = classify(region.point)
        point = f"({region.point[0]:g}, {region.point[1]:g})"
        print(f"{region.index:2d}  {region.name:40s}  {point:18s}  {c.logits:7s}  {c.kernel:7s}  "
              f"{yes(c.kernel_evolves):14s}  {yes(c.init_logits_matter):19s}  "
              f"{yes(c.kernel_evolves_at_fixed_loss)}")  # fmt: skip
    print(f"wrote {out / 'plane.png'}")
    return 0


def _run_limits_sweep(args: argparse.Namespace) -> int:
    if _missing_extras("limits sweep", ("sklearn", "matplotlib")):
        return 1
    check_output_folder(args.out)
    announce_replacement("limits sweep", args.out, ("report.md", "results.json"))
    import torch

    from .limits.report import write_report
    from .limits.sweep import SweepConfig, width_sweep

    base = dict(QUICK_SWEEP) if args.quick else {}
    for key in ("scalings", "widths", "seeds", "steps", "n_train", "limit_particles"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if "widths" in base:
        base["widths"] = sorted(set(base["widths"]))
    if "scalings" in base:
        base["scalings"] = list(dict.fromkeys(base["scalings"]))
    config = SweepConfig(**base, lr=args.lr, limits=not args.no_limits)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(args.threads)
        result = width_sweep(config, progress=False if args.no_progress else None)
    except ValueError as err:
        print(f"widelimits limits sweep: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(old)
    files = write_report(result, args.out)
    for row in result["exponents"].items():
        name, ex = row
        f, p = ex["fitted"], ex["predicted"]
        fmt = lambda x: "-" if x is None else f"{x:+.3f}"  # noqa: E731
        print(f"{name:12s} logits exponent {fmt(f['logits_exponent'])} (predicted "
              f"{fmt(p['logits_exponent'])}), kernel exponent {fmt(f['kernel_exponent'])} "
              f"(predicted {fmt(p['kernel_exponent'])})")  # fmt: skip
    print(f"wrote {files['report.md']} and the figures in {Path(files['report.md']).parent}")
    return 0


def _add_limits(subparsers) -> None:
    p = subparsers.add_parser(
        "limits",
        help="the map of infinite-width limits: the scaling plane and width sweeps",
        description="The one-hidden-layer scaling plane (`plane`) and width sweeps that train "
        "the same network at growing widths under several scalings (`sweep`).",
    )
    sub = p.add_subparsers(title="limits commands", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])

    plane = sub.add_parser(
        "plane",
        help="draw the (q_sigma, q_tilde) plane and list its 13 regions",
        description="Writes plane.png (`plot_plane`) and prints the 13 regions of the stable "
        "strip: index, name, a representative point and `classify`'s properties there.",
    )
    _out_option(plane, "limits")
    plane.set_defaults(func=_run_limits_plane)

    sweep = sub.add_parser(
        "sweep",
        help="train one network at growing widths under several scalings (minutes)",
        description="A width sweep (`widelimits.limits.sweep.width_sweep`): one-hidden-layer "
        "leaky-ReLU(0.1) nets without bias on digits 0-4 vs 5-9, BCE, full-batch SGD; writes "
        "sweep.png, limits.png, exponents.png, results.json and report.md. Defaults: "
        "SweepConfig's.",
    )
    _out_option(sweep, "limits")
    sweep.add_argument("--scalings", nargs="+", choices=SWEEP_SCALINGS, metavar="NAME",
                       help="scalings by name, from: " + ", ".join(SWEEP_SCALINGS) +
                       " (default: NTK MF sym-default IC-MF)")  # fmt: skip
    sweep.add_argument("--widths", nargs="+", type=_positive_int, metavar="W",
                       help="hidden widths (default: 128 512 2048 8192; the reference width "
                       "is 128)")  # fmt: skip
    sweep.add_argument("--seeds", type=_positive_int, metavar="N", help="seeds (default 2)")
    sweep.add_argument("--steps", type=_positive_int, metavar="N",
                       help="SGD steps (default 1000)")  # fmt: skip
    sweep.add_argument("--lr", type=_positive_float, default=0.02,
                       help="learning rate at the reference width (default 0.02)")  # fmt: skip
    sweep.add_argument("--n-train", type=_positive_int, metavar="N",
                       help="training images (default 1024, at most 1796)")  # fmt: skip
    sweep.add_argument("--limit-particles", type=_positive_int, metavar="N",
                       help="particles of the mean-field limits (default 32768)")  # fmt: skip
    sweep.add_argument("--no-limits", action="store_true", help="skip the limit models")
    sweep.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                       help="torch threads (default 1)")  # fmt: skip
    sweep.add_argument("--quick", action="store_true",
                       help="tiny sizes (seconds), for tests; explicit options still "
                       "apply")  # fmt: skip
    sweep.add_argument("--no-progress", action="store_true",
                       help="no progress output on stderr (bars are drawn only when stderr is a "
                       "terminal; status lines always)")  # fmt: skip
    sweep.set_defaults(func=_run_limits_sweep)


# --------------------------------------------------------------------------------- linear
# Default sizes: under a minute on a 2-core machine (measured with q = 1, d = 20: a width-1024
# network takes about 2 s per seed when idle, width 2048 about 18 s and width 4096 about 90 s, so
# those are left out; 8 seeds keep the fitted exponent's seed noise small).
LINEAR_DEFAULTS = dict(q=1, d=20, k=3, n=10, widths=[64, 128, 256, 512, 1024], seeds=8,
                       t_max=5.0)  # fmt: skip
# --quick: a few seconds, for tests
LINEAR_QUICK = dict(q=1, d=8, k=2, n=4, widths=[32, 64, 128, 256], seeds=2, t_max=3.0)


_nonnegative_int = _int_at_least(0)


def _run_linear(args: argparse.Namespace) -> int:
    if _missing_extras("linear"):
        return 1
    check_output_folder(args.out)
    announce_replacement("linear", args.out, ("report.md", "results.json"))
    from .linear.report import format_summary, linear_experiment, write_report

    sizes = dict(LINEAR_QUICK if args.quick else LINEAR_DEFAULTS)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    sizes["widths"] = sorted(set(sizes["widths"]))
    if len(sizes["widths"]) < 2:
        print("widelimits linear: error: --widths needs at least two distinct widths to fit "
              "the width exponent", file=sys.stderr)  # fmt: skip
        return 2
    if sizes["n"] >= sizes["d"]:
        print(f"widelimits linear: warning: n = {sizes['n']} >= d = {sizes['d']}: the "
              "min-norm check needs an underdetermined problem (n < d); with n >= d the "
              "least-squares solution Y X^+ is unique and the check is only convergence to it",
              file=sys.stderr)  # fmt: skip
    progress = not args.no_progress
    if progress:
        print(f"widelimits linear: q = {sizes['q']}, d = {sizes['d']}, k = {sizes['k']}, "
              f"n = {sizes['n']}, widths {sizes['widths']}, {sizes['seeds']} seed(s)",
              file=sys.stderr)  # fmt: skip
    try:
        result = linear_experiment(**sizes, eta=args.eta, seed=args.seed, progress=progress)
    except ValueError as err:
        print(f"widelimits linear: error: {err}", file=sys.stderr)
        return 2
    result["setup"]["quick"] = args.quick
    files = write_report(result, args.out)
    print(format_summary(result))
    print(f"wrote {files['report.md']}, {files['linear.png']} and {files['results.json']} "
          f"({result['seconds']:.1f} s)")  # fmt: skip
    return 0


def _add_linear(subparsers) -> None:
    d, qk = LINEAR_DEFAULTS, LINEAR_QUICK
    p = subparsers.add_parser(
        "linear",
        help="deep linear networks: finite widths against the infinite-width limit (~1 min)",
        description="Trains deep linear networks of growing width (main scaling, gradient "
        "flow) on a random underdetermined regression problem and compares them with the "
        "deterministic infinite-width limit (`widelimits.linear`): the distance to the limit "
        "against the width (m^-1/2 expected), the limit's exponential convergence to the "
        "minimum-norm solution Y X^+, the first-layer weight law and the initial tangent "
        "kernel. The problem (seeded by --seed): X = sqrt(n) times the polar factor of a "
        "d x n Gaussian matrix (X^T X / n = I_n for n < d), Y iid N(0, 1). Writes linear.png, "
        "results.json and report.md.",
    )
    _out_option(p, "linear")
    p.add_argument("--q", type=_nonnegative_int, metavar="Q",
                   help=f"middle layers (q + 1 hidden layers; default {d['q']})")  # fmt: skip
    p.add_argument("--d", type=_positive_int, metavar="D",
                   help=f"input dimension (default {d['d']})")  # fmt: skip
    p.add_argument("--k", type=_positive_int, metavar="K",
                   help=f"output dimension (default {d['k']})")  # fmt: skip
    p.add_argument("--n", type=_positive_int, metavar="N",
                   help=f"examples, n < d for the min-norm check (default {d['n']})")  # fmt: skip
    p.add_argument("--widths", nargs="+", type=_positive_int, metavar="M",
                   help="finite widths, at least two (default: "
                   + " ".join(map(str, d["widths"])) + ")")  # fmt: skip
    p.add_argument("--seeds", type=_positive_int, metavar="N",
                   help=f"networks per width (default {d['seeds']})")  # fmt: skip
    p.add_argument("--t-max", type=_positive_float, metavar="T",
                   help=f"final time of the gradient flow (default {d['t_max']:g})")  # fmt: skip
    p.add_argument("--eta", type=_positive_float, default=1.0,
                   help="gradient-flow rate (default 1)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the problem and the first network (default 0)")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help=f"small sizes (seconds), for tests: q {qk['q']}, d {qk['d']}, k "
                   f"{qk['k']}, n {qk['n']}, widths {' '.join(map(str, qk['widths']))}, "
                   f"{qk['seeds']} seeds, t-max {qk['t_max']:g}; explicit options still "
                   "apply")  # fmt: skip
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output on stderr (bars are drawn only when stderr is a "
                   "terminal; status lines always)")  # fmt: skip
    p.set_defaults(func=_run_linear)


def _add_kernel(subparsers) -> None:
    from .scale.cli import add_kernel

    add_kernel(subparsers)


SUBCOMMANDS = (_add_demo, _add_limits, _add_linear, _add_kernel)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="widelimits",
        description="Neural networks in the infinite-width limit: NNGP/NTK kernels in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"widelimits {__version__}")
    parser.add_argument(
        "--traceback", action="store_true",
        help="show the full traceback of an error instead of one line (goes before COMMAND)",
    )  # fmt: skip
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


# Errors that mean "the command line or its inputs are wrong": one line on stderr and exit
# status 2, as argparse does.  The library raises ValueError (bad values, stale stores),
# MemoryError (sizes that cannot fit) and FloatingPointError (a kernel that overflows) for bad
# inputs, with a message that says what to do; OSError is a file that is missing, unreadable or
# in the way.  Any other exception is a bug and keeps its traceback (so does any error with
# --traceback).
USER_ERRORS = (UsageError, ValueError, OSError, MemoryError, FloatingPointError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``widelimits`` command; returns the exit status.

    Options are checked (`check_arguments`) before the command runs; user errors
    (`USER_ERRORS`) print ``widelimits: error: ...`` and return 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        check_arguments(args)
        return args.func(args)
    except USER_ERRORS as err:
        if args.traceback:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"widelimits: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
