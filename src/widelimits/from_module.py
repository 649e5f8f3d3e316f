r"""`from_module`: the infinite-width description of a PyTorch model the user already has.

``from_module(model, example_input)`` traces ``model`` with ``torch.fx`` and rewrites its graph
as an ordinary widelimits `Layer` (`Serial`, `FanOut`, `Parallel`, `FanInSum`, ...), so that
``net.kernel(x1, x2)`` gives the NNGP and NTK of the model's architecture and initialization.

Graph to description.  A chain of single-input operations becomes `Serial`.  An operation that
merges tensors (``a + b``, ``torch.cat([a, b], 1)``, ``a * b``) becomes ``FanOut(m)``,
``Parallel(path to a, path to b, ...)`` and ``FanInSum`` / ``FanInConcat`` / ``FanInProd``,
where the branches start at the merge's immediate dominator (the last node every path from the
input to the merge goes through).  Graphs that are not series-parallel (a node feeding two
branches that merge at different places) would share weights between branches and are refused.

Sums and products of branches are exact only for uncorrelated branches: every branch but at
most one of a sum (every branch of a product) must end in a layer with fresh zero-mean weights
(Linear, Conv), possibly followed by maps that keep the mean zero and the branches uncorrelated
(scalings, pooling, flattening, dropout, LayerNorm, odd activations).  ``x + self.fc(x)`` is
fine; ``x + torch.relu(x)`` is refused.

Weights.  Each ``nn.Linear`` / ``nn.Conv*d`` with :math:`n` = ``fan_in`` inputs per output
becomes a `Dense` / `Conv` with ``W_std`` :math:`= \operatorname{std}(W) \sqrt n` and ``b_std``
:math:`= \operatorname{std}(b)` (widelimits' ``b_std`` is absolute).  The ``init`` rule gives
these standard deviations:

- ``"torch"`` (default): PyTorch's default initialization, ``kaiming_uniform_(a=sqrt(5))`` for
  the weights and :math:`U(-1/\sqrt n, 1/\sqrt n)` for the biases, both of variance
  :math:`1 / (3 n)`, so ``W_std`` :math:`= 1/\sqrt 3` and ``b_std`` :math:`= 1/\sqrt{3 n}`.  The
  weights are checked to look like that initialization (a trained or re-initialized model is
  refused).
- ``"empirical"``: each layer's root mean square: ``W_std``
  :math:`= \sqrt{n \operatorname{mean}(W^2)}`, ``b_std`` :math:`= \sqrt{\operatorname{mean}(b^2)}`.
- a dict ``{module name: (W_std, b_std)}`` overriding the default rule for the layers it names,
  or a callable ``(name, module) -> (W_std, b_std)``.

``F.linear(x, weight, bias)`` with parameters of the model is a `Dense` like ``nn.Linear`` (its
name for ``init`` is the weight parameter's, e.g. ``"w"`` or ``"block.weight"``), and
``F.layer_norm`` a `LayerNorm` like ``nn.LayerNorm``; integer powers (``x ** 2``,
``torch.square``, ``x.pow(3)``) are `Monomial` layers.

Every weight layer keeps the model's own width (``out``), so ``build`` gives back the model's
widths, FanInConcat weighs branches by their widths as the model does, and with
``parametrization="standard"`` (the model as it is) the NTK is that of the model's widths:
:math:`\Theta' = n_\text{in} K + \sigma_w^2\, \Theta` (+ 1 with a bias). ``parametrization="ntk"``
gives the NTK of the same network in the NTK parametrization (the NNGP is the same).

How far is the model from its limit?  ``widelimits.finite.distance_to_limit(model, x)`` builds
the description and copies with 2x, 4x, ... wider hidden layers, and returns each width's mean
relative distance of per-network empirical NTKs (and NNGPs) to the analytic ones, the fitted
width exponent (about -1/2) and a plot.
"""


from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from .layers import Layer
from .translate.errors import TranslationError
from .translate.graph import Translator

__all__ = ["from_module", "TranslationError"]


def from_module(
    model: nn.Module,
    example_input: Tensor,
    *,
    parametrization: str = "standard",
    init: str | Mapping | Callable = "torch",
) -> Layer:
    r"""The widelimits description of ``model``: its infinite-width NNGP and NTK.

    Args:
        model: a ``torch.nn.Module`` made of the supported modules and functions (see the
            module docstring of ``widelimits.from_module`` and the README): Linear, Conv1d/2d,
            elementwise activations, integer powers, ``F.linear``, ``F.layer_norm``, average
            pooling, global means, Flatten, Identity, Dropout, LayerNorm, BatchNorm (eval mode),
            residual sums, channel concatenation, scalar multiplication, nested Sequential and
            custom modules.
        example_input: one batch of inputs, (N, features), (N, C, L) or (N, C, H, W): the model
            is run once on it to read every tensor's shape (for padding and pooling geometry).
        parametrization: ``"standard"`` (the model as it is; the NTK at its widths) or
            ``"ntk"``.
        init: ``"torch"`` (default: PyTorch's default initialization, ``W_std``
            :math:`= 1/\sqrt 3`, ``b_std`` :math:`= 1/\sqrt{3 n}` for fan-in n), ``"empirical"``
            (each layer's measured root mean square times :math:`\sqrt n`), a dict
            ``{module name: (W_std, b_std)}`` (the named layers; the others by "torch"), or a
            callable ``(name, module) -> (W_std, b_std)``.

    Returns:
        A `Layer` usable like a hand-written one (``kernel``, ``build``, ...).

    Raises:
        ValueError naming the graph node, its source line and what to use instead, for any
        construct without a closed-form limit (MaxPool, data-dependent control flow, in-place
        operations on the input, unsupported modules or functions).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, Tensor):
        raise TypeError(f"example_input must be a tensor, got {type(example_input).__name__}")
    if example_input.ndim not in (2, 3, 4, 5):
        raise ValueError(
            "example_input must be a batch of shape (N, features), (N, C, L), (N, C, H, W) or "
            f"(N, C, D, H, W), got shape {tuple(example_input.shape)}"
        )
    if parametrization not in ("standard", "ntk"):
        raise ValueError(
            f"parametrization must be 'standard' (the model as it is) or 'ntk', got "
            f"{parametrization!r}"
        )
    if not (init in ("torch", "empirical") or isinstance(init, Mapping) or callable(init)):
        raise ValueError(
            f"init must be 'torch', 'empirical', a dict {{name: (W_std, b_std)}} or a callable "
            f"(name, module) -> (W_std, b_std), got {init!r}"
        )
    return Translator(model, example_input, parametrization, init).run()
