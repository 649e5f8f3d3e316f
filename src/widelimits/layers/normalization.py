"""Layer normalisation and dropout."""

from __future__ import annotations

from torch import Tensor, nn

from ..kernel import Kernel
from .base import BuildContext, Layer, check_number

__all__ = ["LayerNorm", "Dropout"]


class LayerNorm(Layer):
    r"""Normalises each example over its features: :math:`x / \sqrt{\overline{x_i^2} + \epsilon}`.

    The mean over features of a centred Gaussian field vanishes at infinite width and the squared
    norm concentrates on :math:`K(x, x)`, so with
    :math:`s = \sqrt{(K(x, x) + \epsilon)\, (K(x', x') + \epsilon)}`:

    .. math::

        K'(x, x') = K(x, x') / s, \qquad \Theta'(x, x') = \Theta(x, x') / s

    The input must be Gaussian (after Dense or a sum of such branches); after an activation the
    finite layer's centring would change the kernel, so that placement raises an error.
    The finite side is ``torch.nn.LayerNorm`` without affine parameters.
    """

    def __init__(self, eps: float = 1e-12) -> None:
        check_number("LayerNorm", "eps", eps)
        self.eps = float(eps)

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("LayerNorm got several branches; merge them first")
        if not k.is_gaussian:
            raise ValueError(
                "LayerNorm is supported on Gaussian (pre-activation) inputs only: place it right "
                "after a Dense layer or after a FanInSum of such branches"
            )
        k11, k22 = k.variances()
        scale = ((k11 + self.eps) * (k22 + self.eps)).rsqrt()
        ntk = None if k.ntk is None else k.ntk * scale

        # The variances go through the same rsqrt as the kernel, so that an example paired with
        # itself keeps a correlation of exactly 1 (arccos would magnify a rounding difference).
        def normalise(cov: Tensor) -> Tensor:
            v1, v2 = k.self_variances(cov)
            return cov * ((v1 + self.eps) * (v2 + self.eps)).rsqrt()

        cov1 = normalise(k.cov1)
        cov2 = cov1 if k.cov2 is k.cov1 else normalise(k.cov2)
        return k.replace(nngp=k.nngp * scale, ntk=ntk, cov1=cov1, cov2=cov2)

    def build_module(self, in_features, ctx: BuildContext):
        return FeatureLayerNorm(self.eps), in_features


class FeatureLayerNorm(nn.Module):
    """Layer norm over the feature axis 1 (works for (N, C) and (N, C, ...)), no affine part."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        return centred * (centred.pow(2).mean(dim=1, keepdim=True) + self.eps).rsqrt()


class Dropout(Layer):
    r"""Dropout with drop probability ``p`` (kept units scaled by :math:`1 / (1 - p)`), training.

    Masks are independent across examples (and pixels), so only a unit paired with itself
    changes: :math:`K'(x, x') = K(x, x') / (1 - p)` if x and x' are the same example (and pixel),
    else :math:`K'(x, x') = K(x, x')`, and the same for :math:`\Theta`.  The output is not
    Gaussian: follow it by a Dense layer.  The finite side is ``torch.nn.Dropout(p)``; it is
    active while the module is in training mode.
    """

    def __init__(self, p: float) -> None:
        check_number("Dropout", "p", p, below=1.0, what="a drop probability 0 <= p < 1")
        self.p = float(p)

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("Dropout got several branches; merge them first")
        factor = 1.0 / (1.0 - self.p)
        pixels = k.pixel_eye()
        mask = k.same_example_mask()
        if pixels is not None and mask is not None:
            mask = mask & pixels

        def scale(t: Tensor, mask: Tensor | None) -> Tensor:
            return t * factor if mask is None else t.where(~mask, t * factor)

        cov1 = scale(k.cov1, pixels)
        cov2 = cov1 if k.cov2 is k.cov1 else scale(k.cov2, pixels)
        if mask is None:  # no example meets itself: only the variances change
            return k.replace(cov1=cov1, cov2=cov2, is_gaussian=k.is_gaussian and self.p == 0)
        ntk = None if k.ntk is None or k.ntk.ndim == 0 else scale(k.ntk, mask)
        out = k.replace(nngp=scale(k.nngp, mask), ntk=ntk, cov1=cov1, cov2=cov2)
        return out.replace(is_gaussian=False) if self.p > 0 else out

    def build_module(self, in_features: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        return nn.Dropout(self.p), in_features
