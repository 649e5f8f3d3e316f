r"""Activations whose kernels are Gaussian integrals of exponentials: `Gabor` and `ExpNormalized`.

Both are written in the dual-map form of `widelimits.layers.activations`: for pre-activations
:math:`(u, v) \sim \mathcal{N}(0, \Sigma)`, :math:`\Sigma = [[k_{11}, k_{12}], [k_{12}, k_{22}]]`,
:math:`T = \mathbb{E}[\phi(u)\phi(v)]` and :math:`\dot T = \mathbb{E}[\phi'(u)\phi'(v)]`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._numerics import correlation
from ..kernel import Kernel
from ._concat import Concatenated
from .activations import Activation, _real
from .base import BuildContext

__all__ = ["Gabor", "ExpNormalized"]


class Gabor(Activation):
    r""":math:`\phi(x) = e^{-x^2} \sin x`, the Gabor function of neural-tangents' ``Gabor``.

    Writing :math:`\sin u \sin v = \tfrac12[\cos(u - v) - \cos(u + v)]` and using the Gaussian
    integral :math:`\mathbb{E}[e^{-z^\top z} \cos(t^\top z)] = D^{-1/2}
    \exp(-\tfrac12 t^\top \Sigma (I + 2\Sigma)^{-1} t)` for :math:`z \sim \mathcal{N}(0, \Sigma)`,
    with :math:`D = \det(I + 2\Sigma) = (1 + 2k_{11})(1 + 2k_{22}) - 4k_{12}^2 \ge 1`, and
    :math:`s = k_{11} + k_{22}`, :math:`\delta = 4(k_{11}k_{22} - k_{12}^2)`:

    .. math::

        T = \frac{1}{2\sqrt{D}} \exp\!\Big(-\frac{s + \delta + 2k_{12}}{2D}\Big)
            \Big(e^{2k_{12}/D} - 1\Big)

    (``expm1`` keeps it exact near :math:`k_{12} = 0`), and by Price's theorem
    :math:`\dot T = \partial T / \partial k_{12}`:

    .. math::

        \dot T = \frac{1}{2 D^{5/2}} \Big[ E_-\big(D + 4k_{12}(D + N_-)\big)
                 + E_+\big(D - 4k_{12}(D + N_+)\big) \Big],

    with :math:`N_\pm = 1 + s \mp 2k_{12}` and :math:`E_\pm = \exp((N_\pm - D) / (2D))`.
    The same kernel as neural-tangents' ``Gabor`` (it has no parameters).
    """

    def fn(self, x: Tensor) -> Tensor:
        return torch.exp(-(x**2)) * torch.sin(x)

    def dual(self, k11, k22, k12, need_dot):
        s = k11 + k22
        delta = 4 * (k11 * k22 - k12**2)
        d = 1 + 2 * s + delta  # det(I + 2 Sigma) >= 1 for a covariance
        t = torch.exp(-(s + delta + 2 * k12) / (2 * d)) * torch.expm1(2 * k12 / d)
        t = t / (2 * torch.sqrt(d))
        if not need_dot:
            return t, None
        n_minus, n_plus = 1 + s + 2 * k12, 1 + s - 2 * k12
        e_minus = torch.exp((n_minus - d) / (2 * d))
        e_plus = torch.exp((n_plus - d) / (2 * d))
        tdot = e_minus * (d + 4 * k12 * (d + n_minus)) + e_plus * (d - 4 * k12 * (d + n_plus))
        return t, tdot / (2 * d**2.5)

    def __repr__(self) -> str:
        return "Gabor()"


class ExpNormalized(Activation):
    r"""The normalized Gaussian kernel :math:`\sqrt{k_{11}k_{22}}\,e^{\gamma(\rho + c)}`.

    neural-tangents' ``ExpNormalized(gamma, shift)`` (the "Gaussian normalized kernel" of
    Shankar et al. 2020).  With :math:`\rho = k_{12} / \sqrt{k_{11}k_{22}}` (clipped into
    :math:`[-1, 1]`, where it lies mathematically; 0 where a variance is 0):

    .. math::

        T = \sqrt{k_{11}k_{22}}\; e^{\gamma(\rho + c)}, \qquad
        \dot T = \gamma\, e^{\gamma(\rho + c)}.

    neural-tangents has no finite network for it; widelimits builds one.  At each example and
    pixel, with :math:`r = \|z\| / \sqrt{n}` the root mean square of the :math:`n` channels,

    .. math::

        \phi(z)_i = r\, a\, e^{b z_i / r}, \qquad b = \sqrt{\gamma},\;
        a = e^{\gamma(c - 1)/2}.

    As :math:`n \to \infty`, :math:`r^2 \to k_{11}`, so :math:`z_i / r` is a unit-variance
    Gaussian and :math:`\mathbb{E}[a^2 e^{b(u' + v')}] = a^2 e^{\gamma(1 + \rho)}` gives
    :math:`T`; the derivative of :math:`r` contributes :math:`O(1/n)` to the NTK, so
    :math:`\dot T = \mathbb{E}[\phi'\phi'] = \gamma\, a^2 e^{\gamma(1 + \rho)}`.  The finite
    module normalises over the channel axis 1, like `LayerNorm`.

    Args:
        gamma: :math:`\gamma \ge 0`, the inverse temperature (:math:`e^{\gamma\rho}` is a positive
            definite function of :math:`\rho` only for :math:`\gamma \ge 0`).
        shift: :math:`c`, added to :math:`\rho` before exponentiating (default :math:`-1`: the
            kernel is :math:`\sqrt{k_{11}k_{22}}` at :math:`\rho = 1`).
    """

    def __init__(self, gamma: float = 1.0, shift: float = -1.0) -> None:
        self.gamma, self.shift = _real("gamma", gamma), _real("shift", shift)
        if self.gamma < 0:
            raise ValueError(
                f"ExpNormalized(gamma=...) must be >= 0 (exp(gamma rho) is a kernel only then), "
                f"got {self.gamma}"
            )

    def dual(self, k11, k22, k12, need_dot):
        rho, prod = correlation(k11, k22, k12)
        e = torch.exp(self.gamma * (rho + self.shift))
        return prod * e, (self.gamma * e if need_dot else None)

    def fn(self, x: Tensor) -> Tensor:
        if x.ndim < 2:
            raise ValueError(
                "ExpNormalized normalizes over the channel axis 1 of (N, C, ...) inputs, got an "
                f"input of shape {tuple(x.shape)}"
            )
        r = x.pow(2).mean(dim=1, keepdim=True).sqrt()
        safe = torch.where(r > 0, r, torch.ones_like(r))
        a = math.exp(self.gamma * (self.shift - 1) / 2)
        out = safe * a * torch.exp(math.sqrt(self.gamma) * x / safe)
        return torch.where(r > 0, out, torch.zeros_like(out))  # a zero vector stays zero

    def kernel_fn(self, k: Kernel) -> Kernel:
        if isinstance(k, Concatenated):
            raise ValueError(
                "ExpNormalized normalizes over all channels together, so it cannot follow a "
                "FanInConcat of branches with different kernels: put a Dense layer before it"
            )
        return super().kernel_fn(k)

    def build_module(self, in_features, ctx: BuildContext) -> tuple[nn.Module, int]:
        if isinstance(in_features, tuple):
            raise TypeError("ExpNormalized got several branches; merge them first")
        return super().build_module(in_features, ctx)

    def __repr__(self) -> str:
        return f"ExpNormalized(gamma={self.gamma}, shift={self.shift})"
