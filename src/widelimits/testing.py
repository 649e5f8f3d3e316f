r"""A reusable test contract for network descriptions (in the style of gpytorch's test bases).

A layer's test only says how to make a network that uses it; `KernelContract` then checks what
every description must satisfy::

    from widelimits.testing import KernelContract

    def make(out):  # the readout width is a parameter: Monte Carlo uses many outputs
        return wl.Serial(wl.Dense(W_std=1.5, b_std=0.1), wl.ReLU(), wl.Dense(out))

    KernelContract(make).check_all()

Checks (each is a method, so tests can run them one by one: ``KernelContract.CHECKS``):

- ``check_shapes``: kernels of shape (N1, N2), ``diagonal=True`` of shape (N1,), ``get`` of one
  name returns a tensor, dtype kept;
- ``check_symmetry``: :math:`k(x, x)` is symmetric and :math:`k(x_2, x_1) = k(x_1, x_2)^\top`;
- ``check_psd``: the NNGP and NTK Gram matrices have eigenvalues :math:`\ge -\mathrm{tol}`;
- ``check_x2_none``: ``x2=None`` equals ``x2=x1`` (off the diagonal only when the network treats
  an example paired with itself differently, as Dropout does);
- ``check_diagonal``: ``diagonal=True`` equals the diagonal of the full kernel;
- ``check_float32``: float32 inputs give the float64 kernel to 1e-3 of its scale (an angle near
  0 is only known to :math:`\sqrt{\epsilon_\text{float32}} \approx 3 \cdot 10^{-4}`, see
  ``float32_tol``);
- ``check_tiling``: small tiles (``tile_size`` 1, 2, 3) give the one-shot kernel, for x2=None
  (mirrored tiles) and for x2;
- ``check_monte_carlo_nngp``: the NNGP matches the output covariance averaged over many finite
  networks built from the same description (``net.build``);
- ``check_monte_carlo_ntk``: the NTK matches the empirical NTK averaged over a few wide networks.

The Monte Carlo checks compare k(x, x) (x2=None: one forward pass over the batch, so with Dropout
each example is paired with itself under its own mask), single-threaded (`single_thread`).

Tolerance rule for the Monte Carlo checks (`assert_matches_monte_carlo`): for every compared entry
e (the upper triangle of :math:`k(x, x)`, diagonal included; or every entry of
:math:`k(x_1, x_2)`):

.. math::

    |\mathrm{mean}_e - \mathrm{analytic}_e| \le q\, \mathrm{stderr}_e + \mathrm{bias}_e
    + \mathrm{rounding}_e

- :math:`q` is the two-sided Student-t quantile with S - 1 degrees of freedom (S finite networks)
  at level :math:`\alpha / m`, Bonferroni-corrected over the m entries (:math:`\alpha = 10^{-3}`
  by default).  With a correct kernel and a random seed the check fails with probability
  :math:`\le \alpha`; the t quantile (not the
  normal one) accounts for the standard error itself being estimated from few networks (NTK).
  Nothing is tuned to make a particular seed pass.
- :math:`\mathrm{bias}_e = c L \sqrt{k_{ii} k_{jj}} / n`: the finite-width bias. The expectation
  over random networks of width n is not the infinite-width kernel: a layer that reads a
  finite-width hidden representation sees the empirical kernel
  :math:`\hat K = \frac1n \sum_i \phi(z_i) \phi(z_i')`, an average of n iid terms with mean K and
  variance v / n (:math:`v = \mathbb E[\phi^2 \phi'^2] - K^2 \le 2 k_{ii} k_{jj}` for the
  activations here), so a smooth map F of it has
  :math:`\mathbb E F(\hat K) - F(K) = F'' v / (2 n) + O(n^{-2})` (delta method): :math:`O(1/n)` per
  such layer, with a constant of order one relative to the kernel scale. L counts those layers
  (hidden Dense and Conv layers, and LayerNorms; a network with one hidden layer is exactly
  unbiased, but counting it costs :math:`\sim 1/n` only); c = 2 covers
  :math:`|F''|\, v / 2 \le 2 \sqrt{k_{ii} k_{jj}}` with margin. Measured (tests/test_monte_carlo.py,
  width 16, 3 hidden layers, 4000 networks): the bias is
  :math:`\approx 0.4 L \sqrt{k_{ii} k_{jj}} / n`, so c = 2 is safe without being vacuous at
  :math:`n \ge 256`.
- :math:`\mathrm{rounding}_e = 10^{-9} \cdot \mathrm{scale}`: float64 rounding, which matters only
  where the Monte Carlo variance is zero (a network without hidden layer has a deterministic NTK).

Inputs are flat (``in_features=d``: (N, d)) or spatial (``in_features=(C, L)`` or ``(C, H, W)``:
NCL sequences, NCHW images), so convolutional networks run through the same checks; their
kernels must still end as (N1, N2) matrices (Flatten or GlobalAvgPool, then Dense).

Costs are small by design: 5 inputs of 6 features; the NNGP from S = 500 networks of width 256
with 128 outputs each (forward passes only; the outputs are independent given the hidden layer,
so averaging over them divides the dominant part of the variance by 128); the NTK from 64
networks of width 2048 (cheap with one hidden layer; pass fewer, narrower ones for deep nets):
the empirical NTK of one wide network concentrates, with relative fluctuations
:math:`\sim 1/\sqrt{\mathrm{width}}`.
Everything is seeded.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._threads import torch_threads
from .finite import monte_carlo_kernel
from .kernel import Kernel
from .layers.base import Layer
from .layers.conv import Conv
from .layers.dense import Dense
from .layers.normalization import LayerNorm

__all__ = [
    "KernelContract",
    "KernelContractTests",
    "assert_matches_monte_carlo",
    "count_finite_width_layers",
    "single_thread",
    "student_t_quantile",
]


# ---------------------------------------------------------------------------------------------
# Student-t quantiles


def student_t_quantile(upper_tail: float, dof: float) -> float:
    r"""The t with :math:`P(T > t)` = ``upper_tail`` (in :math:`(0, 1/2)`); ``dof=inf``: normal."""
    if not 0.0 < upper_tail < 0.5:
        raise ValueError(f"upper_tail must be in (0, 1/2), got {upper_tail}")
    if not dof > 0:
        raise ValueError(f"dof must be positive, got {dof}")
    from scipy import stats

    return float(stats.norm.isf(upper_tail) if math.isinf(dof) else stats.t.isf(upper_tail, dof))


# ---------------------------------------------------------------------------------------------
# Monte Carlo comparison


def count_finite_width_layers(net: Layer) -> int:
    r"""Layers whose finite-width version biases the Monte Carlo mean by
    :math:`O(1/\mathrm{width})`: hidden Dense and Conv layers (``out=None``: they read a
    representation of ``width`` features or channels) and LayerNorms (which divide by a finite-width
    norm)."""
    hidden = isinstance(net, (Dense, Conv)) and net.out is None
    own = int(hidden or isinstance(net, LayerNorm))
    return own + sum(count_finite_width_layers(c) for c in net.children())


BIAS_COEFFICIENT = 2.0
"""c in the finite-width bias allowance c * L * scale / width (see the module docstring)."""

ROUNDING = 1e-9
"""Relative allowance for float64 rounding in the Monte Carlo comparison."""


def assert_matches_monte_carlo(
    analytic: Tensor,
    mean: Tensor,
    stderr: Tensor,
    n_samples: int,
    *,
    width: int,
    finite_width_layers: int,
    variances: tuple[Tensor, Tensor] | None = None,
    alpha: float = 1e-3,
    bias_coefficient: float = BIAS_COEFFICIENT,
    name: str = "kernel",
) -> dict:
    r"""Assert, entrywise, the tolerance rule of the module docstring:
    :math:`|\text{mean} - \text{analytic}| \le q\, \text{stderr} + \text{bias} + \text{rounding}`.

    ``analytic``, ``mean`` and ``stderr`` are (N1, N2) matrices.  Without ``variances`` they are
    k(x, x) (square, symmetric): the upper triangle (diagonal included) is compared and the
    diagonal gives the scale :math:`\sqrt{k_{ii} k_{jj}}`.  For k(x1, x2) pass
    ``variances=(k(x1_i, x1_i), k(x2_j, x2_j))``: every entry is compared.  Returns a summary
    (worst standardized error, the quantile q, ...) for reporting.
    """
    if not analytic.shape == mean.shape == stderr.shape or analytic.ndim != 2:
        raise ValueError(
            f"expected three (N1, N2) matrices, got {analytic.shape}, {mean.shape}, {stderr.shape}"
        )
    n1, n2 = analytic.shape
    if variances is None:
        if n1 != n2:
            raise ValueError("a rectangular kernel needs variances=(k(x1, x1), k(x2, x2))")
        rows, cols = torch.triu_indices(n1, n2)
        d1 = d2 = analytic.detach().double().cpu().diagonal().abs()
    else:
        rows, cols = (
            t.reshape(-1) for t in torch.meshgrid(torch.arange(n1), torch.arange(n2), indexing="ij")
        )
        d1, d2 = (v.detach().double().cpu().abs() for v in variances)
    a, m, s = (t.detach().double().cpu()[rows, cols] for t in (analytic, mean, stderr))
    scale = torch.sqrt(d1[rows] * d2[cols])
    entries = a.numel()
    q = student_t_quantile(alpha / (2 * entries), n_samples - 1)
    bias = bias_coefficient * finite_width_layers * scale / width
    rounding = ROUNDING * float(torch.cat([d1, d2]).max())
    tolerance = q * s + bias + rounding
    error = (m - a).abs()
    excess = error / tolerance
    worst = int(excess.argmax())
    summary = {
        "quantile": q,
        "max_error_over_tolerance": float(excess[worst]),
        "max_standardized_error": float(((m - a) / s)[s > 0].abs().max()) if (s > 0).any() else 0.0,
        "max_relative_error": float((error / scale.clamp_min(1e-300)).max()),
        "max_relative_stderr": float((s / scale.clamp_min(1e-300)).max()),
        "max_relative_tolerance": float((tolerance / scale.clamp_min(1e-300)).max()),
    }
    if not bool((error <= tolerance).all()):
        i, j = int(rows[worst]), int(cols[worst])
        raise AssertionError(
            f"{name} differs from its Monte Carlo estimate ({n_samples} networks of width "
            f"{width}): entry ({i}, {j}) analytic {float(a[worst]):.6g}, Monte Carlo "
            f"{float(m[worst]):.6g} +- {float(s[worst]):.3g} (stderr); |difference| "
            f"{float(error[worst]):.3g} > tolerance {float(tolerance[worst]):.3g} = {q:.2f} * "
            f"stderr + bias allowance {float(bias[worst]):.3g} + rounding {rounding:.1g}; "
            f"{int((error > tolerance).sum())} of {entries} entries fail"
        )
    return summary


# ---------------------------------------------------------------------------------------------
# The contract


def single_thread() -> contextlib.AbstractContextManager[None]:
    """Run torch on one intra-op thread, restoring the setting afterwards (also on an error).

    The Monte Carlo loops multiply tiny matrices (5 inputs): thread start-up and synchronisation
    cost more than the arithmetic, up to 10x more on a busy 2-core machine.
    """
    return torch_threads(1)


def _example_shape(in_features: int | tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one example: ``(d,)`` for ``d`` features, else the tuple itself ((C, L) or
    (C, H, W), (C, D, H, W), ...), checked to be positive ints."""
    shape = (in_features,) if isinstance(in_features, int) else tuple(in_features)
    if not 1 <= len(shape) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(
            "in_features must be a positive int (flat features) or the shape (C, L), (C, H, W) "
            f"or (C, *S) of one example, got {in_features!r}"
        )
    return shape


