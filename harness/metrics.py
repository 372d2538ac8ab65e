"""Official task metrics, computed with scikit-learn / scipy (never `evaluate`, which fails offline).

Each metric takes (predictions, references) as 1-D numpy arrays: class ids for classification,
float scores for regression. Values are fractions in [0, 1] (correlations in [-1, 1]).
"""

import numpy as np

from harness.registry import Registry

METRICS: Registry = Registry("metric")


def _metric(name):
    def wrap(fn):
        METRICS.register(name, fn)
        return fn
    return wrap


@_metric("accuracy")
def accuracy(pred, ref) -> float:
    from sklearn.metrics import accuracy_score
    return float(accuracy_score(ref, pred))


@_metric("f1")
def f1(pred, ref) -> float:
    """Binary F1 of the positive class (label 1), as GLUE defines it for MRPC and QQP."""
    from sklearn.metrics import f1_score
    return float(f1_score(ref, pred, pos_label=1, average="binary", zero_division=0.0))


@_metric("matthews_corr")
def matthews_corr(pred, ref) -> float:
    from sklearn.metrics import matthews_corrcoef
    return float(matthews_corrcoef(ref, pred))


def _correlation(fn, pred, ref) -> float:
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if np.ptp(pred) == 0 or np.ptp(ref) == 0:  # exact: a float std of a constant can be 1e-16
        return 0.0  # undefined for constant predictions (an untrained regressor); report 0, not NaN
    return float(fn(pred, ref)[0])


@_metric("pearson")
def pearson(pred, ref) -> float:
    from scipy.stats import pearsonr
    return _correlation(pearsonr, pred, ref)


@_metric("spearman")
def spearman(pred, ref) -> float:
    from scipy.stats import spearmanr
    return _correlation(spearmanr, pred, ref)


def compute(names, pred, ref) -> dict:
    return {name: METRICS.get(name)(pred, ref) for name in names}
