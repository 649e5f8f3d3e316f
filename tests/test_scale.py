"""Tests of widelimits.scale (kernel stores, distributed tiles, CG kernel regression) and of the
preconditioned conjugate gradients of widelimits.predict.

Every store is checked against the in-memory kernel ``net.kernel``; every iterative solve against
a dense Cholesky solve (or an eigendecomposition, `gradient_descent_mse_ensemble`).
"""

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("zarr")
pytest.importorskip("dask")

import scale_job as job  # noqa: E402

import widelimits as wl  # noqa: E402
from widelimits import predict, scale  # noqa: E402
from widelimits.predict.operators import (  # noqa: E402
    DenseKernel,
    LowRankPreconditioner,
    make_preconditioner,
    nystrom,
    pivoted_cholesky,
)
from widelimits.scale import KernelStore, StaleStoreError, compute_kernel_store  # noqa: E402
from widelimits.scale import compute as compute_module  # noqa: E402
from widelimits.scale.store import manifest_for  # noqa: E402

D64 = torch.float64
JOB = Path(__file__).with_name("scale_job.py")


def assert_same(a, b, tol):
    assert a.shape == b.shape and a.dtype == b.dtype
    err = float((a - b).abs().max())
    assert err <= tol, f"max |difference| {err:.3g} > {tol:g}"


@pytest.fixture(scope="module")
def fc():
    return job.network()


# ------------------------------------------------------------------------------------------
# stores equal the in-memory kernel


@pytest.mark.parametrize("get", [("nngp", "ntk"), "nngp"])
def test_store_equals_in_memory_kernel(fc, tmp_path, get):
    x = job.inputs(533)
    store = compute_kernel_store(fc, x, path=tmp_path / "k.zarr", tile_size=96, get=get)
    assert store.complete and store.symmetric and store.shape == (533, 533)
    assert store.tiles() == [(i, j) for i in range(6) for j in range(i, 6)]  # upper triangle
    gets = (get,) if isinstance(get, str) else get
    assert store.kernels == list(gets)
    want = fc.kernel(x)
    for g in gets:
        got = store.read(g)
        assert_same(got, getattr(want, g), 1e-12)
        assert torch.equal(got, got.T)  # both triangles written, mirrored exactly
    if gets == ("nngp",):
        with pytest.raises(KeyError, match="holds"):
            store.read("ntk")
    # blocks that cross tile edges, and a reopened store
    block = KernelStore.open(tmp_path / "k.zarr").read("nngp", slice(90, 300), slice(500, 533))
    assert_same(block, want.nngp[90:300, 500:533], 1e-12)


def test_rectangular_store(fc, tmp_path):
    x1, x2 = job.inputs(310, seed=1), job.inputs(171, seed=2)
    store = compute_kernel_store(fc, x1, x2, path=tmp_path / "k.zarr", tile_size=64)
    assert not store.symmetric and store.shape == (310, 171)
    assert len(store.tiles()) == 5 * 3  # every tile, not only the upper triangle
    want = fc.kernel(x1, x2)
    for g in ("nngp", "ntk"):
        assert_same(store.read(g), getattr(want, g), 1e-12)


def test_conv_store(tmp_path):
    net = wl.Serial(
        wl.Conv(16, 3, padding="same", b_std=0.1), wl.ReLU(), wl.Conv(16, 3, padding="same"),
        wl.ReLU(), wl.GlobalAvgPool(), wl.Dense(1),
    )  # fmt: skip
    x = torch.randn(45, 2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=D64)
    store = compute_kernel_store(net, x, path=tmp_path / "c.zarr", tile_size=16)
    want = net.kernel(x)
    assert want.nngp.shape == (45, 45)
    for g in ("nngp", "ntk"):
        assert_same(store.read(g), getattr(want, g), 1e-12)
    x2 = torch.randn(20, 2, 4, 4, generator=torch.Generator().manual_seed(4), dtype=D64)
    cross = compute_kernel_store(net, x, x2, path=tmp_path / "c2.zarr", tile_size=16, get="ntk")
    assert_same(cross.read("ntk"), net.kernel(x, x2, get="ntk"), 1e-12)


# ------------------------------------------------------------------------------------------
# interrupted runs resume to the same bits


