"""Solving with stored kernels: in memory, streamed with read-ahead, or streamed one band at a
time (widelimits.scale.bands), and batched CG over several right-hand sides.

Every path is checked against a dense Cholesky solve of the in-memory kernel ``net.kernel``
(float64) and against the others; batched CG against column-by-column CG.
"""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("zarr")

import scale_job as job  # noqa: E402

from widelimits import predict, scale  # noqa: E402
from widelimits.cli import main  # noqa: E402
from widelimits.scale import (  # noqa: E402
    CorruptStoreError,
    KernelStore,
    bands,
    compute_kernel_store,
)
from widelimits.scale.bands import (  # noqa: E402
    ResidentKernel,
    StreamedStoreKernel,
    read_ahead,
    resolve_in_memory,
    store_operator,
)
from widelimits.scale.store import StoreKernel  # noqa: E402

D64 = torch.float64
N, TILE, REG = 250, 64, 1e-3  # 4 x 4 tiles, the last row and column partial


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    net, x = job.network(), job.inputs(N, seed=21)
    path = tmp_path_factory.mktemp("solve") / "k.zarr"
    compute_kernel_store(net, x, path=path, tile_size=TILE, scheduler="synchronous", progress=False)
    k = net.kernel(x, get="ntk")
    y = torch.randn(N, 3, generator=torch.Generator().manual_seed(22), dtype=D64)
    return dict(path=path, k=k, y=y, want=predict.cholesky_solve(k, y, diag_reg=REG))


def _operators(path):
    store = KernelStore.open(path)
    return {
        "in memory": store_operator(store, "ntk", in_memory=True),
        "auto (fits)": store_operator(store, "ntk"),
        "streamed, read-ahead": store_operator(store, "ntk", in_memory=False),
        "over budget": store_operator(store, "ntk", memory_budget=1000.0, block_rows=128),
        "streamed, no read-ahead": StreamedStoreKernel(store, "ntk", read_ahead=0),
        "store operator": store.operator("ntk"),
    }


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_paths_agree_with_cholesky_and_each_other(problem):
    ops = _operators(problem["path"])
    kinds = {name: type(op) for name, op in ops.items()}
    assert kinds["in memory"] is kinds["auto (fits)"] is ResidentKernel
    for name in ("streamed, read-ahead", "over budget", "streamed, no read-ahead"):
        assert kinds[name] is StreamedStoreKernel, name
    assert kinds["store operator"] is StoreKernel
    assert ops["over budget"].block_rows == 128 and ops["streamed, read-ahead"].read_ahead == 2
    k = problem["k"]
    assert torch.equal(ops["in memory"].k, KernelStore.open(problem["path"]).read("ntk"))
    # 2 columns: the in-memory kernel's symmetric BLAS product (symv); 5: one GEMM
    v = torch.randn(N, 2, generator=torch.Generator().manual_seed(3), dtype=D64)
    v5 = torch.randn(N, 5, generator=torch.Generator().manual_seed(4), dtype=D64)
    idx = torch.tensor([200, 5, 64, 249])
    solutions = {}
    for name, op in ops.items():
        assert float((op.matmul(v) - k @ v).abs().max()) <= 1e-12, name
        assert float((op.matmul(v5) - k @ v5).abs().max()) <= 1e-12, name
        assert (
            torch.equal(op.diagonal(), torch.diagonal(k))
            or float((op.diagonal() - torch.diagonal(k)).abs().max()) <= 1e-12
        )
        assert float((op.columns(idx) - k[:, idx]).abs().max()) <= 1e-12, name
        x, info = predict.cg_solve(
            op, problem["y"], diag_reg=REG, tol=1e-12, preconditioner="pivoted_cholesky", rank=40
        )
        assert info.converged, (name, info)
        assert _rel(x, problem["want"]) < 1e-8, name
        solutions[name] = x
    for name, x in solutions.items():
        assert _rel(x, solutions["in memory"]) < 1e-9, name


@pytest.mark.parametrize("in_memory", [True, False])
def test_kernel_regression_from_a_store_path(problem, in_memory):
    alpha, _, info = scale.kernel_regression(
        problem["path"], problem["y"], get="ntk", diag_reg=REG, tol=1e-12, rank=40,
        in_memory=in_memory,
    )  # fmt: skip
    assert info.converged and _rel(alpha, problem["want"]) < 1e-8


def test_batched_cg_is_column_by_column(problem):
    """One product with all columns per iteration; each column's iterates are its own solve.

    Compared after 3 iterations: CG amplifies rounding differences (GEMM or GEMV, reduction
    order) with each iteration, to 1e-8 relative by iteration 12 here even for a dense float64
    kernel, while any coupling between columns would show at once."""
    op = store_operator(KernelStore.open(problem["path"]), "ntk")
    products = []
    matmul = op.matmul
    op.matmul = lambda v: (products.append(v.shape[1]), matmul(v))[1]
    y = problem["y"].clone()
    y[:, 1] = 0  # a zero column: solved at once, and never a false "not PD"
    for pc in ("jacobi", "pivoted_cholesky"):
        products.clear()
        with pytest.warns(RuntimeWarning, match="did not reach"):
            x, info = predict.cg_solve(
                op, y, diag_reg=REG, tol=1e-300, max_iter=3, preconditioner=pc, rank=30
            )
        assert products == [3] * 3 and info.iterations == 3
        assert torch.equal(x[:, 1], torch.zeros(N, dtype=D64))
        for c in (0, 2):
            with pytest.warns(RuntimeWarning, match="did not reach"):
                xc, _ = predict.cg_solve(
                    op, y[:, c], diag_reg=REG, tol=1e-300, max_iter=3, preconditioner=pc, rank=30
                )
            assert float((xc - x[:, c]).abs().max()) <= 1e-12 * float(xc.abs().max()), pc
        products.clear()
        x, info = predict.cg_solve(op, y, diag_reg=REG, tol=1e-12, preconditioner=pc, rank=30)
        want = predict.cholesky_solve(problem["k"], y, diag_reg=REG)
        assert info.converged and _rel(x, want) < 1e-8 and products == [3] * info.iterations
    assert "per iteration" in str(info) and 0 < info.setup_seconds <= info.seconds


