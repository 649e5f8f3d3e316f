"""The map of infinite-width limits: widelimits.limits.classify and plot_plane.

Expected properties are recomputed here from the exponent formulas
(logits rho^{q_sigma + 1/2}, kernel rho^{q_tilde + 2 q_sigma + 1}, relative weight change
rho^{q_tilde + q_sigma}) and from the Tensor-Programs table, not read back from the module.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from types import SimpleNamespace

import pytest

from widelimits.limits.classify import NAMED_POINTS, REGIONS, Classification, classify


def _word(e: float) -> str:
    return "vanish" if e < -1e-12 else "diverge" if e > 1e-12 else "bounded"


def _expected(qs: float, qt: float) -> dict:
    s = qs + qt
    return {
        "stable": -0.5 - 1e-12 <= s <= 1e-12,
        "logits": _word(qs + 0.5),
        "kernel": _word(qt + 2 * qs + 1),
        "kernel_evolves": abs(s) < 1e-12 or s > 0,
        "init_logits_matter": s < -0.5 + 1e-12,
    }


# ------------------------------------------------------------------------------- named points
def test_named_points():
    mf, ntk, sym = (classify(NAMED_POINTS[k]) for k in ("MF", "NTK", "sym-default"))
    assert (mf.logits, mf.kernel, mf.kernel_evolves) == ("vanish", "bounded", True)
    assert (ntk.logits, ntk.kernel, ntk.kernel_evolves) == ("bounded", "bounded", False)
    assert (sym.logits, sym.kernel, sym.kernel_evolves) == ("bounded", "diverge", True)
    assert mf.region == "MF point" and ntk.region == "NTK point"
    assert sym.region == "sym-default point"
    assert all(c.stable and c.verdict == "stable" for c in (mf, ntk, sym))
    assert mf.feature_learning and not ntk.feature_learning

    div, stag = classify(NAMED_POINTS["diverge"]), classify(NAMED_POINTS["stagnate"])
    assert not div.stable and div.verdict == "diverging"
    assert not stag.stable and stag.verdict == "stagnating"
    assert div.region is None and div.region_index is None
    assert stag.region is None and stag.region_index is None
    # exponents are still reported for unstable points
    assert div.logits_exponent == Fraction(3, 2) and div.kernel_exponent == 4


# ------------------------------------------------------------------------------------ regions
def test_regions_table_is_13_distinct_regions():
    assert len(REGIONS) == 13
    assert [r.index for r in REGIONS] == list(range(1, 14))
    assert len({r.name for r in REGIONS}) == 13
    kinds = [r.kind for r in REGIONS]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {"point": 3, "edge": 3, "ray": 4, "cell": 3}


@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.name)
def test_region_representatives(region):
    qs, qt = region.point
    c = classify(region.point)
    assert c.region_index == region.index and c.region == region.name
    exp = _expected(qs, qt)
    assert exp["stable"] and c.stable and c.verdict == "stable"
    assert c.logits == exp["logits"]
    assert c.kernel == exp["kernel"]
    assert c.kernel_evolves == exp["kernel_evolves"]
    assert c.init_logits_matter == exp["init_logits_matter"]
    assert math.isclose(float(c.logits_exponent), qs + 0.5)
    assert math.isclose(float(c.kernel_exponent), qt + 2 * qs + 1)
    assert math.isclose(float(c.weight_change_exponent), qs + qt)


def test_regions_have_distinct_property_combinations():
    combos = set()
    three = set()
    for region in REGIONS:
        c = classify(region.point)
        combos.add((c.logits, c.kernel, c.kernel_evolves, c.init_logits_matter))
        three.add((c.logits, c.kernel, c.kernel_evolves))
    assert len(combos) == 13
    # the lower rays share (logits, kernel, evolves) with the outer open cells: the fourth
    # property (initial logits of the same order as their increments) separates them
    assert len(three) == 11


def _grid():
    steps = [Fraction(k, 8) for k in range(-20, 21)]
    return itertools.product(steps, steps)


def test_grid_region_is_constant_where_properties_are():
    """On a grid, every stable point gets a region whose representative has its properties."""
    by_index = {r.index: _expected(*r.point) for r in REGIONS}
    seen = set()
    for qs, qt in _grid():
        c = classify((qs, qt))
        exp = _expected(float(qs), float(qt))
        assert c.stable == exp["stable"]
        if not c.stable:
            assert c.region_index is None
            assert c.verdict == ("diverging" if qs + qt > 0 else "stagnating")
            continue
        seen.add(c.region_index)
        assert by_index[c.region_index] == exp
    assert seen == set(range(1, 14))


def test_no_stable_point_has_all_three_finite_width_properties():
    for qs, qt in _grid():
        c = classify((qs, qt))
        if c.stable:
            assert not (c.logits == "bounded" and c.kernel == "bounded" and c.kernel_evolves)


def test_float_inputs_are_exact():
    # thirds: on the kernel line q_sigma = -1 - s at s = -1/3
    assert classify((-2 / 3, 1 / 3)).region == "kernel line between NTK and MF"
    qs = -0.7 + 0.2  # -0.49999999999999994 in floating point
    assert qs != -0.5
    assert classify((qs, 0.25)).region_index == 9


# ----------------------------------------------------------------------------------- abc route
def _abc(a, b, c):
    return SimpleNamespace(a=list(a), b=list(b), c=c)


def standard(L):
    return _abc([0] * (L + 1), [0] + [0.5] * L, 1)


def ntk(L):
    return _abc([0] + [0.5] * L, [0] * (L + 1), 0)


def mf():
    return _abc([0, 1], [0, 0], -1)


def mup(L):
    return _abc([-0.5] + [0] * (L - 1) + [0.5], [0.5] * (L + 1), 0)


@pytest.mark.parametrize("L", [1, 2, 3])
def test_tp_standard_and_ntk_kernel_regime(L):
    for scaling in (standard(L), ntk(L)):
        c = classify(scaling)
        assert c.tp_stable and c.tp_nontrivial
        assert c.tp_kernel_regime and not c.tp_feature_learning
        assert c.r > 0
    assert classify(ntk(L)).r == Fraction(1, 2)
    assert classify(standard(L)).r == (Fraction(3, 2) if L == 1 else Fraction(1, 2))


@pytest.mark.parametrize("L", [1, 2, 3])
def test_tp_mup_feature_learning(L):
    c = classify(mup(L))
    assert c.r == 0 and c.tp_stable and c.tp_nontrivial
    assert c.tp_feature_learning and not c.tp_kernel_regime


def test_tp_mf_feature_learning_and_on_the_plane():
    c = classify(mf())
    assert c.r == 0 and c.tp_stable and c.tp_feature_learning
    assert c.region == "MF point"


def test_tp_unstable_and_per_layer_c():
    # NTK with a too large learning rate: 2 a_{L+1} + c < 1 -> unstable
    c = classify(_abc([0, 0.5], [0, 0], -1))
    assert not c.tp_stable
    # per-layer c with equal entries gives the global result
    assert classify(_abc([0, 0.5, 0.5], [0, 0, 0], [0, 0, 0])) == classify(ntk(2))


def test_abc_not_in_plane_gets_tp_verdict():
    c = classify(standard(1))  # readout rate rho^-1, the plane's would be rho^-2
    assert c.q_sigma is None and c.region is None
    assert c.stable and c.verdict == "stable"
    c = classify(_abc([0, 0.5], [0, 0], -1))
    assert not c.stable and c.verdict == "diverging"


SCALINGS = [standard(1), standard(3), ntk(1), ntk(2), mf(), mup(1), mup(3)]


@pytest.mark.parametrize("t", [-1.0, -0.25, 0.5, 2.0])
@pytest.mark.parametrize("scaling", SCALINGS)
def test_abc_symmetry_invariance(scaling, t):
    base = classify(scaling)
    n = len(scaling.a)
    c = scaling.c if isinstance(scaling.c, list) else [scaling.c] * n
    shifted = _abc([x + t for x in scaling.a], [x - t for x in scaling.b], [x - 2 * t for x in c])
    assert classify(shifted) == base
    # per-layer shifts are also symmetries once c is per layer
    ts = [t * (i + 1) / n for i in range(n)]
    per_layer = _abc(
        [x + s for x, s in zip(scaling.a, ts, strict=True)],
        [x - s for x, s in zip(scaling.b, ts, strict=True)],
        [x - 2 * s for x, s in zip(c, ts, strict=True)],
    )
    assert classify(per_layer) == base


def plane_abc(qs, qt, t=(0, 0)):
    """The plane's abc (a = 0, b = (0, -qs), c = (-qt, -qt - 2 qs)), shifted by per-layer t."""
    a, b, c = [0, 0], [0, -qs], [-qt, -qt - 2 * qs]
    return _abc(
        [x + s for x, s in zip(a, t, strict=True)],
        [x - s for x, s in zip(b, t, strict=True)],
        [x - 2 * s for x, s in zip(c, t, strict=True)],
    )