def _done(path) -> tuple[int, int]:
    """(tiles done, tiles in all) of the store at ``path``, or (0, 0) while it is being made."""
    try:
        store = KernelStore.open(path)
        total = len(store.tiles())
        return total - len(store.pending()), total
    except Exception:  # not created yet, or its metadata is half written
        return 0, 0


def test_killed_run_resumes_bit_identical(tmp_path, monkeypatch):
    n, tile = 200, 8  # 25 x 25 tiles, 325 of them in the upper triangle, one after another
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [sys.executable, str(JOB), str(path), str(n), str(tile)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        done = total = 0
        while time.monotonic() < deadline and proc.poll() is None:
            done, total = _done(path)
            if done >= 10:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the job ended before it was killed: {proc.communicate()}"
        assert 10 <= done < total, f"no tile done within the timeout ({done} of {total})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = KernelStore.open(path)
    pending = store.pending()
    assert 0 < len(pending) < total == len(store.tiles())
    assert not store.complete
    with pytest.raises(RuntimeError, match="incomplete"):
        store.read("ntk")

    # resume with the same call: only the missing tiles are computed
    calls = job.count_tile_tasks(monkeypatch)
    net, x = job.network(), job.inputs(n)
    with warnings.catch_warnings():  # a kill never leaves a marked tile without its checksums
        warnings.filterwarnings("error", message=".*checksums")
        resumed = compute_kernel_store(net, x, path=path, tile_size=tile, progress=False)
    assert sorted(calls) == sorted(pending)
    monkeypatch.undo()

    fresh = compute_kernel_store(net, x, path=tmp_path / "fresh.zarr", tile_size=tile)
    want = net.kernel(x)
    for g in ("nngp", "ntk"):
        assert torch.equal(resumed.read(g), fresh.read(g))
        assert_same(resumed.read(g), getattr(want, g), 1e-12)


# ------------------------------------------------------------------------------------------
# stale stores


def test_stale_store_refused_and_overwritten(fc, tmp_path, monkeypatch):
    path = tmp_path / "k.zarr"
    x = job.inputs(120)
    compute_kernel_store(fc, x, path=path, tile_size=50)
    other_net = wl.Serial(
        wl.Dense(512, W_std=1.3, b_std=0.1), wl.ReLU(), wl.Dense(512, b_std=0.1), wl.ReLU(),
        wl.Dense(1),
    )  # fmt: skip
    cases = [
        (dict(net=fc, x1=job.inputs(120, seed=5)), "inputs x1"),
        (dict(net=other_net, x1=x), r"architecture \(it differs at net.layers\[0\].W_std"),
        (dict(net=fc, x1=x, tile_size=40), "tile size"),
        (dict(net=fc, x1=x.float()), "dtype"),
        (dict(net=fc, x1=x, x2=x), "symmetry"),
        (dict(net=fc, x1=x, get="nngp"), "set of kernels"),
    ]
    for kwargs, what in cases:
        kwargs = {"tile_size": 50, "path": path, **kwargs}
        with pytest.raises(StaleStoreError, match=what) as err:
            compute_kernel_store(**kwargs)
        assert "overwrite=True" in str(err.value)
    assert isinstance(StaleStoreError("x"), ValueError)

    # a finished store is returned as it is: no task runs, no file is touched
    files = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}

    def no_task(*args):
        raise AssertionError("a finished store was recomputed")

    monkeypatch.setattr(compute_module, "_tile_task", no_task)
    again = compute_kernel_store(fc, x, path=path, tile_size=50)
    assert again.complete
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == files
    monkeypatch.undo()

    # overwrite=True recomputes for the new computation
    store = compute_kernel_store(other_net, x.float(), path=path, tile_size=40, overwrite=True)
    assert store.tile == 40 and store.manifest["dtype"] == "float32"
    want = other_net.kernel(x.float())
    for g in ("nngp", "ntk"):
        assert_same(store.read(g), getattr(want, g), 1e-5)


# ------------------------------------------------------------------------------------------
# dask.distributed


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _deep_net(depth: int = 10):
    layers = [lay for _ in range(depth) for lay in (wl.Dense(512, b_std=0.1), wl.ReLU())]
    return wl.Serial(*layers, wl.Dense(1))


