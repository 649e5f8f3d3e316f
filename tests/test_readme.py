"""The README's Python examples run as written (in order, sharing one namespace)."""

import re
from pathlib import Path

import torch

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
