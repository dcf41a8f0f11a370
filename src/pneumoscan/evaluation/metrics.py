"""Threshold and ranking metrics for a binary NORMAL (0) / PNEUMONIA (1) classifier.

Everything here takes plain arrays — ``y_true`` (0/1) and ``probs`` (probability of PNEUMONIA) — and returns plain
Python numbers, so results go straight into ``metrics.json``. A metric that is undefined on the data at hand (a
division by zero, ROC-AUC with one class only) is ``None`` rather than NaN: NaN is not valid JSON and silently
poisons averages, while ``None`` forces the reader to notice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from pneumoscan.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ArrayLike = Sequence[float] | Sequence[int] | np.ndarray


def check_binary_inputs(y_true: ArrayLike, probs: ArrayLike, *, name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels and probabilities to 1-D numpy arrays.

    Every public function calls this first, so that a wrong input (logits passed as probabilities, unknown labels,
    arrays of different lengths) fails loudly with one clear message instead of giving a plausible wrong number.

    Args:
        y_true: true labels, 0 (NORMAL) or 1 (PNEUMONIA).
        probs: predicted probability of PNEUMONIA, in [0, 1].
        name: what to call ``probs`` in error messages.

    Returns:
        ``(y, p)``: ``y`` as int64, ``p`` as float64.

    Raises:
        DataError: empty input, different lengths, labels other than 0/1, or probabilities not finite / outside [0, 1].
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1:
        raise DataError(f"labels and {name} must be 1-D (got shapes {y.shape} and {p.shape})")
    if y.size == 0:
        raise DataError("no images to evaluate (empty labels)")
    if y.shape != p.shape:
        raise DataError(f"{y.size} labels but {p.size} {name}")
    if y.dtype == object or not np.isin(y, (0, 1)).all():
        bad = sorted({str(v) for v in y.tolist() if v not in (0, 1)})[:5]
        raise DataError(f"labels must be 0 (NORMAL) or 1 (PNEUMONIA); found {', '.join(bad)}")
    if not np.isfinite(p).all():
        raise DataError(f"{name} contain NaN or infinite values")
    if p.min() < 0.0 or p.max() > 1.0:
        raise DataError(f"{name} must be probabilities in [0, 1] (range {p.min():.4g}..{p.max():.4g}); logits?")
    return y.astype(np.int64), p


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float; raise :class:`ConfigError` when it is not a finite number."""
    try:
        value = float(threshold)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"threshold must be a number, got {threshold!r}") from err
    if not np.isfinite(value):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
    return value


def safe_div(num: float, den: float) -> float | None:
    """``num / den`` as a Python float, or None when ``den`` is 0 (the metric is undefined)."""
    return float(num) / float(den) if den else None


def confusion_counts(y_true: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int, int]:
    """Counts ``(tn, fp, fn, tp)`` of 0/1 arrays, as Python ints."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(predicted).astype(bool)
    tp = int(np.count_nonzero(y & pred))
    fp = int(np.count_nonzero(~y & pred))
    fn = int(np.count_nonzero(y & ~pred))
    tn = int(np.count_nonzero(~y & ~pred))
    return tn, fp, fn, tp


def counts_metrics(tn: int, fp: int, fn: int, tp: int) -> dict[str, float | None]:
    """Threshold metrics from confusion counts; undefined ones (zero denominators) are None."""
    recall = safe_div(tp, tp + fn)
    specificity = safe_div(tn, tn + fp)
    balanced = None if recall is None or specificity is None else (recall + specificity) / 2
    precision = safe_div(tp, tp + fp)
    return {
        "accuracy": safe_div(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "sensitivity": recall,
        "specificity": specificity,
        "ppv": precision,
        "npv": safe_div(tn, tn + fn),
        # 2TP / (2TP + FP + FN) equals 2PR / (P + R) and stays defined (0) when no image is predicted positive.
        "f1": safe_div(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": balanced,
    }


def ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC and PR-AUC (average precision); None when only one class is present."""
    if np.unique(y).size < 2:
        return {"roc_auc": None, "pr_auc": None}
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
    }


def binary_metrics(y_true: ArrayLike, probs: ArrayLike, threshold: float) -> dict[str, object]:
    """All standard metrics of a binary classifier at one decision threshold.

    An image is predicted PNEUMONIA when ``probs >= threshold``. ROC-AUC comes from
    :func:`sklearn.metrics.roc_auc_score`. **PR-AUC is the average precision**
    (:func:`sklearn.metrics.average_precision_score`: the step-wise sum of precision × recall increments, not the
    trapezoidal area under the PR curve, which is optimistic). Both are threshold-free.

    Args:
        y_true: true labels, 0 (NORMAL) or 1 (PNEUMONIA).
        probs: predicted probability of PNEUMONIA.
        threshold: decision threshold.

    Returns:
        A JSON-serialisable dict with ``accuracy, precision, recall, specificity, f1, roc_auc, pr_auc,
        confusion_matrix, threshold, sensitivity, ppv, npv, balanced_accuracy, n, n_positive, n_negative``.
        ``confusion_matrix`` is ``[[TN, FP], [FN, TP]]`` (rows: true NORMAL / PNEUMONIA; columns: predicted).
        Undefined metrics (e.g. specificity without NORMAL images, ROC-AUC with one class) are None.

    Raises:
        DataError: invalid inputs (see :func:`check_binary_inputs`).
        ConfigError: the threshold is not a finite number.
    """
    y, p = check_binary_inputs(y_true, probs)
    check_threshold(threshold)
    tn, fp, fn, tp = confusion_counts(y, p >= threshold)
    out: dict[str, object] = dict(counts_metrics(tn, fp, fn, tp))
    out.update(ranking_metrics(y, p))
    out.update({
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": float(threshold),
        "n": int(y.size),
        "n_positive": int(tp + fn),
        "n_negative": int(tn + fp),
    })
    return out
