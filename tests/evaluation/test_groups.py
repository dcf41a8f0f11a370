"""Metrics by group: known per-group ROC-AUCs, one-class groups, the confounding check, tables and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pneumoscan.errors import ConfigError, DataError
from pneumoscan.evaluation.groups import (
    age_band,
    column_values,
    confounding_warnings,
    format_group_text,
    group_metrics,
    group_metrics_from_table,
)
from pneumoscan.evaluation.report import write_evaluation_report

# Group A separates perfectly (ROC-AUC 1); in group B 12 of the 16 positive-negative pairs are ordered (0.75).
A_NEG, A_POS = [0.05, 0.10, 0.20], [0.80, 0.90]
B_NEG, B_POS = [0.1, 0.3, 0.5, 0.7], [0.2, 0.6, 0.8, 0.9]


def known_groups() -> tuple[np.ndarray, np.ndarray, list[str]]:
    y = np.array([0] * 3 + [1] * 2 + [0] * 4 + [1] * 4 + [1] * 3)
    p = np.array(A_NEG + A_POS + B_NEG + B_POS + [0.4, 0.6, 0.95])
    view = ["A"] * 5 + ["B"] * 8 + ["C"] * 3  # C: PNEUMONIA only
    return y, p, view


def test_known_auc_per_group_and_one_class_group() -> None:
    y, p, view = known_groups()
    res = group_metrics(y, p, 0.5, {"view": view}, n_bootstrap=200)
    groups = res["by"]["view"]["groups"]
    assert list(groups) == ["A", "B", "C"]
    assert groups["A"]["roc_auc"] == pytest.approx(1.0)
    assert groups["B"]["roc_auc"] == pytest.approx(0.75)
    assert res["pooled"]["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert (groups["B"]["n"], groups["B"]["n_positive"], groups["B"]["n_negative"]) == (8, 4, 4)
    # B at 0.5: positives 0.6, 0.8, 0.9 called (3/4); negatives 0.1, 0.3 below (2/4)
    assert groups["B"]["sensitivity"] == pytest.approx(0.75) and groups["B"]["specificity"] == pytest.approx(0.5)
    c = groups["C"]
    assert c["roc_auc"] is None and c["specificity"] is None and c["sensitivity"] == pytest.approx(2 / 3)
    assert "no ROC-AUC" in c["note"] and "PNEUMONIA" in c["note"]
    assert set(c["confidence_intervals"]) == {"sensitivity"}
    for name in ("roc_auc", "sensitivity", "specificity"):
        ci = groups["B"]["confidence_intervals"][name]
        assert ci["low"] <= groups["B"][name] <= ci["high"]


def test_missing_values_are_a_group_of_their_own() -> None:
    y, p, view = known_groups()
    view = [None if v == "C" else v for v in view]
    res = group_metrics(y, p, 0.5, {"view": view}, n_bootstrap=0)
    assert list(res["by"]["view"]["groups"]) == ["A", "B", "unknown"]
    assert res["pooled"]["confidence_intervals"] is None
    assert res["by"]["view"]["confounding"]["confounded"] is None  # no interval, no check


def confounded_data(shortcut: float, n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """AP films are mostly PNEUMONIA, PA mostly NORMAL; the score is ``shortcut`` × (AP) plus a weak label signal."""
    rng = np.random.default_rng(seed)
    ap = rng.random(n) < 0.5
    y = (rng.random(n) < np.where(ap, 0.8, 0.2)).astype(int)
    p = np.clip(shortcut * ap + 0.15 * y + rng.random(n) * (1 - shortcut - 0.15), 0, 1)
    return y, p, ["AP" if a else "PA" for a in ap]


def test_confounding_warning_fires_when_view_predicts_the_label() -> None:
    y, p, view = confounded_data(shortcut=0.5)
    res = group_metrics(y, p, 0.5, {"view": view}, patients=[f"p{i}" for i in range(y.size)], n_bootstrap=300)
    check = res["by"]["view"]["confounding"]
    within = [g["roc_auc"] for g in res["by"]["view"]["groups"].values()]
    assert check["pooled_low"] > max(within)  # the rule, computed here from the parts
    assert check["confounded"] is True and check["best_roc_auc"] == pytest.approx(max(within))
    warnings = confounding_warnings(res)
    assert len(warnings) == 1 and "confounded by view" in warnings[0]
    text = "\n".join(format_group_text(res))
    assert "pooled" in text and "view = AP" in text and "view = PA" in text and "WARNING" in text


def test_confounding_warning_does_not_fire_without_a_shortcut() -> None:
    y, p, view = confounded_data(shortcut=0.0)
    res = group_metrics(y, p, 0.5, {"view": view}, n_bootstrap=300)
    check = res["by"]["view"]["confounding"]
    assert check["confounded"] is False and check["pooled_low"] <= check["best_roc_auc"]
    assert confounding_warnings(res) == [] and "WARNING" not in "\n".join(format_group_text(res))


def test_one_group_or_one_class_everywhere_gives_no_verdict() -> None:
    y, p, _ = known_groups()
    res = group_metrics(y, p, 0.5, {"site": ["x"] * y.size, "label": [str(v) for v in y]}, n_bootstrap=50)
    assert res["by"]["site"]["confounding"]["confounded"] is None
    assert "one group" in res["by"]["site"]["confounding"]["reason"]
    by_label = res["by"]["label"]
    assert all(g["roc_auc"] is None for g in by_label["groups"].values())
    assert by_label["confounding"]["confounded"] is None and "both classes" in by_label["confounding"]["reason"]


def test_bootstrap_resamples_patients() -> None:
    y, p, view = confounded_data(shortcut=0.3, n=200)
    patients = [f"p{i // 4}" for i in range(y.size)]
    res = group_metrics(y, p, 0.5, {"view": view}, patients=patients, n_bootstrap=100)
    assert res["unit"] == "patient" and res["pooled"]["n_patients"] == 50
    assert group_metrics(y, p, 0.5, {"view": view}, n_bootstrap=0)["unit"] == "image"
    with pytest.raises(DataError, match="patient ids"):
        group_metrics(y, p, 0.5, {"view": view}, patients=patients[:-1])
    with pytest.raises(DataError, match="group column 'view'"):
        group_metrics(y, p, 0.5, {"view": view[:-1]})


@pytest.mark.parametrize(("age", "band"), [("0", "0-17"), ("17", "0-17"), ("17.5", "0-17"), ("18", "18-39"),
                                           ("036Y", "18-39"), ("59", "40-59"), ("60", "60+"), (93, "60+"),
                                           ("", None), ("abc", None), ("-3", None), (None, None)])
def test_age_band(age: object, band: str | None) -> None:
    assert age_band(age) == band


def test_columns_from_table_rows() -> None:
    rows = [{"view": "PA", "age": "41"}, {"view": "", "age": "70"}, {"age": "x"}]
    assert column_values(rows, "view") == ["PA", None, None]
    assert column_values(rows, "age_band") == ["40-59", "60+", None]
    with pytest.raises(ConfigError, match=r"cannot group by 'veiw'.*age, age_band, view"):
        column_values(rows, "veiw")


def test_from_table_equals_from_arrays() -> None:
    y, p, view = known_groups()
    rows = [{"label": int(a), "probability": float(b), "view": v, "patient_id": f"p{i}"}
            for i, (a, b, v) in enumerate(zip(y, p, view, strict=True))]
    rows.append({"label": None, "probability": 0.5, "view": "A"})  # unlabelled: left out
    table = group_metrics_from_table(rows, ["view"], 0.5, n_bootstrap=100)
    named = [{**r, "label": ("PNEUMONIA" if r["label"] else "normal")} for r in rows[:-1]]
    assert group_metrics_from_table(named, ["view"], 0.5, n_bootstrap=100) == table
    arrays = group_metrics(y, p, 0.5, {"view": view}, patients=[f"p{i}" for i in range(y.size)], n_bootstrap=100)
    assert table == arrays
    with pytest.raises(DataError, match="no 'probability' column"):
        group_metrics_from_table([{"label": 1, "view": "A"}], ["view"], 0.5)


def test_report_has_group_tables_and_warning(tmp_path: Path) -> None:
    y, p, view = confounded_data(shortcut=0.5, n=300)
    doc = write_evaluation_report(
        tmp_path, y_true=y, probs=p, threshold=0.5, threshold_rule="youden", operating_points=None,
        model_info={"name": "m"}, data_info={}, groups=[f"p{i}" for i in range(y.size)], n_bootstrap=200,
        group_by={"view": view, "sex": ["F", "M"] * 150})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["groups"]["by"]["view"]["confounding"]["confounded"] is True
    assert saved["groups"]["pooled"]["roc_auc"] == pytest.approx(doc["roc_auc"])
    ci = saved["confidence_intervals"]["metrics"]["roc_auc"]
    assert saved["groups"]["pooled"]["confidence_intervals"]["roc_auc"]["low"] == pytest.approx(ci["low"])
    assert set(saved["groups"]["by"]) == {"view", "sex"}
    summary = (tmp_path / "summary.md").read_text()
    assert "## By group" in summary and "| view = AP |" in summary and "**Warning:**" in summary
    page = (tmp_path / "report.html").read_text()
    assert 'id="groups"' in page and 'id="groups-view"' in page and "confounded by view" in page
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header.endswith(",view,sex")


def test_report_without_group_by_has_no_group_section(tmp_path: Path) -> None:
    y, p, _ = known_groups()
    doc = write_evaluation_report(tmp_path, y_true=y, probs=p, threshold=0.5, threshold_rule="fixed",
                                  operating_points=None, model_info={}, data_info={}, n_bootstrap=0)
    assert doc["groups"] is None
    assert "By group" not in (tmp_path / "report.html").read_text()
    assert "By group" not in (tmp_path / "summary.md").read_text()