@pytest.mark.slow
def test_distributed_client_bit_identical(fc, tmp_path, client):
    x = job.inputs(400)
    local = compute_kernel_store(fc, x, path=tmp_path / "local.zarr", tile_size=45)
    remote = compute_kernel_store(
        fc, x, path=tmp_path / "dist.zarr", tile_size=45, scheduler=client
    )
    assert remote.complete
    for g in ("nngp", "ntk"):
        assert torch.equal(remote.read(g), local.read(g))
    # rectangular on the cluster
    x2 = job.inputs(77, seed=9)
    rect = compute_kernel_store(fc, x, x2, path=tmp_path / "r.zarr", tile_size=45, scheduler=client)
    assert_same(rect.read("ntk"), fc.kernel(x, x2, get="ntk"), 1e-12)


@pytest.mark.slow
def test_distributed_survives_killed_worker(tmp_path, client):
    net, x = _deep_net(), job.inputs(2000, seed=7)
    tile = 160  # 13 x 13 tiles, 91 tasks
    path = tmp_path / "dist.zarr"
    pids = client.run(os.getpid)
    assert len(pids) == 2
    victim = min(pids.values())
    killed = {}

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, total = _done(path)
            if done >= 2:
                os.kill(victim, signal.SIGKILL)
                killed["at"] = (done, total)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    store = compute_kernel_store(net, x, path=path, tile_size=tile, scheduler=client)
    thread.join(timeout=60)
    assert "at" in killed, "the worker was not killed"
    done, total = killed["at"]
    assert done < total, f"the worker was killed only after the run: {killed}"
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert store.complete and len(store.tiles()) == 91
    ref = compute_kernel_store(net, x, path=tmp_path / "local.zarr", tile_size=tile)
    for g in ("nngp", "ntk"):
        assert torch.equal(store.read(g), ref.read(g))
    assert_same(store.read("nngp")[:300, :300], net.kernel(x[:300], get="nngp"), 1e-12)
    client.wait_for_workers(2, timeout=60)  # the nanny replaced it


@pytest.mark.slow
def test_processes_scheduler(fc, tmp_path):
    pytest.importorskip("distributed")
    x = job.inputs(350, seed=3)
    store = compute_kernel_store(
        fc, x, path=tmp_path / "p.zarr", tile_size=64, scheduler="processes", workers=2
    )
    local = compute_kernel_store(fc, x, path=tmp_path / "t.zarr", tile_size=64)
    for g in ("nngp", "ntk"):
        assert torch.equal(store.read(g), local.read(g))
    assert_same(store.read("ntk"), fc.kernel(x, get="ntk"), 1e-12)


# ------------------------------------------------------------------------------------------
# preconditioned conjugate gradients against Cholesky


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    xs, labels = datasets.load_digits(return_X_y=True)
    n = 1000
    x = torch.tensor(xs[:n], dtype=D64)
    x = x / x.norm(dim=1, keepdim=True)
    y = torch.nn.functional.one_hot(torch.tensor(labels[:n]), 10).to(D64) - 0.1
    return dict(kernel=job.network().kernel(x), y=y)


# Iterations to relative residual 1e-10 measured on this problem (rank 100; N = 1000):
#   nngp, diag_reg 1e-4: none 936, jacobi 952, pivoted_cholesky 198, nystrom 172
#   ntk,  diag_reg 1e-4: none 205, jacobi 205, pivoted_cholesky 85,  nystrom 72
@pytest.mark.parametrize("get, ratio", [("nngp", 0.3), ("ntk", 0.5)])
def test_cg_preconditioners_match_cholesky(digits, get, ratio):
    k, y = getattr(digits["kernel"], get), digits["y"]
    reg, tol = 1e-4, 1e-10
    want = predict.cholesky_solve(k, y, diag_reg=reg)
    k_reg = predict.add_diagonal_regularizer(k, reg)
    evals = torch.linalg.eigvalsh(k_reg)
    cond = float(evals[-1] / evals[0])
    iterations = {}
    for pc in ("none", "jacobi", "pivoted_cholesky", "nystrom"):
        x, info = predict.cg_solve(k, y, diag_reg=reg, tol=tol, preconditioner=pc, rank=100)
        assert info.converged and info.residual <= tol, (pc, info)
        assert info.preconditioner == pc
        assert info.rank == (100 if pc in ("pivoted_cholesky", "nystrom") else 0)
        # the true residual, recomputed here, is the reported one up to rounding drift
        true = ((y - k_reg @ x).norm(dim=0) / y.norm(dim=0)).max()
        assert float(true) <= 10 * tol
        # forward error <= cond(K_reg) * relative residual, per column
        err = (x - want).norm(dim=0) / want.norm(dim=0)
        assert bool((err <= cond * float(true) + 1e-12).all()), (pc, err.max(), cond)
        assert float(err.max()) <= 1e-6
        iterations[pc] = info.iterations
    assert iterations["pivoted_cholesky"] <= ratio * iterations["none"], iterations
    assert iterations["nystrom"] <= ratio * iterations["none"], iterations


