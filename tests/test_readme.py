"""The README's Python examples run as written (in order, sharing one namespace)."""

import re
from pathlib import Path

import torch

import widelimits.scale.compute

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write a kernel store into the current folder
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    torch.manual_seed(0)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    k, model = namespace["k"], namespace["cnn_model"]
    assert k.nngp.shape == (6, 6) and bool(torch.isfinite(k.ntk).all())
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    info = namespace["info"]
    assert info.converged and (tmp_path / "k.zarr").is_dir()


def test_readme_scale_example_resumes_on_a_rerun(tmp_path, monkeypatch):
    """The store example says `# rerun = resume`: run it twice; the second run computes no tile."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    first = next(i for i, b in enumerate(blocks) if "rerun = resume" in b)
    namespace: dict = {}
    for block in blocks[:first]:  # the network and imports the example builds on
        exec(compile(block, str(README), "exec"), namespace)
    torch.manual_seed(123)  # whatever ran before, the example seeds its own inputs
    exec(compile(blocks[first], str(README), "exec"), namespace)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "k.zarr").rglob("*") if p.is_file()}
    pred = namespace["pred"].clone()

    def no_tile(*args, **kwargs):
        raise AssertionError("the rerun recomputed a tile instead of resuming")

    monkeypatch.setattr(widelimits.scale.compute, "_tile_task", no_tile)
    torch.manual_seed(456)
    exec(compile(blocks[first], str(README), "exec"), namespace)  # no StaleStoreError
    tiles = [p for p in before if "/c/" in p.as_posix()]
    assert tiles and all(p.stat().st_mtime_ns == before[p] for p in tiles)
    torch.testing.assert_close(namespace["pred"], pred, rtol=0, atol=0)
