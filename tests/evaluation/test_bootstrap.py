"""Bootstrap intervals against analytically known answers, and vectorised metrics against scikit-learn."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pneumoscan.errors import ConfigError
from pneumoscan.evaluation.bootstrap import (
    bootstrap_ci,
    standard_metrics,
    weighted_average_precision,
    weighted_roc_auc,
)
from pneumoscan.evaluation.metrics import binary_metrics


def _accuracy_data(n: int, p_correct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose prediction is right with probability p_correct, independently."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    correct = rng.random(n) < p_correct
    probs = np.where(correct == (y == 1), 0.9, 0.1)
    return y, probs


def test_accuracy_interval_matches_binomial_normal_approximation() -> None:
    # The bootstrap distribution of an accuracy is the mean of n Bernoulli(p_hat): half-width 1.96 sqrt(p(1-p)/n).
    y, probs = _accuracy_data(2000, 0.8, seed=0)
    res = bootstrap_ci(y, probs, standard_metrics(0.5)["accuracy"], n_resamples=4000, seed=1)["accuracy"]
    p_hat = res["value"]
    half = 1.96 * np.sqrt(p_hat * (1 - p_hat) / y.size)
    assert res["low"] == pytest.approx(p_hat - half, abs=0.12 * half)
    assert res["high"] == pytest.approx(p_hat + half, abs=0.12 * half)
    assert res["n_resamples_used"] == 4000


def test_patient_level_interval_is_wider_by_sqrt_k() -> None:
    # 400 patients with k=4 identical images each: images are not independent evidence. The cluster bootstrap sees
    # 400 units (width ~ 1/sqrt(400)), the naive image bootstrap 1600 (width ~ 1/sqrt(1600)): ratio sqrt(4) = 2.
    k = 4
    y_pat, p_pat = _accuracy_data(400, 0.7, seed=2)
    y, probs = np.repeat(y_pat, k), np.repeat(p_pat, k)
    groups = np.repeat([f"patient{i}" for i in range(y_pat.size)], k)
    metric = {"accuracy": standard_metrics(0.5)["accuracy"]}
    naive = bootstrap_ci(y, probs, metric, n_resamples=3000, seed=3)["accuracy"]
    grouped = bootstrap_ci(y, probs, metric, groups=groups, n_resamples=3000, seed=3)["accuracy"]
    ratio = (grouped["high"] - grouped["low"]) / (naive["high"] - naive["low"])
    assert ratio == pytest.approx(np.sqrt(k), rel=0.12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_plain_callable_and_undefined_resamples_are_dropped() -> None:
    # 1 positive among 30: many resamples miss it and ROC-AUC is undefined there -> dropped and counted.
    y = np.zeros(30, dtype=int)
    y[0] = 1
    probs = np.linspace(0.0, 1.0, 30)[::-1]

    def auc(yy: np.ndarray, pp: np.ndarray) -> float:
        return roc_auc_score(yy, pp)  # NaN (or ValueError in older scikit-learn) on one class

    res = bootstrap_ci(y, probs, {"auc": auc, "fast_auc": standard_metrics(0.5)["roc_auc"]}, n_resamples=300)
    assert res["auc"]["value"] == 1.0
    # P(a resample misses the single positive) = (29/30)^30 ~ 0.36
    assert 150 < res["auc"]["n_resamples_used"] < 240
    assert res["fast_auc"]["n_resamples_used"] == res["auc"]["n_resamples_used"]


def test_seed_reproducible_and_options_checked() -> None:
    y, probs = _accuracy_data(200, 0.8, seed=4)
    metrics = standard_metrics(0.5)
    assert bootstrap_ci(y, probs, metrics, n_resamples=50, seed=7) == bootstrap_ci(
        y, probs, metrics, n_resamples=50, seed=7
    )
    with pytest.raises(ConfigError):
        bootstrap_ci(y, probs, metrics, ci=95)
    with pytest.raises(ConfigError):
        bootstrap_ci(y, probs, metrics, n_resamples=0)


def test_vectorised_metrics_equal_sklearn_and_binary_metrics() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.6).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounding creates ties
    weights = rng.integers(0, 4, size=(6, y.size))
    for w, auc, ap in zip(weights, weighted_roc_auc(y, p, weights), weighted_average_precision(y, p, weights),
                          strict=True):
        assert auc == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
        assert ap == pytest.approx(average_precision_score(y, p, sample_weight=w), abs=1e-12)
    reference = binary_metrics(y, p, 0.45)
    for name, metric in standard_metrics(0.45).items():
        assert metric(y, p) == pytest.approx(reference[name], abs=1e-12), name


def test_two_thousand_resamples_of_624_images_are_fast() -> None:
    rng = np.random.default_rng(6)
    y = (rng.random(624) < 0.625).astype(int)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    groups = [f"p{i // 2}" for i in range(y.size)]
    start = time.perf_counter()
    res = bootstrap_ci(y, p, standard_metrics(0.5), groups=groups, n_resamples=2000)
    assert time.perf_counter() - start < 5.0
    assert set(res) >= {"accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc"}
    for r in res.values():
        assert r["low"] <= r["value"] <= r["high"]
