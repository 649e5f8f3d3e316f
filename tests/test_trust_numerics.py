"""Trust (issue 13): numerics that must not pass silently in predict, sklearn, scale, kernel solve.

Every bad input raises the asserted exception type with a message that names the offending
argument; the unstable-learning-rate warning, the PSD check, singular solves and CG failures are
checked against independent computations (an explicit gradient-descent loop, eigenvalues built by
hand, dense Cholesky solves) and the NTK covariance against neural-tangents' reference values.
"""

import math
import re
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import widelimits as wl
from widelimits import predict, scale
from widelimits.cli import main
from widelimits.layers.spec import parse_architecture
from widelimits.predict.operators import DenseKernel
from widelimits.sklearn import NNGPClassifier, NNGPRegressor, NTKClassifier, NTKRegressor

D64 = torch.float64
N = 6  # training points
Pair = namedtuple("Pair", "nngp ntk")  # a kernel with both parts, as gp_inference accepts
NT_PREDICT = Path(__file__).resolve().parent / "data" / "nt_predict.npz"


@pytest.fixture(scope="module")
def p():
    """A small ReLU network, its joint train + test kernels and 2-output targets."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N + 3, 4, generator=g, dtype=D64)
    net = wl.Serial(wl.Dense(8, b_std=0.1), wl.ReLU(), wl.Dense(1))
    k = net.kernel(x, get=("nngp", "ntk"))
    y = torch.randn(N, 2, generator=g, dtype=D64)
    return dict(net=net, x=x, K=k.nngp, T=k.ntk, y=y)


def _psd_with(evals, seed=0, dtype=D64):
    """Q diag(evals) Q^T for a random orthogonal Q: a symmetric matrix with known eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(evals), len(evals), generator=g, dtype=D64))
    m = q @ torch.diag(torch.tensor(evals, dtype=D64)) @ q.T
    return ((m + m.T) / 2).to(dtype)


# ------------------------------------------------------------------------------------------
# targets: every entry point, one validation


ENTRY_POINTS = {
    "gradient_descent_mse": (
        "y_train",
        lambda p, y: predict.gradient_descent_mse(p["T"][:N, :N], y)(1.0),
    ),
    "ensemble": (
        "y_train",
        lambda p, y: predict.gradient_descent_mse_ensemble(p["net"], p["x"][:N], y)(
            1.0, p["x"][N:]
        ),
    ),
    "gp_inference": (
        "y_train",
        lambda p, y: predict.gp_inference(p["K"][:N, :N], y, 1e-3)("nngp", p["K"][N:, :N]),
    ),
    "gradient_descent_ode": (
        "y_train",
        lambda p, y: predict.gradient_descent("mse", p["T"][:N, :N], y)(1.0),
    ),
    "cholesky_solve": ("b", lambda p, y: predict.cholesky_solve(p["K"][:N, :N], y, 1e-3)),
    "cg_solve": ("b", lambda p, y: predict.cg_solve(p["K"][:N, :N], y, 1e-3)),
    "kernel_regression": (
        "y",
        lambda p, y: scale.kernel_regression(
            p["K"][:N, :N], y, diag_reg=1e-3, preconditioner="jacobi"
        ),
    ),
}
SKLEARN = {
    "NNGPRegressor": lambda p, y: NNGPRegressor().fit(p["x"][:N].numpy(), y),
    "NTKRegressor": lambda p, y: NTKRegressor().fit(p["x"][:N].numpy(), y),
    "NNGPClassifier": lambda p, y: NNGPClassifier().fit(p["x"][:N].numpy(), y),
    "NTKClassifier": lambda p, y: NTKClassifier().fit(p["x"][:N].numpy(), y),
}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_nonfinite_targets_name_the_argument_and_row(p, entry, bad):
    name, call = ENTRY_POINTS[entry]
    y = p["y"].clone()
    y[2, 1] = bad
    with pytest.raises(ValueError, match=rf"{name} contains NaN or inf \(first at row 2"):
        call(p, y)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("est", list(SKLEARN))
