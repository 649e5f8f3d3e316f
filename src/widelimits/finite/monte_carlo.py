r"""Monte Carlo kernels: averages over random finite networks, with standard errors.

One sample of the NNGP is the output covariance :math:`f(x_1) f(x_2)^\top / O` of a network with
O outputs; one sample of the NTK is its empirical NTK (traced over outputs).  Their averages
converge to the infinite-width kernels as the width grows, up to an :math:`O(1/\mathrm{width})`
bias.

The samples are independent: ``threads`` of them are computed at once, each on one torch thread
(`widelimits._threads.run_parallel`; torch's own threads, waiting for each other at the end of
every operation, collapse on a busy machine).  The networks are built one after another in the
caller's thread, in seed order (a factory may use torch's global generator), and the running
estimates add the samples in that order, so the result does not depend on ``threads``.
Networks that draw random numbers while they run (Dropout in training mode, ``stochastic``)
are sampled one at a time, each built just before it runs, so that their draws follow the same
sequence whatever ``threads`` is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._threads import check_threads, piece_threads, run_parallel
from ._functional import FunctionalModel
from .checks import as_outputs, watched_call
from .ntk import empirical_ntk

__all__ = ["monte_carlo_kernel", "monte_carlo_kernels", "MonteCarloKernel", "relative_error"]


@dataclass(frozen=True)
class MonteCarloKernel:
    """Averages over ``n_samples`` random finite networks and their standard errors."""

    nngp: Tensor | None
    ntk: Tensor | None
    nngp_stderr: Tensor | None
    ntk_stderr: Tensor | None
    n_samples: int


class _Running:
    """Welford running mean and variance of a tensor-valued sample."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, x: Tensor) -> None:
        x = x.detach()
        self.n += 1
        if self.mean is None:
            self.mean, self.m2 = x.clone(), torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean = self.mean + delta / self.n  # new tensors: yielded estimates stay as they were
        self.m2 = self.m2 + delta * (x - self.mean)

    def stderr(self) -> Tensor:
        return torch.sqrt(self.m2 / max(self.n - 1, 1) / self.n)


def _model_factory(net, x1: Tensor, width, dtype) -> Callable[[int], nn.Module]:
    if hasattr(net, "build"):
        if width is None:
            raise ValueError("pass width=... to build finite networks from a layer description")
        return lambda seed: net.build(tuple(x1.shape[1:]), width, seed=seed, dtype=dtype)
    if callable(net):
        if width is not None:
            raise ValueError("width applies to layer descriptions; a factory sets its own")
        return net
    raise TypeError("net must be a widelimits layer description or a callable seed -> module")


def _draws_randomness(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
        for m in model.modules()
    )


def _outputs(model: nn.Module, x: Tensor, name: str, watched: bool) -> Tensor:
    """f(x) as (N, O).  The input is copied (a model changing it in place is harmless); a
    watched call turns a shape error inside the model into one that names ``name``."""
    fm = FunctionalModel(model)
    with torch.no_grad():
        out = watched_call(fm, {}, x, name) if watched else fm({}, x)
    return as_outputs(out, len(x))


def monte_carlo_kernels(
    net,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    n_samples: int,
    width: int | None = None,
    get: tuple[str, ...] = ("nngp", "ntk"),
    seed: int = 0,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
    threads: int | None = None,
    **ntk_options,
) -> Iterator[MonteCarloKernel]:
    """Running Monte Carlo estimates, one after each of ``n_samples`` random networks.

    ``net`` is a widelimits description (built at hidden ``width``) or any factory
    ``seed -> nn.Module``; network ``s`` uses seed ``seed + s``.  ``threads``: how many
    networks are sampled at once, each on one torch thread (default: torch's thread count, 1
    for inputs on a GPU; see the module docstring); the estimates are the same for any value.
    ``ntk_options`` go to `empirical_ntk` (e.g. ``implementation``, ``params``).  A described
    network with Dropout gets ``stochastic=True`` (each example its own mask, as its analytic
    kernel assumes); a factory's model with Dropout in training mode needs it passed
    explicitly.
    """
    from .._progress import progress_bar

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(
            f"n_samples must be an integer, at least 2 to estimate a standard error; got "
            f"{n_samples!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise ValueError(f"width must be a positive integer, got {width!r}")
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    # a GPU parallelises inside each network: one at a time there unless asked otherwise
    threads = 1 if threads is None and x1.device.type != "cpu" else check_threads(threads)
    get = (get,) if isinstance(get, str) else tuple(get)
    if not get or not set(get) <= {"nngp", "ntk"}:
        raise ValueError(f"get must name 'nngp' and/or 'ntk', got {get}")
    dtype = dtype or x1.dtype
    x1 = x1.to(dtype)
    x2 = None if x2 is None else x2.to(dtype)
    make = _model_factory(net, x1, width, dtype)
    described = hasattr(net, "build")
    nngp, ntk = _Running(), _Running()

    def build(s: int) -> nn.Module:
        model = make(seed + s)
        if not isinstance(model, nn.Module):
            raise TypeError(f"net(seed) must return a torch.nn.Module, got {type(model).__name__}")
        return model

    def sample(model: nn.Module, s: int) -> tuple[Tensor | None, Tensor | None]:
        k_nngp = k_ntk = None
        if "nngp" in get:
            f1 = _outputs(model, x1, "x1", watched=s == 0)
            f2 = f1 if x2 is None else _outputs(model, x2, "x2", watched=s == 0)
            k_nngp = f1 @ f2.T / f1.shape[1]
        if "ntk" in get:
            options = dict(ntk_options)
            if described:  # widelimits' Dropout: independent masks per example, by design
                options.setdefault("stochastic", _draws_randomness(model))
            options.setdefault("threads", piece_threads())  # a sample alone: all threads
            k_ntk = empirical_ntk(model, x1, x2, **options)
        return k_nngp, k_ntk

    first = build(0)
    # Networks drawing random numbers as they run: one at a time (module docstring).
    step = 1 if ntk_options.get("stochastic") or _draws_randomness(first) else threads
    bar = progress_bar(total=n_samples, progress=progress, default=n_samples >= 50,
                       desc="Monte Carlo", leave=False)  # fmt: skip
    with bar:
        for start in range(0, n_samples, step):
            batch = range(start, min(start + step, n_samples))
            models = [first if s == 0 else build(s) for s in batch]  # in seed order, here
            samples: list = [None] * len(batch)

            def work(i: int, models=models, batch=batch, samples=samples) -> None:
                samples[i] = sample(models[i], batch[i])

            run_parallel(work, len(batch), step)
            for s, (k_nngp, k_ntk) in zip(batch, samples, strict=True):
                if k_nngp is not None:
                    nngp.add(k_nngp)
                if k_ntk is not None:
                    ntk.add(k_ntk)
                bar.update()
                if s >= 1:
                    yield MonteCarloKernel(
                        nngp=nngp.mean,
                        ntk=ntk.mean,
                        nngp_stderr=nngp.stderr() if nngp.n else None,
                        ntk_stderr=ntk.stderr() if ntk.n else None,
                        n_samples=s + 1,
                    )


def monte_carlo_kernel(net, x1: Tensor, x2: Tensor | None = None, **kwargs) -> MonteCarloKernel:
    """The final estimate of `monte_carlo_kernels` (same arguments): kernels averaged over
    ``n_samples`` random finite networks, with their standard errors."""
    *_, last = monte_carlo_kernels(net, x1, x2, **kwargs)
    return last


def relative_error(a: Tensor, b: Tensor) -> float:
    r"""Frobenius relative error :math:`\lVert a - b \rVert / \lVert b \rVert`."""
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))
