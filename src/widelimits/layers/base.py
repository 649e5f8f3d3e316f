"""The `Layer` interface shared by every building block.

A layer has two sides, kept next to each other in one class:

- infinite width: ``kernel_fn(k)`` maps the input `Kernel` state to the output state;
- finite width: ``build_module(in_features, ctx)`` returns a ``torch.nn.Module`` and its number of
  output features.  As the hidden widths grow, the module's outputs at initialisation become the
  Gaussian process with the NNGP kernel, and its empirical NTK tends to the analytic NTK.

Branching layers (`FanOut`, `Parallel`, `FanIn*`) take or return tuples of states / tensors.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from ..kernel import Kernel
from ..limits.scaling import Scaling

if TYPE_CHECKING:
    from ._chain import Step

__all__ = ["Layer", "BuildContext", "SpatialFeatures", "check_number"]


def check_number(
    owner: str,
    name: str,
    value,
    *,
    allow_none: bool = False,
    allow_tensor: bool = True,
    below: float | None = None,
    what: str = "a finite non-negative number",
) -> None:
    """Raise unless ``value`` is a finite real number >= 0 (and < ``below`` if given).

    Plain numbers (not bool) and, if ``allow_tensor``, 0-dimensional floating tensors (e.g. a
    hyperparameter that requires grad) are accepted.  Errors name ``owner(name=...)``.
    """
    where = f"{owner}({name}=...)"
    if value is None:
        if allow_none:
            return
        raise TypeError(f"{where} must be a number, got None")
    if isinstance(value, Tensor):
        if not allow_tensor:
            raise TypeError(f"{where} must be a plain number, got a tensor: pass float({name})")
        if value.ndim != 0:
            raise ValueError(
                f"{where} must be a single number, got a tensor of shape {tuple(value.shape)}; "
                "one layer has one value (pass a 0-dimensional tensor)"
            )
        if not value.is_floating_point():
            raise TypeError(
                f"{where} must be a real floating number, got a {value.dtype} tensor; pass "
                f"a float or {name}.double()"
            )
        number = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        number = float(value)
    else:
        raise TypeError(f"{where} must be {what}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(number) or number < 0 or (below is not None and number >= below):
        raise ValueError(f"{where} must be {what}, got {number}")


@dataclass(frozen=True)
class SpatialFeatures:
    """Features of a spatial representation in a finite build: ``channels`` x ``size`` pixels."""

    channels: int
    size: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.channels * math.prod(self.size)


State = Kernel | tuple  # a kernel state, or a tuple of them between FanOut and FanIn
# number of features (or channels and pixels), or a tuple of them between FanOut and FanIn
Features = int | SpatialFeatures | tuple


@dataclass
class BuildContext:
    """What `build` needs while it walks the description: hidden widths, seed, overrides."""

    widths: Iterator[int]
    generator: torch.Generator
    parametrization: str | Scaling | None = None
    dtype: torch.dtype = torch.float32
    hidden_widths_used: list[int] = field(default_factory=list)
    dense_layers_built: int = 0

    @classmethod
    def make(
        cls,
        width: int | Sequence[int],
        parametrization: str | Scaling | None,
        seed: int | None,
        dtype: torch.dtype,
    ) -> BuildContext:
        if isinstance(width, int):
            if width < 1:
                raise ValueError(f"width must be a positive integer, got {width}")

            def repeat() -> Iterator[int]:
                while True:
                    yield width

            widths = repeat()
        else:
            widths_list = [int(w) for w in width]
            if any(w < 1 for w in widths_list):
                raise ValueError(f"every hidden width must be positive, got {widths_list}")
            widths = iter(widths_list)
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else torch.seed())
        return cls(widths, generator, parametrization, dtype)

    def next_width(self) -> int:
        try:
            w = next(self.widths)
        except StopIteration:
            raise ValueError(
                "build() got fewer hidden widths than the network has hidden layers "
                f"(used {len(self.hidden_widths_used)}); pass one width per hidden Dense layer "
                "or a single integer"
            ) from None
        self.hidden_widths_used.append(w)
        return w

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.generator, dtype=self.dtype)


class Layer:
    """Base class of all layers.  Subclasses override `kernel_fn` and `build_module`."""

    has_parameters: bool = False
    """Whether the finite module has trainable parameters (i.e. contributes to the NTK)."""
    mixes_pixels: bool = False
    """Whether the kernel map reads pairs of different pixels (pooling): then spatial kernels
    need the full pixel-pair layout instead of the per-pixel diagonal."""

    def kernel_fn(self, k: State) -> State:
        raise NotImplementedError

    def build_module(self, in_features: Features, ctx: BuildContext) -> tuple[nn.Module, Features]:
        raise NotImplementedError

    def chain_op(self, k: Kernel, size: tuple[int, ...]) -> Step | None:
        """This layer as one step of a compiled run over flat or per-pixel tiles
        (`widelimits.layers._chain`), given the state before it (whose flags are current, its
        tensors those of the run's start) and the spatial shape ``size`` before it (``()`` when
        flat); or ``None`` (the default): the layer runs on its own."""
        return None

    def children(self) -> Sequence[Layer]:
        """Sub-layers of a combinator (empty for a leaf layer)."""
        return ()

    def any_parameters(self) -> bool:
        return self.has_parameters or any(c.any_parameters() for c in self.children())

    def any_mixes_pixels(self) -> bool:
        return self.mixes_pixels or any(c.any_mixes_pixels() for c in self.children())

    def hyperparameter_tensors(self) -> list[Tensor]:
        """Tensors among this layer's hyperparameters (e.g. a ``W_std`` requiring grad)."""
        own = [v for v in vars(self).values() if isinstance(v, Tensor)]
        return own + [t for c in self.children() for t in c.hyperparameter_tensors()]

    def kernel(
        self,
        x1,
        x2=None,
        get: str | Sequence[str] = ("nngp", "ntk"),
        *,
        diagonal: bool = False,
        tile_size: int | None = None,
        memory_budget: int | None = None,
        progress: bool | None = None,
        threads: int | None = None,
        pattern=None,
        mask_constant: float | None = None,
    ) -> Kernel | Tensor:
        """Closed-form infinite-width kernels between the rows of ``x1`` and ``x2``.

        Args:
            x1: inputs of shape (N1, features), or channels-first (N1, C, H, W) images /
                (N1, C, L) sequences for convolutional networks (axis 1 is always the channels:
                pass channels-last images as ``x.permute(0, 3, 1, 2)``; a shape that looks
                channels-last, e.g. (N, 32, 32, 3), gets a `widelimits.LayoutWarning`); a dense
                torch tensor or numpy array (float32 or float64; the result has the same dtype
                and device).  Sparse tensors are refused: pass ``x1.to_dense()``.
            x2: inputs (N2, ...) shaped like x1, or ``None`` for ``x1`` against itself (only the
                upper triangle of tiles is computed; its diagonal pairs each example with
                itself, which matters for `Dropout` only).  Rows of x2 equal to rows of x1 get
                the value of an example with itself, bit for bit in most networks, whatever
                tile or batch they fall in.
            get: ``"nngp"``, ``"ntk"`` or a tuple of both.  A single name returns that tensor.
            diagonal: return only k(x, x) for each row of ``x1`` (shape (N1,)).
            tile_size: a positive int, the edge (in examples) of the square tiles the kernel
                is computed in (default: tiles of about 512 x 512 kernel entries on CPU and
                8192 x 8192 on CUDA, counting every pixel pair, smaller if ``memory_budget``
                requires).
            memory_budget: a positive int, the bytes the working tiles may use, all tiles in
                flight together (default: a quarter of the memory available now).  The
                (N1, N2) result itself must fit in memory.
            progress: show a progress bar (default: for kernels of ``2**26`` entries or more).
            threads: a positive int, the threads the tiles are spread over, each tile on one
                torch thread (default: ``torch.get_num_threads()``).  The result does not depend
                on it, bit for bit (gradients through it: to rounding).  A single tile runs
                on one thread.
            pattern: the graphs of the examples, for networks with `Aggregate` layers (every
                `Aggregate` reads the same one): a tensor whose first axis runs over the rows
                of ``x1`` when ``x2`` is ``None``, else a pair ``(pattern1, pattern2)`` for
                ``x1`` and ``x2``.  Its form (dense adjacency or edge list) is `Aggregate`'s.
                The tiles slice it along with the examples.
            mask_constant: a number marking padded positions of variable-length sequences
                (or images): entries equal to it are zeroed, and a position whose channels
                all equal it is ignored by `GlobalSelfAttention` and `GlobalAvgPool`
                (`widelimits.layers.masking`; ``float("nan")`` matches NaN entries).  Default
                ``None``: no padding.

        Returns:
            A `Kernel` whose ``.nngp`` and ``.ntk`` are (N1, N2) tensors (the per-output kernels
            of a readout), or the single tensor asked for.  A network that ends with spatial
            features (no Flatten or global pooling) returns ``(N1, N2, *S)`` per-pixel kernels, or
            ``(N1, N2, *S, *S)`` for every pixel pair if it pools.

        Spatial inputs use the per-pixel layout when no layer pools (a network ending in Flatten)
        and the full pixel-pair layout otherwise (`Kernel` explains both); the work per pair of
        examples grows like the number of pixels, or its square.
        """
        from .._compute import compute_kernel

        return compute_kernel(
            self, x1, x2, get, diagonal=diagonal, tile_size=tile_size,
            memory_budget=memory_budget, progress=progress, threads=threads, pattern=pattern,
            mask_constant=mask_constant,
        )  # fmt: skip

    def build(
        self,
        in_features: int | Sequence[int],
        width: int | Sequence[int],
        parametrization: str | Scaling | None = None,
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> nn.Module:
        r"""The finite ``torch.nn.Module`` of this description.

        Args:
            in_features: number of input features, or the shape of one example,
                ``(C, H, W)`` or ``(C, L)``, for convolutional networks.
            width: width of every hidden layer (``Dense(out=None)``), or one width per hidden
                layer in order.
            parametrization: overrides every Dense layer's parametrization: ``"ntk"``,
                ``"standard"``, or a `widelimits.Scaling` (one entry per Dense layer, in order;
                init std, forward multiplier and learning-rate factor scale with
                :math:`\rho` = ``width / scaling.ref_width``; see `widelimits.limits.scaling`).
            seed: seed of the weight initialisation (random when ``None``).
            dtype: parameter dtype.

        As the widths grow, the outputs at initialisation tend to a Gaussian process with this
        description's NNGP kernel, and the empirical NTK to its analytic NTK.
        """
        if parametrization not in (None, "ntk", "standard") and not isinstance(
            parametrization, Scaling
        ):
            raise ValueError(
                "parametrization must be 'ntk', 'standard' or a widelimits.Scaling, got "
                f"{parametrization!r}"
            )
        in_features = _input_features(in_features)
        ctx = BuildContext.make(width, parametrization, seed, dtype)
        module, out = self.build_module(in_features, ctx)
        if isinstance(out, tuple):
            raise ValueError("the network ends with unmerged branches; end it with a FanIn layer")
        if (
            isinstance(parametrization, Scaling)
            and ctx.dense_layers_built != parametrization.n_layers
        ):
            raise ValueError(
                f"the scaling has {parametrization.n_layers} layers but the network has "
                f"{ctx.dense_layers_built} Dense layers; give one exponent per Dense layer"
            )
        if not isinstance(width, int) and next(ctx.widths, None) is not None:
            raise ValueError(
                f"build() got more widths than the network's {len(ctx.hidden_widths_used)} "
                "hidden layers"
            )
        return module

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "layers"
        )
        return f"{type(self).__name__}({args})"


def _input_features(in_features) -> int | SpatialFeatures:
    """``build``'s ``in_features`` as an int (flat) or `SpatialFeatures` (C, *S)."""
    shape = (in_features,) if isinstance(in_features, int) else tuple(in_features)
    if not 1 <= len(shape) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape
    ):
        raise ValueError(
            "in_features must be a positive integer, or the shape (C, H, W), (C, L) or (C, *S) "
            f"of one example, got {in_features!r}"
        )
    return shape[0] if len(shape) == 1 else SpatialFeatures(shape[0], shape[1:])
