"""Choosing a decision threshold (operating point) from validation data.

A threshold of 0.5 is not neutral: the training set is 74% PNEUMONIA, the test set 62.5%, and a screening tool
wants high sensitivity more than high accuracy. The rules here pick a threshold on *validation* data (never on
test); the evaluation report then shows how each operating point behaves on the data it is given.

**Returned thresholds are achievable cut points**: every rule except ``fixed`` returns one of the observed scores,
and a prediction is positive when ``probs >= threshold``. Applying the returned threshold to the same data therefore
reproduces exactly the operating point the rule selected (sensitivity, specificity, F1), which would not be true of
an arbitrary value between two scores picked from an interpolated curve.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import roc_curve

from pneumoscan.errors import ConfigError, DataError
from pneumoscan.evaluation.metrics import ArrayLike, check_binary_inputs

logger = logging.getLogger(__name__)

RULES: tuple[str, ...] = ("youden", "max_f1", "sensitivity", "fixed")
FIXED_THRESHOLD = 0.5


def _cut_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order with the TP and FP counts of ``probs >= score``.

    Uses :func:`sklearn.metrics.roc_curve` without dropping points, minus its leading ``inf`` threshold (which
    predicts nothing positive and is not a usable cut point).
    """
    if np.unique(y).size < 2:
        raise DataError("choosing a threshold needs both NORMAL and PNEUMONIA images")
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    tp = np.rint(tpr[1:] * n_pos)
    fp = np.rint(fpr[1:] * n_neg)
    return thr[1:], tp, fp


def _check_target(target_sensitivity: float) -> float:
    if not 0.0 < float(target_sensitivity) <= 1.0:
        raise ConfigError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    return float(target_sensitivity)


def _youden(y: np.ndarray, p: np.ndarray) -> float:
    """Threshold maximising Youden's J = TPR − FPR; ties go to the highest threshold (fewest false positives)."""
    thr, tp, fp = _cut_points(y, p)
    j = tp / y.sum() - fp / (y.size - y.sum())
    return float(thr[int(np.argmax(j))])


def _max_f1(y: np.ndarray, p: np.ndarray) -> float:
    """Threshold maximising F1 = 2TP / (2TP + FP + FN); ties go to the highest threshold."""
    thr, tp, fp = _cut_points(y, p)
    fn = y.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    return float(thr[int(np.argmax(f1))])


def _sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """Highest threshold whose sensitivity on this data is at least ``target`` (screening operating point).

    The comparison is done on counts (TP ≥ ceil(target × positives)) so that floating-point rounding of
    ``0.95 * n`` cannot move the result by one image.
    """
    thr, tp, _ = _cut_points(y, p)
    needed = int(np.ceil(_check_target(target) * y.sum() - 1e-9))
    return float(thr[int(np.argmax(tp >= needed))])


def choose_threshold(
    y_true: ArrayLike, probs: ArrayLike, rule: str = "youden", target_sensitivity: float = 0.95
) -> float:
    """Pick a decision threshold by a named rule.

    Args:
        y_true: true labels (0/1) of the validation images.
        probs: predicted probability of PNEUMONIA.
        rule: ``youden`` (max TPR − FPR), ``max_f1``, ``sensitivity`` (the highest threshold with sensitivity ≥
            ``target_sensitivity`` on this data, for screening) or ``fixed`` (0.5, ignores the data).
        target_sensitivity: target of the ``sensitivity`` rule, in (0, 1].

    Returns:
        The threshold, an observed score (or 0.5 for ``fixed``); predict PNEUMONIA when ``probs >= threshold``.

    Raises:
        ConfigError: unknown rule (the message lists the valid ones) or a target outside (0, 1].
        DataError: invalid inputs, or only one class present.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown threshold rule '{rule}'; valid rules: {', '.join(RULES)}")
    if rule == "fixed":
        return FIXED_THRESHOLD
    y, p = check_binary_inputs(y_true, probs)
    if rule == "youden":
        return _youden(y, p)
    if rule == "max_f1":
        return _max_f1(y, p)
    return _sensitivity(y, p, target_sensitivity)


def sensitivity_key(target_sensitivity: float) -> str:
    """Name of the sensitivity operating point: 0.95 → ``sensitivity_95``, 0.975 → ``sensitivity_97.5``."""
    return f"sensitivity_{round(_check_target(target_sensitivity) * 100, 6):g}"


def operating_points(y_true: ArrayLike, probs: ArrayLike, target_sensitivity: float = 0.95) -> dict[str, float]:
    """Thresholds of the data-driven rules, to store with a model and show in its report.

    Returns:
        ``{"youden": t1, "max_f1": t2, "sensitivity_95": t3}`` (the last key follows ``target_sensitivity``).
    """
    y, p = check_binary_inputs(y_true, probs)
    return {
        "youden": _youden(y, p),
        "max_f1": _max_f1(y, p),
        sensitivity_key(target_sensitivity): _sensitivity(y, p, target_sensitivity),
    }
