"""`widelimits kernel compute|solve` and the architecture parser behind --arch."""

import numpy as np
import pytest
import torch

import widelimits as wl
from widelimits import predict, scale
from widelimits.cli import main
from widelimits.layers.spec import parse_architecture

pytest.importorskip("zarr")
ARCH = "Dense(W_std=1.5, b_std=0.1), ReLU, Dense(), ReLU(), Dense(1)"


def test_parse_architecture_builds_the_same_description():
    net = parse_architecture(ARCH)
    same = wl.Serial(wl.Dense(W_std=1.5, b_std=0.1), wl.ReLU(), wl.Dense(), wl.ReLU(), wl.Dense(1))
    assert repr(net) == repr(same)
    conv = parse_architecture("Conv(None, (3, 3), padding='circular'), ReLU(), GlobalAvgPool()")
    assert isinstance(conv.layers[0], wl.Conv) and conv.layers[0].padding == "circular"
    assert isinstance(parse_architecture("Dense(1)"), wl.Dense)
    nested = parse_architecture("Residual(Dense(), ReLU(), Dense()), Dense(1)")
    assert isinstance(nested, wl.Serial)
    for bad, match in [
        ("Dense(), __import__('os').system('true')", "not a layer or a literal"),
        ("Dense(", "not a list of layers"),
        ("1, 2", "comma-separated list of layers"),
        ("Bogus()", "not a layer or a literal"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_architecture(bad)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((300, 12)), rng.standard_normal((50, 12))
    labels = (x[:, 0] > 0).astype(np.int64)
    paths = {name: tmp_path / f"{name}.npy" for name in ("x", "xt", "y", "yt", "pred")}
    np.save(paths["x"], x)
    np.save(paths["xt"], xt)
    np.save(paths["y"], labels)
    np.save(paths["yt"], (xt[:, 0] > 0).astype(np.int64))
    return tmp_path, paths, x, xt, labels


def test_compute_and_solve_match_the_dense_solution(files, capsys):
    tmp, p, x, xt, labels = files
    common = ["--arch", ARCH, "--dtype", "float64", "--no-progress", "--tile", "128"]
    assert main(["kernel", "compute", "--data", str(p["x"]), "--out", str(tmp / "k.zarr"),
                 *common]) == 0  # fmt: skip
    assert main(["kernel", "compute", "--data", str(p["xt"]), "--data2", str(p["x"]),
                 "--out", str(tmp / "kt.zarr"), *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(300, 300)" in out and "(50, 300)" in out
    assert main(["kernel", "solve", "--store", str(tmp / "k.zarr"), "--targets", str(p["y"]),
                 "--cross", str(tmp / "kt.zarr"), "--test-targets", str(p["yt"]), "--tol",
                 "1e-10", "--diag-reg", "1e-3", "--rank", "50", "--out", str(p["pred"]),
                 "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "CG converged" in out and "test accuracy" in out
    # the same regression done densely, in memory
    net = parse_architecture(ARCH)
    X, XT = torch.from_numpy(x), torch.from_numpy(xt)
    onehot = torch.from_numpy(np.eye(2)[labels] - 0.5)
    alpha = predict.cholesky_solve(net.kernel(X, get="ntk"), onehot, diag_reg=1e-3)
    expected = net.kernel(XT, X, get="ntk") @ alpha
    np.testing.assert_allclose(np.load(p["pred"]), expected.numpy(), rtol=1e-7, atol=1e-9)
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    truth = np.load(p["yt"])
    assert accuracy == pytest.approx(np.mean(expected.numpy().argmax(1) == truth), abs=1e-4)
    # recomputed kernel instead of the store
    assert main(["kernel", "solve", "--arch", ARCH, "--data", str(p["x"]), "--dtype",
                 "float64", "--targets", str(p["y"]), "--test-data", str(p["xt"]), "--tol",
                 "1e-10", "--diag-reg", "1e-3", "--rank", "50", "--out", str(p["pred"]),
                 "--no-progress"]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(p["pred"]), expected.numpy(), rtol=1e-7, atol=1e-9)


def test_cli_errors_are_clear(files, capsys):
    tmp, p, *_ = files
    base = ["kernel", "compute", "--data", str(p["x"]), "--out", str(tmp / "k.zarr"),
            "--no-progress"]  # fmt: skip
    assert main([*base, "--arch", "Dense(), ReLU(), Dense(1)"]) == 0
    assert main([*base, "--arch", "Dense(), Erf(), Dense(1)"]) == 2
    assert "different architecture" in capsys.readouterr().err
    assert main([*base, "--arch", "Dense(), Erf(), Dense(1)", "--overwrite"]) == 0
    assert scale.KernelStore.open(tmp / "k.zarr").manifest["architecture"].count("Erf") == 1
    assert main([*base, "--arch", "Dense(, ReLU"]) == 2
    assert "not a list of layers" in capsys.readouterr().err
    assert main(["kernel", "compute", "--data", str(tmp / "missing.npy"), "--out",
                 str(tmp / "m.zarr"), "--arch", "Dense(1)"]) == 2  # fmt: skip
    assert "no such file" in capsys.readouterr().err
    assert main(["kernel", "solve", "--targets", str(p["y"])]) == 2
    assert "give --store" in capsys.readouterr().err
