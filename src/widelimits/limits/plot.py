"""A picture of the one-hidden-layer scaling plane (see `widelimits.limits.classify`).

matplotlib is an optional dependency (the ``demo`` extra); it is imported only when
`plot_plane` is called.
"""

from __future__ import annotations

from widelimits.limits.classify import NAMED_POINTS, REGIONS, classify

__all__ = ["plot_plane"]


def plot_plane(ax=None, points=NAMED_POINTS, annotate: bool = True):
    r"""Draw the :math:`(q_\sigma, \tilde q)` plane and return the matplotlib Figure.

    Shows the dynamically stable strip :math:`-1/2 \le q_\sigma + \tilde q \le 0` (shaded),
    the three lines that cut it (logits line :math:`q_\sigma = -1/2`, kernel line
    :math:`\tilde q = -1 - 2 q_\sigma`, upper edge :math:`\tilde q = -q_\sigma`), the line
    :math:`q_\sigma = -1` left of which the kernel evolves on the way to a fixed training loss
    (dotted), the 13 regions labelled by their index at their representative point
    (`REGIONS`), and ``points`` (a mapping name -> :math:`(q_\sigma, \tilde q)`) marked, with
    their names when ``annotate``. Sign convention:
    :math:`\operatorname{std}(a) = \sigma^* \rho^{q_\sigma}`,
    :math:`\eta_w = \eta^* \rho^{\tilde q}`,
    :math:`\eta_a = \eta^* \rho^{\tilde q + 2 q_\sigma}` (exponents with a plus sign).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plot_plane needs matplotlib: pip install 'widelimits[demo]'") from err
    import numpy as np

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 6.0))
    else:
        fig = ax.figure

    x_lo, x_hi, y_lo, y_hi = -2.0, 1.5, -1.5, 2.25
    xs = np.linspace(x_lo, x_hi, 200)
    ax.fill_between(xs, -0.5 - xs, -xs, color="tab:green", alpha=0.15, lw=0, label="stable strip")
    ax.plot(xs, -xs, color="tab:green", lw=2.0,
            label="upper edge s = 0: kernel evolves (fixed steps)")  # fmt: skip
    ax.plot(xs, -0.5 - xs, color="tab:green", lw=1.0, ls="--", label="lower edge")
    ax.axvline(-0.5, color="tab:blue", lw=1.2, label="logits Theta(1): q_sigma = -1/2")
    ax.plot(xs, -1 - 2 * xs, color="tab:orange", lw=1.2, label="kernel Theta(1)")
    ax.axvline(-1.0, color="0.4", lw=1.0, ls=":",
               label="left: kernel evolves on the way to a fixed loss")  # fmt: skip
    ax.text(0.6, 0.6, "diverging", color="tab:red", ha="center")
    ax.text(-1.4, -0.6, "stagnating", color="tab:purple", ha="center")

    box = dict(boxstyle="circle,pad=0.2", fc="white", ec="0.5", lw=0.6)
    for region in REGIONS:
        qs, qt = region.point
        if region.kind == "point":  # just outside the strip, with a tick, so the marker shows
            above = qs + qt == 0  # upper-edge points: label above; NTK: below
            ax.annotate(
                str(region.index),
                (qs, qt),
                xytext=(-10, 20) if above else (-10, -20),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=8,
                bbox=box,
                arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6),
                zorder=4,
            )
        else:
            ax.text(qs, qt, str(region.index), ha="center", va="center", fontsize=8, bbox=box)

    for name, (qs, qt) in dict(points or {}).items():
        verdict = classify((qs, qt)).verdict
        color = {"stable": "black", "diverging": "tab:red", "stagnating": "tab:purple"}[verdict]
        ax.plot([qs], [qt], marker="*", ms=11, color=color, zorder=5, ls="none")
        if annotate:
            ax.annotate(
                name,
                (qs, qt),
                xytext=(6, 6),
                textcoords="offset points",
                fontsize=9,
                color=color,
                zorder=6,
            )

    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("q_sigma   (std(a) ~ rho^q_sigma)")
    ax.set_ylabel("q_tilde   (eta_w ~ rho^q_tilde)")
    ax.set_title("Infinite-width limits of a one-hidden-layer net")
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(alpha=0.3)
    return fig