def test_sklearn_nonfinite_targets_name_y_and_row(p, est, bad):
    y = p["y"][:, 0].numpy().copy()
    y[3] = bad
    with pytest.raises(ValueError, match=r"y contains NaN or inf \(first at row 3"):
        SKLEARN[est](p, y)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_scalar_targets_are_refused_clearly(p, entry):
    name, call = ENTRY_POINTS[entry]
    with pytest.raises(ValueError, match=rf"{name} is a scalar"):
        call(p, torch.tensor(1.0, dtype=D64))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_targets_of_the_wrong_length(p, entry):
    name, call = ENTRY_POINTS[entry]
    with pytest.raises(ValueError, match=rf"{name} has {N - 1} rows"):
        call(p, p["y"][: N - 1])


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_non_numeric_and_missing_targets(p, entry):
    name, call = ENTRY_POINTS[entry]
    with pytest.raises(ValueError, match=rf"{name} must be a numeric array"):
        call(p, np.array(["a"] * N))
    if entry != "kernel_regression":  # kernel_regression: y is keyword with a None default
        with pytest.raises(ValueError, match=rf"{name} is None"):
            call(p, None)


@pytest.mark.parametrize("entry", ["gradient_descent_mse", "gp_inference", "cholesky_solve"])
def test_one_dimensional_targets_are_accepted_consistently(p, entry):
    _, call = ENTRY_POINTS[entry]
    one = call(p, p["y"][:, 0])
    two = call(p, p["y"][:, :1])
    assert one.shape == two.shape[:-1]
    torch.testing.assert_close(one, two[..., 0])


def test_gp_inference_test_kernels_of_the_wrong_shape(p):
    fn = predict.gp_inference(p["K"][:N, :N], p["y"], 1e-3)
    k_td, k_tt = p["K"][N:, :N], p["K"][N:, N:]
    with pytest.raises(ValueError, match=r"k_test_test must be the \(3, 3\) kernel"):
        fn("nngp", k_td, k_tt[:2])
    with pytest.raises(ValueError, match=r"k_test_test must be the \(3, 3\) kernel"):
        fn("nngp", k_td, k_tt[:, :1])
    with pytest.raises(ValueError, match=r"k_test_train.nngp must have shape \(M, 6\)"):
        fn("nngp", k_td[:, :4])
    bad = k_tt.clone()
    bad[1, 1] = math.nan
    with pytest.raises(ValueError, match="k_test_test contains NaN"):
        fn("nngp", k_td, bad)
    bad = k_td.clone()
    bad[2, 0] = math.inf
    with pytest.raises(ValueError, match=r"k_test_train.nngp contains NaN or inf \(first at row 2"):
        fn("nngp", bad)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(fx_train_0=math.nan), "fx_train_0"),
        (dict(fx_train_0=torch.ones(N + 1, 2, dtype=D64)), "fx_train_0"),
        (dict(fx_test_0=math.inf), "fx_test_0"),
        (dict(fx_test_0=torch.ones(5, 2, dtype=D64)), "fx_test_0"),
        (dict(k_test_train=torch.ones(3, N - 1, dtype=D64)), "k_test_train"),
        (dict(k_test_train=torch.full((3, N), math.nan, dtype=D64)), "k_test_train"),
    ],
)
def test_gradient_descent_mse_initial_outputs_and_test_kernel(p, kwargs, name):
    fn = predict.gradient_descent_mse(p["T"][:N, :N], p["y"])
    kwargs = {"k_test_train": p["T"][N:, :N], **kwargs}
    with pytest.raises(ValueError, match=name):
        fn(1.0, **kwargs)


# ------------------------------------------------------------------------------------------
# learning rates


LEARNING_RATE_USERS = {
    "gradient_descent_mse": lambda p, lr: predict.gradient_descent_mse(p["T"][:N, :N], p["y"], lr),
    "ensemble": lambda p, lr: predict.gradient_descent_mse_ensemble(
        p["net"], p["x"][:N], p["y"], lr
    ),
    "gradient_descent_ode": lambda p, lr: predict.gradient_descent(
        "mse", p["T"][:N, :N], p["y"], lr
    ),
}


