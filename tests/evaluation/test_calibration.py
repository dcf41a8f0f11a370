"""Temperature scaling, ECE, Brier, reliability curve."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.errors import ConfigError, DataError
from pneumoscan.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_temperature_recovers_known_value(t_true: float) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 4.0, size=20_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z / t_true))).astype(int)
    assert fit_temperature(z, y) == pytest.approx(t_true, rel=0.06)


def test_temperature_errors() -> None:
    with pytest.raises(DataError):
        fit_temperature([1.0, 2.0], [1, 1])
    with pytest.raises(DataError):
        fit_temperature([1.0, np.inf], [0, 1])
    with pytest.raises(ConfigError):
        apply_temperature([0.0], 0.0)
    assert apply_temperature([0.0, 2.0], 2.0) == pytest.approx([0.5, 1 / (1 + np.exp(-1))])


def test_ece_perfectly_calibrated_is_small_and_miscalibrated_is_large() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(20_000)
    y = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    overconfident = np.where(p > 0.5, 1.0, 0.0)
    assert expected_calibration_error(y, overconfident) > 0.2


def test_ece_hand_computed() -> None:
    # 2 bins: [0, .5) holds p=0.2, 0.4 with y=0, 1 -> |0.5 - 0.3| ; [.5, 1] holds 0.9, 1.0 with y=1, 1 -> |1 - 0.95|
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.4, 0.9, 1.0], n_bins=2) == pytest.approx(
        0.5 * 0.2 + 0.5 * 0.05
    )


def test_brier_and_reliability() -> None:
    assert brier_score([0, 1], [0.5, 0.5]) == pytest.approx(0.25)
    assert brier_score([1, 1], [1.0, 0.0]) == pytest.approx(0.5)
    bins = reliability_curve([0, 1, 1], [0.05, 0.95, 1.0], n_bins=10)
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 3
    assert bins[0]["mean_predicted"] == pytest.approx(0.05) and bins[0]["observed_frequency"] == 0.0
    assert bins[9]["count"] == 2 and bins[9]["observed_frequency"] == 1.0
    assert bins[5]["mean_predicted"] is None
