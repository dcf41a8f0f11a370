"""binary_metrics against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumoscan.errors import ConfigError, DataError
from pneumoscan.evaluation.metrics import binary_metrics

# 10 images. At threshold 0.5 (positive when p >= 0.5):
#   y=1: 0.9 TP, 0.8 TP, 0.6 TP, 0.5 TP (equal to the threshold counts as positive), 0.3 FN, 0.2 FN
#   y=0: 0.7 FP, 0.4 TN, 0.1 TN, 0.05 TN
# -> TN=3, FP=1, FN=2, TP=4
Y = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
P = [0.9, 0.8, 0.6, 0.5, 0.3, 0.2, 0.7, 0.4, 0.1, 0.05]


def test_hand_computed_example() -> None:
    m = binary_metrics(Y, P, 0.5)
    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == m["ppv"] == pytest.approx(4 / 5)
    assert m["recall"] == m["sensitivity"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["npv"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    # Pairs (pos, neg) ranked correctly: 0.9, 0.8 beat all 4 negatives; 0.6, 0.5 beat 3; 0.3, 0.2 beat 2 -> 18/24.
    assert m["roc_auc"] == pytest.approx(18 / 24)
    # Average precision: ranks 1..10 = 1,1,0,1,1,0,1,1,0,0 (0.7 is the 3rd highest score);
    # precision at each positive: 1/1, 2/2, 3/4, 4/5, 5/7, 6/8.
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 5 + 5 / 7 + 6 / 8) / 6)
    assert (m["n"], m["n_positive"], m["n_negative"], m["threshold"]) == (10, 6, 4, 0.5)
    json.dumps(m, allow_nan=False)
    assert all(type(v) in (int, float, list) for v in m.values())


def test_one_class_gives_none_not_nan() -> None:
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9], 0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["specificity"] is None and m["balanced_accuracy"] is None
    assert m["recall"] == pytest.approx(2 / 3)
    json.dumps(m, allow_nan=False)


def test_no_predicted_positive() -> None:
    m = binary_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.9)
    assert m["precision"] is None and m["ppv"] is None
    assert m["f1"] == 0.0 and m["recall"] == 0.0
    assert m["confusion_matrix"] == [[2, 0], [2, 0]]


@pytest.mark.parametrize(
    ("y", "p"),
    [([], []), ([0, 1], [0.5]), ([0, 2], [0.1, 0.2]), ([0, 1], [0.1, np.nan]), ([0, 1], [-2.0, 3.0])],
)
def test_bad_inputs(y: list, p: list) -> None:
    with pytest.raises(DataError):
        binary_metrics(y, p, 0.5)


def test_bad_threshold() -> None:
    with pytest.raises(ConfigError):
        binary_metrics(Y, P, float("inf"))
