r"""scikit-learn estimators backed by infinite-width NNGP / NTK kernels.

- `NNGPRegressor`: the Bayesian posterior of the infinitely wide network (NNGP prior),
  mean :math:`K(x, X) K_\text{reg}^{-1} Y`.
- `NTKRegressor`: the :math:`t = \infty` mean of the infinite ensemble trained by gradient flow
  on the MSE, :math:`\Theta(x, X) \Theta_\text{reg}^{-1} Y`.
- `NNGPClassifier`, `NTKClassifier`: the same kernel regression on centered one-hot targets
  (one-hot minus :math:`1 / n_\text{classes}`); the predicted class is the argmax.
- `kernel_function`: a callable ``f(X, Y) -> ndarray`` giving the NNGP or NTK, for
  ``sklearn.svm.SVC(kernel=f)`` or ``SVC(kernel="precomputed")`` with ``f(X_train, X_train)``.

Regularization is relative, as in `widelimits.predict`:
:math:`K_\text{reg} = K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I`, :math:`\lambda` =
``diag_reg``.
All computations are in float64. The architecture defaults to ``depth`` x [Dense(W_std, b_std),
ReLU] followed by a Dense(1, W_std, b_std) readout; any widelimits network can be passed as
``architecture`` instead (it is not modified; sklearn's ``clone`` deep-copies it).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .layers import Dense, ReLU, Serial
from .predict import cg_solve, cholesky_solve, gp_inference
from .predict._checks import FIX, first_nonfinite_row

__all__ = [
    "NNGPClassifier",
    "NNGPRegressor",
    "NTKClassifier",
    "NTKRegressor",
    "kernel_function",
]

_STD_BATCH = 512  # test points per block when computing predictive standard deviations


def _default_net(depth, W_std, b_std):
    if not isinstance(depth, numbers.Integral) or isinstance(depth, bool) or depth < 0:
        raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
    layers = []
    for _ in range(int(depth)):
        layers += [Dense(None, W_std=W_std, b_std=b_std), ReLU()]
    layers.append(Dense(1, W_std=W_std, b_std=b_std))
    return Serial(*layers)


def _resolve_net(architecture, depth, W_std, b_std):
    if architecture is None:
        return _default_net(depth, W_std, b_std)
    if not hasattr(architecture, "kernel"):
        raise TypeError(
            "architecture must be a widelimits network (e.g. wl.Serial(...)) or None, "
            f"got {type(architecture).__name__}"
        )
    return architecture


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not x.flags.writeable:  # e.g. read-only memmaps: torch wants writable buffers
        x = x.copy()
    return torch.from_numpy(x)


def _check_targets(y) -> None:
    """A ValueError naming ``y`` and its first row with NaN or inf (before sklearn's checks)."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):  # ragged or odd containers: sklearn's own checks report
        return
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            return
    row = first_nonfinite_row(arr) if arr.ndim else None
    if row is not None:
        raise ValueError(
            f"Input y contains NaN or inf (first at row {row}: {arr[row]!r}); targets must be "
            "finite: drop or impute that row"
        )


def _kernel(net, x1, x2, get):
    """The ``get`` kernel ("nngp" or "ntk") between the rows of x1 and x2 (x2=None: x1 itself)."""
    t1 = _as_tensor(x1)
    t2 = None if x2 is None else _as_tensor(x2)
    return net.kernel(t1, t2, get=get).to(torch.float64)


class InfiniteWidthKernel:
    """Picklable callable ``f(X, Y) -> ndarray`` with the NNGP or NTK of a network.

    Built by `kernel_function`; ``f(X)`` is ``f(X, X)``. Inputs are 2-D arrays of shape
    (n_samples, n_features); the result is a float64 (n_X, n_Y) numpy array.
    """

    def __init__(self, net, get: str = "ntk") -> None:
        if get not in ("nngp", "ntk"):
            raise ValueError(f"get must be 'nngp' or 'ntk', got {get!r}")
        self.net = net
        self.get = get

    def __call__(self, X, Y=None) -> np.ndarray:
        X = check_array(X, dtype=np.float64)
        if Y is not None:
            Y = check_array(Y, dtype=np.float64)
            if Y.shape[1] != X.shape[1]:
                raise ValueError(
                    f"X and Y must have the same number of features, got {X.shape[1]} and "
                    f"{Y.shape[1]}"
                )
        return _kernel(self.net, X, Y, self.get).numpy()

    def __repr__(self) -> str:
        return f"InfiniteWidthKernel(net={self.net!r}, get={self.get!r})"


def kernel_function(
    net=None, get: str = "ntk", depth: int = 3, W_std: float = 1.5, b_std: float = 0.05
) -> InfiniteWidthKernel:
    """A kernel callable ``f(X, Y)`` for scikit-learn (e.g. ``SVC(kernel=f)``).

    Args:
        net: a widelimits network; ``None`` for the default ``depth`` x [Dense(W_std, b_std),
            ReLU] + Dense(1, W_std, b_std).
        get: ``"ntk"`` or ``"nngp"``.

    ``f(X, Y)`` returns the float64 (n_X, n_Y) kernel matrix as a numpy array, so
    ``SVC(kernel="precomputed").fit(f(X, X), y).predict(f(X_test, X))`` is equivalent to
    ``SVC(kernel=f).fit(X, y).predict(X_test)``.
    """
    return InfiniteWidthKernel(_resolve_net(net, depth, W_std, b_std), get)


class _InfiniteWidthBase(BaseEstimator):
    """Shared fit/solve logic: kernel regression with the estimator's ``_get`` kernel."""

    _get = "nngp"

    def __init__(
        self, architecture=None, depth=3, W_std=1.5, b_std=0.05, diag_reg=1e-4, solver="cholesky"
    ):
        self.architecture = architecture
        self.depth = depth
        self.W_std = W_std
        self.b_std = b_std
        self.diag_reg = diag_reg
        self.solver = solver

    def _fit_targets(self, X, Y):
        """Store the fitted state for training inputs X (n, d) and 2-D targets Y (n, c)."""
        if isinstance(self.diag_reg, bool) or not isinstance(self.diag_reg, numbers.Real):
            raise ValueError(f"diag_reg must be a real number >= 0, got {self.diag_reg!r}")
        if self.solver not in ("cholesky", "cg"):
            raise ValueError(f"solver must be one of ('cholesky', 'cg'), got {self.solver!r}")
        self.net_ = _resolve_net(self.architecture, self.depth, self.W_std, self.b_std)
        k_train = _kernel(self.net_, X, None, self._get)
        self.X_fit_ = X
        self.y_fit_ = Y
        y = _as_tensor(Y)
        name = f"the training kernel ({self._get}) K(X, X)"
        if self.solver == "cholesky":
            coef = cholesky_solve(k_train, y, float(self.diag_reg), name=name, bname="y")
        else:
            coef, info = cg_solve(k_train, y, float(self.diag_reg), tol=1e-10)
            if not info.converged:
                raise ValueError(
                    f"conjugate gradients did not solve {name} + diag_reg ({info}): the system "
                    f"is (nearly) singular, e.g. duplicate rows of X with different targets; "
                    f"{FIX}, or solver='cholesky'"
                )
        self.dual_coef_ = coef.numpy()
        return self

    def _decision(self, X):
        """Kernel-regression outputs (m, c) at X, validated against the training data."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return _kernel(self.net_, X, self.X_fit_, self._get).numpy() @ self.dual_coef_


class _InfiniteWidthRegressor(RegressorMixin, _InfiniteWidthBase):
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Fit on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_targets).

        Raises a ValueError for non-finite y (naming the first bad row) and, with
        ``diag_reg=0``, for a singular kernel that cannot fit y (e.g. duplicate rows of X with
        different targets): pass ``diag_reg > 0``.
        """
        _check_targets(y)
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        return self._fit_targets(X, y.reshape(y.shape[0], -1))

    def predict(self, X, return_std=False):
        """Posterior / ensemble mean at X; with ``return_std``, also its standard deviation.

        The standard deviation is ``sqrt(diag(cov))`` of `widelimits.predict.gp_inference`
        with ``get`` equal to this estimator's kernel ("nngp": Bayesian posterior; "ntk":
        the t = inf spread of the NTK-trained ensemble). It is the same for every target;
        its shape is (n_samples,) for a 1-D y, (n_samples, n_targets) otherwise.
        """
        mean = self._decision(X)
        if self._y_1d:
            mean = mean[:, 0]
        if not return_std:
            return mean
        std = self._predict_std(validate_data(self, X, dtype=np.float64, reset=False))
        if not self._y_1d:
            std = np.repeat(std[:, None], self.y_fit_.shape[1], axis=1)
        return mean, std

    def _predict_std(self, X):
        gets = ("nngp", "ntk") if self._get == "ntk" else "nngp"
        k_train = self.net_.kernel(_as_tensor(self.X_fit_), get=gets)
        predict_fn = gp_inference(k_train, _as_tensor(self.y_fit_), float(self.diag_reg))
        var = []
        for start in range(0, X.shape[0], _STD_BATCH):
            xb = _as_tensor(X[start : start + _STD_BATCH])
            k_test_train = self.net_.kernel(xb, _as_tensor(self.X_fit_), get=gets)
            k_test_test = self.net_.kernel(xb, get=gets)
            cov = predict_fn(self._get, k_test_train, k_test_test).covariance
            var.append(torch.diagonal(cov).to(torch.float64).numpy())
        var = np.concatenate(var) if var else np.zeros(0)
        return np.sqrt(np.clip(var, 0.0, None))


class NNGPRegressor(_InfiniteWidthRegressor):
    r"""Bayesian posterior mean of the infinitely wide network: :math:`K(x, X) K_\text{reg}^{-1} y`.

    Args:
        architecture: a widelimits network, or ``None`` for ``depth`` x [Dense(W_std, b_std),
            ReLU] followed by Dense(1, W_std, b_std).
        depth, W_std, b_std: the default architecture (ignored when ``architecture`` is given).
        diag_reg: relative regularization :math:`\lambda`,
            :math:`K_\text{reg} = K + \lambda \operatorname{mean}(\operatorname{diag} K)\, I` (the
            observation-noise variance relative to the mean prior variance).
        solver: ``"cholesky"`` or ``"cg"`` (conjugate gradients, for training sets too large
            to factorize) for the fit; ``return_std`` always factorizes.

    Attributes:
        ``net_``: the network used; ``X_fit_``, ``y_fit_``: training data (y 2-D); ``dual_coef_``:
        :math:`K_\text{reg}^{-1} y` (n_samples, n_targets); ``n_features_in_`` (and
        ``feature_names_in_``).
    """

    _get = "nngp"


class NTKRegressor(_InfiniteWidthRegressor):
    r"""Infinite-time mean of the NTK-trained ensemble,
    :math:`\Theta(x, X) \Theta_\text{reg}^{-1} y`.

    Same arguments and attributes as `NNGPRegressor`; ``predict(X, return_std=True)`` gives the
    ensemble's predictive standard deviation (NNGP initialization, NTK dynamics).
    """

    _get = "ntk"


class _InfiniteWidthClassifier(ClassifierMixin, _InfiniteWidthBase):
    def fit(self, X, y):
        """Fit on X (n_samples, n_features) and class labels y (n_samples,)."""
        _check_targets(y)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        encoder = LabelEncoder()
        y_idx = encoder.fit_transform(y)
        self.classes_ = encoder.classes_
        n_classes = len(self.classes_)
        targets = np.zeros((y_idx.shape[0], n_classes), dtype=np.float64)
        targets[np.arange(y_idx.shape[0]), y_idx] = 1.0
        return self._fit_targets(X, targets - 1.0 / n_classes)

    def decision_function(self, X):
        """Kernel-regression outputs: (n_samples, n_classes), or (n_samples,) for two classes
        (positive means ``classes_[1]``)."""
        out = self._decision(X)
        if len(self.classes_) == 2:
            return out[:, 1] - out[:, 0]
        return out

    def predict(self, X):
        """The class whose centered one-hot output is largest."""
        out = self._decision(X)
        return self.classes_[np.argmax(out, axis=1)]


class NNGPClassifier(_InfiniteWidthClassifier):
    """NNGP kernel regression on centered one-hot targets (one-hot - 1 / n_classes), argmax.

    Same arguments as `NNGPRegressor`. Attributes: ``classes_``, ``net_``, ``X_fit_``,
    ``y_fit_`` (the centered one-hot targets), ``dual_coef_``, ``n_features_in_``.
    """

    _get = "nngp"


class NTKClassifier(_InfiniteWidthClassifier):
    """NTK kernel regression (infinite-time mean of the NTK-trained ensemble) on centered
    one-hot targets, argmax. Same arguments and attributes as `NNGPClassifier`."""

    _get = "ntk"
