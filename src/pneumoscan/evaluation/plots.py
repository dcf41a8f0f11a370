"""Evaluation figures as PNG bytes: ROC and PR curves with operating points, confusion matrix, reliability
diagram, per-class score histograms, image thumbnails.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never through ``pyplot``: no
global backend is selected or changed (a server or notebook importing this keeps its own), nothing needs a display,
and no figure is left registered in pyplot's global state to leak memory. Every function returns PNG bytes; the
report writer embeds them in HTML and writes them to files atomically.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from pneumoscan import CLASS_NAMES
from pneumoscan.evaluation.calibration import expected_calibration_error, reliability_curve
from pneumoscan.evaluation.metrics import ArrayLike, check_binary_inputs, confusion_counts, safe_div

logger = logging.getLogger(__name__)

DPI = 110
_MARKERS = ("o", "s", "D", "^", "v", "P", "X")
_COLORS = ("C1", "C2", "C4", "C9", "C6", "C8", "C5")  # no red (C3): red is the model's own threshold
_MODEL_STYLE = {"marker": "*", "s": 260, "color": "#d62728", "edgecolor": "black", "zorder": 4}


def _new_figure(width: float = 5.2, height: float = 4.6) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _no_curve(fig: Figure, message: str) -> bytes:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return figure_to_png(fig)


def _points(
    threshold: float | None, operating_points: Mapping[str, float] | None
) -> list[tuple[str, float, dict[str, object]]]:
    """(label, threshold, scatter style) of the model's threshold and the named operating points."""
    out: list[tuple[str, float, dict[str, object]]] = []
    if threshold is not None:
        out.append((f"model threshold {threshold:.3f}", threshold, _MODEL_STYLE))
    for i, (name, t) in enumerate((operating_points or {}).items()):
        # drawn above the model's star, so a point at the model's own threshold stays visible inside it
        style = {"marker": _MARKERS[i % len(_MARKERS)], "s": 45, "color": _COLORS[i % len(_COLORS)], "zorder": 5,
                 "edgecolor": "black"}
        out.append((f"{name} {t:.3f}", t, style))
    return out


def roc_curve_png(
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    threshold: float | None = None,
    operating_points: Mapping[str, float] | None = None,
    title: str = "ROC curve",
) -> bytes:
    """ROC curve with the model's threshold (red star) and the operating points marked where they fall."""
    y, p = check_binary_inputs(y_true, probs)
    fig = _new_figure()
    if np.unique(y).size < 2:
        return _no_curve(fig, "ROC curve undefined: only one class in the data")
    fpr, tpr, _ = roc_curve(y, p)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="C0", lw=2, label="model")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    for label, t, style in _points(threshold, operating_points):
        tn, fp, fn, tp = confusion_counts(y, p >= t)
        ax.scatter([fp / (fp + tn)], [tp / (tp + fn)], label=label, **style)
    ax.set(xlabel="1 − specificity (false positive rate)", ylabel="sensitivity (true positive rate)", title=title,
           xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return figure_to_png(fig)


def pr_curve_png(
    y_true: ArrayLike,
    probs: ArrayLike,
    *,
    threshold: float | None = None,
    operating_points: Mapping[str, float] | None = None,
    title: str = "Precision-recall curve",
) -> bytes:
    """Precision-recall curve (step-wise, as average precision integrates it) with operating points marked."""
    y, p = check_binary_inputs(y_true, probs)
    fig = _new_figure()
    if np.unique(y).size < 2:
        return _no_curve(fig, "PR curve undefined: only one class in the data")
    precision, recall, _ = precision_recall_curve(y, p)
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", color="C0", lw=2, label="model")
    ax.axhline(y.mean(), ls="--", color="grey", lw=1, label=f"prevalence {y.mean():.2f}")
    for label, t, style in _points(threshold, operating_points):
        tn, fp, fn, tp = confusion_counts(y, p >= t)
        prec = safe_div(tp, tp + fp)
        if prec is not None:
            ax.scatter([tp / (tp + fn)], [prec], label=label, **style)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title, xlim=(-0.01, 1.01),
           ylim=(-0.01, 1.01), aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return figure_to_png(fig)


def confusion_matrix_png(confusion: Sequence[Sequence[int]], *, threshold: float | None = None) -> bytes:
    """Confusion matrix ``[[TN, FP], [FN, TP]]`` with counts and row percentages (sensitivity / specificity)."""
    cm = np.asarray(confusion, dtype=np.int64).reshape(2, 2)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = _new_figure(4.6, 4.0)
    ax = fig.add_subplot()
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i, j]}\n{100 * frac[i, j]:.1f}%", ha="center", va="center", fontsize=13,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks([0, 1], [f"pred {c}" for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASS_NAMES])
    ax.set_title("Confusion matrix" + (f" (threshold {threshold:.3f})" if threshold is not None else ""))
    return figure_to_png(fig)


def _reliability_series(ax: Axes, y: np.ndarray, p: np.ndarray, n_bins: int, label: str, color: str) -> None:
    bins = [b for b in reliability_curve(y, p, n_bins) if b["count"]]
    ece = expected_calibration_error(y, p, n_bins)
    ax.plot([b["mean_predicted"] for b in bins], [b["observed_frequency"] for b in bins], marker="o", color=color,
            label=f"{label} (ECE {ece:.3f})")


def reliability_png(
    y_true: ArrayLike, probs: ArrayLike, *, probs_uncalibrated: ArrayLike | None = None, n_bins: int = 15
) -> bytes:
    """Reliability diagram (observed PNEUMONIA frequency against mean predicted probability, equal-width bins),
    before and after temperature scaling when ``probs_uncalibrated`` is given, over a histogram of the scores."""
    y, p = check_binary_inputs(y_true, probs)
    fig = _new_figure(5.2, 5.6)
    ax, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    if probs_uncalibrated is not None:
        _, pu = check_binary_inputs(y, probs_uncalibrated, name="uncalibrated probabilities")
        _reliability_series(ax, y, pu, n_bins, "before temperature scaling", "C1")
        _reliability_series(ax, y, p, n_bins, "after temperature scaling", "C0")
    else:
        _reliability_series(ax, y, p, n_bins, "model", "C0")
    ax.set(ylabel="observed frequency of PNEUMONIA", title="Reliability diagram", xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.hist(p, bins=n_bins, range=(0, 1), color="C0", alpha=0.7)
    ax_hist.set(xlabel="predicted probability of PNEUMONIA", ylabel="images")
    return figure_to_png(fig)


def histogram_png(y_true: ArrayLike, probs: ArrayLike, *, threshold: float | None = None, bins: int = 30) -> bytes:
    """Histograms of the predicted probability for each true class, with the threshold as a vertical line."""
    y, p = check_binary_inputs(y_true, probs)
    fig = _new_figure(5.6, 4.0)
    ax = fig.add_subplot()
    for label, name in enumerate(CLASS_NAMES):
        scores = p[y == label]
        ax.hist(scores, bins=bins, range=(0, 1), alpha=0.55, color=f"C{label}", label=f"true {name} (n={scores.size})")
    if threshold is not None:
        ax.axvline(threshold, color="#d62728", ls="--", lw=1.5, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="predicted probability of PNEUMONIA", ylabel="images", title="Scores by true class", xlim=(0, 1))
    ax.legend(fontsize=8)
    return figure_to_png(fig)


def thumbnail_png(image: np.ndarray, max_size: int = 224) -> bytes:
    """A grey (H, W) float image in [0, 1] (as :func:`pneumoscan.data.io.read_image` returns) as a small PNG."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr)
    img.thumbnail((max_size, max_size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
