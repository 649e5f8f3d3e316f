"""Bad constructor arguments of every layer in widelimits.layers' combinators, activations,
elementwise, conv, pooling and myrtle modules: each is refused at construction (or, for sizes
that only fail against an input, at kernel / build time) with the exception type and a message
that names the offending argument.  Also: sizes that cannot fit are refused before allocating.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import widelimits as wl

NAN, INF = float("nan"), float("inf")
HUGE = 10**40


def _cases():
    """(id, constructor, exception type, regex the message must match)."""
    cases = []

    def add(id_, make, exc, match):
        cases.append(pytest.param(make, exc, match, id=id_))

    # --- FanOut(n)
    for bad in (0, -1, 1.5, "2", True, None, NAN, 10**8, HUGE, [2]):
        add(f"FanOut-{bad!r}", lambda bad=bad: wl.FanOut(bad), ValueError, r"FanOut\(n\)")
    # --- combinators take layers
    for name in ("Serial", "Parallel"):
        for bad in (wl.ReLU, 3, "Dense()", None):
            add(
                f"{name}-{bad!r}",
                lambda name=name, bad=bad: getattr(wl, name)(wl.Dense(), bad),
                TypeError,
                r"expected widelimits layers",
            )
    add("Serial-class-hint", lambda: wl.Serial(wl.Dense, wl.ReLU()), TypeError, r"parentheses")
    for bad in (3, "Dense", wl.Dense):
        add(
            f"Residual-shortcut-{bad!r}",
            lambda bad=bad: wl.Residual(wl.Dense(), shortcut=bad),
            TypeError,
            "shortcut",
        )
    add("Residual-block", lambda: wl.Residual(wl.Dense(), 3), TypeError, "widelimits layers")
    # --- Conv sizes and options
    for arg in ("kernel_size", "stride"):
        for bad in (0, -3, 2.5, "3", True, None, NAN, 2**31, HUGE, (), (3, 0),
                    (3, "3"), (3, True), [3, -1]):  # fmt: skip
            add(
                f"Conv-{arg}-{bad!r}",
                lambda arg=arg, bad=bad: wl.Conv(**{arg: bad}),
                ValueError,
                rf"{arg}=",
            )
    for bad in ("SAME", "full", -3, None, ["same"], b"same", (1, -1)):
        add(f"Conv-padding-{bad!r}", lambda bad=bad: wl.Conv(padding=bad), ValueError, "padding")
    for bad in (0, -1, 2.5, "8", True):
        add(f"Conv-out-{bad!r}", lambda bad=bad: wl.Conv(bad), ValueError, r"out")
    for bad in (-1.0, NAN, INF):
        add(f"Conv-W_std-{bad!r}", lambda bad=bad: wl.Conv(W_std=bad), ValueError, "W_std")
    add("Conv-W_std-None", lambda: wl.Conv(W_std=None), TypeError, "W_std")
    for bad in (-0.5, NAN, INF):
        add(f"Conv-b_std-{bad!r}", lambda bad=bad: wl.Conv(b_std=bad), ValueError, "b_std")
    for bad in ("NTK", "mup", None):
        add(
            f"Conv-parametrization-{bad!r}",
            lambda bad=bad: wl.Conv(parametrization=bad),
            ValueError,
            "parametrization",
        )
    for bad in ("yes", 1, None):
        add(f"Conv-trainable-{bad!r}", lambda bad=bad: wl.Conv(trainable=bad), ValueError,
            "trainable")  # fmt: skip
    # --- pooling
    for cls in ("AvgPool", "SumPool"):
        for arg in ("window", "stride"):
            for bad in (0, -2, 1.5, "2", True, NAN, 2**31, (2, 0)):
                add(
                    f"{cls}-{arg}-{bad!r}",
                    lambda cls=cls, arg=arg, bad=bad: getattr(wl, cls)(**{"window": 2, arg: bad}),
                    ValueError,
                    rf"{arg}=",
                )
        for bad in ("VALID", -1, None):
            add(f"{cls}-padding-{bad!r}", lambda cls=cls, bad=bad: getattr(wl, cls)(2, padding=bad),
                ValueError, "padding")  # fmt: skip
    # --- Myrtle
    for bad in (4, 6, "5", True, 5.5, [5], None):
        add(f"Myrtle-depth-{bad!r}", lambda bad=bad: wl.Myrtle(bad), ValueError, "depth")
    add("Myrtle-W_std", lambda: wl.Myrtle(5, W_std=-1.0), ValueError, "W_std")
    # --- activations with real parameters
    real_params = {
        "ABReLU": ("a", "b"), "LeakyReLU": ("alpha",), "Erf": ("a", "b", "c"),
        "Sin": ("a", "b", "c"), "Cos": ("a", "b", "c"), "Exp": ("a", "b"),
        "Gaussian": ("a", "b"), "RBF": ("gamma",),
    }  # fmt: skip
    for cls, params in real_params.items():
        base = {"a": 1.0, "b": 1.0} if cls == "ABReLU" else {}
        for p in params:
            for bad in ("1.5", NAN, INF, None, [1.0], True):
                add(
                    f"{cls}-{p}-{bad!r}",
                    lambda cls=cls, p=p, bad=bad, base=base: getattr(wl, cls)(**{**base, p: bad}),
                    ValueError,
                    rf"\b{p}\b",
                )
    add("RBF-gamma-negative", lambda: wl.RBF(-1.0), ValueError, "gamma")
    for bad in ("no", 1, None):
        add(f"GELU-approximate-{bad!r}", lambda bad=bad: wl.GELU(approximate=bad), ValueError,
            "approximate")  # fmt: skip
    add("GELU-approximate-True", lambda: wl.GELU(approximate=True), ValueError, "approximate")
    # --- degrees
    limits = {"Monomial": 151, "Hermite": 170, "RectifiedMonomial": 1000}
    for cls, limit in limits.items():
        for bad in (-1, 2.5, "2", True, None, NAN, limit + 1, 200 if limit < 200 else 10**6, HUGE):
            add(f"{cls}-degree-{bad!r}", lambda cls=cls, bad=bad: getattr(wl, cls)(bad),
                ValueError, "degree")  # fmt: skip
    add("Hermite-assume_unit_variance", lambda: wl.Hermite(2, assume_unit_variance="yes"),
        ValueError, "assume_unit_variance")  # fmt: skip
    # --- Polynomial coefficients
    for bad in (3.0, "123", None, b"12"):
        add(f"Polynomial-{bad!r}", lambda bad=bad: wl.Polynomial(bad), ValueError, "coef")
    for i, bad in ((1, NAN), (0, INF), (2, "x"), (1, None), (0, [1.0])):
        coef = [1.0, 2.0, 3.0]
        coef[i] = bad
        add(f"Polynomial-coef[{i}]-{bad!r}", lambda coef=coef: wl.Polynomial(coef), ValueError,
            rf"coef\[{i}\]")  # fmt: skip
    add("Polynomial-degree-296", lambda: wl.Polynomial([0.0] * 296 + [1.0]), ValueError, "coef")
    add("Polynomial-huge-coef", lambda: wl.Polynomial([0.0, 0.0, 1e308]), ValueError, "coef")
    # --- Elementwise
    add("Elementwise-nothing", lambda: wl.Elementwise(), ValueError, "fn")
    add("Elementwise-fn", lambda: wl.Elementwise("tanh"), TypeError, "fn")
    add("Elementwise-nngp_fn", lambda: wl.Elementwise(torch.tanh, nngp_fn=3), TypeError, "nngp_fn")
    add("Elementwise-ntk_fn", lambda: wl.Elementwise(torch.tanh, ntk_fn=lambda a, b, c: c),
        ValueError, "ntk_fn")  # fmt: skip
    for bad in (0, -1, 301, 2.0, "64", True, None):
        add(f"Elementwise-degree-{bad!r}", lambda bad=bad: wl.Elementwise(torch.tanh, degree=bad),
            ValueError, "degree")  # fmt: skip
    for bad in (0, -5, 1.5, "8", True):
        add(
            f"Elementwise-chunk_size-{bad!r}",
            lambda bad=bad: wl.Elementwise(torch.tanh, chunk_size=bad),
            ValueError,
            "chunk_size",
        )
    return cases


CASES = _cases()


@pytest.mark.parametrize("make, exc, match", CASES)
def test_bad_constructor_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_case_count():
    assert len(CASES) >= 200


# ---------------------------------------------------------------------------------------------
# Sizes against the inputs: refused at kernel / build time, naming the argument, before any
# large allocation; the infinite-width kernel itself stays cheap and exact.

IMG = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(
    "net, name",
    [
        (wl.Serial(wl.Conv(None, 10**9), wl.ReLU(), wl.Flatten(), wl.Dense(1)), "kernel_size"),
        (wl.Serial(wl.Conv(None, 10**9, padding="circular"), wl.ReLU(), wl.GlobalAvgPool()),
         "kernel_size"),
        (wl.Serial(wl.Conv(None, (3, 10**9), stride=10**9), wl.ReLU(), wl.Flatten()),
         "kernel_size"),
        (wl.Serial(wl.Conv(None, 3), wl.AvgPool(10**9, stride=1, padding="same"), wl.Flatten()),
         "window"),
        (wl.Serial(wl.Conv(None, 3), wl.SumPool(10**9, padding="circular"), wl.Flatten()),
         "window"),
    ],
    ids=["conv-same", "conv-circular", "conv-stride", "avgpool-same", "sumpool-circular"],
)  # fmt: skip
def test_huge_windows_give_a_finite_kernel_quickly_and_refuse_to_build(net, name):
    k = net.kernel(IMG, get="nngp")
    assert bool(torch.isfinite(k).all())
    with pytest.raises(ValueError, match=rf"{name}=.*GiB"):
        net.build((1, 4, 4), 4, seed=0)


def test_huge_conv_channels_refused_at_build():
    with pytest.raises(ValueError, match=r"Conv\(kernel_size=3\).*weights of 1000000000000 x"):
        wl.Serial(wl.Conv(10**12), wl.Flatten()).build((1, 4, 4), 4, seed=0)


def test_valid_window_larger_than_the_image_names_the_sizes():
    net = wl.Serial(wl.AvgPool(5), wl.Flatten())
    with pytest.raises(ValueError, match="window of 5 does not fit a spatial size of 4"):
        net.kernel(IMG, get="nngp")
    with pytest.raises(ValueError, match="window of 5 does not fit a spatial size of 4"):
        net.build((1, 4, 4), 4, seed=0)


def test_window_tuple_length_against_the_input():
    net = wl.Serial(wl.Conv(kernel_size=(3,)), wl.Flatten(), wl.Dense(1))
    with pytest.raises(ValueError, match=r"kernel_size=\(3,\) does not fit inputs with 2"):
        net.kernel(IMG)


def test_numpy_integer_sizes_are_accepted():
    conv = wl.Conv(2, kernel_size=np.int32(3), stride=(np.int64(1), 1))
    assert conv.kernel_size == 3 and conv.stride == (1, 1)
    assert wl.FanOut(2).n == 2
    assert math.isfinite(float(wl.Serial(conv, wl.Flatten()).kernel(IMG, get="nngp")[0, 0]))
