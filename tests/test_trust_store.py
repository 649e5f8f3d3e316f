"""Kernel stores never lose data and never return a stale or damaged kernel silently.

Every damage is made on disk by hand (a changed byte, a truncated or deleted chunk, an edited
manifest, a folder that is not a store), then each read path must raise the right error naming
what is wrong, a resume must recompute exactly the damaged tiles and then equal an undamaged
store bit for bit (and the in-memory kernel, computed independently).  Network fingerprints are
checked against networks that print alike but compute different kernels.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("zarr")
pytest.importorskip("dask")

import scale_job as job  # noqa: E402

import widelimits as wl  # noqa: E402
from widelimits import scale  # noqa: E402
from widelimits.cli import main  # noqa: E402
from widelimits.fingerprint import FingerprintError, fingerprint  # noqa: E402
from widelimits.scale import (  # noqa: E402
    CorruptStoreError,
    KernelStore,
    NotAStoreError,
    StaleStoreError,
    StoreError,
    compute_kernel_store,
)

JOB = Path(__file__).with_name("scale_job.py")

N, TILE = 20, 8  # 3 x 3 tiles, 6 of them in the upper triangle; the last row/column is partial
NET = wl.Serial(wl.Dense(8, b_std=0.1), wl.ReLU(), wl.Dense(1))


def x_train():
    return job.inputs(N, features=4)


def compute(path, net=NET, x=None, **kwargs):
    kwargs = {"tile_size": TILE, "scheduler": "synchronous", "progress": False, **kwargs}
    return compute_kernel_store(net, x_train() if x is None else x, path=path, **kwargs)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "k.zarr"
    store = compute(path)
    return path, {g: store.read(g) for g in ("nngp", "ntk")}


@pytest.fixture
def store_copy(pristine, tmp_path):
    path = tmp_path / "k.zarr"
    shutil.copytree(pristine[0], path)
    return path


def snapshot(path: Path) -> dict:
    """Every file under ``path`` (or the file itself) with its bytes."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}



# ------------------------------------------------------------------------------------------
# damaged data: detected on every read path, repaired by a resume


def _flip(path: Path, offset: int = 0, size: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for k in range(offset, offset + size):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path, size: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:size])


