"""The learned-nothing sentinel: is a run distinguishable from a constant predictor?

The baseline is the best *constant* predictor chosen from the training split (majority class for
classification, mean target for regression), scored with the task's metrics on exactly the split
and part the run reports. A run is `at_baseline` when it is not better than that predictor at 95%
(one-sided) under a paired bootstrap over the reported examples, or when it predicts one class for
every example. This fires on runs that output the class prior (BoolQ's majority at 0.63) and on
an SST-2 run at 0.495, and stays quiet on runs whose margin over the baseline exceeds the sampling
noise of the reported split.

`prior_loss` is the train loss of that constant predictor (label entropy in nats for cross-entropy,
label variance for MSE, in the units the model trained on: 1 for standardized targets, see
harness/label_scaling.py): a loss curve that ends there learned nothing beyond the class prior.
"""

from typing import Dict

import numpy as np

from harness import metrics as metric_fns

BOOTSTRAP_RESAMPLES = 1000
ONE_SIDED_LEVEL = 0.95


def constant_prediction(train_labels: np.ndarray, regression: bool):
    """Majority class (ties: the smallest label) or the mean target of the training split."""
    if regression:
        return float(np.mean(train_labels))
    values, counts = np.unique(train_labels, return_counts=True)
    return int(values[np.argmax(counts)])


def prior_loss(train_labels: np.ndarray, regression: bool) -> float:
    if regression:
        return float(np.var(train_labels))
    _, counts = np.unique(train_labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def distribution(values: np.ndarray, regression: bool) -> dict:
    if regression:
        return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": int(len(values))}
    classes, counts = np.unique(values, return_counts=True)
    return {str(int(c)): int(n) for c, n in zip(classes, counts)}


def _bootstrap_differences(metric: str, preds: np.ndarray, const: np.ndarray, labels: np.ndarray,
                           seed: int) -> np.ndarray:
    """(model metric - constant metric) on paired resamples of the reported examples."""
    fn = metric_fns.METRICS.get(metric)
    rng = np.random.default_rng(seed)
    out = np.empty(BOOTSTRAP_RESAMPLES)
    for b in range(BOOTSTRAP_RESAMPLES):
        ix = rng.integers(0, len(labels), len(labels))
        out[b] = fn(preds[ix], labels[ix]) - fn(const[ix], labels[ix])
    return out


def assess(metric: str, metric_names, preds: np.ndarray, labels: np.ndarray, train_labels: np.ndarray,
           regression: bool, seed: int, loss_unit: float = 1.0) -> Dict[str, object]:
    """The baseline's metrics, the run's margin over it with a one-sided bootstrap bound, and the flag.
    `metric` is the report metric without a split suffix; preds/labels are the reported part, both in
    the task's units; loss_unit is the sd the targets were divided by for training (prior_loss is
    compared with the train loss)."""
    value = constant_prediction(train_labels, regression)
    const = np.full(len(labels), value, dtype=np.float64 if regression else np.int64)
    baseline = metric_fns.compute(metric_names, const, labels)
    model_score = metric_fns.METRICS.get(metric)(preds, labels)
    diffs = _bootstrap_differences(metric, preds, const, labels, seed)
    lower = float(np.quantile(diffs, 1 - ONE_SIDED_LEVEL))
    single_class = not regression and len(np.unique(preds)) == 1
    return {
        "predictor": "mean" if regression else "majority",
        "value": value,
        "metrics": baseline,
        "prior_loss": prior_loss(train_labels, regression) / loss_unit ** 2,
        "difference": float(model_score - baseline[metric]),
        "difference_lower_95": lower,
        "single_class_predictions": single_class,
        "at_baseline": bool(lower <= 0 or single_class),
        "prediction_distribution": distribution(preds, regression),
        "label_distribution": distribution(labels, regression),
        "rule": f"model - constant predictor on the reported examples: one-sided {ONE_SIDED_LEVEL:.0%} paired"
                f" bootstrap lower bound <= 0 ({BOOTSTRAP_RESAMPLES} resamples), or one class predicted",
    }
