"""Evaluation of a binary NORMAL / PNEUMONIA classifier from its outputs alone.

Pure numpy / scikit-learn / scipy / matplotlib on arrays ``y_true`` (0/1), ``probs`` (probability of PNEUMONIA),
optional ``logits`` and ``groups`` (patient ids). Knows nothing about models and never imports torch, so that an
ONNX-only install can evaluate. The figure and report modules (:mod:`.plots`, :mod:`.report`) are imported on demand
because they pull in matplotlib.
"""

from __future__ import annotations

from pneumoscan.evaluation.bootstrap import WeightedMetric, bootstrap_ci, standard_metrics
from pneumoscan.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from pneumoscan.evaluation.compare import compare_models, delong_test
from pneumoscan.evaluation.metrics import binary_metrics
from pneumoscan.evaluation.thresholds import RULES, choose_threshold, operating_points

__all__ = [
    "RULES",
    "WeightedMetric",
    "apply_temperature",
    "binary_metrics",
    "bootstrap_ci",
    "brier_score",
    "choose_threshold",
    "compare_models",
    "delong_test",
    "expected_calibration_error",
    "fit_temperature",
    "operating_points",
    "reliability_curve",
    "standard_metrics",
]