@pytest.mark.parametrize("point", [r.point for r in REGIONS] + list(NAMED_POINTS.values()))
def test_abc_and_plane_routes_agree(point):
    direct = classify(point)
    for t in [(0, 0), (0.5, -0.25), (-1, 1)]:
        via_abc = classify(plane_abc(*point, t=t))
        assert via_abc.q_sigma == direct.q_sigma and via_abc.q_tilde == direct.q_tilde
        plane_fields = {k: v for k, v in via_abc.properties().items() if not _is_tp(k)}
        assert plane_fields == {k: v for k, v in direct.properties().items() if not _is_tp(k)}
        assert via_abc.r is not None and direct.r is None


def _is_tp(key):
    return key == "r" or key.startswith("tp_")


def test_named_abc_land_on_named_points():
    assert classify(ntk(1)).region == "NTK point"
    assert classify(mup(1)).region == "MF point"


def test_accepts_objects_with_q_sigma_and_q_tilde_and_mappings():
    obj = SimpleNamespace(q_sigma=-0.5, q_tilde=0)
    assert classify(obj).region == "NTK point"
    assert classify({"q_sigma": -1, "q_tilde": 1}).region == "MF point"
    assert classify({"a": [0, 1], "b": [0, 0], "c": -1}).region == "MF point"


