"""Myrtle convolutional networks: the standard strong CNN kernels on 32x32 images."""

from __future__ import annotations

import math

from .activations import ReLU
from .base import Layer
from .combinators import Serial
from .conv import Conv
from .dense import Dense
from .pooling import AvgPool, Flatten

__all__ = ["Myrtle"]

# Conv-ReLU blocks before each of the three 2x2 poolings (Shankar et al. 2020, as used by
# neural-tangents' examples): depth counts the convolutions plus the readout.
BLOCKS = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def Myrtle(
    depth: int = 5, out: int = 10, W_std: float = math.sqrt(2.0), b_std: float | None = None
) -> Serial:
    """The Myrtle CNN of ``depth`` 5, 7 or 10 for 32x32 images (NCHW).

    ``[Conv(3x3, same), ReLU] x n1, AvgPool(2), [Conv, ReLU] x n2, AvgPool(2), [Conv, ReLU] x n3,
    AvgPool(2) x 3, Flatten, Dense(out)`` with (n1, n2, n3) = (2, 1, 1), (2, 2, 2), (3, 3, 3).  The
    three final poolings take 32x32 inputs down to one pixel (global average pooling); other
    sizes keep ``size / 32`` pixels per axis before Flatten.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in BLOCKS:
        raise ValueError(f"Myrtle depth must be one of {sorted(BLOCKS)}, got {depth!r}")
    layers: list[Layer] = []
    for stage, n in enumerate(BLOCKS[depth]):
        for _ in range(n):
            layers += [Conv(None, 3, padding="same", W_std=W_std, b_std=b_std), ReLU()]
        layers += [AvgPool(2)] * (1 if stage < 2 else 3)
    layers += [Flatten(), Dense(out, W_std=W_std, b_std=b_std)]
    return Serial(*layers)
