"""Report writer: all files, JSON content, self-contained HTML, subgroups, gallery fallbacks."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.errors import DataError
from pneumoscan.evaluation import plots
from pneumoscan.evaluation.calibration import expected_calibration_error
from pneumoscan.evaluation.report import write_evaluation_report

FILES = ("metrics.json", "predictions.csv", "roc.png", "pr.png", "confusion_matrix.png", "calibration.png",
         "histogram.png", "summary.md", "report.html")
PNG = b"\x89PNG\r\n\x1a\n"


def synthetic(n: int = 240, seed: int = 0) -> dict[str, object]:
    """Labels drawn from sigmoid(logit / 2) (so temperature 2 calibrates), 2 images per patient, Kermany subtypes."""
    rng = np.random.default_rng(seed)
    temperature = 2.0
    logits = rng.normal(1.0, 5.0, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logits / temperature))).astype(int)
    subtype = np.where(y == 0, "normal", np.where(rng.random(n) < 0.6, "bacteria", "virus"))
    return {
        "y_true": y,
        "probs": 1 / (1 + np.exp(-logits / temperature)),
        "logits": logits,
        "temperature": temperature,
        "groups": [f"person{i // 2}" for i in range(n)],
        "paths": [f"/data/test/{'PNEUMONIA' if v else 'NORMAL'}/img{i:04d}.jpeg" for i, v in enumerate(y)],
        "subgroups": {"subtype": list(subtype), "source": ["kermany"] * (n - 1) + [None]},
    }


def make_report(out: Path, **overrides: object) -> dict[str, object]:
    """Write a report of synthetic data into ``out`` (a small bootstrap keeps it fast)."""
    kwargs: dict[str, object] = {
        **synthetic(),
        "threshold": 0.55,
        "threshold_rule": "youden",
        "operating_points": {"youden": 0.55, "max_f1": 0.4, "sensitivity_95": 0.2},
        "model_info": {"name": "resnet18 <b>&</b>", "version": "0.1.0", "checkpoint": "runs/x/best.pt"},
        "data_info": {"source": "kermany", "split": "test", "citation": "Kermany et al., Cell 2018"},
        "heatmap_fn": lambda path: plots.thumbnail_png(np.random.default_rng(len(path)).random((48, 48))),
        "n_bootstrap": 200,
    }
    kwargs.update(overrides)
    return write_evaluation_report(out, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def default_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """One report shared by the read-only tests (rendering the figures takes a few seconds)."""
    folder = tmp_path_factory.mktemp("report")
    return folder, make_report(folder)


def test_writes_all_files_and_valid_json(default_report: tuple[Path, dict[str, object]]) -> None:
    folder, doc = default_report
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)  # no temporary files left behind
    for name in FILES:
        if name.endswith(".png"):
            assert (folder / name).read_bytes().startswith(PNG)
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(doc))
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "confusion_matrix",
                "threshold", "confidence_intervals", "operating_points", "calibration", "subgroups", "n", "model",
                "data"):
        assert key in saved, key
    assert saved["threshold"] == 0.55 and saved["n"] == 240 and saved["n_patients"] == 120
    ci = saved["confidence_intervals"]
    assert ci["unit"] == "patient" and ci["metrics"]["roc_auc"]["low"] <= saved["roc_auc"]
    assert set(saved["operating_points"]) == {"youden", "max_f1", "sensitivity_95"}
    assert saved["operating_points"]["sensitivity_95"]["sensitivity"] >= saved["operating_points"]["youden"][
        "sensitivity"]
    cal = saved["calibration"]
    assert cal["temperature"] == 2.0 and cal["before_temperature_scaling"]["ece"] is not None


def test_subgroups_handle_missing_classes(default_report: tuple[Path, dict[str, object]]) -> None:
    sub = default_report[1]["subgroups"]
    virus = sub["subtype"]["virus"]
    assert virus["n_negative"] == 0 and virus["sensitivity"] is not None
    assert virus["specificity"] is None and virus["ppv"] is None and virus["roc_auc"] is None
    assert "only sensitivity" in virus["note"] and set(virus["confidence_intervals"]) == {"sensitivity"}
    normal = sub["subtype"]["normal"]
    assert normal["sensitivity"] is None and normal["specificity"] is not None
    assert sub["source"]["kermany"]["roc_auc"] is not None and sub["source"]["unknown"]["n"] == 1


def test_predictions_csv(default_report: tuple[Path, dict[str, object]]) -> None:
    with (default_report[0] / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 240
    assert list(rows[0])[:5] == ["path", "label", "probability", "predicted", "patient_id"]
    assert {"logit", "subtype", "source"} <= set(rows[0])
    assert rows[0]["patient_id"] == "person0" and rows[-1]["source"] == "unknown"
    assert all(r["predicted"] == str(int(float(r["probability"]) >= 0.55)) for r in rows)


def test_html_is_self_contained_and_escaped(default_report: tuple[Path, dict[str, object]]) -> None:
    folder = default_report[0]
    page = (folder / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    assert page.count('src="data:image/png;base64,') >= 5 + 2  # five figures and gallery images
    assert "resnet18 &lt;b&gt;&amp;&lt;/b&gt;" in page and "<b>&</b>" not in page
    assert 'id="metrics"' in page and 'id="operating-points"' in page and 'id="subgroups"' in page
    assert "False positives" in page and "False negatives" in page
    summary = (folder / "summary.md").read_text()
    assert "ROC-AUC" in summary and "youden" in summary and "95% CI" in summary


def test_image_level_note_when_patients_unknown(tmp_path: Path) -> None:
    doc = make_report(tmp_path, groups=None, logits=None, temperature=None, n_bootstrap=100)
    assert doc["confidence_intervals"]["unit"] == "image"
    assert doc["confidence_intervals"]["note"] == "image-level: patients unknown"
    assert doc["patients_known"] is False and doc["calibration"]["before_temperature_scaling"] is None
    assert "image-level: patients unknown" in (tmp_path / "report.html").read_text()
    assert "image-level: patients unknown" in (tmp_path / "summary.md").read_text()


def test_gallery_falls_back_when_heatmap_or_file_fails(tmp_path: Path) -> None:
    def broken(path: str) -> bytes:
        raise RuntimeError("no gradients")

    make_report(tmp_path, heatmap_fn=broken, operating_points=None, n_bootstrap=0, logits=None)
    page = (tmp_path / "report.html").read_text()
    assert "no image" in page  # files do not exist: neither overlay nor thumbnail, the report is still written
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["confidence_intervals"] is None and doc["operating_points"] == {}
    # without logits, the probabilities before temperature scaling are recovered from probs and T
    data = synthetic()
    before = expected_calibration_error(data["y_true"], 1 / (1 + np.exp(-data["logits"])), 15)
    assert doc["calibration"]["before_temperature_scaling"]["ece"] == pytest.approx(before, abs=1e-9)


def test_gallery_thumbnails_from_files(tmp_path: Path) -> None:
    pytest.importorskip("pneumoscan.data.io")
    from PIL import Image

    data = synthetic(n=40)
    paths = []
    for i in range(40):
        path = tmp_path / "img" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((np.random.default_rng(i).random((64, 80)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    make_report(tmp_path / "rep", **{**data, "paths": paths}, heatmap_fn=None, n_bootstrap=0)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') > 5 and "no image" not in page


def test_inconsistent_lengths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="paths has 3 entries"):
        make_report(tmp_path, paths=["a", "b", "c"])


def test_no_torch_import() -> None:
    code = ("import sys; import pneumoscan.evaluation, pneumoscan.evaluation.report, pneumoscan.evaluation.plots, "
            "pneumoscan.cli.compare; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plots_return_png_even_for_one_class() -> None:
    y, p = np.ones(20, dtype=int), np.linspace(0.05, 0.95, 20)
    for png in (plots.roc_curve_png(y, p, threshold=0.5), plots.pr_curve_png(y, p, operating_points={"a": 0.3}),
                plots.histogram_png(y, p), plots.reliability_png(y, p), plots.confusion_matrix_png([[0, 0], [5, 15]])):
        assert png.startswith(PNG)
