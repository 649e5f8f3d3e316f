"""The GPU paths against the CPU: a device never changes a result beyond rounding.

Skipped without a CUDA device (CI has none); run on a GPU machine with
``python -m pytest -q tests/test_cuda.py``.  Every case computes the same quantity on the CPU
and on the GPU in float64 and compares them, so a device-specific path (tile sizes chosen from
the device's memory, one block per fused layer map, cuBLAS/cuSOLVER instead of LAPACK) that
changed the mathematics would fail here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import widelimits as wl

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

F64 = torch.float64


def close(gpu: torch.Tensor, cpu: torch.Tensor, rtol: float = 1e-10) -> None:
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=rtol, atol=rtol * float(cpu.abs().max()))


def data(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


ACTIVATIONS = [
    wl.ReLU(), wl.Erf(), wl.GELU(), wl.Sin(), wl.Cos(), wl.ABReLU(-0.5, 1.0),
    wl.LeakyReLU(0.1), wl.Abs(), wl.Sign(), wl.Gaussian(), wl.Exp(), wl.RBF(),
    wl.Monomial(2), wl.RectifiedMonomial(2), wl.Hermite(3),
]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: type(a).__name__)
def test_fc_activations(act):
    net = wl.Serial(wl.Dense(None, W_std=1.2, b_std=0.1), act, wl.Dense(1))
    x1, x2 = data(7, 5), data(4, 5, seed=1)
    for args in ((x1,), (x1, x2)):
        cpu = net.kernel(*args)
        gpu = net.kernel(*(a.cuda() for a in args))
        close(gpu.nngp, cpu.nngp)
        close(gpu.ntk, cpu.ntk)
    close(net.kernel(x1.cuda(), diagonal=True).ntk, net.kernel(x1, diagonal=True).ntk)


@pytest.mark.parametrize("readout", ["gap", "flatten", "pool"])
def test_conv(readout):
    end = {
        "gap": [wl.GlobalAvgPool()],
        "flatten": [wl.Flatten()],
        "pool": [wl.AvgPool(2), wl.Flatten()],
    }[readout]
    net = wl.Serial(
        wl.Conv(None, 3, W_std=1.5, b_std=0.1), wl.ReLU(), wl.Conv(None, 3, stride=1),
        wl.Erf(), *end, wl.Dense(1),
    )
    x1, x2 = data(3, 2, 6, 6), data(2, 2, 6, 6, seed=1)
    cpu = net.kernel(x1, x2)
    gpu = net.kernel(x1.cuda(), x2.cuda())
    close(gpu.nngp, cpu.nngp)
    close(gpu.ntk, cpu.ntk)


def test_myrtle_and_tiles():
    net = wl.Myrtle(5)
    x = data(3, 3, 32, 32)
    cpu = net.kernel(x, tile_size=2)
    for tile in (None, 1, 2):
        close(net.kernel(x.cuda(), tile_size=tile).ntk, cpu.ntk)


def test_residual_layernorm_dropout_free_graph():
    block = wl.Serial(wl.Dense(None), wl.ReLU(), wl.Dense(None))
    net = wl.Serial(wl.Dense(None), wl.Residual(block), wl.LayerNorm(), wl.GELU(), wl.Dense(2))
    x = data(6, 4)
    close(net.kernel(x.cuda()).ntk, net.kernel(x).ntk)


def test_gradient_through_kernel():
    """Hyperparameter gradients (W_std requiring grad) agree across devices."""
    grads = []
    for device in ("cpu", "cuda"):
        w = torch.tensor(1.3, dtype=F64, device=device, requires_grad=True)
        net = wl.Serial(wl.Dense(None, W_std=w), wl.ReLU(), wl.Dense(1, W_std=w))
        net.kernel(data(5, 3).to(device)).ntk.sum().backward()
        grads.append(w.grad)
    close(grads[1], grads[0])


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 3)).double()


@pytest.mark.parametrize("implementation", ["structured", "jacobian", "ntk_vector"])
def test_empirical_ntk(implementation):
    model = _mlp()
    x1, x2 = data(6, 5), data(4, 5, seed=1)
    cpu = wl.finite.empirical_ntk(model, x1, x2, outputs="full", implementation=implementation)
    gpu_model = _mlp().cuda()
    gpu = wl.finite.empirical_ntk(
        gpu_model, x1.cuda(), x2.cuda(), outputs="full", implementation=implementation
    )
    close(gpu, cpu)


def test_predict_ensemble_and_solvers():
    net = wl.Serial(wl.Dense(None, b_std=0.1), wl.ReLU(), wl.Dense(1))
    x, y, xt = data(20, 3), data(20, 1, seed=1), data(5, 3, seed=2)
    outs = []
    for device in ("cpu", "cuda"):
        fn = wl.predict.gradient_descent_mse_ensemble(
            net, x.to(device), y.to(device), diag_reg=1e-4
        )
        outs.append(fn(t=[0.5, 10.0], x_test=xt.to(device), get="ntk", compute_cov=True))
    close(outs[1].mean, outs[0].mean, rtol=1e-8)
    close(outs[1].covariance, outs[0].covariance, rtol=1e-8)
    k = net.kernel(x, get="ntk")
    sol_cpu, _ = wl.predict.cg_solve(k, y, diag_reg=1e-3, tol=1e-12)
    sol_gpu, info = wl.predict.cg_solve(k.cuda(), y.cuda(), diag_reg=1e-3, tol=1e-12)
    close(sol_gpu, sol_cpu, rtol=1e-8)


def test_from_module_on_gpu_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 1))
    net = wl.from_module(model, torch.zeros(1, 2, 8))
    x = data(4, 2, 8)
    close(net.kernel(x.cuda()).ntk, net.kernel(x).ntk)


NEW_LAYER_NETS = {
    "attention_softmax": lambda: wl.Serial(
        wl.Dense(None, b_std=0.1), wl.GlobalSelfAttention(pos_emb_type="sum"), wl.ReLU(),
        wl.GlobalAvgPool(), wl.Dense(1),
    ),
    "transformer": lambda: wl.Serial(wl.Dense(None), wl.TransformerBlock(), wl.GlobalAvgPool(),
                                     wl.Dense(1)),
    "conv_transpose": lambda: wl.Serial(wl.ConvTranspose(None, 3, stride=2), wl.Gabor(),
                                        wl.GlobalSumPool(), wl.Dense(1)),
    "conv_local": lambda: wl.Serial(wl.ConvLocal(None, 3), wl.ReLU(), wl.Flatten(), wl.Dense(1)),
    "resize": lambda: wl.Serial(wl.Conv(None, 3), wl.ImageResize(5), wl.ReLU(),
                                wl.AvgPool(2, normalize_edges=True), wl.Flatten(), wl.Dense(1)),
}


@pytest.mark.parametrize("name", sorted(NEW_LAYER_NETS))
def test_new_layers(name):
    net = NEW_LAYER_NETS[name]()
    x1, x2 = data(3, 2, 7), data(2, 2, 7, seed=1)
    cpu = net.kernel(x1, x2)
    gpu = net.kernel(x1.cuda(), x2.cuda())
    close(gpu.nngp, cpu.nngp)
    close(gpu.ntk, cpu.ntk)


def test_masked_attention_and_graphs():
    net = wl.Serial(wl.Dense(None), wl.GlobalSelfAttention(), wl.GlobalAvgPool(), wl.Dense(1))
    x = data(3, 2, 6)
    x[0, :, 4:] = -5.0
    close(net.kernel(x.cuda(), mask_constant=-5.0).ntk, net.kernel(x, mask_constant=-5.0).ntk)
    gnet = wl.Serial(wl.Dense(None), wl.ReLU(), wl.Aggregate(), wl.GlobalAvgPool(), wl.Dense(1))
    adj = (data(3, 5, 5, seed=2) > 0.3).to(F64)
    xg = data(3, 2, 5, seed=3)
    close(gnet.kernel(xg.cuda(), pattern=adj.cuda()).ntk, gnet.kernel(xg, pattern=adj).ntk)


def test_conv3d():
    net = wl.Serial(wl.Conv(None, 3), wl.ReLU(), wl.AvgPool(2), wl.Flatten(), wl.Dense(1))
    x = data(2, 2, 4, 4, 4)
    close(net.kernel(x.cuda()).ntk, net.kernel(x).ntk)
