"""scikit-learn estimators and kernel callable (widelimits.sklearn)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

import widelimits as wl
from widelimits.predict import gp_inference
from widelimits.sklearn import (
    NNGPClassifier,
    NNGPRegressor,
    NTKClassifier,
    NTKRegressor,
    kernel_function,
)


@parametrize_with_checks([NNGPRegressor(), NTKRegressor(), NNGPClassifier(), NTKClassifier()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _regression_data(seed=0, n=40, m=15, d=4, targets=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    xt = rng.normal(size=(m, d))
    w = rng.normal(size=(d,) if targets is None else (d, targets))
    y = np.sin(x @ w)
    return x, y, xt


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))[:1000]
    x, y = x[perm] / 16.0, y[perm]
    return x[:600], y[:600], x[600:], y[600:]


def _net():
    return wl.Serial(
        wl.Dense(W_std=1.5, b_std=0.05), wl.ReLU(), wl.Dense(W_std=1.5, b_std=0.05), wl.ReLU(),
        wl.Dense(1, W_std=1.5, b_std=0.05),
    )  # fmt: skip


@pytest.mark.parametrize("cls, get", [(NNGPRegressor, "nngp"), (NTKRegressor, "ntk")])
@pytest.mark.parametrize("targets", [None, 3])
def test_regressor_matches_explicit_solve(cls, get, targets):
    x, y, xt = _regression_data(targets=targets)
    diag_reg = 1e-3
    reg = cls(architecture=_net(), diag_reg=diag_reg).fit(x, y)
    pred = reg.predict(xt)
    assert pred.shape == ((15,) if targets is None else (15, targets))
    # independent: torch.linalg.solve with the widelimits kernels, relative regularization
    net = _net()
    k = net.kernel(torch.tensor(x), get=get)
    k_reg = k + diag_reg * torch.diagonal(k).mean() * torch.eye(len(x), dtype=k.dtype)
    k_tx = net.kernel(torch.tensor(xt), torch.tensor(x), get=get)
    expected = k_tx @ torch.linalg.solve(k_reg, torch.tensor(y))
    assert k.dtype == torch.float64
    np.testing.assert_allclose(pred, expected.numpy(), rtol=1e-8, atol=1e-10)


def test_default_architecture_is_depth_relu_net():
    x, y, xt = _regression_data()
    a = NTKRegressor(depth=2, W_std=1.3, b_std=0.1).fit(x, y).predict(xt)
    net = wl.Serial(
        wl.Dense(W_std=1.3, b_std=0.1), wl.ReLU(), wl.Dense(W_std=1.3, b_std=0.1), wl.ReLU(),
        wl.Dense(1, W_std=1.3, b_std=0.1),
    )  # fmt: skip
    b = NTKRegressor(architecture=net).fit(x, y).predict(xt)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(a, NTKRegressor(depth=1).fit(x, y).predict(xt))


@pytest.mark.parametrize("cls, get", [(NNGPRegressor, "nngp"), (NTKRegressor, "ntk")])
def test_return_std_matches_gp_inference(cls, get):
    x, y, xt = _regression_data(seed=1)
    reg = cls(diag_reg=1e-4).fit(x, y)
    mean, std = reg.predict(xt, return_std=True)
    net = reg.net_
    tx, tt = torch.tensor(x), torch.tensor(xt)
    fn = gp_inference(net.kernel(tx), torch.tensor(y), diag_reg=1e-4)
    g = fn(get, net.kernel(tt, tx), net.kernel(tt))
    np.testing.assert_allclose(mean, g.mean.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(std, np.sqrt(np.diag(g.covariance.numpy())), rtol=1e-8)
    assert std.shape == (len(xt),) and np.all(std >= 0)
    # the predictive spread shrinks to (about) the regularization noise at the training points
    _, std_train = reg.predict(x[:10], return_std=True)
    assert np.all(std_train >= 0)
    prior_std = np.sqrt(net.kernel(tx[:10], get="nngp", diagonal=True).numpy())
    assert np.all(std_train < 0.05 * prior_std)
    assert std_train.max() < 0.2 * std.min()
    if get == "nngp":  # posterior variance at a training point <= the noise variance
        noise_var = 1e-4 * float(torch.diagonal(net.kernel(tx, get="nngp")).mean())
        assert std_train.max() ** 2 <= noise_var * (1 + 1e-8)


def test_return_std_multi_output_shape():
    x, y, xt = _regression_data(targets=2)
    mean, std = NNGPRegressor().fit(x, y).predict(xt, return_std=True)
    assert mean.shape == std.shape == (15, 2)
    np.testing.assert_allclose(std[:, 0], std[:, 1])


@pytest.mark.parametrize("cls, threshold", [(NNGPClassifier, 0.95), (NTKClassifier, 0.95)])
def test_digits_accuracy(digits, cls, threshold):
    x, y, xt, yt = digits
    clf = cls().fit(x, y)
    acc = clf.score(xt, yt)
    assert acc > threshold, acc
    dec = clf.decision_function(xt)
    assert dec.shape == (len(yt), 10)
    np.testing.assert_array_equal(clf.classes_[dec.argmax(1)], clf.predict(xt))


def test_binary_classifier_string_labels():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "pos", "neg")
    clf = NTKClassifier().fit(x[:40], y[:40])
    assert list(clf.classes_) == ["neg", "pos"]
    dec = clf.decision_function(x[40:])
    assert dec.shape == (20,)
    np.testing.assert_array_equal(np.where(dec > 0, "pos", "neg"), clf.predict(x[40:]))
    assert clf.score(x[40:], y[40:]) > 0.75


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_svc_callable_equals_precomputed(digits, get):
    x, y, xt, yt = digits
    x, y, xt, yt = x[:200], y[:200], xt[:100], yt[:100]
    f = kernel_function(get=get)
    k = f(x, x)
    assert isinstance(k, np.ndarray) and k.dtype == np.float64 and k.shape == (200, 200)
    np.testing.assert_allclose(k, wl.Serial(*_default_layers()).kernel(x, get=get).numpy())
    svc_callable = SVC(kernel=f, C=10.0).fit(x, y)
    svc_pre = SVC(kernel="precomputed", C=10.0).fit(k, y)
    p1 = svc_callable.predict(xt)
    p2 = svc_pre.predict(f(xt, x))
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(
        svc_callable.decision_function(xt), svc_pre.decision_function(f(xt, x)), atol=1e-8
    )
    assert (p1 == yt).mean() > 0.9
    # the callable is picklable, so is an SVC using it
    restored = pickle.loads(pickle.dumps(svc_callable))
    np.testing.assert_array_equal(restored.predict(xt), p1)


def _default_layers(depth=3, W_std=1.5, b_std=0.05):
    layers = []
    for _ in range(depth):
        layers += [wl.Dense(W_std=W_std, b_std=b_std), wl.ReLU()]
    return [*layers, wl.Dense(1, W_std=W_std, b_std=b_std)]


def test_kernel_function_custom_net_and_errors():
    net = _net()
    f = kernel_function(net, get="nngp")
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(f(x), net.kernel(x, get="nngp").numpy())
    with pytest.raises(ValueError, match="get must be"):
        kernel_function(get="rbf")
    with pytest.raises(ValueError, match="same number of features"):
        f(x, x[:, :2])


def test_pipeline_and_grid_search(digits):
    x, y, xt, yt = digits
    x, y = x[:150], y[:150]
    pipe = make_pipeline(StandardScaler(), NNGPClassifier())
    grid = GridSearchCV(
        pipe, {"nngpclassifier__depth": [1, 3], "nngpclassifier__diag_reg": [1e-4, 1e-1]}, cv=3
    )
    grid.fit(x, y)
    assert set(grid.best_params_) == {"nngpclassifier__depth", "nngpclassifier__diag_reg"}
    assert grid.score(xt, yt) > 0.8

    xr, yr, xrt = _regression_data(n=30)
    reg = GridSearchCV(
        make_pipeline(StandardScaler(), NTKRegressor()), {"ntkregressor__depth": [1, 2]}, cv=3
    ).fit(xr, yr)
    assert reg.predict(xrt).shape == (15,)


def test_invalid_hyperparameters():
    x, y, _ = _regression_data()
    with pytest.raises(ValueError, match="depth"):
        NNGPRegressor(depth=-1).fit(x, y)
    with pytest.raises(ValueError, match="diag_reg"):
        NNGPRegressor(diag_reg=-1.0).fit(x, y)
    with pytest.raises(TypeError, match="architecture"):
        NNGPRegressor(architecture="relu").fit(x, y)


@pytest.mark.parametrize("cls", [NNGPRegressor, NTKClassifier])
def test_cg_solver_matches_cholesky(cls):
    # a second algorithm: conjugate gradients to a 1e-10 residual against the Cholesky solve
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((60, 5)), rng.standard_normal(60)
    if cls is NTKClassifier:
        y = (y > 0).astype(int)
    exact = cls(diag_reg=1e-2).fit(X, y)
    iterative = cls(diag_reg=1e-2, solver="cg").fit(X, y)
    np.testing.assert_allclose(iterative.dual_coef_, exact.dual_coef_, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="solver must be"):
        cls(solver="lu").fit(X, y)
