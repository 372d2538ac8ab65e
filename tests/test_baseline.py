"""The learned-nothing sentinel: runs indistinguishable from the constant predictor are flagged."""

import numpy as np
import pytest

from conftest import compose
from harness.baseline import assess, constant_prediction, prior_loss


def _labels(n_pos, n_neg, seed=0):
    y = np.array([1] * n_pos + [0] * n_neg)
    return np.random.default_rng(seed).permutation(y)


def _with_accuracy(labels, acc, seed=1):
    """Predictions that agree with `labels` on a fraction acc of the examples."""
    rng = np.random.default_rng(seed)
    wrong = rng.choice(len(labels), int(round((1 - acc) * len(labels))), replace=False)
    preds = labels.copy()
    preds[wrong] = 1 - preds[wrong]
    return preds


def test_majority_class_predictions_are_at_baseline():
    """BoolQ-like: every example predicted 'true', which is the majority: flagged."""
    labels, train = _labels(622, 378), _labels(1400, 870)
    out = assess("accuracy", ["accuracy"], np.ones(1000, dtype=int), labels, train, False, seed=0)
    assert out["metrics"]["accuracy"] == pytest.approx(0.622) and out["difference"] == pytest.approx(0.0)
    assert out["at_baseline"] and out["single_class_predictions"]
    assert out["prediction_distribution"] == {"1": 1000}


def test_chance_level_run_on_a_balanced_split_is_at_baseline():
    """An SST-2 run at 0.495 (872 examples, majority 0.509) is not better than the constant predictor."""
    labels, train = _labels(444, 428), _labels(37569, 29780)
    preds = _with_accuracy(labels, 0.495)
    out = assess("accuracy", ["accuracy"], preds, labels, train, False, seed=0)
    assert out["at_baseline"] and not out["single_class_predictions"]


def test_a_run_that_learned_is_not_flagged():
    labels, train = _labels(444, 428), _labels(37569, 29780)
    out = assess("accuracy", ["accuracy"], _with_accuracy(labels, 0.80), labels, train, False, seed=0)
    assert not out["at_baseline"] and out["difference_lower_95"] > 0.2


def test_a_small_margin_within_noise_is_flagged_and_a_clear_one_is_not():
    labels, train = _labels(300, 300), _labels(500, 400)
    assert assess("accuracy", ["accuracy"], _with_accuracy(labels, 0.52), labels, train, False, 0)["at_baseline"]
    assert not assess("accuracy", ["accuracy"], _with_accuracy(labels, 0.62), labels, train, False, 0)["at_baseline"]


def test_regression_baseline_is_the_train_mean_with_zero_correlation():
    rng = np.random.default_rng(0)
    train, labels = rng.uniform(0, 5, 500), rng.uniform(0, 5, 200)
    assert constant_prediction(train, True) == pytest.approx(train.mean())
    assert prior_loss(train, True) == pytest.approx(train.var())
    flat = assess("pearson", ["pearson", "spearman"], np.full(200, 2.5), labels, train, True, 0)
    assert flat["metrics"] == {"pearson": 0.0, "spearman": 0.0} and flat["at_baseline"]
    good = assess("pearson", ["pearson"], labels + rng.normal(0, 0.5, 200), labels, train, True, 0)
    assert not good["at_baseline"]


def test_standardized_targets_put_the_prior_loss_in_training_units():
    rng = np.random.default_rng(1)
    train, labels = rng.uniform(0, 5, 500), rng.uniform(0, 5, 200)
    scaled = assess("pearson", ["pearson"], labels, labels, train, True, 0, loss_unit=train.std())
    assert scaled["prior_loss"] == pytest.approx(1.0) and scaled["value"] == pytest.approx(train.mean())


def test_a_label_scale_round_trips_and_refuses_constant_targets():
    from harness import label_scaling
    from harness.errors import HarnessError
    task = compose("task=stsb").task
    y = np.array([0.0, 1.5, 4.0, 5.0])
    scale = label_scaling.fit(task, y)
    z = scale.to_training(y)
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert scale.from_training(z) == pytest.approx(y)
    assert label_scaling.fit(compose("task=stsb", "task.label_scaling=none").task, y) is None
    assert label_scaling.fit(compose("task=sst2").task, np.array([0, 1, 1])) is None
    with pytest.raises(HarnessError, match="every training target is 2.0"):
        label_scaling.fit(task, np.full(5, 2.0))


def test_prior_loss_is_the_label_entropy():
    assert prior_loss(_labels(622, 378), False) == pytest.approx(-(0.622 * np.log(0.622) + 0.378 * np.log(0.378)))
