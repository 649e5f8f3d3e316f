"""Randomized architectures against Monte Carlo over the library's own finite networks.

A seeded sampler draws small fully connected networks from blocks that stress the branch
bookkeeping of `FanInConcat` (widelimits.layers._concat): concatenations of Gaussian branches
followed directly by an activation (applied branch by branch), concatenations of activated
branches read by a Dense layer, a residual sum of a concatenation and a Dense block (summed
piece by piece) and nested concatenations.  Each kernel must match the average over finite
networks built from the same description (`KernelContract`'s Monte Carlo checks: the tolerance
is the Student-t quantile of the Monte Carlo standard error at family-wise level 1e-3, plus the
O(1 / width) finite-width bias; nothing is tuned per seed).
"""

from __future__ import annotations

import random

import pytest

import widelimits as wl
from widelimits.testing import KernelContract

ACTIVATIONS = [
    lambda r: wl.ReLU(),
    lambda r: wl.Erf(),
    lambda r: wl.GELU(),
    lambda r: wl.LeakyReLU(round(r.uniform(0.05, 0.3), 3)),
    lambda r: wl.Sin(b=round(r.uniform(0.5, 1.5), 3)),
    lambda r: wl.Abs(),
]


def _dense(r: random.Random) -> wl.Dense:
    b_std = r.choice([None, 0.1, 0.5, 1.0])
    return wl.Dense(W_std=round(r.uniform(0.7, 1.8), 3), b_std=b_std)


def _act(r: random.Random) -> wl.Layer:
    return r.choice(ACTIVATIONS)(r)


def _contrasting_dense(r: random.Random, i: int) -> wl.Dense:
    """Branch i's Dense: small weights without bias, or large weights with a large bias, so
    that the branches' variances and correlations differ a lot (the wrong average-then-activate
    kernel is then far from the right one)."""
    if i % 2 == 0:
        return wl.Dense(W_std=round(r.uniform(0.3, 0.7), 3))
    return wl.Dense(W_std=round(r.uniform(1.8, 2.6), 3), b_std=round(r.uniform(1.0, 2.0), 3))


def _saturating(r: random.Random) -> wl.Layer:
    """Activations far from positively homogeneous (ReLU-like ones are blind to scale)."""
    return r.choice(
        [wl.Erf(b=round(r.uniform(1.0, 2.0), 3)), wl.Sin(b=round(r.uniform(1.0, 2.0), 3))]
    )


def _concat_of_gaussians(r: random.Random) -> list[wl.Layer]:
    """FanOut(k), k branches ending in Dense, FanInConcat: k Gaussian branches side by side."""
    k = r.choice([2, 3])
    branches = [
        wl.Serial(_dense(r), _act(r), _contrasting_dense(r, i))
        if r.random() < 0.4
        else _contrasting_dense(r, i)
        for i in range(k)
    ]
    return [wl.FanOut(k), wl.Parallel(*branches), wl.FanInConcat()]


def _block(r: random.Random, kind: str) -> list[wl.Layer]:
    if kind == "dense":
        return [_dense(r), _act(r)]
    if kind == "concat-act":  # the case of issue 13
        return [*_concat_of_gaussians(r), _saturating(r)]
    if kind == "concat-of-activated":
        k = r.choice([2, 3])
        branches = [wl.Serial(_dense(r), _act(r)) for _ in range(k)]
        return [wl.FanOut(k), wl.Parallel(*branches), wl.FanInConcat(), _dense(r), _act(r)]
    if kind == "residual-concat":  # a concatenation plus a block that concatenates as many
        # branches (same shares of the features): summed branch by branch, then activated
        head = _concat_of_gaussians(r)
        k = head[0].n
        block = wl.Serial(
            _act(r), wl.FanOut(k), wl.Parallel(*[_dense(r) for _ in range(k)]), wl.FanInConcat()
        )
        return [*head, wl.Residual(block), _saturating(r)]
    if kind == "nested-concat":
        inner = wl.Serial(*_concat_of_gaussians(r))
        outer = wl.Dense(W_std=round(r.uniform(1.8, 2.6), 3), b_std=1.5)
        return [wl.FanOut(2), wl.Parallel(inner, outer), wl.FanInConcat(), _saturating(r)]
    raise ValueError(kind)


KINDS = ["dense", "concat-act", "concat-of-activated", "residual-concat", "nested-concat"]


def _kinds(seed: int, r: random.Random) -> list[str]:
    """Two blocks: a concatenation kind chosen round-robin by seed, and any kind."""
    kinds = [KINDS[1 + seed % (len(KINDS) - 1)], r.choice(KINDS)]
    r.shuffle(kinds)
    return kinds


def random_architecture(seed: int):
    """``make(out)`` for a seeded random network of 2 blocks, one of them a concatenation."""
    r = random.Random(seed)
    kinds = _kinds(seed, r)
    layers = [layer for kind in kinds for layer in _block(r, kind)]
    readout_w = round(r.uniform(0.8, 1.5), 3)

    def make(out: int) -> wl.Layer:
        return wl.Serial(*layers, wl.Dense(out, W_std=readout_w))

    return make


SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_architecture_matches_monte_carlo(seed):
    """60 networks of width 256 (128 outputs each) for the NNGP, 8 of width 512 for the NTK:
    relative standard errors of 2% and 3-6% of the kernel scale, bias allowance 2 L / width.
    Measured worst |error| / tolerance: 0.36 (NNGP), 0.30 (NTK).  The kernel of the old
    average-then-activate FanInConcat fails 5 of these 6 networks (errors of several times the
    tolerance), so the check has teeth."""
    contract = KernelContract(
        random_architecture(seed),
        seed=seed,
        nngp_width=256,
        nngp_samples=60,
        ntk_width=512,
        ntk_samples=8,
    )
    contract.check_monte_carlo_nngp()
    contract.check_monte_carlo_ntk()


def test_the_sampler_covers_every_concat_block():
    drawn = {kind for seed in SEEDS for kind in _kinds(seed, random.Random(seed))}
    assert set(KINDS[1:]) <= drawn