def test_cg_info_report():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g, dtype=D64)
    k = job.network().kernel(x, get="ntk")
    b = torch.randn(300, 2, generator=g, dtype=D64)
    x0 = torch.randn(300, 2, generator=g, dtype=D64)
    reg = 1e-3
    k_reg = predict.add_diagonal_regularizer(k, reg)
    for pc in ("jacobi", "pivoted_cholesky"):
        sol, info = predict.cg_solve(k, b, diag_reg=reg, tol=1e-9, preconditioner=pc, rank=20)
        assert info.residuals[0] == 1.0  # x0 = 0: r = b
        assert len(info.residuals) == info.iterations + 1
        assert info.residuals[-1] == info.residual <= 1e-9
        assert info.seconds > 0
        text = str(info)
        assert f"{info.iterations} iterations" in text and f"{info.residual:.3g}" in text
        assert "converged" in text and pc in text
        _, info0 = predict.cg_solve(k, b, diag_reg=reg, tol=1e-9, x0=x0, preconditioner=pc)
        start = ((b - k_reg @ x0).norm(dim=0) / b.norm(dim=0)).max()
        assert info0.residuals[0] == pytest.approx(float(start), rel=1e-12)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        _, info = predict.cg_solve(k, b, diag_reg=reg, tol=1e-14, max_iter=3)
    assert not info.converged and info.iterations == 3 and len(info.residuals) == 4
    assert "did NOT converge" in str(info)


def test_pivoted_cholesky_and_nystrom_exact():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(60, 5, generator=g, dtype=D64)
    k = a @ a.T  # PSD of rank exactly 5
    for block in (64, 2):
        factor = pivoted_cholesky(DenseKernel(k), rank=30, block=block)
        assert factor.shape == (60, 5)
        assert_same(factor @ factor.T, k, 1e-10 * float(k.abs().max()))
    # Nystrom with every column a landmark reproduces a positive definite kernel
    x = torch.randn(40, 3, generator=g, dtype=D64)
    kern = job.network().kernel(x, get="nngp")
    factor = nystrom(DenseKernel(kern), rank=40)
    assert factor.shape == (40, 40)
    assert_same(factor @ factor.T, kern, 1e-8 * float(kern.abs().max()))
    # the Woodbury application is the inverse of P = L L^T + D
    lowrank = nystrom(DenseKernel(kern), rank=7, seed=3)
    d = torch.rand(40, generator=g, dtype=D64) + 0.05
    pre = LowRankPreconditioner(lowrank, d)
    v = torch.randn(40, 2, generator=g, dtype=D64)
    dense = lowrank @ lowrank.T + torch.diag(d)
    assert_same(pre(v), torch.linalg.solve(dense, v), 1e-10)
    # make_preconditioner keeps the diagonal that the factor misses: D = diag(K - L L^T) + s
    pc = make_preconditioner(DenseKernel(kern), "pivoted_cholesky", 0.1, rank=7)
    missed = torch.diagonal(kern) - (pc.factor**2).sum(1)
    dense = pc.factor @ pc.factor.T + torch.diag(missed.clamp_min(0) + 0.1)
    assert_same(pc(v), torch.linalg.solve(dense, v), 1e-10)
    assert make_preconditioner(DenseKernel(kern), "none", 0.1) is None


