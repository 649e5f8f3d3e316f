"""The ``widelimits`` command line: a thin layer over the public API.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its options and sets
``func`` to a ``_run_<name>(args) -> int`` handler; add a new one to ``SUBCOMMANDS``.

    widelimits --version
    widelimits demo [--out DIR] [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["main", "build_parser"]


def _run_demo(args: argparse.Namespace) -> int:
    try:
        from .demo import format_summary, run_demo
    except ImportError as err:  # pragma: no cover - depends on the installed extras
        print(f"widelimits demo: {err}", file=sys.stderr)
        return 1
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        print(
            "widelimits demo needs scikit-learn and matplotlib: pip install 'widelimits[demo]'",
            file=sys.stderr,
        )
        return 1
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
            "infinite-width prediction. Writes demo.png, report.md and results.json."
        ),
    )
    p.add_argument(
        "--out", default="./widelimits-out", metavar="DIR",
        help="output folder (default: ./widelimits-out)",
    )  # fmt: skip
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (under 15 s on an idle machine), for tests",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and networks (default 0)")
    p.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch threads for the networks of width >= 2048 (default: torch's setting; "
        "everything else runs on one thread, faster for small matrices; use 1 on a busy "
        "machine)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=_run_demo)


SUBCOMMANDS = (_add_demo,)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="widelimits",
        description="Neural networks in the infinite-width limit: NNGP/NTK kernels in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"widelimits {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``widelimits`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
