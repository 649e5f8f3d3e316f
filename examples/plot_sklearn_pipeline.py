"""
scikit-learn Pipeline and GridSearchCV with NTKClassifier
=========================================================

``widelimits.sklearn`` wraps infinite-width kernel regression as scikit-learn estimators:
``NNGPRegressor``, ``NTKRegressor``, ``NNGPClassifier`` and ``NTKClassifier`` (the
infinite-time mean of an infinite ensemble trained on centred one-hot targets, then argmax).
They behave like any estimator: here an ``NTKClassifier`` sits after a ``StandardScaler`` in a
``Pipeline``, and ``GridSearchCV`` chooses its depth and weight scale by 3-fold
cross-validation on the digits.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from widelimits.sklearn import NNGPClassifier, NTKClassifier

FAST = os.environ.get("WIDELIMITS_EXAMPLES_FAST") == "1"

X, y = load_digits(return_X_y=True)
n = 600 if FAST else 1200
X_train, X_test, y_train, y_test = train_test_split(X[:n], y[:n], test_size=0.33,
                                                    random_state=0)

# %%
# Grid search over the architecture's hyperparameters
# ---------------------------------------------------
pipe = Pipeline([("scale", StandardScaler()), ("ntk", NTKClassifier())])
grid = {"ntk__depth": [1, 3, 5], "ntk__W_std": [1.0, 1.5, 2.0]}
search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
print("best parameters:", search.best_params_)
print(f"cross-validated accuracy {search.best_score_:.3f}; "
      f"test accuracy {search.score(X_test, y_test):.3f}")

# %%
# The NNGP posterior mean for comparison
# --------------------------------------
nngp = Pipeline([("scale", StandardScaler()), ("nngp", NNGPClassifier(depth=3))])
nngp.fit(X_train, y_train)
print(f"NNGPClassifier(depth=3) test accuracy {nngp.score(X_test, y_test):.3f}")

# %%
# Cross-validated accuracy over the grid
# --------------------------------------
scores = np.zeros((len(grid["ntk__depth"]), len(grid["ntk__W_std"])))
results = search.cv_results_
for params, score in zip(results["params"], results["mean_test_score"], strict=True):
    scores[grid["ntk__depth"].index(params["ntk__depth"]),
           grid["ntk__W_std"].index(params["ntk__W_std"])] = score
fig, ax = plt.subplots(figsize=(4.5, 3.6))
im = ax.imshow(scores, cmap="viridis")
ax.set_xticks(np.arange(len(grid["ntk__W_std"])), grid["ntk__W_std"])
ax.set_yticks(np.arange(len(grid["ntk__depth"])), grid["ntk__depth"])
ax.set(xlabel="W_std", ylabel="depth", title="3-fold CV accuracy, NTKClassifier")
fig.colorbar(im)
fig.tight_layout()
