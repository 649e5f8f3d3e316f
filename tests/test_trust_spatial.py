"""Bad inputs to the spatial layers (explicit padding, ConvTranspose, ConvLocal, N-D
convolutions, GlobalSumPool, AvgPool(normalize_edges=...)): each error has the right type and
names the offending argument."""

from __future__ import annotations

import pytest
import torch

import widelimits as wl


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


CONSTRUCTORS = [
    # padding: a name, a non-negative int, or one int / pair per axis
    (lambda: wl.Conv(padding=-1), ValueError, "padding"),
    (lambda: wl.Conv(padding=(1, -2)), ValueError, "padding"),
    (lambda: wl.Conv(padding=((1, 2, 3),)), ValueError, "padding"),
    (lambda: wl.Conv(padding=1.5), ValueError, "padding"),
    (lambda: wl.Conv(padding=True), ValueError, "padding"),
    (lambda: wl.Conv(padding=()), ValueError, "padding"),
    (lambda: wl.AvgPool(2, padding=(1, "1")), ValueError, "padding"),
    (lambda: wl.ConvLocal(padding="SAME"), ValueError, "padding"),
    (lambda: wl.ConvTranspose(padding="full"), ValueError, "padding"),
    (lambda: wl.ConvTranspose(padding=-1), ValueError, "padding"),
    # sizes of the new layers
    (lambda: wl.ConvTranspose(kernel_size=0), ValueError, "kernel_size="),
    (lambda: wl.ConvTranspose(stride=(2, 0)), ValueError, "stride="),
    (lambda: wl.ConvLocal(kernel_size=2.5), ValueError, "kernel_size="),
    (lambda: wl.ConvLocal(stride=-1), ValueError, "stride="),
    (lambda: wl.ConvTranspose(W_std=-1.0), ValueError, "W_std"),
    (lambda: wl.ConvLocal(b_std=float("nan")), ValueError, "b_std"),
    (lambda: wl.ConvTranspose(parametrization="mup"), ValueError, "parametrization"),
    (lambda: wl.ConvLocal(out=0), ValueError, "out"),
    # ImageResize
    (lambda: wl.ImageResize(0), ValueError, "size"),
    (lambda: wl.ImageResize((4, -2)), ValueError, "size"),
    (lambda: wl.ImageResize(()), ValueError, "size"),
    (lambda: wl.ImageResize(4.5), ValueError, "size"),
    (lambda: wl.ImageResize(4, method="cubic"), ValueError, "method"),
    (lambda: wl.ImageResize(4, antialias="no"), TypeError, "antialias"),
    # normalize_edges
    (lambda: wl.AvgPool(2, normalize_edges="yes"), TypeError, "normalize_edges"),
    (lambda: wl.AvgPool(2, normalize_edges=1), TypeError, "normalize_edges"),
    (lambda: wl.SumPool(2, normalize_edges=True), ValueError, "normalize_edges"),
]


@pytest.mark.parametrize("make, exc, match", CONSTRUCTORS)
def test_bad_constructor_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


