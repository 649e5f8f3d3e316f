"""Fully connected layer."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..kernel import Kernel
from .base import BuildContext, Layer

__all__ = ["Dense"]

PARAMETRIZATIONS = ("ntk", "standard")


def _check_std(name: str, value, allow_none: bool) -> None:
    if value is None:
        if not allow_none:
            raise ValueError(f"{name} must be a number, got None")
        return
    v = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {v}")


class Dense(Layer):
    r"""Fully connected layer ``z = W_std / sqrt(n_in) * W x + b_std * b`` (NTK parametrization).

    Args:
        out: ``None`` for a hidden layer whose width is the infinite dimension (``build`` gives it
            the ``width`` it is asked for); an integer for a layer of fixed width, typically the
            readout (``out=k`` for k outputs).  The infinite-width kernels do not depend on ``out``,
            except the standard-parametrization NTK, which grows with the width it multiplies.
        W_std: weight standard deviation sigma_w.
        b_std: bias standard deviation sigma_b; ``None`` for no bias.
        parametrization: ``"ntk"`` — W, b ~ N(0, 1) and the scale in the forward pass — or
            ``"standard"`` — W ~ N(0, sigma_w^2 / n_in), b ~ N(0, sigma_b^2), plain forward pass.

    Kernel map (both parametrizations give the same NNGP), with input state (K, Theta)::

        K'     = sigma_w^2 K + sigma_b^2
        Theta' = K' + sigma_w^2 Theta                          (ntk)
        Theta' = n_in K + sigma_w^2 Theta + [1 if bias]        (standard)

    The NNGP of the input layer is K^0(x, x') = x . x' / n_in.
    """

    has_parameters = True

    def __init__(
        self,
        out: int | None = None,
        W_std: float | Tensor = 1.0,
        b_std: float | Tensor | None = None,
        parametrization: str = "ntk",
    ) -> None:
        if out is not None and (not isinstance(out, int) or isinstance(out, bool) or out < 1):
            raise ValueError(f"Dense(out=...) must be None (hidden) or a positive int, got {out!r}")
        _check_std("W_std", W_std, allow_none=False)
        _check_std("b_std", b_std, allow_none=True)
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}"
            )
        self.out = out
        self.W_std = W_std
        self.b_std = b_std
        self.parametrization = parametrization

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError(
                "Dense got several branches; merge them first with FanInSum, FanInConcat or "
                "FanInProd"
            )
        w2 = self.W_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        unit_w = not isinstance(w2, Tensor) and w2 == 1.0
        no_b = not isinstance(b2, Tensor) and b2 == 0.0

        def affine(t: Tensor) -> Tensor:  # skips the no-op multiply and add (a pass each)
            t = t if unit_w else w2 * t
            return t if no_b else t + b2

        out = k.map_all(affine).replace(is_gaussian=True, width=self.out)
        if k.ntk is None:
            return out
        if self.parametrization == "ntk":
            ntk = out.nngp + (k.ntk if unit_w else w2 * k.ntk)
        else:
            if k.width is None:
                raise ValueError(
                    "the standard-parametrization NTK grows with the width of the layer before "
                    "this Dense, which is infinite here; give that layer a finite width "
                    "(Dense(out=512, parametrization='standard')) or use parametrization='ntk'"
                )
            ntk = k.width * k.nngp + w2 * k.ntk
            if self.b_std is not None:
                ntk = ntk + 1.0
        return out.replace(ntk=ntk)

    def build_module(self, in_features: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        if not isinstance(in_features, int):
            raise TypeError("Dense got several branches; merge them first with a FanIn layer")
        out = self.out if self.out is not None else ctx.next_width()
        param = ctx.parametrization or self.parametrization
        module = DenseModule(in_features, out, self.W_std, self.b_std, param, ctx)
        return module, out


class DenseModule(nn.Module):
    """The finite fully connected layer built by `Dense` (acts on the feature axis 1)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        W_std: float | Tensor,
        b_std: float | Tensor | None,
        parametrization: str,
        ctx: BuildContext,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.parametrization = parametrization
        self.W_std = float(W_std)
        self.b_std = None if b_std is None else float(b_std)
        weight = ctx.randn(out_features, in_features)
        bias = None if b_std is None else ctx.randn(out_features)
        if parametrization == "standard":
            weight = weight * (self.W_std / math.sqrt(in_features))
            bias = None if bias is None else bias * self.b_std
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    @property
    def weight_multiplier(self) -> float:
        """c in z = c W a + d b (what the structured empirical NTK needs to know)."""
        if self.parametrization == "standard":
            return 1.0
        return self.W_std / math.sqrt(self.in_features)

    @property
    def bias_multiplier(self) -> float:
        """d in z = c W a + d b."""
        return 1.0 if self.parametrization == "standard" else float(self.b_std or 0.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim > 2:  # spatial inputs (N, C, ...): act on the channel axis
            return (
                self.forward(x.movedim(1, -1).reshape(-1, x.shape[1]))
                .reshape(*x.movedim(1, -1).shape[:-1], self.out_features)
                .movedim(-1, 1)
            )
        if self.parametrization == "standard":
            return torch.nn.functional.linear(x, self.weight, self.bias)
        y = torch.nn.functional.linear(x, self.weight) * (self.W_std / math.sqrt(self.in_features))
        if self.bias is not None:
            y = y + self.b_std * self.bias
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_features} -> {self.out_features}, W_std={self.W_std}, b_std={self.b_std}, "
            f"parametrization={self.parametrization!r}"
        )