def test_preconditioner_errors():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 2, generator=g, dtype=D64)
    singular = a @ a.T  # rank 2: L L^T = K exactly, nothing left on the diagonal without diag_reg
    for pc in ("pivoted_cholesky", "nystrom"):
        with pytest.raises(ValueError, match="diag_reg"):
            predict.cg_solve(singular, torch.ones(6), diag_reg=0.0, preconditioner=pc, rank=6)
    with pytest.raises(ValueError, match="diag_reg > 0"):
        predict.cg_solve(singular, torch.ones(6), preconditioner="pivoted_cholesky")
    # pivoted rows are factored exactly (D = 0 there), so pivoted Cholesky always needs diag_reg
    k = torch.eye(4, dtype=D64) + 0.1
    for rank in (2, 4):
        with pytest.raises(ValueError, match="diag_reg > 0"):
            predict.cg_solve(k, torch.ones(4), preconditioner="pivoted_cholesky", rank=rank)
    with pytest.raises(ValueError, match="preconditioner must be one of"):
        predict.cg_solve(k, torch.ones(4), diag_reg=1e-3, preconditioner="ichol")
    # Jacobi and no preconditioner work without regularization
    want = torch.linalg.solve(k, torch.ones(4, dtype=D64))
    for pc in ("jacobi", "none"):
        x, info = predict.cg_solve(k, torch.ones(4), preconditioner=pc, tol=1e-12)
        assert info.converged
        assert_same(x, want, 1e-10)


# ------------------------------------------------------------------------------------------
# kernel regression


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    net = job.network()
    x_train, x_test = job.inputs(300, seed=11), job.inputs(70, seed=12)
    y = torch.randn(300, 2, generator=torch.Generator().manual_seed(13), dtype=D64)
    root = tmp_path_factory.mktemp("regression")
    train = compute_kernel_store(net, x_train, path=root / "train.zarr", tile_size=64)
    cross = compute_kernel_store(net, x_test, x_train, path=root / "cross.zarr", tile_size=64)
    return dict(net=net, x_train=x_train, x_test=x_test, y=y, train=train, cross=cross)


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_kernel_regression_sources_agree(regression, get):
    r = regression
    net, xs, xt, y = r["net"], r["x_train"], r["x_test"], r["y"]
    reg = 1e-3
    k = net.kernel(xs, get=get)
    alpha_ref = predict.cholesky_solve(k, y, diag_reg=reg)
    pred_ref = net.kernel(xt, xs, get=get) @ alpha_ref
    runs = {
        "store path": dict(train=r["train"].path, cross=r["cross"].path),
        "store": dict(train=r["train"], cross=r["cross"]),
        "operator": dict(train=r["train"].operator(get, block_rows=50), cross=r["cross"]),
        "dense": dict(train=k, cross=net.kernel(xt, xs, get=get)),
        "recomputed": dict(train=None, net=net, x_train=xs, x_test=xt),
    }
    # every source with the default preconditioner (pivoted Cholesky of rank 500), the others
    # on the store (a recomputed kernel recomputes all of K at each iteration: keep it to one)
    cases = [(name, kwargs, "pivoted_cholesky", 500) for name, kwargs in runs.items()]
    cases += [("store", runs["store"], "nystrom", 40), ("store", runs["store"], "jacobi", None)]
    for name, kwargs, pc, rank in cases:
        alpha, pred, info = scale.kernel_regression(
            y=y, get=get, diag_reg=reg, tol=1e-12, preconditioner=pc, rank=rank, **kwargs
        )
        assert info.converged, (name, pc, info)
        assert alpha.shape == y.shape and pred.shape == (70, 2)
        assert _rel(alpha, alpha_ref) < 1e-6, (name, pc)
        assert _rel(pred, pred_ref) < 1e-6, (name, pc)
    # a single target column keeps its shape; no test inputs: no predictions
    alpha1, pred1, _ = scale.kernel_regression(
        r["train"], y[:, 0], get=get, diag_reg=reg, tol=1e-12
    )
    assert alpha1.shape == (300,) and pred1 is None
    assert _rel(alpha1, alpha_ref[:, 0]) < 1e-6