DAMAGE = {
    # name: (what to do to the store at p, tiles that must be found damaged)
    "64 changed bytes": (lambda p: _flip(p / "ntk/c/0/1", 64, 64), {(0, 1)}),
    "one changed byte": (lambda p: _flip(p / "nngp/c/2/2"), {(2, 2)}),
    "truncated chunk": (lambda p: _truncate(p / "ntk/c/1/1"), {(1, 1)}),
    "empty chunk": (lambda p: _truncate(p / "nngp/c/0/0", 0), {(0, 0)}),
    "deleted chunk": (lambda p: (p / "nngp/c/0/2").unlink(), {(0, 2)}),
    "deleted mirror chunk": (lambda p: (p / "ntk/c/2/0").unlink(), {(0, 2)}),
    "deleted checksum": (lambda p: (p / "checksums/c/1/2/0").unlink(), {(1, 2)}),
    "changed checksum": (lambda p: _flip(p / "checksums/c/0/0/0", 3), {(0, 0)}),
    "two tiles": (
        lambda p: (_flip(p / "ntk/c/0/0", 10), (p / "nngp/c/1/2").unlink()),
        {(0, 0), (1, 2)},
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_detected_on_read_and_repaired_on_resume(damage, store_copy, pristine, monkeypatch):
    path = store_copy
    harm, tiles = DAMAGE[damage]
    harm(path)
    errors = []
    for g in ("nngp", "ntk"):
        try:
            got = KernelStore.open(path).read(g)
        except CorruptStoreError as err:
            errors.append(str(err))
        else:  # an undamaged kernel reads as it was written
            assert torch.equal(got, pristine[1][g])
    assert errors, "the damage was not detected"
    text = " ".join(errors)
    assert str(path) in text and "checksum" in text
    for tile in tiles:
        assert str(tile) in text, (tile, text)

    # the same call again repairs exactly the damaged tiles, with a warning
    calls = job.count_tile_tasks(monkeypatch)
    with pytest.warns(RuntimeWarning, match=f"{len(tiles)} finished tile.*checksums"):
        repaired = compute(path)
    assert sorted(calls) == sorted(tiles)
    want = NET.kernel(x_train())
    for g in ("nngp", "ntk"):
        assert torch.equal(repaired.read(g), pristine[1][g])  # bit for bit
        assert float((repaired.read(g) - getattr(want, g)).abs().max()) <= 1e-12


@pytest.mark.parametrize("marker", ["truncated", "garbage"])
def test_damaged_marker_means_not_done(marker, store_copy, pristine, monkeypatch):
    done = store_copy / "done/c/1/1"
    done.write_bytes(b"" if marker == "truncated" else b"\x07")
    store = KernelStore.open(store_copy)
    assert store.pending() == [(1, 1)]
    with pytest.raises(RuntimeError, match="incomplete .1 of 6 tiles missing"):
        store.read("ntk")
    calls = job.count_tile_tasks(monkeypatch)
    repaired = compute(store_copy)
    assert calls == [(1, 1)]
    assert torch.equal(repaired.read("ntk"), pristine[1]["ntk"])


def test_solver_paths_verify(store_copy, pristine, tmp_path):
    """kernel_regression reads the train store through StoreKernel and the test-train store
    through read(): both verify by default; verify=False reads the damage as it is."""
    y = torch.randn(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _flip(store_copy / "ntk/c/1/2", 8, 8)
    with pytest.raises(CorruptStoreError, match=r"tile\(s\) \(1, 2\)"):
        scale.kernel_regression(store_copy, y, get="ntk", diag_reg=1e-3)
    ones = torch.ones(N, 1, dtype=torch.float64)
    for use in (lambda op: op.matmul(ones), lambda op: op.columns(torch.tensor([10, 2]))):
        op = KernelStore.open(store_copy).operator("ntk")  # each entry point verifies
        with pytest.raises(CorruptStoreError, match=r"\(1, 2\)"):
            use(op)
    raw = KernelStore.open(store_copy, verify=False).read("ntk")
    assert not torch.equal(raw, pristine[1]["ntk"])  # the escape hatch reads the damage
    # a damaged test-train store
    cross = compute(tmp_path / "cross.zarr", x=job.inputs(9, seed=4, features=4), x2=x_train())
    (cross.path / "ntk/c/0/1").unlink()
    with pytest.raises(CorruptStoreError, match=r"\(0, 1\)"):
        scale.kernel_regression(pristine[0], y, get="ntk", cross=cross.path, diag_reg=1e-3)


# ------------------------------------------------------------------------------------------
# damaged or edited manifests


def _edit(path: Path, change) -> None:
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    change(doc["attributes"]["manifest"])
    meta.write_text(json.dumps(doc))


def _set(key, value):
    return lambda m: m.__setitem__(key, value)


def _doc(path: Path, text: str) -> None:
    (path / "zarr.json").write_text(text)


# name: (damage, error, match, overwrite allowed: the marker is still ours)
MANIFESTS = {
    "dtype with code": (
        lambda p: _edit(p, _set("dtype", "float32; os.system")),
        CorruptStoreError,
        "'dtype'",
        True,
    ),
    "dtype Tensor": (
        lambda p: _edit(p, _set("dtype", "Tensor")),
        CorruptStoreError,
        "'dtype'",
        True,
    ),
    "dtype float16": (
        lambda p: _edit(p, _set("dtype", "float16")),
        CorruptStoreError,
        "dtype",
        True,
    ),
    "tile as text": (lambda p: _edit(p, _set("tile", "8")), CorruptStoreError, "'tile'", True),
    "tile changed": (lambda p: _edit(p, _set("tile", 4)), CorruptStoreError, "array 'nngp'", True),
    "negative shape": (
        lambda p: _edit(p, _set("shape", [-1, 20])),
        CorruptStoreError,
        "'shape'",
        True,
    ),
    "shape changed": (
        lambda p: _edit(p, _set("shape", [21, 21])),
        CorruptStoreError,
        "array",
        True,
    ),
    "not square": (lambda p: _edit(p, _set("shape", [20, 12])), CorruptStoreError, "square", True),
    "unknown kernel": (
        lambda p: _edit(p, _set("kernels", ["ntk", "os"])),
        CorruptStoreError,
        "'kernels'",
        True,
    ),
    "kernels missing": (
        lambda p: _edit(p, lambda m: m.pop("kernels")),
        CorruptStoreError,
        "'kernels' is missing",
        True,
    ),
    "symmetric as text": (
        lambda p: _edit(p, _set("symmetric", "yes")),
        CorruptStoreError,
        "'symmetric'",
        True,
    ),
    "bad input digest": (lambda p: _edit(p, _set("x1", "abc")), CorruptStoreError, "'x1'", True),
    "network missing": (
        lambda p: _edit(p, lambda m: m.pop("network")),
        CorruptStoreError,
        "'network'",
        True,
    ),
    "checksum scheme": (
        lambda p: _edit(p, _set("checksum", "none")),
        CorruptStoreError,
        "'checksum'",
        True,
    ),
    "future format": (lambda p: _edit(p, _set("format", 3)), CorruptStoreError, "format", False),
    "old format": (
        lambda p: _edit(p, lambda m: (m.pop("store"), m.update(format=1, architecture="x"))),
        StaleStoreError,
        "older widelimits",
        True,
    ),  # fmt: skip
    "marker removed": (
        lambda p: _edit(p, lambda m: m.pop("store")),
        CorruptStoreError,
        "marker",
        False,
    ),
    "manifest a list": (
        lambda p: _doc(p, '{"node_type": "group", "attributes": {"manifest": [1]}}'),
        CorruptStoreError,
        "not a JSON object",
        False,
    ),  # fmt: skip
    "invalid JSON": (
        lambda p: _truncate(p / "zarr.json", 40),
        CorruptStoreError,
        "not valid JSON",
        False,
    ),
    "JSON not an object": (
        lambda p: _doc(p, "[1, 2]"),
        CorruptStoreError,
        "not a JSON object",
        False,
    ),
    "no manifest": (
        lambda p: _doc(p, '{"zarr_format": 3, "node_type": "group", "attributes": {}}'),
        NotAStoreError,
        "not a widelimits kernel store",
        False,
    ),  # fmt: skip
    "array metadata": (lambda p: _doc(p / "ntk", "{oops"), CorruptStoreError, "array 'ntk'", True),
    "array deleted": (
        lambda p: shutil.rmtree(p / "checksums"),
        CorruptStoreError,
        "array 'checksums'",
        True,
    ),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_damaged_manifest(case, store_copy):
    harm, error, match, deletable = MANIFESTS[case]
    harm(store_copy)
    before = snapshot(store_copy)
    with pytest.raises(error, match=match) as err:
        KernelStore.open(store_copy)
    assert str(store_copy) in str(err.value)
    with pytest.raises(error, match=match):  # a resume refuses it and touches nothing
        compute(store_copy)
    assert snapshot(store_copy) == before
    if deletable:  # still recognisably ours: overwrite recomputes it
        assert compute(store_copy, overwrite=True).complete
    else:
        with pytest.raises(NotAStoreError, match="refusing to delete"):
            compute(store_copy, overwrite=True)
        assert snapshot(store_copy) == before


# ------------------------------------------------------------------------------------------
# not a store: refused, never deleted


def _plain_folder(p: Path) -> None:
    (p / "data").mkdir(parents=True)
    (p / "notes.txt").write_text("my thesis")
    (p / "data" / "x.bin").write_bytes(os.urandom(64))


def _file(p: Path) -> None:
    p.write_bytes(b"precious")


def _foreign_zarr(p: Path) -> None:
    _plain_folder(p)
    _doc(p, '{"zarr_format": 3, "node_type": "group", "attributes": {"owner": "someone"}}')


def _bad_json_folder(p: Path) -> None:
    _plain_folder(p)
    _doc(p, "not json")


NOT_STORES = {
    "plain folder": (_plain_folder, NotAStoreError, "no zarr.json"),
    "file": (_file, NotAStoreError, "is a file"),
    "foreign zarr group": (_foreign_zarr, NotAStoreError, "not a widelimits kernel store"),
    "folder with a bad zarr.json": (_bad_json_folder, CorruptStoreError, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(NOT_STORES))
def test_not_a_store_is_refused_and_kept(case, tmp_path):
    make, error, match = NOT_STORES[case]
    path = tmp_path / "target"
    make(path)
    before = snapshot(path)
    with pytest.raises(error, match=match) as err:
        KernelStore.open(path)
    assert str(path) in str(err.value)
    with pytest.raises(error, match=match):
        compute(path)
    with pytest.raises(NotAStoreError, match="refusing to delete .*nothing was deleted") as err:
        compute(path, overwrite=True)
    assert str(path) in str(err.value)
    assert snapshot(path) == before  # byte for byte


def test_overwrite_refuses_store_with_user_files_and_symlinks(store_copy, tmp_path, pristine):
    (store_copy / "notes.txt").write_text("do not delete")
    before = snapshot(store_copy)
    assert KernelStore.open(store_copy).complete  # still readable, and resumable
    with pytest.raises(NotAStoreError, match=r"refusing to delete .*notes\.txt"):
        compute(store_copy, overwrite=True)
    assert snapshot(store_copy) == before
    link = tmp_path / "link.zarr"
    link.symlink_to(pristine[0], target_is_directory=True)
    with pytest.raises(NotAStoreError, match="symbolic link"):
        compute(link, overwrite=True)
    assert KernelStore.open(pristine[0]).complete
    with pytest.raises(FileNotFoundError, match="no kernel store"):
        KernelStore.open(tmp_path / "missing.zarr")


def test_empty_directory_is_used(tmp_path, pristine):
    path = tmp_path / "empty"
    path.mkdir()
    store = compute(path)
    assert torch.equal(store.read("nngp"), pristine[1]["nngp"])
    assert isinstance(NotAStoreError("x"), StoreError) and isinstance(StoreError("x"), ValueError)


# ------------------------------------------------------------------------------------------
# the CLI (widelimits kernel compute / solve)


@pytest.fixture
def npy(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, x_train().numpy())
    y = tmp_path / "y.npy"
    np.save(y, np.linspace(-1, 1, N))
    return x, y


ARCH = "Dense(8, b_std=0.1), ReLU(), Dense(1)"


@pytest.mark.parametrize("overwrite", [True, False])
def test_cli_compute_refuses_plain_folder(npy, tmp_path, capsys, overwrite):
    out = tmp_path / "results"
    _plain_folder(out)
    before = snapshot(out)
    argv = ["kernel", "compute", "--arch", ARCH, "--data", str(npy[0]), "--out", str(out),
            "--tile", str(TILE), "--scheduler", "synchronous", "--no-progress"]  # fmt: skip
    assert main(argv + (["--overwrite"] if overwrite else [])) == 2
    err = capsys.readouterr().err
    assert str(out) in err
    assert ("refusing to delete" if overwrite else "not a widelimits kernel store") in err
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "harm, match",
    [
        (lambda p: _flip(p / "ntk/c/0/0", 16), "does not match its checksum"),
        (lambda p: _edit(p, _set("dtype", "Tensor")), "'dtype'"),
    ],
    ids=["changed chunk", "edited dtype"],
)
def test_cli_solve_refuses_damaged_store(npy, tmp_path, capsys, harm, match):
    out = tmp_path / "k.zarr"
    argv = ["kernel", "compute", "--arch", ARCH, "--data", str(npy[0]), "--out", str(out),
            "--tile", str(TILE), "--scheduler", "synchronous", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    harm(out)
    capsys.readouterr()
    argv = ["kernel", "solve", "--store", str(out), "--targets", str(npy[1]), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and str(out) in err


# ------------------------------------------------------------------------------------------
# exact network fingerprints


def test_look_alikes_differ_and_rebuilt_networks_agree():
    nets, again = job.look_alikes(), job.look_alikes()
    digests = {k: fingerprint(v).digest for k, v in nets.items()}
    for a, b in [("tanh", "sin"), ("w1", "w4"), ("a2", "a3")]:
        assert repr(nets[a]) == repr(nets[b])  # the printed text cannot tell them apart
        assert digests[a] != digests[b]
    assert len(set(digests.values())) == len(digests)
    assert {k: fingerprint(v).digest for k, v in again.items()} == digests
    # and in another process (no hash randomization, addresses or insertion order leaks in)
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import scale_job; "
        "from widelimits.fingerprint import fingerprint; "
        "print(json.dumps({k: fingerprint(v).digest for k, v in scale_job.look_alikes().items()}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(JOB.parent)], capture_output=True, text=True,
        timeout=120, env=env, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout) == digests


@pytest.mark.parametrize(
    "stored, now, where",
    [("tanh", "sin", r"net\.layers\[1\]\._fn"), ("w1", "w4", r"net\.layers\[0\]\.W_std"),
     ("a2", "a3", r"net\.layers\[1\]\._fn")],
    ids=["lambda body", "tensor digits", "closure value"],
)  # fmt: skip
def test_stale_store_for_a_network_that_prints_the_same(stored, now, where, tmp_path):
    nets = job.look_alikes()
    x = job.inputs(6, features=3)
    path = tmp_path / "k.zarr"
    compute(path, net=nets[stored], x=x)
    assert compute(path, net=job.look_alikes()[stored], x=x).complete  # rebuilt: resumed
    with pytest.raises(StaleStoreError, match=f"different architecture .*differs at {where}"):
        compute(path, net=nets[now], x=x)


def _with_generator():
    g = torch.Generator()
    return wl.Serial(wl.Dense(4), wl.Elementwise(lambda x: torch.tanh(x) if g else x), wl.Dense(1))


def test_unfingerprintable_network_needs_a_name(tmp_path):
    x = job.inputs(6, features=3)
    path = tmp_path / "k.zarr"
    with pytest.raises(FingerprintError, match=r"net\.layers\[1\]\._fn\.<g>.*fingerprint="):
        compute(path, net=_with_generator(), x=x)
    assert not path.exists()
    assert isinstance(FingerprintError("x"), ValueError)
    compute(path, net=_with_generator(), x=x, fingerprint="tanh-gen-v1")
    assert compute(path, net=_with_generator(), x=x, fingerprint="tanh-gen-v1").complete
    with pytest.raises(StaleStoreError, match="name 'tanh-gen-v1', this call by the name 'v2'"):
        compute(path, net=_with_generator(), x=x, fingerprint="v2")
    with pytest.raises(StaleStoreError, match="this call by its exact fingerprint"):
        compute(path, net=NET, x=x)
    for bad in ("", "  ", 3):
        with pytest.raises(ValueError, match="fingerprint must be a non-empty string"):
            compute(tmp_path / "n.zarr", net=NET, x=x, fingerprint=bad)
    for thing in (object(), wl.Elementwise(torch.Generator().manual_seed)):
        with pytest.raises(FingerprintError, match="cannot fingerprint net"):
            fingerprint(thing)


def _fn(source: str, **globs):
    """A function compiled from ``source`` with the given globals."""
    space = {"torch": torch, **globs}
    exec(source, space)  # noqa: S102 - test helper
    return space["f"]


def test_fingerprint_reads_everything_a_function_uses():
    def fp(fn) -> str:
        return fingerprint(wl.Elementwise(fn)).digest

    user = types.ModuleType("usermod")
    user.c = 2.0
    pairs = [
        (lambda x, a=2.0: a * x, lambda x, a=3.0: a * x),  # defaults
        (
            _fn("def f(x): return SCALE * x", SCALE=2.0),
            _fn("def f(x): return SCALE * x", SCALE=3.0),
        ),
        (functools.partial(torch.clamp, min=0.1), functools.partial(torch.clamp, min=0.2)),
        (torch.tanh, torch.sin),  # C builtins by their import name
        (np.tanh, torch.tanh),
        (lambda x: torch.tanh(x), lambda x: torch.tanh(x) + 0.0),
    ]
    for a, b in pairs:
        assert fp(a) != fp(b)
    # a user module: the attributes the code reads are part of the function
    f = _fn("def f(x): return usermod.c * x", usermod=user)
    before = fp(f)
    user.c = 2.5
    assert fp(f) != before
    # recursion terminates; equal code with equal captures gives equal digests
    rec = _fn("def f(x, n=1): return x if n == 0 else f(x, n - 1)")
    assert fp(rec) == fp(_fn("def f(x, n=1): return x if n == 0 else f(x, n - 1)"))
    loop = wl.Dense(1)
    loop.me = loop  # a cycle through an attribute
    assert fingerprint(loop).digest == fingerprint(loop).digest
    # derived caches (*_cache) do not count: evaluating the kernel fills one
    net = wl.Serial(wl.Dense(2), wl.Elementwise(lambda x: torch.tanh(x)))
    first = fingerprint(net).digest
    net.kernel(job.inputs(3, features=2))
    assert net.layers[1]._rule_cache and fingerprint(net).digest == first


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    a=st.floats(allow_nan=False, allow_infinity=False),
    b=st.floats(allow_nan=False, allow_infinity=False),
)
def test_fingerprint_sees_every_bit_of_a_float(a, b):
    same = a.hex() == b.hex()  # the bits, independently of the fingerprint
    na, nb = types.SimpleNamespace(W_std=a), types.SimpleNamespace(W_std=b)
    assert (fingerprint(na).digest == fingerprint(nb).digest) == same
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert (fingerprint(ta).digest == fingerprint(tb).digest) == same
    fa, fb = eval(f"lambda x: {a!r} * x"), eval(f"lambda x: {b!r} * x")  # noqa: S307
    assert (fingerprint(fa).digest == fingerprint(fb).digest) == same


def test_a_tile_past_the_data_is_one_tile_of_the_data(tmp_path):
    # tile_size=10**9 on 20 examples once asked zarr for 1e9 x 1e9 chunks (7 EiB)
    store = compute(tmp_path / "k.zarr", tile_size=10**9)
    assert store.manifest["tile"] == N and len(store.tiles()) == 1
    dense = NET.kernel(x_train(), get="ntk")
    torch.testing.assert_close(torch.as_tensor(store.read("ntk")), dense, rtol=1e-12, atol=0)