@pytest.mark.parametrize(
    "lr",
    [0.0, -1.0, math.nan, math.inf, -math.inf, "1", True, None, np.array([1.0, 2.0]),
     torch.tensor(True)],
)  # fmt: skip
@pytest.mark.parametrize("user", list(LEARNING_RATE_USERS))
def test_bad_learning_rates(p, user, lr):
    with pytest.raises(ValueError, match="learning_rate must be a (single )?finite number > 0"):
        LEARNING_RATE_USERS[user](p, lr)


@pytest.mark.parametrize("lr", [np.float32(0.5), np.array(0.5), torch.tensor(0.5), 1])
def test_learning_rates_as_numpy_or_torch_scalars(p, lr):
    want = predict.gradient_descent_mse(p["T"][:N, :N], p["y"], float(lr))(2.0)
    torch.testing.assert_close(LEARNING_RATE_USERS["gradient_descent_mse"](p, lr)(2.0), want)


@pytest.mark.parametrize("size", [0, -4, 2.5, True, None])
def test_max_learning_rate_bad_y_train_size(p, size):
    with pytest.raises(ValueError, match="y_train_size must be a positive integer"):
        predict.max_learning_rate(p["T"][:N, :N], size)


def _gd_loop(theta, y, eta, steps):
    """Explicit discrete gradient descent f <- f - eta' Theta (f - y) from f = 0."""
    f = torch.zeros_like(y)
    for _ in range(steps):
        f = f - eta * theta @ (f - y)
    return f


def test_unstable_discrete_steps_warn_with_the_bound_and_stay_exact(p):
    theta, y = p["T"][:N, :N], p["y"]
    lr_max = predict.max_learning_rate(theta, y.numel())
    lr = 1.5 * lr_max
    fn = predict.gradient_descent_mse(theta, y, learning_rate=lr)
    with pytest.warns(predict.UnstableDynamicsWarning, match=rf"stable bound.*= {lr_max:.6g}"):
        out = fn(7, discrete=True)
    torch.testing.assert_close(out, _gd_loop(theta, y, lr / y.numel(), 7), rtol=1e-9, atol=1e-9)
    assert issubclass(predict.UnstableDynamicsWarning, RuntimeWarning)


@pytest.mark.parametrize("steps", [10**4, 10**6])
def test_unstable_discrete_steps_that_overflow_raise(p, steps):
    theta, y = p["T"][:N, :N], p["y"]
    lr_max = predict.max_learning_rate(theta, y.numel())
    fn = predict.gradient_descent_mse(theta, y, learning_rate=3 * lr_max)
    with pytest.raises(ValueError, match=rf"learning_rate=.*stable bound.*= {lr_max:.6g}"):
        fn(steps, discrete=True)
    ens = predict.gradient_descent_mse_ensemble(p["net"], p["x"][:N], y, 3 * lr_max)
    with pytest.raises(ValueError, match=rf"learning_rate=.*= {lr_max:.6g}"):
        ens(steps, p["x"][N:], get="ntk", discrete=True)


def test_gradient_flow_never_warns_and_stable_steps_do_not(p, recwarn):
    theta, y = p["T"][:N, :N], p["y"]
    lr_max = predict.max_learning_rate(theta, y.numel())
    out = predict.gradient_descent_mse(theta, y, learning_rate=50 * lr_max)(100.0)
    assert torch.isfinite(out).all()
    predict.gradient_descent_mse(theta, y, learning_rate=0.99 * lr_max)(1000, discrete=True)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# ------------------------------------------------------------------------------------------
# symmetry and positive semi-definiteness


