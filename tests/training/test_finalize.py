"""Operating points and temperature are chosen on validation labels and logits only."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.training.finalize import MIN_CALIBRATION_IMAGES, choose_operating_points, rule_key


def _validation(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.6).astype(int)
    logits = rng.normal(0, 1, n) + 3.0 * (2 * labels - 1)  # over-confident: a temperature > 1 fits
    return labels, logits


def test_rule_key_names() -> None:
    assert rule_key("youden", 0.95) == "youden"
    assert rule_key("sensitivity", 0.95) == "sensitivity_95"
    assert rule_key("max_f1", 0.9) == "max_f1"


@pytest.mark.parametrize("rule", ["youden", "max_f1", "sensitivity", "fixed"])
def test_the_rule_picks_the_default_threshold(rule: str) -> None:
    labels, logits = _validation()
    out = choose_operating_points(labels, logits, rule, 0.95)
    key = rule_key(rule, 0.95)
    assert out["threshold"] == out["operating_points"][key]
    assert key in out["threshold_rule"] and "400 images" in out["threshold_rule"]
    assert out["operating_points"]["fixed"] == 0.5


def test_sensitivity_rule_reaches_the_target_on_validation() -> None:
    labels, logits = _validation()
    out = choose_operating_points(labels, logits, "sensitivity", 0.95)
    sens = float((out["val_probs"][labels == 1] >= out["threshold"]).mean())
    assert sens >= 0.95


def test_temperature_is_fitted_and_too_few_images_keep_one() -> None:
    # Labels drawn from sigmoid(z) and logits 2z: calibrated logits are z, so the fitted temperature is about 2.
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    fitted = choose_operating_points(labels, 2.0 * z, "youden", 0.95)["temperature"]
    assert fitted == pytest.approx(2.0, rel=0.15)
    few = MIN_CALIBRATION_IMAGES - 1
    assert choose_operating_points(labels[:few], 2.0 * z[:few], "youden", 0.95)["temperature"] == 1.0
