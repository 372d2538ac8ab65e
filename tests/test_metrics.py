"""Metric functions against values computed by hand."""

import math

import numpy as np
import pytest

from harness.config import metric_names
from harness.metrics import compute

from conftest import compose


def test_accuracy():
    assert compute(["accuracy"], [1, 0, 1, 1], [1, 0, 0, 1])["accuracy"] == 0.75


def test_f1_of_positive_class():
    # tp=1 fp=1 fn=1 -> precision 0.5, recall 0.5
    assert compute(["f1"], [1, 1, 0, 0], [1, 0, 1, 0])["f1"] == pytest.approx(0.5)
    # tp=2 fp=0 fn=1 -> P=1, R=2/3, F1=0.8
    assert compute(["f1"], [1, 1, 0, 0], [1, 1, 1, 0])["f1"] == pytest.approx(0.8)


def test_matthews():
    # tp=2 fp=1 tn=1 fn=0 -> (2*1 - 1*0) / sqrt(3*2*2*1)
    assert compute(["matthews_corr"], [1, 1, 1, 0], [1, 1, 0, 0])["matthews_corr"] == pytest.approx(2 / math.sqrt(12))
    assert compute(["matthews_corr"], [1, 1, 1, 1], [1, 0, 1, 0])["matthews_corr"] == 0.0  # constant guess


def test_pearson_and_spearman():
    got = compute(["pearson", "spearman"], np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))
    assert got["pearson"] == pytest.approx(15 / math.sqrt(228))
    assert got["spearman"] == pytest.approx(1.0)
    # d = [0, 1, 1, 0] -> 1 - 6*2 / (4*15) = 0.8
    assert compute(["spearman"], [1, 3, 2, 4], [1, 2, 3, 4])["spearman"] == pytest.approx(0.8)


def test_constant_regression_prediction_scores_zero_not_nan():
    got = compute(["pearson", "spearman"], [2.5, 2.5, 2.5], [1.0, 2.0, 4.0])
    assert got == {"pearson": 0.0, "spearman": 0.0}


def test_metric_names_follow_eval_splits():
    assert metric_names(compose("task=mnli").task) == ["accuracy_m", "accuracy_mm"]
    assert metric_names(compose("task=stsb").task) == ["pearson", "spearman"]
    assert metric_names(compose("task=cola").task) == ["matthews_corr", "accuracy"]