KERNELS = [
    # a padding with entries for another number of spatial axes
    (wl.Serial(wl.Conv(padding=(1, 2, 3)), wl.Flatten()), _x(2, 2, 5, 5), ValueError,
     r"padding=.* does not fit inputs with 2 spatial axes"),
    (wl.Serial(wl.AvgPool(2, padding=((0, 1), (0, 1))), wl.Flatten()), _x(2, 2, 5), ValueError,
     r"padding=.* does not fit inputs with 1 spatial axes"),
    # explicit padding too small for the window
    (wl.Serial(wl.Conv(kernel_size=6, padding=(1, 0)), wl.Flatten()), _x(2, 2, 3, 8), ValueError,
     r"window of 6 does not fit a spatial size of 3 padded with 1 \+ 1 zeros"),
    # PyTorch's ConvTranspose padding crops at most kernel_size - 1 per side
    (wl.Serial(wl.ConvTranspose(kernel_size=3, padding=3), wl.Flatten()), _x(2, 2, 4, 4),
     ValueError, r"padding=\(3, 3\) crops .*kernel_size - 1 = 2"),
    # outputs past the memory: huge explicit padding, huge up-sampling
    (wl.Serial(wl.Conv(padding=10**6), wl.Flatten(), wl.Dense(1)), _x(2, 2, 3, 3), ValueError,
     r"Conv\(padding=1000000\): the output kernel .* use less padding"),
    (wl.Serial(wl.ConvTranspose(stride=10**6), wl.Flatten(), wl.Dense(1)), _x(2, 2, 3, 3),
     ValueError, r"ConvTranspose\(stride=1000000\): the output kernel"),
    (wl.Serial(wl.ImageResize((4, 4, 4)), wl.Flatten()), _x(2, 2, 5, 5), ValueError,
     r"ImageResize\(size=\(4, 4, 4\)\) does not fit inputs with 2 spatial axes"),
    (wl.Serial(wl.Dense(), wl.ImageResize(4)), _x(2, 4), ValueError,
     "ImageResize needs spatial inputs"),
    (wl.Serial(wl.ImageResize(10**6), wl.GlobalAvgPool()), _x(2, 2, 3, 3), ValueError,
     r"ImageResize\(size=1000000\): the output kernel"),
    # flat inputs
    (wl.Serial(wl.Dense(), wl.ConvTranspose(), wl.Flatten()), _x(2, 4), ValueError,
     "ConvTranspose needs spatial inputs"),
    (wl.Serial(wl.Dense(), wl.ConvLocal(), wl.Flatten()), _x(2, 4), ValueError,
     "ConvLocal needs spatial inputs"),
    (wl.Serial(wl.Dense(), wl.GlobalSumPool()), _x(2, 4), ValueError,
     "GlobalSumPool needs spatial inputs"),
    # a kernel_size for another number of axes
    (wl.Serial(wl.ConvTranspose(kernel_size=(2, 2, 2)), wl.Flatten()), _x(2, 2, 5, 5),
     ValueError, r"kernel_size=\(2, 2, 2\) does not fit inputs with 2"),
    (wl.Serial(wl.ConvLocal(stride=(1, 2)), wl.Flatten()), _x(2, 2, 5), ValueError,
     r"stride=\(1, 2\) does not fit inputs with 1"),
]  # fmt: skip


@pytest.mark.parametrize("net, x, exc, match", KERNELS)
def test_bad_kernel_input(net, x, exc, match):
    with pytest.raises(exc, match=match):
        net.kernel(x, get="nngp")


BUILDS = [
    # finite modules exist for 1, 2 or 3 spatial axes (the kernel works for any number)
    (wl.Serial(wl.Conv(), wl.Flatten()), (2, 3, 3, 3, 3), ValueError,
     r"Conv builds finite networks for 1, 2 or 3 spatial axes.*in_features has 4"),
    (wl.Serial(wl.ConvTranspose(), wl.Flatten()), (2, 3, 3, 3, 3), ValueError,
     r"ConvTranspose builds finite networks .*in_features has 4"),
    (wl.Serial(wl.AvgPool(1), wl.Flatten()), (2, 3, 3, 3, 3), ValueError,
     r"AvgPool builds finite networks .*in_features has 4"),
    (wl.Serial(wl.ConvTranspose(kernel_size=2, padding=(0, 2)), wl.Flatten()), (2, 4, 4),
     ValueError, r"padding=\(2, 2\) crops"),
    (wl.Serial(wl.Dense(), wl.ConvLocal()), 4, ValueError,
     r"ConvLocal needs spatial inputs: build the network with in_features"),
    (wl.Serial(wl.Dense(), wl.GlobalSumPool()), 4, ValueError,
     r"GlobalSumPool needs spatial inputs: build the network with in_features"),
    (wl.Serial(wl.Conv(kernel_size=4, padding=((1, 0), 0)), wl.Flatten()), (2, 2, 6),
     ValueError, r"window of 4 does not fit a spatial size of 2 padded with 1 \+ 0 zeros"),
]  # fmt: skip


@pytest.mark.parametrize("net, shape, exc, match", BUILDS)
def test_bad_build(net, shape, exc, match):
    with pytest.raises(exc, match=match):
        net.build(shape, 4, seed=0)


def test_four_spatial_axes_have_a_kernel():
    # the error above says the kernel works: it does
    net = wl.Serial(wl.Conv(kernel_size=2), wl.ReLU(), wl.GlobalAvgPool())
    assert net.kernel(_x(2, 1, 2, 2, 2, 2), get="nngp").shape == (2, 2)