def test_max_learning_rate_of_a_negative_definite_kernel_raises():
    k = -_psd_with([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"k_train_train is not positive semi-definite.*-3"):
        predict.max_learning_rate(k, 3)
    assert predict.max_learning_rate(torch.zeros(3, 3, dtype=D64), 3) == math.inf


NOT_PSD_USERS = {
    "gradient_descent_mse": lambda k, r: predict.gradient_descent_mse(k, torch.ones(3), 1.0, r),
    "max_learning_rate": lambda k, r: predict.max_learning_rate(k, 3, r),
    "gp_inference": lambda k, r: predict.gp_inference(k, torch.ones(3), r)("nngp", k),
    "cholesky_solve": lambda k, r: predict.cholesky_solve(k, torch.ones(3), r),
}


@pytest.mark.parametrize("user", list(NOT_PSD_USERS))
def test_a_clearly_negative_eigenvalue_is_named(user):
    k = _psd_with([3.0, 1.0, -0.2])
    with pytest.raises(ValueError, match=r"eigenvalue 0 of 3 \(ascending\) is -0.2\b.*diag_reg >"):
        NOT_PSD_USERS[user](k, 0.0)


@pytest.mark.parametrize("user", ["gradient_descent_mse", "max_learning_rate", "cholesky_solve"])
def test_the_suggested_diag_reg_is_the_edge(user):
    k = _psd_with([3.0, 1.0, -0.2])
    with pytest.raises(ValueError) as err:
        NOT_PSD_USERS[user](k, 0.0)
    need = float(re.search(r"diag_reg > ([0-9.e+-]+)", str(err.value)).group(1))
    # independent: lambda_min + need * mean(diag K) = 0
    assert need == pytest.approx(0.2 / float(torch.diagonal(k).mean()), rel=1e-3)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        NOT_PSD_USERS[user](k, 0.9 * need)
    NOT_PSD_USERS[user](k, 1.5 * need)  # now K_reg is positive definite: no error


@pytest.mark.parametrize(
    "dtype, rel, ok",
    [(D64, 1e-9, True), (D64, 1e-4, False), (torch.float32, 1e-4, True),
     (torch.float32, 1e-2, False)],
)  # fmt: skip
def test_psd_tolerance_scales_with_the_dtype(dtype, rel, ok):
    k = _psd_with([3.0, 1.0, 0.5, -rel * 3.0], dtype=dtype)
    fn = lambda: predict.gradient_descent_mse(k, torch.ones(4), 1.0)  # noqa: E731
    if ok:
        assert torch.isfinite(fn()(1.0)).all()
    else:
        with pytest.raises(ValueError, match="not positive semi-definite"):
            fn()


@pytest.mark.parametrize("user", list(NOT_PSD_USERS))
def test_asymmetric_kernels_are_refused_with_the_entry(user):
    k = _psd_with([3.0, 2.0, 1.0])
    k[0, 2] += 1e-3
    with pytest.raises(ValueError, match=r"not symmetric: \|K\[0, 2\] - K\[2, 0\]\|"):
        NOT_PSD_USERS[user](k, 0.0)


# ------------------------------------------------------------------------------------------
# singular systems and conjugate gradients


def _conflicting_duplicates(seed=14):
    """Inputs with the first two rows repeated at the end, their targets different."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 30))
    x = rng.standard_normal((n, 3))
    x = np.vstack([x, x[:2]])
    return x, rng.standard_normal(n + 2)


@pytest.mark.filterwarnings("ignore:.*ill-conditioned:RuntimeWarning")
@pytest.mark.parametrize("est", list(SKLEARN))
def test_sklearn_singular_fit_with_conflicting_duplicates_raises(est):
    x, y = _conflicting_duplicates()
    if "Classifier" in est:
        y = (y > 0).astype(np.int64)
        y[-2:] = 1 - y[:2]  # the duplicates get the other class
    cls = {"NNGPRegressor": NNGPRegressor, "NTKRegressor": NTKRegressor,
           "NNGPClassifier": NNGPClassifier, "NTKClassifier": NTKClassifier}[est]  # fmt: skip
    with pytest.raises(ValueError, match="diag_reg"):
        cls(diag_reg=0.0).fit(x, y)
    fitted = cls(diag_reg=1e-3).fit(x, y)  # the advice works
    assert np.isfinite(fitted.dual_coef_).all() and np.abs(fitted.dual_coef_).max() < 1e6


def test_singular_but_consistent_system_still_solves():
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=D64)
    k = v.T @ v + 1e-15 * torch.eye(3, dtype=D64)
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        x = predict.cholesky_solve(k, v[0])
    torch.testing.assert_close(k @ x, v[0], rtol=1e-8, atol=1e-8)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="b is not in its range"):
        predict.cholesky_solve(k, torch.tensor([1.0, 0.0, 0.0], dtype=D64))


def test_sklearn_cg_that_cannot_converge_raises():
    x, y = _conflicting_duplicates()
    # Duplicate rows give an exactly singular kernel: CG may stop early or run out of
    # iterations (with a warning), but it must end in an error either way.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="diag_reg"):
            NNGPRegressor(diag_reg=0.0, solver="cg").fit(x, y)


def _nan_operator(k, where):
    bad = k.clone()
    bad[where] = math.nan
    bad[where[::-1]] = math.nan
    return DenseKernel(bad)  # bypasses the dense-matrix check, like a damaged store


@pytest.mark.parametrize("where", [(1, 2), (0, 5)])
@pytest.mark.parametrize("precond", ["jacobi", "none"])
def test_cg_with_non_finite_iterates_raises(p, where, precond):
    op = _nan_operator(p["K"][:N, :N], where)
    with pytest.raises(ValueError, match="non-finite iterates"):
        predict.cg_solve(op, p["y"], 1e-3, preconditioner=precond)
    with pytest.raises(ValueError, match="non-finite iterates"):
        scale.kernel_regression(op, p["y"], diag_reg=1e-3, preconditioner=precond)


def test_cg_with_a_non_finite_diagonal_raises(p):
    op = _nan_operator(p["K"][:N, :N], (3, 3))
    with pytest.raises(ValueError, match=r"diagonal holds NaN or inf \(first at row 3"):
        predict.cg_solve(op, p["y"], 1e-3)


def test_cg_x0_must_be_finite(p):
    with pytest.raises(ValueError, match="x0 contains NaN"):
        predict.cg_solve(p["K"][:N, :N], p["y"], 1e-3, x0=torch.full((N, 2), math.nan))


# ------------------------------------------------------------------------------------------
# the NTK covariance uses the unregularized NNGP (neural-tangents 0.6.5 reference)


@pytest.fixture(scope="module")
def ntp():
    return np.load(NT_PREDICT)


def _fc_relu():
    return wl.Serial(wl.Dense(512), wl.ReLU(), wl.Dense(512), wl.ReLU(), wl.Dense(1))


def _relative(ntp, dr, sc, g):
    """neural-tangents' diag_reg as the widelimits (relative) value."""
    return float(dr) if sc == "rel" else float(dr) / float(ntp[f"diag_reg_scale_{g}"])


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("t_key, t", [("inf", None), ("1", 1.0), ("0.5_3", [0.5, 3.0])])
@pytest.mark.parametrize("g", ["nngp", "ntk"])
@pytest.mark.parametrize("sc", ["rel", "abs"])
@pytest.mark.parametrize("dr", ["0.01", "0.1"])
def test_ensemble_matches_neural_tangents_with_diag_reg(ntp, dr, sc, g, t_key, t):
    fn = predict.gradient_descent_mse_ensemble(
        _fc_relu(), ntp["x_train"], ntp["y_train"], diag_reg=_relative(ntp, dr, sc, g)
    )
    out = fn(t, ntp["x_test"], get=g, compute_cov=True)
    _close(out.mean.numpy(), ntp[f"ens_{g}_dr{dr}_{sc}_t{t_key}_mean"])
    _close(out.covariance.numpy(), ntp[f"ens_{g}_dr{dr}_{sc}_t{t_key}_cov"])


@pytest.mark.parametrize("g", ["nngp", "ntk"])
@pytest.mark.parametrize("sc", ["rel", "abs"])
@pytest.mark.parametrize("dr", ["0.01", "0.1"])
def test_gp_inference_matches_neural_tangents_with_diag_reg(ntp, dr, sc, g):
    def kern(part):
        return Pair(nngp=torch.from_numpy(ntp[f"{part}_nngp"]),
                         ntk=torch.from_numpy(ntp[f"{part}_ntk"]))  # fmt: skip

    fn = predict.gp_inference(kern("k_train_train"), ntp["y_train"], _relative(ntp, dr, sc, g))
    out = fn(g, kern("k_test_train"), kern("k_test_test"))
    _close(out.mean.numpy(), ntp[f"gp_{g}_dr{dr}_{sc}_mean"])
    _close(out.covariance.numpy(), ntp[f"gp_{g}_dr{dr}_{sc}_cov"])


# ------------------------------------------------------------------------------------------
# property: finite targets and a PSD kernel with diag_reg > 0 give finite predictions


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    y_scale=st.floats(1e-6, 1e6),
    diag_reg=st.floats(1e-6, 1.0),
    t=st.sampled_from([0.5, 10.0, None]),
)
def test_finite_targets_give_finite_predictions(n, seed, y_scale, diag_reg, t):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 2, 3, generator=g, dtype=D64)
    x[1] = x[0]  # a duplicate point: singular without regularization
    k = wl.Serial(wl.Dense(8), wl.ReLU(), wl.Dense(1)).kernel(x, get=("nngp", "ntk"))
    y = y_scale * torch.randn(n, 2, generator=g, dtype=D64)
    y[1] = -y[0]  # conflicting targets at the duplicate
    ntk_dd, ntk_td = k.ntk[:n, :n], k.ntk[n:, :n]
    _, test = predict.gradient_descent_mse(ntk_dd, y, diag_reg=diag_reg)(t, k_test_train=ntk_td)
    assert torch.isfinite(test).all()
    train = Pair(nngp=k.nngp[:n, :n], ntk=ntk_dd)
    cross = Pair(nngp=k.nngp[n:, :n], ntk=ntk_td)
    tt = Pair(nngp=k.nngp[n:, n:], ntk=k.ntk[n:, n:])
    out = predict.gp_inference(train, y, diag_reg)(("nngp", "ntk"), cross, tt)
    for gauss in out.values():
        assert torch.isfinite(gauss.mean).all() and torch.isfinite(gauss.covariance).all()
    # an identity: the solve fits the regularized system
    alpha = predict.cholesky_solve(ntk_dd, y, diag_reg)
    reg = ntk_dd + diag_reg * ntk_dd.diagonal().mean() * torch.eye(n, dtype=D64)
    torch.testing.assert_close(reg @ alpha, y, rtol=1e-6, atol=1e-6 * y_scale)


