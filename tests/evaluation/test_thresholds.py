"""Threshold rules on constructed data."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.errors import ConfigError, DataError
from pneumoscan.evaluation.metrics import binary_metrics
from pneumoscan.evaluation.thresholds import RULES, choose_threshold, operating_points

# Sorted by score: negatives 0.1 0.2 0.3 0.6, positives 0.4 0.7 0.8 0.9 (20 positives would make the 95% rule dull)
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_youden() -> None:
    # cut 0.7: TPR 3/4, FPR 0 -> J 0.75; cut 0.4: TPR 1, FPR 1/4 -> J 0.75; tie -> highest threshold
    assert choose_threshold(Y, P, "youden") == 0.7


def test_max_f1() -> None:
    # cut 0.7: TP3 FP0 FN1 -> 6/7; cut 0.4: TP4 FP1 FN0 -> 8/9 (best); cut 0.6: TP3 FP1 FN1 -> 6/8
    assert choose_threshold(Y, P, "max_f1") == 0.4


def test_sensitivity_rule_is_highest_threshold_reaching_target() -> None:
    assert choose_threshold(Y, P, "sensitivity", target_sensitivity=0.95) == 0.4
    assert choose_threshold(Y, P, "sensitivity", target_sensitivity=0.75) == 0.7
    assert choose_threshold(Y, P, "sensitivity", target_sensitivity=0.5) == 0.8


def test_sensitivity_rule_on_random_data_is_achieved_and_tight() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.6).astype(int)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    t = choose_threshold(y, p, "sensitivity", target_sensitivity=0.95)
    assert t in p
    assert binary_metrics(y, p, t)["sensitivity"] >= 0.95
    higher = np.min(p[p > t])
    assert binary_metrics(y, p, higher)["sensitivity"] < 0.95


def test_fixed_and_unknown() -> None:
    assert choose_threshold(Y, P, "fixed") == 0.5
    with pytest.raises(ConfigError, match="youden, max_f1, sensitivity, fixed"):
        choose_threshold(Y, P, "best")
    with pytest.raises(ConfigError):
        choose_threshold(Y, P, "sensitivity", target_sensitivity=1.5)
    with pytest.raises(DataError):
        choose_threshold([1, 1], [0.3, 0.4], "youden")
    assert set(RULES) == {"youden", "max_f1", "sensitivity", "fixed"}


def test_operating_points_keys_and_achievable() -> None:
    ops = operating_points(Y, P, target_sensitivity=0.95)
    assert ops == {"youden": 0.7, "max_f1": 0.4, "sensitivity_95": 0.4}
    assert all(isinstance(v, float) for v in ops.values())
    assert "sensitivity_97.5" in operating_points(Y, P, target_sensitivity=0.975)
