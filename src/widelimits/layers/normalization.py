"""Layer normalisation and dropout."""

from __future__ import annotations

from torch import Tensor, nn

from ..kernel import Kernel
from .base import BuildContext, Layer, SpatialFeatures, check_number

__all__ = ["LayerNorm", "Dropout"]


class LayerNorm(Layer):
    r"""Normalises each example over its (infinitely many) channels, and optionally over
    spatial axes: :math:`x \mapsto (x - \bar x) / \sqrt{\overline{(x - \bar x)^2} +
    \epsilon}`, the means :math:`\bar{\cdot}` taken over the ``axis`` axes.

    Args:
        eps: added to the variance, a finite number >= 0.
        axis: the axes of the ``(N, C, *S)`` (or ``(N, C)``) features to normalise over, an
            int or a tuple: they must include the channels, 1 (the default: each pixel
            separately); 2, 3, ... (or negative, from the end) add spatial axes, e.g.
            ``axis=(1, 2, 3)`` normalises each image over all its channels and pixels.

    The mean over channels of a centred Gaussian field vanishes at infinite width and the
    squared norm concentrates on the variance averaged over the normalised pixels,
    :math:`m_p(x) = \operatorname{mean}_{p' \sim p} K_{p'p'}(x, x) + \epsilon` (the mean over
    the pixels p' that share p's coordinates along the other spatial axes; over none with the
    default ``axis=1``: :math:`m_p = K_{pp}(x, x) + \epsilon`), so

    .. math::

        K'_{pq}(x, x') = \frac{K_{pq}(x, x')}{\sqrt{m_p(x)\, m_q(x')}}, \qquad
        \Theta'_{pq}(x, x') = \frac{\Theta_{pq}(x, x')}{\sqrt{m_p(x)\, m_q(x')}}.

    The input must be Gaussian (after Dense or a sum of such branches); after an activation the
    finite layer's centring would change the kernel, so that placement raises an error.
    The finite side is a layer norm over the same axes without affine parameters.
    """

    def __init__(self, eps: float = 1e-12, axis: int | tuple[int, ...] = 1) -> None:
        check_number("LayerNorm", "eps", eps)
        axes = (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else axis
        if (
            not isinstance(axes, tuple | list)
            or not axes
            or not all(isinstance(a, int) and not isinstance(a, bool) and a != 0 for a in axes)
        ):
            raise ValueError(
                f"LayerNorm(axis=...) must be a nonzero int or a tuple of them (axes of the "
                f"(N, C, *S) features; 0, the examples, cannot be normalised over), got {axis!r}"
            )
        self.axis = axis
        self.eps = float(eps)

    def _spatial_axes(self, d: int) -> tuple[int, ...]:
        """The normalised spatial axes as 0-based indices into S, for ``d`` spatial axes."""
        axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        resolved = sorted({a + 2 + d if a < 0 else a for a in axes})
        if 1 not in resolved or not all(1 <= a < 2 + d for a in resolved):
            raise ValueError(
                f"LayerNorm(axis={self.axis!r}) must include the channels (axis 1, needed for "
                f"an infinite-width limit) and name only axes of the (N, C, *S) features with "
                f"{d} spatial axes"
            )
        return tuple(a - 2 for a in resolved if a >= 2)

    def kernel_fn(self, k: Kernel) -> Kernel:
        if not isinstance(k, Kernel):
            raise TypeError("LayerNorm got several branches; merge them first")
        if not k.is_gaussian:
            raise ValueError(
                "LayerNorm is supported on Gaussian (pre-activation) inputs only: place it right "
                "after a Dense layer or after a FanInSum of such branches"
            )
        spatial = self._spatial_axes(k.spatial_ndim)
        if spatial:
            return self._spatial_kernel(k, spatial)
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

    def _spatial_kernel(self, k: Kernel, spatial: tuple[int, ...]) -> Kernel:
        d, full = k.spatial_ndim, k.layout == "full"
        dims = tuple(1 + a for a in spatial)

        def norms(cov: Tensor) -> Tensor:  # m_p: (N, *S)
            v = k.pixel_variances(cov)
            return v.mean(dim=dims, keepdim=True).expand_as(v) + self.eps

        def outer(a: Tensor, b: Tensor, lead: int) -> Tensor:  # m_p(x) m_q(x'), like nngp
            if not full:
                return a * b
            ones = (1,) * d
            return a.reshape(*a.shape, *ones) * b.reshape(*b.shape[:lead], *ones, *b.shape[lead:])

        m1 = norms(k.cov1)
        m2 = m1 if k.cov2 is k.cov1 else norms(k.cov2)
        cov1 = k.cov1 * outer(m1, m1, 1).rsqrt()
        cov2 = cov1 if k.cov2 is k.cov1 else k.cov2 * outer(m2, m2, 1).rsqrt()
        if k.batch_diagonal:
            scale = outer(m1, m1, 1).rsqrt()
        elif k.pairs is not None:
            scale = outer(m1.index_select(0, k.pairs[0]), m2.index_select(0, k.pairs[1]), 1)
            scale = scale.rsqrt()
        else:
            scale = outer(m1.unsqueeze(1), m2.unsqueeze(0), 2).rsqrt()
        nngp = cov1 if k.nngp is k.cov1 else k.nngp * scale
        ntk = None if k.ntk is None else k.ntk * scale
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    def __repr__(self) -> str:
        axis = "" if self.axis == 1 else f", axis={self.axis!r}"
        return f"LayerNorm(eps={self.eps!r}{axis})"

    def build_module(self, in_features, ctx: BuildContext):
        d = len(in_features.size) if isinstance(in_features, SpatialFeatures) else 0
        dims = (1, *(2 + a for a in self._spatial_axes(d)))
        return FeatureLayerNorm(self.eps, dims), in_features


class FeatureLayerNorm(nn.Module):
    """Layer norm over the axes ``dims`` (channels 1, and spatial axes), no affine part."""

    def __init__(self, eps: float, dims: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.eps, self.dims = eps, dims

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(dim=self.dims, keepdim=True)
        return centred * (centred.pow(2).mean(dim=self.dims, keepdim=True) + self.eps).rsqrt()


class Dropout(Layer):
    r"""Dropout with drop probability ``p`` (kept units scaled by :math:`1 / (1 - p)`), training.

    Masks are independent across examples (and pixels), so only a unit paired with itself
    changes: :math:`K'(x, x') = K(x, x') / (1 - p)` if x and x' are the same example (and pixel),
    else :math:`K'(x, x') = K(x, x')`, and the same for :math:`\Theta`.  The output is not
    Gaussian: follow it by a Dense layer.  The finite side is ``torch.nn.Dropout(p)``; it is
    active while the module is in training mode.

    "The same example" means one forward pass: ``net.kernel(x)`` (``x2=None``) rescales each
    example paired with itself, while an explicit ``x2`` is a second forward pass with masks
    independent of the first, so ``net.kernel(x, x)`` rescales nothing (neural-tangents rescales
    whenever ``x2`` equals ``x1``).
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