# ------------------------------------------------------------------------------------------
# widelimits kernel solve: class labels by their sorted unique values

ARCH = "Dense(W_std=1.5, b_std=0.1), ReLU, Dense(1)"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(5)
    x, xt = rng.standard_normal((40, 5)), rng.standard_normal((20, 5))
    tmp = tmp_path_factory.mktemp("solve")
    np.save(tmp / "x.npy", x)
    np.save(tmp / "xt.npy", xt)
    return tmp, x, xt


def _solve(tmp, extra=()):
    return main(["kernel", "solve", "--arch", ARCH, "--data", str(tmp / "x.npy"), "--dtype",
                 "float64", "--targets", str(tmp / "y.npy"), "--test-data", str(tmp / "xt.npy"),
                 "--tol", "1e-12", "--diag-reg", "1e-3", "--rank", "20", "--no-progress",
                 *extra])  # fmt: skip


def _labels(kind, score):
    """Labels from a score by thresholds: {-1, +1}, {3, 7, 9} or strings."""
    if kind == "pm1":
        return np.where(score > 0, 1, -1)
    if kind == "3_7_9":
        return np.select([score < -0.4, score < 0.4], [3, 7], 9)
    return np.where(score > 0, "dog", "cat")


@pytest.mark.parametrize("kind", ["pm1", "3_7_9", "strings"])
def test_kernel_solve_encodes_labels_by_sorted_unique_values(data, capsys, kind):
    tmp, x, xt = data
    y, yt = _labels(kind, x[:, 0] + 0.3 * x[:, 1]), _labels(kind, xt[:, 0] + 0.3 * xt[:, 1])
    np.save(tmp / "y.npy", y)
    np.save(tmp / "yt.npy", yt)
    out_file = tmp / f"pred_{kind}.npy"
    assert _solve(tmp, ["--test-targets", str(tmp / "yt.npy"), "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out
    # independent: the dense solve on one-hot rows over np.unique's order
    classes = sorted(set(y.tolist()))
    onehot = torch.tensor([[float(c == v) for c in classes] for v in y.tolist()], dtype=D64)
    net = parse_architecture(ARCH)
    X, XT = torch.from_numpy(x), torch.from_numpy(xt)
    alpha = predict.cholesky_solve(net.kernel(X, get="ntk"), onehot - 1 / len(classes), 1e-3)
    scores = (net.kernel(XT, X, get="ntk") @ alpha).numpy()
    np.testing.assert_allclose(np.load(out_file), scores, rtol=1e-7, atol=1e-9)
    want = np.mean(np.array(classes)[scores.argmax(1)] == yt)
    got = float(printed.split("test accuracy ")[1].split()[0])
    assert got == pytest.approx(want, abs=1e-4) and want > 0.6
    assert f"classes (prediction columns, in order): {classes}" in printed


@pytest.mark.parametrize(
    "targets, test_targets, flag, match",
    [
        (np.array([0.5, math.nan] + [1.0] * 38), None, "--targets", r"row 1"),
        (np.r_[np.ones(39), math.inf], None, "--targets", r"row 39"),
        (np.ones((40, 2)).astype(np.int64), None, "--targets", "1-D"),
        (np.full(40, 7), None, "--targets", "single class"),
        (np.array(1.5), None, "--targets", "scalar"),
        (np.ones(39), None, "--targets", "39 rows"),
        (np.where(np.arange(40) % 2, 1, -1), np.full(20, 0.5), "--test-targets", "class labels"),
        (np.ones(40), np.r_[np.ones(19), math.nan], "--test-targets", "row 19"),
        (np.where(np.arange(40) % 2, 1, -1), np.ones(7, np.int64), "--test-targets", "7 rows"),
    ],
)
def test_kernel_solve_bad_targets_fail_clearly_and_write_nothing(
    data, capsys, targets, test_targets, flag, match
):
    tmp, *_ = data
    np.save(tmp / "y.npy", targets)
    extra = ["--out", str(tmp / "never.npy")]
    if test_targets is not None:
        np.save(tmp / "ybad.npy", test_targets)
        extra += ["--test-targets", str(tmp / "ybad.npy")]
    assert _solve(tmp, extra) == 2
    err = capsys.readouterr().err
    assert flag in err and re.search(match, err), err
    assert not (tmp / "never.npy").exists()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tol": 0.0}, "tol"), ({"tol": -1e-6}, "tol"), ({"tol": 1.5}, "tol"),
        ({"tol": math.nan}, "tol"), ({"tol": "1e-6"}, "tol"), ({"tol": True}, "tol"),
        ({"max_iter": 0}, "max_iter"), ({"max_iter": -3}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"), ({"max_iter": "10"}, "max_iter"),
        ({"preconditioner": "pivoted_cholesky", "rank": 0}, "rank"),
        ({"preconditioner": "nystrom", "rank": 2.0}, "rank"),
    ],
)  # fmt: skip
def test_cg_options_that_cannot_work_are_refused(kwargs, name):
    k = torch.eye(6, dtype=torch.float64) + 0.1
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        predict.cg_solve(k, torch.ones(6, dtype=torch.float64), 1e-3, **kwargs)