def _contract_inputs(
    n1: int, n2: int, in_features: int | tuple[int, ...], seed: int
) -> tuple[Tensor, Tensor]:
    """Seeded float64 inputs of shapes (n1, *shape) and (n2, *shape) (see `_example_shape`) with
    awkward examples: different norms, an exactly negated example (correlation -1), a
    near-duplicate (correlation close to 1), and an example of x2 equal to one of x1."""
    shape = _example_shape(in_features)
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n1, *shape, generator=g, dtype=torch.float64)
    norms = torch.linspace(0.6, 1.8, n1, dtype=torch.float64)
    x1 = x1 * norms.reshape(n1, *(1,) * len(shape))
    if n1 >= 4:
        x1[3] = -x1[0]
    if n1 >= 5:
        x1[4] = x1[1] + 0.05 * torch.randn(*shape, generator=g, dtype=torch.float64)
    x2 = 1.2 * torch.randn(n2, *shape, generator=g, dtype=torch.float64)
    if n2 >= 2 and n1 >= 3:
        x2[1] = x1[2]
    return x1, x2


@dataclass
class KernelContract:
    r"""Checks every network description must pass; see the module docstring.

    Args:
        make_net: ``make_net(out)`` returns the description whose readout has ``out`` outputs
            (the kernels must not depend on ``out``); a callable without parameters is accepted
            too (then the NNGP Monte Carlo averages over the description's own outputs).
        in_features: the shape of one example: an int ``d`` for flat (N, d) inputs, or a tuple
            ``(C, L)`` / ``(C, H, W)`` for sequences and images, e.g. ``(2, 5, 5)``: every check
            then runs on ``randn(n, *shape)`` inputs and builds the finite networks with
            ``in_features=shape`` (keep images tiny: pooling layers cost :math:`P^2` per pair of
            examples, P pixels).
        n1, n2: batch sizes.
        seed: seeds the inputs and the Monte Carlo networks.
        same_example_sensitive: the network treats an example paired with itself differently
            from two equal examples (Dropout: one mask per example), so ``x2=None`` and
            ``x2=x1`` differ on the diagonal.
        nngp_width, nngp_samples, nngp_outputs: Monte Carlo of the NNGP.
        ntk_width, ntk_samples: Monte Carlo of the NTK (one output per network).
        finite_width_layers: L in the bias allowance (default: `count_finite_width_layers`).
        alpha: family-wise false-alarm probability of each Monte Carlo check.
        float32_tol: tolerance of float32 vs float64, relative to the kernel's scale.
    """

    make_net: Callable[..., Layer]
    in_features: int | tuple[int, ...] = 6
    n1: int = 5
    n2: int = 4
    seed: int = 0
    same_example_sensitive: bool = False
    nngp_width: int = 256
    nngp_samples: int = 500
    nngp_outputs: int = 128
    ntk_width: int = 2048
    ntk_samples: int = 64
    finite_width_layers: int | None = None
    alpha: float = 1e-3
    symmetry_tol: float = 1e-7
    r"""Tolerance (relative to the kernel's scale) of results that compute :math:`x \cdot x'`
    differently: symmetry (x2, x1 vs x1, x2), tiling (tiles of other shapes; mirrored tiles) and
    x2=None vs x2=x1.  Two equal (or opposite) inputs passed as different examples get a
    correlation of :math:`\pm(1 - \text{a few ulp})`, and arccos turns :math:`10^{-16}` into an
    angle of :math:`\sim 10^{-8}`: such entries are only defined to :math:`\sim 10^{-8}`, wherever
    they are computed.  (Self-pairs are exact: ``check_diagonal``
    uses 1e-10.)  A dual map computed by quadrature is symmetric only to its quadrature error."""
    float32_tol: float = 1e-3
    r"""Float32 rounds a correlation of exactly 1 (two equal inputs passed as different examples)
    to :math:`1 - {\sim}10^{-7}`; arccos turns that into an angle of
    :math:`\sqrt{2 \cdot 10^{-7}} \approx 5 \cdot 10^{-4}` and ReLU's
    :math:`\dot T = (\pi - \theta) / (2 \pi)` moves by :math:`\sim 10^{-4}` per layer: 1e-3 covers
    a few layers."""

    CHECKS = (
        "check_shapes",
        "check_symmetry",
        "check_psd",
        "check_x2_none",
        "check_diagonal",
        "check_float32",
        "check_tiling",
    )
    MONTE_CARLO_CHECKS = ("check_monte_carlo_nngp", "check_monte_carlo_ntk")

    # -- helpers ------------------------------------------------------------------------------

    def net(self, out: int = 1) -> Layer:
        """The description, with ``out`` readout outputs when ``make_net`` takes a parameter."""
        if inspect.signature(self.make_net).parameters:
            return self.make_net(out)
        return self.make_net()

    def inputs(self) -> tuple[Tensor, Tensor]:
        """Seeded float64 inputs ``(x1, x2)`` of shapes ``(n1, *shape)`` and ``(n2, *shape)``, with
        ``shape`` = ``(in_features,)`` or the tuple ``in_features``."""
        return _contract_inputs(self.n1, self.n2, self.in_features, self.seed)

    @property
    def gets(self) -> tuple[str, ...]:
        return ("nngp", "ntk") if self.net().any_parameters() else ("nngp",)

    def _kernel(self, x1, x2=None, **kwargs) -> Kernel:
        return self.net().kernel(x1, x2, get=self.gets, **kwargs)

    @staticmethod
    def _scale(k: Tensor) -> float:
        return float(k.detach().abs().max().clamp_min(1e-300))

    def _assert_close(self, actual: Tensor, expected: Tensor, rtol: float, what: str) -> None:
        scale = self._scale(expected)
        err = float((actual.double() - expected.double()).abs().max())
        if not err <= rtol * scale:
            raise AssertionError(
                f"{what}: max |difference| {err:.3g} exceeds {rtol:g} * scale {scale:.3g}"
            )

    # -- the checks ---------------------------------------------------------------------------

    def check_shapes(self) -> None:
        x1, x2 = self.inputs()
        net = self.net()
        k = self._kernel(x1, x2)
        assert isinstance(k, Kernel), f"kernel() returned {type(k).__name__}, not a Kernel"
        for g in self.gets:
            t = getattr(k, g)
            assert t.shape == (self.n1, self.n2), f"{g} has shape {tuple(t.shape)}"
            assert t.dtype == torch.float64, f"{g} has dtype {t.dtype} for float64 inputs"
            assert bool(torch.isfinite(t).all()), f"{g} has non-finite values"
            single = net.kernel(x1, x2, get=g)
            assert isinstance(single, Tensor), f"get={g!r} returned {type(single).__name__}"
            self._assert_close(single, t, 1e-12, f"get={g!r} vs get={self.gets}")
        if "ntk" in self.gets:
            only_ntk = net.kernel(x1, x2, get=("ntk",))
            assert only_ntk.nngp is None and only_ntk.ntk is not None
        else:
            k_ntk = k.ntk
            assert k_ntk is None, "a network without parameters returned an NTK"
        kd = net.kernel(x1, get=self.gets, diagonal=True)
        for g in self.gets:
            t = getattr(kd, g)
            assert t.shape == (self.n1,), f"diagonal {g} has shape {tuple(t.shape)}"
        k32 = self._kernel(x1.float(), x2.float())
        assert k32.nngp.dtype == torch.float32, "float32 inputs must give a float32 kernel"

    def check_symmetry(self) -> None:
        x1, x2 = self.inputs()
        k11 = self._kernel(x1)
        k12, k21 = self._kernel(x1, x2), self._kernel(x2, x1)
        for g in self.gets:
            t = getattr(k11, g)
            self._assert_close(t, t.T, self.symmetry_tol, f"{g}(x, x) symmetry")
            what = f"{g}(x2, x1) vs {g}(x1, x2).T"
            self._assert_close(getattr(k21, g), getattr(k12, g).T, self.symmetry_tol, what)

    def check_psd(self) -> None:
        x1, _ = self.inputs()
        x = torch.cat([x1, self.inputs()[1]])  # 9 inputs, one repeated: a singular Gram matrix
        k = self._kernel(x)
        for g in self.gets:
            t = getattr(k, g)
            eig = torch.linalg.eigvalsh(0.5 * (t + t.T))
            tol = 1e-10 * float(eig.abs().max())
            assert float(eig.min()) >= -tol, f"{g} is not PSD: eigenvalues {eig.tolist()}"

    def check_x2_none(self) -> None:
        x1, _ = self.inputs()
        k_none, k_same = self._kernel(x1), self._kernel(x1, x1.clone())
        off = ~torch.eye(self.n1, dtype=torch.bool)
        for g in self.gets:
            a, b = getattr(k_none, g), getattr(k_same, g)
            if self.same_example_sensitive:
                a, b = a[off], b[off]
            # x1 @ x1.T and the row norms round differently: correlations 1 - 1e-16 vs 1
            self._assert_close(a, b, self.symmetry_tol, f"{g}: x2=None vs x2=x1")

    def check_diagonal(self) -> None:
        x1, _ = self.inputs()
        full = self._kernel(x1)
        diag = self._kernel(x1, diagonal=True)
        for g in self.gets:
            self._assert_close(
                getattr(diag, g), getattr(full, g).diagonal(), 1e-10, f"{g}: diagonal=True"
            )

    def check_float32(self) -> None:
        x1, x2 = self.inputs()
        for b in (None, x2):
            k64 = self._kernel(x1, b)
            k32 = self._kernel(x1.float(), None if b is None else b.float())
            for g in self.gets:
                self._assert_close(
                    getattr(k32, g), getattr(k64, g), self.float32_tol, f"{g}: float32 vs float64"
                )

    def check_tiling(self) -> None:
        x1, x2 = self.inputs()
        for b in (None, x2):
            one_shot = self._kernel(x1, b)
            for tile in (1, 2, 3):
                tiled = self._kernel(x1, b, tile_size=tile)
                for g in self.gets:
                    what = f"{g}: tile_size={tile} vs one shot ({'x2=None' if b is None else 'x2'})"
                    self._assert_close(
                        getattr(tiled, g), getattr(one_shot, g), self.symmetry_tol, what
                    )

    def _finite_width_layers(self) -> int:
        if self.finite_width_layers is not None:
            return self.finite_width_layers
        return count_finite_width_layers(self.net())

    def check_monte_carlo_nngp(self) -> dict:
        """NNGP vs the output covariance of ``nngp_samples`` finite networks (one forward pass
        over the batch each: with Dropout every example gets its own mask)."""
        x1, _ = self.inputs()
        analytic = self.net().kernel(x1, get="nngp")
        with single_thread():
            mc = monte_carlo_kernel(
                self.net(self.nngp_outputs), x1, width=self.nngp_width,
                n_samples=self.nngp_samples, get=("nngp",), seed=1_000_003 * self.seed + 1,
            )  # fmt: skip
        return assert_matches_monte_carlo(
            analytic, mc.nngp, mc.nngp_stderr, mc.n_samples, width=self.nngp_width,
            finite_width_layers=self._finite_width_layers(), alpha=self.alpha, name="NNGP",
        )  # fmt: skip

    def check_monte_carlo_ntk(self) -> dict | None:
        """NTK vs the empirical NTK averaged over ``ntk_samples`` networks (``ntk_width``)."""
        if "ntk" not in self.gets:
            return None
        x1, _ = self.inputs()
        analytic = self.net().kernel(x1, get="ntk")
        with single_thread():
            mc = monte_carlo_kernel(
                self.net(1), x1, width=self.ntk_width, n_samples=self.ntk_samples,
                get=("ntk",), seed=1_000_003 * self.seed + 500_001,
            )  # fmt: skip
        return assert_matches_monte_carlo(
            analytic, mc.ntk, mc.ntk_stderr, mc.n_samples, width=self.ntk_width,
            finite_width_layers=self._finite_width_layers(), alpha=self.alpha, name="NTK",
        )  # fmt: skip

    def check_all(self, monte_carlo: bool = True) -> None:
        """Run every check (the Monte Carlo ones too unless ``monte_carlo=False``)."""
        for name in self.CHECKS + (self.MONTE_CARLO_CHECKS if monte_carlo else ()):
            getattr(self, name)()


class KernelContractTests:
    """pytest mixin: subclass it and define ``make_contract()``.

    Every check then becomes a test::

        class TestMyNet(KernelContractTests):
            def make_contract(self):
                return KernelContract(lambda out: wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(out)))
    """

    def make_contract(self) -> KernelContract:
        raise NotImplementedError

    def test_shapes(self):
        self.make_contract().check_shapes()

    def test_symmetry(self):
        self.make_contract().check_symmetry()

    def test_psd(self):
        self.make_contract().check_psd()

    def test_x2_none(self):
        self.make_contract().check_x2_none()

    def test_diagonal(self):
        self.make_contract().check_diagonal()

    def test_float32(self):
        self.make_contract().check_float32()

    def test_tiling(self):
        self.make_contract().check_tiling()

    def test_monte_carlo_nngp(self):
        self.make_contract().check_monte_carlo_nngp()

    def test_monte_carlo_ntk(self):
        self.make_contract().check_monte_carlo_ntk()
