"""Metrics by group (view, source, sex, age band, ...) and a check for a confounded pooled ROC-AUC.

A pooled figure can look good because a group attribute predicts the label, not because the model reads the
lungs. On ``rsna_adult`` 166 of 200 normals are PA films and 123 of 153 opacities are AP (portable) films: a model
that recognises AP films ranks most pneumonias above most normals without separating them within either view. The
pooled ROC-AUC is then higher than every within-view ROC-AUC, and only the per-view figures show it.

This module works on a *predictions table*: one row per image, a mapping with ``label`` (0/1), ``probability``
(of PNEUMONIA), optionally ``patient_id`` and any further columns (``view``, ``source``, ``age``, ...). The same
functions serve ``pneumoscan evaluate`` (rows built from the records it predicted) and anything that reads saved
predictions back (a parquet or CSV file, e.g. ``pandas.DataFrame.to_dict("records")``).

The confounding rule (:data:`CONFOUNDING_RULE`): for a grouping column with at least two groups, the pooled ROC-AUC
is flagged as confounded when the *lower* bound of its 95% patient-level bootstrap interval is above the *highest*
ROC-AUC point estimate of any group in which ROC-AUC is defined (a group with both classes). In words: the pooled
figure exceeds every within-group figure by more than its own uncertainty. The rule is deliberately one-sided and
conservative — groups are not weighted, small groups with a lucky high ROC-AUC make the flag less likely, and a
missing value counts as a group of its own ("unknown") — so a flag is a strong sign, and no flag is no proof that
the pooled figure is clean. Groups with one class only get no ROC-AUC (only their own rate: sensitivity for an
all-PNEUMONIA group, specificity for an all-NORMAL one) and are said so in their note.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import ConfigError, DataError
from pneumoscan.evaluation.bootstrap import (
    WeightedMetric,
    bootstrap_ci,
    group_codes,
    threshold_metric,
    weighted_roc_auc,
)
from pneumoscan.evaluation.metrics import ArrayLike, check_binary_inputs, check_threshold

MISSING = "unknown"
AGE_BAND_COLUMN = "age_band"
AGE_BANDS: tuple[tuple[int, int | None, str], ...] = ((0, 17, "0-17"), (18, 39, "18-39"), (40, 59, "40-59"),
                                                       (60, None, "60+"))
GROUP_METRICS = ("roc_auc", "sensitivity", "specificity")
CONFOUNDING_RULE = (
    "pooled ROC-AUC flagged as confounded by a column when the column has at least two groups and the lower bound of "
    "the pooled ROC-AUC's 95% patient-level bootstrap interval is above the highest within-group ROC-AUC point "
    "estimate (groups with both classes)"
)


# --------------------------------------------------------------------------------------------------- columns ---

def age_band(value: object) -> str | None:
    """The age band (``0-17``, ``18-39``, ``40-59``, ``60+``) of an age in years; None when not a number ≥ 0.

    Ages come from manifests as strings (``"36"``, ``"36.0"``, sometimes ``"036Y"`` as DICOM writes them).
    """
    text = str(value).strip().upper().removesuffix("Y") if value is not None else ""
    try:
        years = float(text)
    except ValueError:
        return None
    if not math.isfinite(years) or years < 0:
        return None
    for low, high, name in AGE_BANDS:
        if years >= low and (high is None or years < high + 1):
            return name
    return None  # pragma: no cover - the last band is open


def _cell(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def column_values(rows: Sequence[Mapping[str, object]], column: str) -> list[str | None]:
    """The value of ``column`` in each row as a string (None where missing or empty).

    ``age_band`` is derived from ``age`` (:func:`age_band`) when the rows have no ``age_band`` column of their own.

    Raises:
        ConfigError: no row has the column (a typo in ``--group-by``); the message lists the columns there are.
    """
    if any(_cell(row.get(column)) is not None for row in rows):
        return [_cell(row.get(column)) for row in rows]
    if column == AGE_BAND_COLUMN and any(_cell(row.get("age")) is not None for row in rows):
        return [age_band(row.get("age")) for row in rows]
    known = {str(k) for row in rows for k, v in row.items() if _cell(v) is not None}
    if "age" in known:
        known.add(AGE_BAND_COLUMN)
    names = sorted(known)
    raise ConfigError(f"cannot group by '{column}': no image has that column (columns: {', '.join(names) or 'none'})")


def group_columns(rows: Sequence[Mapping[str, object]], by: Iterable[str]) -> dict[str, list[str | None]]:
    """``{column: value per row}`` for each column in ``by`` (duplicates dropped, order kept).

    Raises:
        ConfigError: a column no row has.
    """
    return {column: column_values(rows, column) for column in dict.fromkeys(by)}


# --------------------------------------------------------------------------------------------------- metrics ---

def _metric_fns(threshold: float) -> dict[str, WeightedMetric]:
    return {"roc_auc": WeightedMetric("roc_auc", weighted_roc_auc),
            "sensitivity": threshold_metric("sensitivity", threshold),
            "specificity": threshold_metric("specificity", threshold)}


def _entry(y: np.ndarray, p: np.ndarray, patients: Sequence[Hashable | None] | None, threshold: float,
           n_bootstrap: int, ci: float, seed: int) -> dict[str, object]:
    """n, class counts, ROC-AUC, sensitivity and specificity (with intervals) of one set of images."""
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    fns = _metric_fns(threshold)
    if n_pos == 0:
        fns = {"specificity": fns["specificity"]}
    elif n_neg == 0:
        fns = {"sensitivity": fns["sensitivity"]}
    out: dict[str, object] = {
        "n": int(y.size), "n_positive": n_pos, "n_negative": n_neg,
        "n_patients": int(group_codes(patients, y.size).max()) + 1 if patients is not None else None,
    }
    out.update({name: fns[name](y, p) if name in fns else None for name in GROUP_METRICS})
    out["note"] = (f"only {CLASS_NAMES[int(n_pos > 0)]} images: no ROC-AUC, only "
                   f"{'sensitivity' if n_pos else 'specificity'}" if not (n_pos and n_neg) else None)
    if n_bootstrap > 0:
        res = bootstrap_ci(y, p, fns, groups=patients, n_resamples=n_bootstrap, ci=ci, seed=seed)
        out["confidence_intervals"] = {name: {k: v for k, v in r.items() if k != "value"} for name, r in res.items()}
    else:
        out["confidence_intervals"] = None
    return out


def confounding_check(pooled: Mapping[str, object], groups: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """Apply :data:`CONFOUNDING_RULE` to a pooled entry and the entries of one column's groups.

    Returns:
        ``{"confounded": True | False | None, "pooled_roc_auc", "pooled_low", "best_group", "best_roc_auc",
        "reason"}``; ``confounded`` is None when the rule cannot be applied (one group, no group with both classes,
        no bootstrap interval), and ``reason`` says why in words.
    """
    ci = (pooled.get("confidence_intervals") or {}).get("roc_auc") or {}
    low = ci.get("low")
    defined = {name: float(g["roc_auc"]) for name, g in groups.items() if g.get("roc_auc") is not None}
    best = max(defined, key=lambda k: defined[k]) if defined else None
    out: dict[str, object] = {"confounded": None, "pooled_roc_auc": pooled.get("roc_auc"), "pooled_low": low,
                              "best_group": best, "best_roc_auc": defined.get(best) if best else None}
    if len(groups) < 2:
        out["reason"] = "only one group: nothing to compare"
    elif not defined:
        out["reason"] = "no group has both classes: no within-group ROC-AUC"
    elif pooled.get("roc_auc") is None:
        out["reason"] = "the pooled data have one class only"
    elif low is None:
        out["reason"] = "no bootstrap interval for the pooled ROC-AUC"
    else:
        out["confounded"] = bool(low > defined[best])
        relation = ">" if out["confounded"] else "≤"
        out["reason"] = (f"pooled ROC-AUC {pooled['roc_auc']:.3f}, 95% CI lower bound {low:.3f} {relation} highest "
                         f"within-group ROC-AUC {defined[best]:.3f} ({best})")
    return out


def group_metrics(
    y_true: ArrayLike,
    probs: ArrayLike,
    threshold: float,
    columns: Mapping[str, Sequence[str | None]],
    *,
    patients: Sequence[Hashable | None] | None = None,
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, object]:
    """Pooled and per-group ROC-AUC, sensitivity and specificity with patient-level bootstrap intervals.

    Args:
        y_true: true labels, 0 (NORMAL) / 1 (PNEUMONIA).
        probs: probability of PNEUMONIA.
        threshold: the model's threshold (fixed beforehand; PNEUMONIA when ``probs >= threshold``).
        columns: ``{column: group value per image}``, e.g. from :func:`group_columns`; None / "" become
            :data:`MISSING`.
        patients: patient id per image (None entries: the image is its own patient); None resamples images.
        n_bootstrap: bootstrap resamples (0: no intervals, and the confounding check is not applied).
        ci: interval coverage.
        seed: seed of the bootstrap's local generator; every group uses it, so the pooled interval equals the one
            of the headline metrics.

    Returns:
        ``{"rule", "ci_level", "unit", "pooled": entry, "by": {column: {"groups": {value: entry},
        "confounding": ...}}}``; an entry holds ``n, n_positive, n_negative, n_patients, roc_auc, sensitivity,
        specificity, note, confidence_intervals`` (see :func:`confounding_check` for ``confounding``).

    Raises:
        DataError: inconsistent lengths or invalid labels / probabilities. ConfigError: invalid threshold.
    """
    y, p = check_binary_inputs(y_true, probs)
    t = check_threshold(threshold)
    if patients is not None and len(patients) != y.size:
        raise DataError(f"{len(patients)} patient ids for {y.size} images")
    pooled = _entry(y, p, patients, t, n_bootstrap, ci, seed)
    by: dict[str, object] = {}
    for column, raw in columns.items():
        if len(raw) != y.size:
            raise DataError(f"group column '{column}' has {len(raw)} values for {y.size} images")
        values = np.array([MISSING if v is None or v == "" else str(v) for v in raw], dtype=object)
        groups = {}
        for value in sorted(set(values.tolist()), key=lambda v: (v == MISSING, v)):
            mask = values == value
            sub = None if patients is None else [g for g, m in zip(patients, mask, strict=True) if m]
            groups[value] = _entry(y[mask], p[mask], sub, t, n_bootstrap, ci, seed)
        by[str(column)] = {"groups": groups, "confounding": confounding_check(pooled, groups)}
    return {"rule": CONFOUNDING_RULE, "ci_level": ci, "unit": "image" if patients is None else "patient",
            "n_resamples": int(n_bootstrap), "pooled": pooled, "by": by}


def _label(value: object) -> int:
    """0/1 from a table cell: a number (0, 1, 1.0) or a class name (NORMAL / PNEUMONIA, any case)."""
    text = str(value).strip().upper()
    return CLASS_NAMES.index(text) if text in CLASS_NAMES else int(float(text))


def group_metrics_from_table(
    rows: Sequence[Mapping[str, object]],
    by: Iterable[str],
    threshold: float,
    *,
    label: str = "label",
    probability: str = "probability",
    patient: str | None = "patient_id",
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, object]:
    """:func:`group_metrics` on a predictions table (one mapping per image).

    Labels are 0/1 or class names (NORMAL / PNEUMONIA); rows without a label (None / empty) are left out.
    ``patient`` names the patient-id column (None: resample images); a row without a patient id is its own patient.

    Raises:
        ConfigError: a ``by`` column no row has. DataError: a label or probability that is not valid.
    """
    kept = [row for row in rows if _cell(row.get(label)) is not None]
    if not kept:
        raise DataError("no labelled rows in the predictions table")
    try:
        y = [_label(row[label]) for row in kept]
        p = [float(str(row[probability])) for row in kept]
    except KeyError as err:
        raise DataError(f"predictions table has no '{err.args[0]}' column") from err
    except ValueError as err:
        raise DataError(f"predictions table: not a number ({err})") from err
    patients = None if patient is None else [_cell(row.get(patient)) for row in kept]
    return group_metrics(y, p, threshold, group_columns(kept, by), patients=patients, n_bootstrap=n_bootstrap,
                         ci=ci, seed=seed)


# ------------------------------------------------------------------------------------------------- rendering ---

def confounding_warnings(result: Mapping[str, object] | None) -> list[str]:
    """One sentence per column whose check flags the pooled ROC-AUC as confounded."""
    out = []
    for column, info in ((result or {}).get("by") or {}).items():
        c = info["confounding"]
        if c.get("confounded"):
            out.append(f"the pooled ROC-AUC is confounded by {column}: it exceeds every within-{column} ROC-AUC by "
                       f"more than its 95% interval ({c['reason']}); judge the model by the within-{column} figures")
    return out


def _value_ci(entry: Mapping[str, object], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return "—"
    c = (entry.get("confidence_intervals") or {}).get(key) or {}
    band = f" ({c['low']:.3f}–{c['high']:.3f})" if c.get("low") is not None else ""
    return f"{value:.3f}{band}"


GROUP_TABLE_HEADER = ("Group", "n", "PNEUMONIA", "ROC-AUC (95% CI)", "Sensitivity (95% CI)",
                      "Specificity (95% CI)", "Note")


def group_table_rows(result: Mapping[str, object], column: str) -> list[list[str]]:
    """Rows (pooled first, then each group) of one column's table, as text cells in :data:`GROUP_TABLE_HEADER`
    order."""
    entries = [("pooled", result["pooled"]), *((f"{column} = {k}", v)
                                               for k, v in result["by"][column]["groups"].items())]
    return [[name, str(e["n"]), str(e["n_positive"]), *(_value_ci(e, k) for k in GROUP_METRICS), e.get("note") or ""]
            for name, e in entries]


def format_group_text(result: Mapping[str, object] | None) -> list[str]:
    """Plain-text lines for a terminal: one aligned table per column, its confounding check, then the warnings."""
    lines: list[str] = []
    for column, info in ((result or {}).get("by") or {}).items():
        rows = [list(GROUP_TABLE_HEADER[:-1])] + [r[:-1] for r in group_table_rows(result, column)]  # type: ignore[arg-type]
        notes = [r[-1] for r in group_table_rows(result, column)]  # type: ignore[arg-type]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append(f"by {column}:")
        for i, row in enumerate(rows):
            note = f"  {notes[i - 1]}" if i and notes[i - 1] else ""
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + note)
        lines.append(f"  confounding check: {info['confounding']['reason']}")
    lines += [f"WARNING: {w}" for w in confounding_warnings(result)]
    return lines