def test_accepts_library_scaling_objects():
    scaling = pytest.importorskip("widelimits.limits.scaling")
    assert classify(scaling.Scaling.ntk(1)).region == "NTK point"
    assert classify(scaling.Scaling.plane(-0.75, 0.5)).region_index == 7
    assert classify(scaling.Scaling.mup(3)).tp_feature_learning


# -------------------------------------------------------------------------- output and errors
def test_properties_and_str():
    c = classify(NAMED_POINTS["NTK"])
    assert isinstance(c, Classification)
    props = c.properties()
    assert props["logits_exponent"] == 0.0 and isinstance(props["q_sigma"], float)
    assert props["region_index"] == 12 and props["r"] is None
    text = str(c)
    assert "\n" not in text and "NTK point" in text and "stable" in text
    assert "TP: r = 0" in str(classify(mf()))
    with pytest.raises(AttributeError):
        c.stable = False  # frozen


@pytest.mark.parametrize(
    "bad, err",
    [
        ((1, 2, 3), ValueError),
        ((float("nan"), 0), ValueError),
        ((0, float("inf")), ValueError),
        (("x", 0), TypeError),
        (object(), TypeError),
        ("ab", TypeError),
        (42, TypeError),
        ({"foo": 1}, TypeError),
        (SimpleNamespace(a=[0, 1], b=[0], c=0), ValueError),
        (SimpleNamespace(a=[0, 1], b=[0, 0], c=[0, 0, 0]), ValueError),
        (SimpleNamespace(a=[0], b=[0], c=0), ValueError),
        (SimpleNamespace(a=[0, float("nan")], b=[0, 0], c=0), ValueError),
        (SimpleNamespace(a=3, b=[0, 0], c=0), TypeError),
        (SimpleNamespace(a=[0, 1], b=[0, 0], c="1"), TypeError),
    ],
)
def test_errors(bad, err):
    with pytest.raises(err):
        classify(bad)


# --------------------------------------------------------------------------------------- plot
def test_plot_plane_returns_figure_with_labels():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from widelimits.limits.plot import plot_plane

    fig = plot_plane()
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert len(texts) >= 13
        assert {str(i) for i in range(1, 14)} <= set(texts)
        assert {"MF", "NTK", "sym-default"} <= set(texts)
        _, ax = plt.subplots()
        assert plot_plane(ax=ax, points={}, annotate=False) is ax.figure
        plt.close(ax.figure)
    finally:
        plt.close(fig)


def test_adam_scalings_are_refused():
    from widelimits.limits import Scaling

    with pytest.raises(ValueError, match="SGD"):
        classify(Scaling.mup(2, optimizer="adam"))
    assert classify(Scaling.mup(2)).tp_feature_learning