def test_read_ahead_runs_ahead_and_stops():
    made = []

    def make():
        for i in range(10):
            made.append(i)
            yield i

    for depth in (0, 1, 2):
        made.clear()
        it = read_ahead(make, depth)
        assert next(it) == 0
        time.sleep(0.3)  # the producer fills the queue, then waits on it
        # depth queued items and one more read, waiting for room in the queue
        assert len(made) == (1 if depth == 0 else depth + 2), (depth, made)
        assert list(it) == list(range(1, 10))
    before = threading.active_count()
    it = read_ahead(make, 2)
    next(it)
    it.close()  # leaving early stops and joins the producer
    assert threading.active_count() == before

    def failing():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(read_ahead(failing, 2))


def _flip(path: Path, offset: int = 40, size: int = 8) -> None:
    data = bytearray(path.read_bytes())
    for k in range(offset, offset + size):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["changed bytes", "truncated chunk"])
def test_damaged_store_raises_on_every_path(problem, tmp_path, damage):
    import shutil

    path = tmp_path / "k.zarr"
    shutil.copytree(problem["path"], path)
    chunk = path / "ntk/c/2/1"  # the mirror of tile (1, 2)
    if damage == "changed bytes":
        _flip(chunk)
    else:
        chunk.write_bytes(chunk.read_bytes()[:100])
    for in_memory in (True, False):
        with pytest.raises(CorruptStoreError, match=r"tile\(s\) \(1, 2\)"):
            scale.kernel_regression(
                path, problem["y"], get="ntk", diag_reg=REG, in_memory=in_memory
            )
    store = KernelStore.open(path)
    op = store_operator(store, "ntk", in_memory=False)
    with pytest.raises(CorruptStoreError, match=r"\(1, 2\)"):
        op.matmul(torch.ones(N, 1, dtype=D64))  # raised in the reader thread, re-raised here
    # the nngp kernel is intact; verify=False loads the damage as it is (the escape hatch)
    assert torch.equal(store_operator(store, "nngp").k, store.read("nngp"))
    if damage == "changed bytes":
        raw = store_operator(KernelStore.open(path, verify=False), "ntk", in_memory=True).k
        assert not torch.equal(raw, problem["k"])


def test_memory_budget_decides(monkeypatch):
    monkeypatch.setattr(bands, "available_memory", lambda: 1000)
    assert resolve_in_memory(600) and not resolve_in_memory(601)  # 60% of what is available
    assert resolve_in_memory(900, memory_budget=900) and not resolve_in_memory(901, "auto", 900)
    assert resolve_in_memory(900, True) and not resolve_in_memory(10, False)
    with pytest.raises(MemoryError, match="in_memory=True"):
        resolve_in_memory(1001, True)
    monkeypatch.undo()
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024
    assert 0 < bands.available_memory() <= total


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_memory="yes"), "in_memory"),
        (dict(in_memory=1), "in_memory"),
        (dict(memory_budget=-1), "memory_budget"),
        (dict(memory_budget=0), "memory_budget"),
        (dict(memory_budget=float("nan")), "memory_budget"),
        (dict(memory_budget="8GB"), "memory_budget"),
        (dict(memory_budget=True), "memory_budget"),
        (dict(in_memory=False, read_ahead=-1), "read_ahead"),
        (dict(in_memory=False, read_ahead=1.5), "read_ahead"),
        (dict(block_rows=0), "block_rows"),
    ],
)
def test_bad_arguments_named(problem, kwargs, match):
    store = KernelStore.open(problem["path"])
    with pytest.raises(ValueError, match=match):
        store_operator(store, "ntk", **kwargs)


def test_cli_memory_options(problem, tmp_path, capsys):
    y = tmp_path / "y.npy"
    np.save(y, problem["y"].numpy())
    base = ["kernel", "solve", "--store", str(problem["path"]), "--targets", str(y),
            "--no-progress", "--diag-reg", str(REG), "--tol", "1e-12", "--rank", "40"]  # fmt: skip
    for flag in ("yes", "no"):
        out = tmp_path / f"alpha-{flag}.npy"
        assert main([*base, "--in-memory", flag, "--out", str(out)]) == 0
        assert _rel(torch.from_numpy(np.load(out)), problem["want"]) < 1e-8
    assert main([*base, "--memory-budget", "-1"]) == 2
    assert "--memory-budget" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--in-memory", "maybe"])
    assert "--in-memory" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_resident_products_equal_gemm(dtype):
    """The symmetric BLAS product (one triangle read) equals the float64 product, any width."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(300, 300, generator=g, dtype=D64)
    k = (a @ a.T).to(dtype)
    k = torch.triu(k) + torch.triu(k, 1).T  # exactly symmetric, as a store writes it
    op = ResidentKernel(k)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for width in (1, 2, 3, 4, 7):
        v = torch.randn(300, width, generator=g, dtype=D64)
        want = k.double() @ v
        got = op.matmul(v.to(dtype))
        assert got.dtype == dtype and got.shape == (300, width)
        assert float((got.double() - want).abs().max() / want.abs().max()) <= tol, width
