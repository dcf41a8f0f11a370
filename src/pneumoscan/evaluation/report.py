"""Evaluation report writer: metrics.json, predictions.csv, figures, summary.md and one self-contained report.html.

The HTML report is a single file that opens offline and can be mailed or archived as is: figures and thumbnails
are embedded as base64 ``data:`` URIs, the CSS is inline, and there are no scripts, fonts or links to fetch. All
text that comes from outside (paths, model and data descriptions, subgroup names) is HTML-escaped.

Every file is written atomically (:mod:`pneumoscan.core.atomic`: a temporary file in the same folder, fsync, then
``os.replace``), so a crash or a concurrent reader never sees half a report file.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit
from scipy.special import logit as scipy_logit

from pneumoscan import CLASS_NAMES, __version__
from pneumoscan.core.atomic import atomic_write_bytes, atomic_write_text
from pneumoscan.errors import DataError, PneumoError
from pneumoscan.evaluation import plots
from pneumoscan.evaluation.bootstrap import bootstrap_ci, group_codes, standard_metrics, threshold_metric
from pneumoscan.evaluation.calibration import apply_temperature, brier_score, expected_calibration_error
from pneumoscan.evaluation.calibration import reliability_curve as _reliability_curve
from pneumoscan.evaluation.groups import GROUP_TABLE_HEADER, confounding_warnings, group_metrics, group_table_rows
from pneumoscan.evaluation.metrics import ArrayLike, binary_metrics, check_binary_inputs, check_threshold

logger = logging.getLogger(__name__)

CI_LEVEL = 0.95
N_BINS = 15
GALLERY_SIZE = 8
IMAGE_LEVEL_NOTE = "image-level: patients unknown"
RULE_DESCRIPTIONS = {
    "youden": "maximises Youden's J (sensitivity + specificity − 1)",
    "max_f1": "maximises F1",
    "sensitivity": "highest threshold reaching the target sensitivity (screening)",
    "fixed": "a fixed value, not chosen from data",
}
HEADLINE = ("accuracy", "recall", "specificity", "precision", "npv", "f1", "balanced_accuracy", "roc_auc", "pr_auc")
LABELS = {
    "accuracy": "Accuracy", "recall": "Sensitivity (recall)", "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "PPV (precision)", "ppv": "PPV", "npv": "NPV", "f1": "F1", "balanced_accuracy": "Balanced accuracy",
    "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC (average precision)",
}
OPERATING_COLUMNS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy")
FIGURES = ("roc", "pr", "confusion_matrix", "calibration", "histogram")
HeatmapFn = Callable[[str], bytes]


def json_ready(obj: object) -> object:
    """Plain JSON types from numpy scalars/arrays, tuples and paths; NaN and infinities become None."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def dumps_json(obj: object) -> str:
    """Indented, strictly valid JSON (no NaN) of :func:`json_ready` ``(obj)``."""
    return json.dumps(json_ready(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------------- inputs ---

@dataclass(frozen=True)
class _Inputs:
    """Validated report inputs (arrays of one length n)."""

    y: np.ndarray
    p: np.ndarray
    threshold: float
    paths: list[str]
    groups: list[Hashable | None] | None
    logits: np.ndarray | None
    p_uncal: np.ndarray | None
    subgroups: dict[str, list[str]]
    group_by: dict[str, list[str | None]]

    @property
    def predicted(self) -> np.ndarray:
        return (self.p >= self.threshold).astype(np.int64)


def _check_length(name: str, values: Sequence[object] | np.ndarray | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise DataError(f"{name} has {len(values)} entries for {n} images")


def _uncalibrated(p: np.ndarray, logits: np.ndarray | None, temperature: float) -> np.ndarray:
    """Probabilities before temperature scaling: ``sigmoid(logit)``; without logits, ``p = sigmoid(z / T)`` is
    inverted exactly as ``sigmoid(T · logit(p))``."""
    if logits is not None:
        return apply_temperature(logits, 1.0)
    apply_temperature([0.0], temperature)  # validates the temperature
    with np.errstate(divide="ignore"):
        return expit(float(temperature) * scipy_logit(p))


def _prepare(
    y_true: ArrayLike, probs: ArrayLike, threshold: float, paths: Sequence[str] | None,
    groups: Sequence[Hashable | None] | None, logits: ArrayLike | None, temperature: float | None,
    probs_uncalibrated: ArrayLike | None, subgroups: Mapping[str, Sequence[str | None]] | None,
    group_by: Mapping[str, Sequence[str | None]] | None = None,
) -> _Inputs:
    y, p = check_binary_inputs(y_true, probs)
    n = y.size
    for name, values in (("paths", paths), ("groups", groups), ("logits", logits),
                         ("probs_uncalibrated", probs_uncalibrated),
                         *((f"subgroup '{k}'", v) for k, v in (subgroups or {}).items()),
                         *((f"group column '{k}'", v) for k, v in (group_by or {}).items())):
        _check_length(name, values, n)
    z = None if logits is None else np.asarray(logits, dtype=np.float64)
    if z is not None and not np.isfinite(z).all():
        raise DataError("logits contain NaN or infinite values")
    p_uncal = None if probs_uncalibrated is None else check_binary_inputs(y, probs_uncalibrated)[1]
    if p_uncal is None and temperature is not None and temperature != 1.0:
        p_uncal = _uncalibrated(p, z, temperature)
    return _Inputs(
        y=y, p=p, threshold=check_threshold(threshold),
        paths=[str(s) for s in paths] if paths is not None else [f"image_{i:05d}" for i in range(n)],
        groups=None if groups is None else list(groups), logits=z, p_uncal=p_uncal,
        subgroups={str(k): ["unknown" if v is None or v == "" else str(v) for v in vals]
                   for k, vals in (subgroups or {}).items()},
        group_by={str(k): [None if v is None or v == "" else str(v) for v in vals]
                  for k, vals in (group_by or {}).items()},
    )


# -------------------------------------------------------------------------------------------------- metrics ---

def _patients(inp: _Inputs) -> dict[str, object]:
    if inp.groups is None:
        return {"patients_known": False, "n_patients": None, "unit": "image", "note": IMAGE_LEVEL_NOTE}
    missing = sum(1 for g in inp.groups if g is None or g == "")
    n_patients = int(group_codes(inp.groups, inp.y.size).max()) + 1
    note = "resampled by patient (cluster bootstrap)"
    if missing:
        note += f"; {missing} images without a patient id each count as their own patient"
    return {"patients_known": True, "n_patients": n_patients, "unit": "patient", "note": note}


def _confidence_intervals(inp: _Inputs, n_bootstrap: int, seed: int) -> dict[str, object] | None:
    if n_bootstrap <= 0:
        return None
    patients = _patients(inp)
    res = bootstrap_ci(inp.y, inp.p, standard_metrics(inp.threshold), groups=inp.groups, n_resamples=n_bootstrap,
                       ci=CI_LEVEL, seed=seed)
    return {"level": CI_LEVEL, "method": "percentile bootstrap", "unit": patients["unit"], "note": patients["note"],
            "n_resamples": int(n_bootstrap), "seed": int(seed), "metrics": res}


def _operating_points(inp: _Inputs, points: Mapping[str, float] | None) -> dict[str, dict[str, object]]:
    out = {}
    for name, t in (points or {}).items():
        m = binary_metrics(inp.y, inp.p, t)
        out[str(name)] = {"threshold": float(t), **{k: m[k] for k in OPERATING_COLUMNS},
                          "confusion_matrix": m["confusion_matrix"]}
    return out


def _calibration(inp: _Inputs, temperature: float | None) -> dict[str, object]:
    before = None
    if inp.p_uncal is not None:
        before = {"ece": expected_calibration_error(inp.y, inp.p_uncal, N_BINS),
                  "brier": brier_score(inp.y, inp.p_uncal)}
    return {
        "ece": expected_calibration_error(inp.y, inp.p, N_BINS),
        "brier": brier_score(inp.y, inp.p),
        "temperature": None if temperature is None else float(temperature),
        "before_temperature_scaling": before,
        "n_bins": N_BINS,
        "ece_definition": "binary ECE on P(PNEUMONIA), equal-width bins",
        "reliability": _reliability_curve(inp.y, inp.p, N_BINS),
    }


def _one_subgroup(inp: _Inputs, mask: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, object]:
    y, p = inp.y[mask], inp.p[mask]
    m = binary_metrics(y, p, inp.threshold)
    keep = [k for k in HEADLINE if k not in ("recall", "precision")] + ["sensitivity", "ppv"]
    out: dict[str, object] = {k: m[k] for k in ("n", "n_positive", "n_negative", *keep)}
    present = [c for c, count in ((1, m["n_positive"]), (0, m["n_negative"])) if count]
    if len(present) == 1:  # one class only: every metric but its own rate is trivial or undefined
        own = "sensitivity" if present[0] == 1 else "specificity"
        out.update({k: None for k in keep if k != own})
        out["note"] = f"only {CLASS_NAMES[present[0]]} images: only {own} is meaningful"
    rates = [r for r in ("sensitivity", "specificity") if out[r] is not None]
    if n_bootstrap > 0 and rates:
        groups = None if inp.groups is None else [g for g, keep_ in zip(inp.groups, mask, strict=True) if keep_]
        out["confidence_intervals"] = bootstrap_ci(
            y, p, {r: threshold_metric(r, inp.threshold) for r in rates}, groups=groups,
            n_resamples=n_bootstrap, ci=CI_LEVEL, seed=seed)
    return out


def _subgroups(inp: _Inputs, n_bootstrap: int, seed: int) -> dict[str, dict[str, object]]:
    result: dict[str, dict[str, object]] = {}
    for name, values in inp.subgroups.items():
        arr = np.asarray(values, dtype=object)
        result[name] = {str(v): _one_subgroup(inp, arr == v, n_bootstrap, seed) for v in sorted(set(values))}
    return result


def _metrics_document(
    inp: _Inputs, threshold_rule: str, points: Mapping[str, float] | None, temperature: float | None,
    model_info: Mapping[str, object], data_info: Mapping[str, object], n_bootstrap: int, seed: int,
) -> dict[str, object]:
    doc: dict[str, object] = dict(binary_metrics(inp.y, inp.p, inp.threshold))
    patients = _patients(inp)
    doc.update({
        "threshold_rule": threshold_rule,
        "patients_known": patients["patients_known"],
        "n_patients": patients["n_patients"],
        "confidence_intervals": _confidence_intervals(inp, n_bootstrap, seed),
        "operating_points": _operating_points(inp, points),
        "calibration": _calibration(inp, temperature),
        "subgroups": _subgroups(inp, n_bootstrap, seed),
        "groups": group_metrics(inp.y, inp.p, inp.threshold, inp.group_by, patients=inp.groups,
                                n_bootstrap=n_bootstrap, ci=CI_LEVEL, seed=seed) if inp.group_by else None,
        "model": dict(model_info),
        "data": dict(data_info),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "pneumoscan_version": __version__,
    })
    return json_ready(doc)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ predictions.csv ---

def _predictions_csv(inp: _Inputs) -> str:
    base = ["path", "label", "probability", "predicted", "patient_id"]
    extra = ["logit"] if inp.logits is not None else []
    sub_cols = {name: (f"subgroup_{name}" if name in base + extra else name) for name in inp.subgroups}
    group_cols = {name: (f"group_{name}" if name in base + extra else name) for name in inp.group_by
                  if name not in inp.subgroups}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(base + extra + list(sub_cols.values()) + list(group_cols.values()))
    predicted = inp.predicted
    for i, path in enumerate(inp.paths):
        patient = "" if inp.groups is None or inp.groups[i] is None else str(inp.groups[i])
        row = [path, int(inp.y[i]), repr(float(inp.p[i])), int(predicted[i]), patient]
        row += [repr(float(inp.logits[i]))] if inp.logits is not None else []
        row += [inp.subgroups[name][i] for name in sub_cols]
        row += [inp.group_by[name][i] or "" for name in group_cols]
        writer.writerow(row)
    return buf.getvalue()


# -------------------------------------------------------------------------------------------------- figures ---

def _figures(inp: _Inputs, doc: Mapping[str, object], points: Mapping[str, float] | None) -> dict[str, bytes]:
    return {
        "roc": plots.roc_curve_png(inp.y, inp.p, threshold=inp.threshold, operating_points=points),
        "pr": plots.pr_curve_png(inp.y, inp.p, threshold=inp.threshold, operating_points=points),
        "confusion_matrix": plots.confusion_matrix_png(doc["confusion_matrix"], threshold=inp.threshold),
        "calibration": plots.reliability_png(inp.y, inp.p, probs_uncalibrated=inp.p_uncal, n_bins=N_BINS),
        "histogram": plots.histogram_png(inp.y, inp.p, threshold=inp.threshold),
    }


# -------------------------------------------------------------------------------------------------- gallery ---

def _thumbnail(path: str) -> bytes | None:
    """A PNG thumbnail of an image file, or None when it cannot be read (missing file, reader not installed)."""
    try:
        from pneumoscan.data.io import read_image

        return plots.thumbnail_png(read_image(path))
    except (ImportError, PneumoError, OSError, ValueError) as err:
        logger.warning("no thumbnail for %s: %s", path, err)
        return None


def _gallery_image(path: str, heatmap_fn: HeatmapFn | None) -> bytes | None:
    if heatmap_fn is not None:
        try:
            return heatmap_fn(path)
        except Exception as err:  # caller's code: a failed overlay must not cost the whole report
            logger.warning("heatmap failed for %s (%s: %s); using a plain thumbnail", path, type(err).__name__, err)
    return _thumbnail(path)


def _gallery(inp: _Inputs, heatmap_fn: HeatmapFn | None, size: int, has_files: bool) -> dict[str, list[dict]]:
    """Most confident errors: false positives by highest probability, false negatives by lowest."""
    pred = inp.predicted
    fp = np.flatnonzero((inp.y == 0) & (pred == 1))
    fn = np.flatnonzero((inp.y == 1) & (pred == 0))
    chosen = {
        "false_positives": fp[np.argsort(-inp.p[fp], kind="stable")][:size],
        "false_negatives": fn[np.argsort(inp.p[fn], kind="stable")][:size],
    }
    return {
        kind: [{"path": inp.paths[i], "label": CLASS_NAMES[int(inp.y[i])], "probability": float(inp.p[i]),
                "image": _gallery_image(inp.paths[i], heatmap_fn) if has_files else None} for i in idx]
        for kind, idx in chosen.items()
    }


# ------------------------------------------------------------------------------------------------- rendering ---

def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci_text(ci: Mapping[str, object] | None) -> str:
    if not ci or ci.get("low") is None:
        return "—"
    return f"{ci['low']:.3f}–{ci['high']:.3f}"


def _rule_text(rule: str) -> str:
    """The rule as given, with a plain-words description of the known rule it starts with (``sensitivity_95 on
    the validation split`` -> the sensitivity rule)."""
    base = rule.split(":")[0].split(" ")[0]
    known = next((k for k in RULE_DESCRIPTIONS if base == k or base.startswith(f"{k}_")), None)
    return f"{rule} ({RULE_DESCRIPTIONS[known]})" if known else rule


def _summary_md(doc: Mapping[str, object]) -> str:
    cis = (doc.get("confidence_intervals") or {}).get("metrics", {})
    ci_info = doc.get("confidence_intervals")
    lines = [
        f"# Evaluation: {doc['model'].get('name', 'model')}",
        "",
        f"- Images: {doc['n']} ({doc['n_positive']} PNEUMONIA, {doc['n_negative']} NORMAL); "
        + (f"patients: {doc['n_patients']}" if doc["patients_known"] else IMAGE_LEVEL_NOTE),
        f"- Threshold: {doc['threshold']:.4f}, rule: {_rule_text(str(doc['threshold_rule']))}; "
        "predicted PNEUMONIA when probability >= threshold",
        (f"- 95% confidence intervals: percentile bootstrap, {ci_info['n_resamples']} resamples by {ci_info['unit']}"
         + (f" ({IMAGE_LEVEL_NOTE})" if ci_info["unit"] == "image" else "")) if ci_info else "- No bootstrap",
        "",
        "| Metric | Value | 95% CI |",
        "|---|---|---|",
    ]
    lines += [f"| {LABELS[k]} | {_fmt(doc[k])} | {_ci_text(cis.get(k))} |" for k in HEADLINE]
    cm = doc["confusion_matrix"]
    lines += ["", f"Confusion matrix: TN {cm[0][0]}, FP {cm[0][1]}, FN {cm[1][0]}, TP {cm[1][1]}.",
              f"Calibration: ECE {_fmt(doc['calibration']['ece'])}, Brier {_fmt(doc['calibration']['brier'])}.", ""]
    lines += _groups_md(doc.get("groups"))
    return "\n".join(lines)


def _groups_md(groups: Mapping[str, object] | None) -> list[str]:
    if not groups:
        return []
    lines = ["## By group", "",
             f"At the threshold above; 95% CIs: percentile bootstrap by {groups['unit']}. Confounding rule: "
             f"{groups['rule']}.", ""]
    lines += [f"**Warning:** {w}." for w in confounding_warnings(groups)]
    for column, info in groups["by"].items():
        lines += ["", f"### {column}", "", "| " + " | ".join(GROUP_TABLE_HEADER) + " |",
                  "|" + "---|" * len(GROUP_TABLE_HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                  for row in group_table_rows(groups, column)]
        lines += ["", f"Confounding check: {info['confounding']['reason']}."]
    return lines + [""]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:1.5rem;color:#1b1f24;line-height:1.45}
h1{margin:0 0 .3rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;
vertical-align:top}th{background:#f3f5f7}td.num{text-align:right;white-space:nowrap}
.meta{color:#57606a;font-size:.92rem}.meta dt{font-weight:600;float:left;clear:left;width:10rem}
.meta dd{margin:0 0 .15rem 10.5rem}.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs img{max-width:100%;
border:1px solid #eaeef2}.gallery{display:flex;flex-wrap:wrap;gap:.8rem}.card{width:230px;font-size:.8rem;
border:1px solid #d0d7de;padding:.4rem;overflow-wrap:anywhere}.card img{width:224px;height:auto;display:block}
.noimg{width:224px;height:120px;background:#f3f5f7;display:flex;align-items:center;justify-content:center;
color:#8c959f}.note{color:#57606a;font-size:.9rem}.warn{color:#9a6700}
"""


def _data_uri(png: bytes | None) -> str | None:
    if not png:
        return None
    if png.startswith(b"\x89PNG"):
        mime = "image/png"
    elif png.startswith(b"\xff\xd8"):
        mime = "image/jpeg"
    else:
        logger.warning("gallery image is neither PNG nor JPEG; left out")
        return None
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def _img(png: bytes | None, alt: str) -> str:
    uri = _data_uri(png)
    if uri is None:
        return f'<div class="noimg">{html.escape(alt)}: no image</div>'
    return f'<img src="{uri}" alt="{html.escape(alt, quote=True)}">'


def _cell(value: object) -> str:
    numeric = value is None or isinstance(value, int | float) or (isinstance(value, str) and value[:1] in "0123456789—")
    attr = ' class="num"' if numeric else ""
    return f"<td{attr}>{html.escape(_fmt(value))}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    ident = f' id="{html.escape(table_id, quote=True)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _meta_value(value: object) -> str:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else _fmt(value, 4)


def _meta_list(info: Mapping[str, object]) -> str:
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(_meta_value(v))}</dd>" for k, v in info.items())
    return f'<dl class="meta">{items}</dl>' if items else '<p class="note">none given</p>'


def _html_header(doc: Mapping[str, object]) -> str:
    model, data = doc["model"], doc["data"]
    patients = (f"{doc['n_patients']} patients (from patient ids)" if doc["patients_known"]
                else f'<span class="warn">patients unknown — {html.escape(IMAGE_LEVEL_NOTE)}</span>')
    return (
        f"<h1>Evaluation report: {html.escape(str(model.get('name', 'model')))}</h1>"
        f'<p class="meta">{doc["n"]} images ({doc["n_positive"]} PNEUMONIA, {doc["n_negative"]} NORMAL); {patients}; '
        f"created {html.escape(str(doc['created']))}; pneumoscan {html.escape(str(doc['pneumoscan_version']))}</p>"
        f"<h2>Model</h2>{_meta_list(model)}<h2>Data</h2>{_meta_list(data)}"
    )


def _html_metrics(doc: Mapping[str, object]) -> str:
    ci_info = doc.get("confidence_intervals")
    cis = (ci_info or {}).get("metrics", {})
    rows = [(LABELS[k], doc[k], _ci_text(cis.get(k))) for k in HEADLINE]
    if ci_info:
        note = (f"95% CI: percentile bootstrap, {ci_info['n_resamples']} resamples, unit: {ci_info['unit']} "
                f"({ci_info['note']}). PR-AUC is the average precision.")
    else:
        note = "No bootstrap intervals were computed. PR-AUC is the average precision."
    warnings = "".join(f'<p class="warn" role="alert"><strong>Warning:</strong> {html.escape(w)}. See '
                       '<a href="#groups">By group</a>.</p>' for w in confounding_warnings(doc.get("groups")))
    return (f"<h2>Metrics at threshold {doc['threshold']:.4f}</h2>{warnings}"
            f"<p>Threshold rule: {html.escape(_rule_text(str(doc['threshold_rule'])))}; PNEUMONIA when "
            f"probability ≥ threshold.</p>{_table(('Metric', 'Value', '95% CI'), rows, 'metrics')}"
            f'<p class="note">{html.escape(note)}</p>')


def _html_operating_points(doc: Mapping[str, object]) -> str:
    model_row = [f"model ({doc['threshold_rule']})", doc["threshold"], *(doc[k] for k in OPERATING_COLUMNS)]
    rows = [model_row] + [[name, op["threshold"], *(op[k] for k in OPERATING_COLUMNS)]
                          for name, op in doc["operating_points"].items()]
    header = ("Operating point", "Threshold", *(LABELS.get(k, k) for k in OPERATING_COLUMNS))
    return ("<h2>Operating points</h2>" + _table(header, rows, "operating-points")
            + '<p class="note">Thresholds are as given (fixed before this evaluation); the metrics are measured on '
            "this data.</p>")


def _html_figures(doc: Mapping[str, object], figures: Mapping[str, bytes]) -> str:
    cal = doc["calibration"]
    label = "after temperature scaling" if cal["before_temperature_scaling"] else "model"
    cal_rows = [(label, cal["ece"], cal["brier"])]
    if cal["before_temperature_scaling"]:
        before = cal["before_temperature_scaling"]
        cal_rows.insert(0, ("before temperature scaling", before["ece"], before["brier"]))
    temp = f"Temperature {cal['temperature']:.4f}. " if cal["temperature"] is not None else ""
    return (
        "<h2>ROC and precision-recall curves</h2><div class=\"figs\">"
        f"{_img(figures['roc'], 'ROC curve')}{_img(figures['pr'], 'PR curve')}</div>"
        "<h2>Confusion matrix and score distributions</h2><div class=\"figs\">"
        f"{_img(figures['confusion_matrix'], 'confusion matrix')}{_img(figures['histogram'], 'score histograms')}"
        "</div><h2>Calibration</h2><div class=\"figs\">"
        f"{_img(figures['calibration'], 'reliability diagram')}<div>"
        f"{_table(('Probabilities', 'ECE', 'Brier'), cal_rows, 'calibration')}"
        f'<p class="note">{html.escape(temp)}ECE: {html.escape(cal["ece_definition"])}, {cal["n_bins"]} bins.</p>'
        "</div></div>"
    )


def _rate_with_ci(m: Mapping[str, object], key: str) -> str:
    if m[key] is None:
        return "—"
    ci = (m.get("confidence_intervals") or {}).get(key)
    return f"{_fmt(m[key])} ({_ci_text(ci)})" if ci else _fmt(m[key])


def _html_subgroups(doc: Mapping[str, object]) -> str:
    cols = ("sensitivity", "specificity", "ppv", "npv", "roc_auc")
    rows = []
    for name, values in doc["subgroups"].items():
        for value, m in values.items():
            rows.append([f"{name} = {value}", m["n"], m["n_positive"], m["n_negative"], _rate_with_ci(m, cols[0]),
                         _rate_with_ci(m, cols[1]), *(m[c] for c in cols[2:]), m.get("note", "")])
    if not rows:
        return "<h2>Subgroups</h2><p class=\"note\">No subgroup information given.</p>"
    header = ("Subgroup", "n", "PNEUMONIA", "NORMAL", "Sensitivity (95% CI)", "Specificity (95% CI)", "PPV", "NPV",
              "ROC-AUC", "Note")
    return "<h2>Subgroups</h2>" + _table(header, rows, "subgroups")


def _html_groups(doc: Mapping[str, object]) -> str:
    groups = doc.get("groups")
    if not groups:
        return ""
    parts = ['<h2 id="groups">By group</h2>',
             f'<p class="note">Pooled and per-group figures at the threshold above; 95% CIs: percentile bootstrap by '
             f"{html.escape(str(groups['unit']))}. Confounding rule: {html.escape(str(groups['rule']))}.</p>"]
    for column, info in groups["by"].items():
        check = info["confounding"]
        css = "warn" if check.get("confounded") else "note"
        parts.append(f"<h3>{html.escape(column)}</h3>"
                     + _table(GROUP_TABLE_HEADER, group_table_rows(groups, column), f"groups-{column}")
                     + f'<p class="{css}">Confounding check: {html.escape(str(check["reason"]))}'
                     + (" — the pooled figure is confounded." if check.get("confounded") else ".") + "</p>")
    return "".join(parts)


def _html_gallery(gallery: Mapping[str, list[dict]], heatmaps: bool) -> str:
    parts = ["<h2>Most confident errors</h2>",
             f'<p class="note">{"Heatmap overlays" if heatmaps else "Thumbnails"} of the false positives with the '
             "highest and the false negatives with the lowest probability of PNEUMONIA.</p>"]
    for kind, title in (("false_positives", "False positives (true NORMAL)"),
                        ("false_negatives", "False negatives (true PNEUMONIA)")):
        cards = "".join(
            f'<div class="card">{_img(e["image"], Path(e["path"]).name)}'
            f"<div>P(PNEUMONIA) = {e['probability']:.3f}</div><div>{html.escape(e['path'])}</div></div>"
            for e in gallery[kind])
        parts.append(f"<h3>{title}</h3>" + (f'<div class="gallery">{cards}</div>' if cards else "<p>None.</p>"))
    return "".join(parts)


def _html(doc: Mapping[str, object], figures: Mapping[str, bytes], gallery: Mapping[str, list[dict]],
          heatmaps: bool) -> str:
    title = html.escape(f"pneumoscan evaluation: {doc['model'].get('name', 'model')}")
    body = (_html_header(doc) + _html_metrics(doc) + _html_operating_points(doc) + _html_figures(doc, figures)
            + _html_groups(doc) + _html_subgroups(doc) + _html_gallery(gallery, heatmaps))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>\n")


# ---------------------------------------------------------------------------------------------------- entry ---

def write_evaluation_report(
    output_dir: str | Path,
    *,
    y_true: ArrayLike,
    probs: ArrayLike,
    threshold: float,
    threshold_rule: str,
    operating_points: Mapping[str, float] | None,
    model_info: Mapping[str, object],
    data_info: Mapping[str, object],
    groups: Sequence[Hashable | None] | None = None,
    logits: ArrayLike | None = None,
    temperature: float | None = None,
    probs_uncalibrated: ArrayLike | None = None,
    paths: Sequence[str] | None = None,
    subgroups: Mapping[str, Sequence[str | None]] | None = None,
    group_by: Mapping[str, Sequence[str | None]] | None = None,
    heatmap_fn: HeatmapFn | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    gallery_size: int = GALLERY_SIZE,
) -> dict[str, object]:
    """Write the complete evaluation of one model on one labelled data set into ``output_dir``.

    Files: ``metrics.json``, ``predictions.csv``, ``roc.png``, ``pr.png``, ``confusion_matrix.png``,
    ``calibration.png``, ``histogram.png``, ``summary.md`` and the self-contained ``report.html``.

    Args:
        output_dir: folder to write into (created if needed).
        y_true: true labels, 0 (NORMAL) / 1 (PNEUMONIA).
        probs: probability of PNEUMONIA as the model outputs it (after temperature scaling, if any).
        threshold: the model's decision threshold (PNEUMONIA when ``probs >= threshold``).
        threshold_rule: how the threshold was chosen (e.g. ``"youden"``), shown in the report.
        operating_points: further named thresholds (e.g. the model's stored ``{"youden": .., "sensitivity_95": ..}``)
            whose sensitivity/specificity/PPV/NPV on this data are tabulated and marked on the curves. None: only the
            model's threshold. They are never re-chosen on this data (that would be optimistic).
        model_info: model description (name, version, checkpoint, ...), shown and stored as given.
        data_info: data description (source, split, citation, ...), shown and stored as given.
        groups: patient id per image; bootstrap intervals resample patients. None: image-level, and the report says
            "image-level: patients unknown".
        logits: raw model outputs; added to predictions.csv, and used for the "before" calibration when a
            ``temperature`` is given without ``probs_uncalibrated``.
        temperature: the temperature the model applies (``probs = sigmoid(logits / T)``), shown in the report. When
            it is not 1 and neither ``logits`` nor ``probs_uncalibrated`` are given, the probabilities before scaling
            are recovered exactly as ``sigmoid(T · logit(probs))`` for the before/after calibration comparison.
        probs_uncalibrated: probabilities before temperature scaling, for the before/after calibration comparison.
        paths: image path per row (for predictions.csv and the error gallery); None: rows are numbered.
        subgroups: per-image attributes to break metrics down by, e.g. ``{"subtype": [...], "source": [...]}``; None
            values become "unknown". A subgroup with one class only reports only its own rate.
        group_by: ``{column: value per image}`` (``--group-by``; see :mod:`pneumoscan.evaluation.groups`): pooled and
            per-group ROC-AUC, sensitivity and specificity with patient-level intervals in ``metrics.json["groups"]``,
            a table per column in summary.md and report.html, and a warning when the pooled ROC-AUC is confounded.
        heatmap_fn: returns a PNG (e.g. Grad-CAM overlay) for an image path, for the error gallery; without it, or
            when it fails, a thumbnail is read with :func:`pneumoscan.data.io.read_image` (no image if that fails).
        n_bootstrap: bootstrap resamples for the intervals (0: no intervals).
        seed: seed of the bootstrap's local random generator.
        gallery_size: false positives and false negatives shown each.

    Returns:
        The content of ``metrics.json``.

    Raises:
        DataError: inconsistent inputs (lengths, labels, probabilities). ConfigError: invalid threshold/temperature.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    inp = _prepare(y_true, probs, threshold, paths, groups, logits, temperature, probs_uncalibrated, subgroups,
                   group_by)
    doc = _metrics_document(inp, threshold_rule, operating_points, temperature, model_info, data_info,
                            int(n_bootstrap), seed)
    figures = _figures(inp, doc, operating_points)
    gallery = _gallery(inp, heatmap_fn, gallery_size, has_files=paths is not None)
    atomic_write_text(out / "metrics.json", dumps_json(doc))
    atomic_write_text(out / "predictions.csv", _predictions_csv(inp))
    for name in FIGURES:
        atomic_write_bytes(out / f"{name}.png", figures[name])
    atomic_write_text(out / "summary.md", _summary_md(doc))
    atomic_write_text(out / "report.html", _html(doc, figures, gallery, heatmaps=heatmap_fn is not None))
    logger.info("evaluation report written to %s", out)
    return doc