def test_kernel_regression_is_the_trained_ensemble_mean(regression):
    r = regression
    net, xs, xt, y = r["net"], r["x_train"], r["x_test"], r["y"]
    reg = 1e-3
    want = predict.gradient_descent_mse_ensemble(net, xs, y, diag_reg=reg)(None, xt, get="ntk")
    _, pred, info = scale.kernel_regression(r["train"], y, get="ntk", cross=r["cross"],
                                            diag_reg=reg, tol=1e-12)  # fmt: skip
    assert info.converged
    assert _rel(pred, want) < 1e-6
    _, pred, _ = scale.kernel_regression(
        None, y, get="ntk", net=net, x_train=xs, x_test=xt, diag_reg=reg, tol=1e-12
    )
    assert _rel(pred, want) < 1e-6


# ------------------------------------------------------------------------------------------
# errors


def test_store_errors(fc, tmp_path):
    x = job.inputs(50)
    # a store that has not been computed
    manifest = manifest_for(fc, x, None, ("nngp", "ntk"), x.dtype, 16, "cpu")
    empty = KernelStore.create_or_resume(tmp_path / "empty.zarr", manifest)
    assert len(empty.pending()) == len(empty.tiles()) == 10
    with pytest.raises(RuntimeError, match="incomplete .10 of 10 tiles missing"):
        empty.read("nngp")
    with pytest.raises(RuntimeError, match="incomplete"):
        empty.operator("ntk")
    with pytest.raises(RuntimeError, match="incomplete"):
        scale.kernel_regression(tmp_path / "empty.zarr", torch.ones(50, dtype=D64))

    rect = compute_kernel_store(fc, x, x[:20], path=tmp_path / "rect.zarr", tile_size=16)
    with pytest.raises(ValueError, match="symmetric"):
        rect.operator("ntk")
    with pytest.raises(FileNotFoundError, match="no kernel store"):
        KernelStore.open(tmp_path / "missing.zarr")
    only = compute_kernel_store(fc, x, path=tmp_path / "nngp.zarr", tile_size=16, get="nngp")
    with pytest.raises(KeyError, match="holds"):
        only.read("ntk")
    with pytest.raises(KeyError, match="holds"):
        only.operator("ntk")
    with pytest.raises(KeyError, match="holds"):
        scale.kernel_regression(only, torch.ones(50, dtype=D64), get="ntk")

    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(scale.NotAStoreError, match="not a widelimits kernel store"):
        KernelStore.open(tmp_path / "plain.zarr")
    with pytest.raises(ValueError, match="tile_size"):
        compute_kernel_store(fc, x, path=tmp_path / "t.zarr", tile_size=0)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        compute_kernel_store(fc, x, path=tmp_path / "s.zarr", tile_size=16, scheduler="gpu-farm")
    with pytest.raises(ValueError, match="no NTK"):
        compute_kernel_store(wl.Serial(wl.ReLU()), x, path=tmp_path / "n.zarr")
    with pytest.raises(ValueError, match="needs targets"):
        scale.kernel_regression(only)
    with pytest.raises(ValueError, match="net and x_train"):
        scale.kernel_regression(None, torch.ones(50, dtype=D64))


def test_store_kernel_operator_reads_like_dense(fc, tmp_path):
    x = job.inputs(130)
    store = compute_kernel_store(fc, x, path=tmp_path / "k.zarr", tile_size=32)
    k = fc.kernel(x, get="ntk")
    op = store.operator("ntk", block_rows=45)
    assert op.shape == (130, 130) and op.dtype == D64
    v = torch.randn(130, 3, dtype=D64)
    assert_same(op.matmul(v), k @ v, 1e-11)
    assert_same(op.diagonal(), torch.diagonal(k), 1e-12)
    index = torch.tensor([77, 3, 129, 40])
    assert_same(op.columns(index), k[:, index], 1e-12)
    # RecomputedKernel computes the diagonal blocks as symmetric kernels, so each point meets
    # itself at correlation exactly 1, as in net.kernel(x): it agrees to rounding everywhere.
    rec = scale.RecomputedKernel(fc, x, "ntk", block_rows=50)
    scale_k = float(k.abs().max())
    assert_same(rec.matmul(v), k @ v, 1e-11 * float((k @ v).abs().max()))
    assert_same(rec.diagonal(), torch.diagonal(k), 1e-12)
    assert_same(rec.columns(index), k[:, index], 1e-12 * scale_k)
    with pytest.raises(ValueError, match="get must be"):
        scale.RecomputedKernel(fc, x, "ntkgp")
