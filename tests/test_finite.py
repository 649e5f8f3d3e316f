"""The straightforward finite-width tools: empirical NTK checks and errors."""

import pytest
import torch

import widelimits as wl
from widelimits import finite


def test_empirical_ntk_equals_explicit_jacobian_product():
    # A second algorithm: torch.autograd.functional.jacobian on the flattened parameters.
    torch.manual_seed(0)
    model = wl.Serial(wl.Dense(b_std=0.1), wl.Erf(), wl.Dense(3)).build(4, 16, seed=0)
    x = torch.randn(5, 4)
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def outputs(theta):
        chunks, start = [], 0
        for p in params:
            chunks.append(theta[start : start + p.numel()].reshape(p.shape))
            start += p.numel()
        names = [n for n, _ in model.named_parameters()]
        return torch.func.functional_call(model, dict(zip(names, chunks, strict=True)), (x,))

    jac = torch.autograd.functional.jacobian(outputs, flat)  # (N, O, P)
    explicit = torch.einsum("iop,jop->ij", jac, jac) / jac.shape[1]
    torch.testing.assert_close(finite.empirical_ntk(model, x), explicit, rtol=1e-5, atol=1e-6)


def test_empirical_ntk_refuses_what_does_not_fit(monkeypatch):
    import widelimits._compute as compute

    monkeypatch.setattr(compute, "available_memory", lambda device: 1000)
    model = wl.Serial(wl.Dense(), wl.ReLU(), wl.Dense(1)).build(3, 8, seed=0)
    with pytest.raises(MemoryError, match="fewer inputs"):
        finite.empirical_ntk(model, torch.randn(4, 3))


def test_empirical_ntk_needs_parameters_and_tensor_outputs():
    with pytest.raises(ValueError, match="no trainable parameters"):
        finite.empirical_ntk(torch.nn.ReLU(), torch.randn(2, 3))


def test_monte_carlo_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        finite.monte_carlo_kernel(wl.Dense(1), torch.randn(2, 3), width=4, n_samples=1)
