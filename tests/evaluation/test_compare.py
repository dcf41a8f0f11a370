"""Paired DeLong test and bootstrap of the AUC difference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumoscan.errors import DataError
from pneumoscan.evaluation.bootstrap import resample_weights, weighted_roc_auc
from pneumoscan.evaluation.compare import compare_models, delong_covariance


def _two_models(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.6).astype(int)
    shared = rng.normal(0, 1, n)  # makes the two models correlated, as on a real test set
    a = 1 / (1 + np.exp(-(1.6 * y - 0.8 + shared + 0.7 * rng.normal(0, 1, n))))
    b = 1 / (1 + np.exp(-(1.2 * y - 0.6 + shared + 0.9 * rng.normal(0, 1, n))))
    return y, a, b


def _brute_force_delong(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """DeLong 1988 by definition: psi kernel over all (positive, negative) pairs, O(m n)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    return np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_hand_checkable_variance() -> None:
    # positives 0.9, 0.4; negatives 0.5, 0.1 -> AUC 3/4.
    # Components per positive: 1, 1/2 (var 1/8); per negative: 1/2, 1 (var 1/8). Var = 1/8/2 + 1/8/2 = 1/8.
    y = np.array([1, 1, 0, 0])
    aucs, cov = delong_covariance(y, np.array([[0.9, 0.4, 0.5, 0.1]]))
    assert aucs[0] == pytest.approx(0.75)
    assert cov[0, 0] == pytest.approx(1 / 8)


def test_fast_delong_equals_definition_with_ties() -> None:
    y, a, b = _two_models(150, seed=0)
    scores = np.stack([a.round(2), b.round(2)])
    aucs, cov = delong_covariance(y, scores)
    assert cov == pytest.approx(_brute_force_delong(y, scores), abs=1e-14)
    assert aucs == pytest.approx([roc_auc_score(y, s) for s in scores])


def test_identical_models() -> None:
    y, a, _ = _two_models(200, seed=1)
    res = compare_models(y, a, a, n_resamples=100)
    assert res["difference"] == 0.0 and res["p_value"] == 1.0 and res["z"] == 0.0
    assert res["bootstrap"]["ci_low"] == res["bootstrap"]["ci_high"] == 0.0


def test_delong_variance_agrees_with_bootstrap() -> None:
    y, a, b = _two_models(600, seed=2)
    res = compare_models(y, a, b, n_resamples=3000, seed=4)
    diffs = np.concatenate([weighted_roc_auc(y, a, w) - weighted_roc_auc(y, b, w)
                            for w in resample_weights(y.size, None, 3000, np.random.default_rng(5))])
    assert res["se"] == pytest.approx(diffs.std(ddof=1), rel=0.12)
    assert res["bootstrap"]["se"] == pytest.approx(res["se"], rel=0.12)
    assert res["auc_a"] > res["auc_b"] and res["difference"] == pytest.approx(res["auc_a"] - res["auc_b"])
    assert res["ci_low"] < res["difference"] < res["ci_high"]
    assert 0.0 <= res["p_value"] <= 1.0


def test_groups_widen_and_are_reported() -> None:
    y, a, b = _two_models(200, seed=3)
    k = 3
    y, a, b = np.repeat(y, k), np.repeat(a, k), np.repeat(b, k)
    groups = np.repeat(np.arange(200), k)
    grouped = compare_models(y, a, b, groups=list(groups), n_resamples=1000)
    naive = compare_models(y, a, b, n_resamples=1000)
    assert grouped["bootstrap"]["unit"] == "patient" and grouped["n_patients"] == 200
    assert grouped["bootstrap"]["se"] > 1.4 * naive["bootstrap"]["se"]
    assert any("patient" in note for note in grouped["notes"])


def test_needs_both_classes() -> None:
    with pytest.raises(DataError):
        compare_models([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
