"""``pneumoscan batch`` end to end on a local 2-CPU Ray cluster: rows, schema, bad files, resume, evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.cli.main import main
from tests.batch.conftest import BAD_FILES
from tests.serving.support import TinyModel

pytestmark = pytest.mark.usefixtures("local_ray")

EXPECTED_SCHEMA = [
    ("path", "string"), ("probability", "double"), ("label", "string"), ("threshold", "double"),
    ("population", "string"), ("status", "string"), ("reason", "string"), ("model", "string"),
    ("model_version", "string"), ("backend", "string"), ("error", "string"), ("true_label", "int64"),
    ("group", "string"),
]


def _read(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out).to_pylist()


def test_folder_to_parquet_matches_predict_and_evaluates(tiny: TinyModel, archive: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "scores.parquet"
    args = ["batch", "--input", str(archive), "--output", str(out), "--checkpoint", str(tiny.onnx),
            "--shard-size", "10", "--batch-size", "8", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    files = sorted(p for p in archive.rglob("*") if p.is_file())
    assert summary["total"] == summary["scored"] == len(files) == 27 and summary["errors"] == len(BAD_FILES)

    shards = sorted(out.glob("part-*.parquet"))
    assert len(shards) == 3 and not list(out.glob(".*.tmp"))  # ceil(27 / 10), nothing half-written left
    schema = pq.read_schema(shards[0])
    assert [(f.name, str(f.type)) for f in schema][:len(EXPECTED_SCHEMA)] == EXPECTED_SCHEMA
    assert json.loads(schema.metadata[b"pneumoscan"])["threshold"] == pytest.approx(rows_threshold(out))

    rows = {r["path"]: r for r in _read(out)}
    assert sorted(rows) == [str(f) for f in files]  # every file exactly once
    bad = {str(archive / name) for name in BAD_FILES}
    for path, r in rows.items():
        if path in bad:
            assert r["status"] == "error" and r["probability"] is None and r["label"] is None
            assert r["error"].startswith(path + ": ")
        else:
            assert r["status"] == "ok" and r["error"] is None and r["backend"] == "onnx"
            assert r["true_label"] == (1 if "/PNEUMONIA/" in path else 0) and r["group"]

    # The same numbers `pneumoscan predict` gives for those files.
    from pneumoscan.inference.predictor import Predictor

    good = sorted(p for p in rows if p not in bad)
    expected = Predictor.load(tiny.onnx).predict_sources(good)
    np.testing.assert_allclose([rows[p]["probability"] for p in good], [e.probability for e in expected], rtol=1e-6)
    assert [rows[p]["label"] for p in good] == [e.label for e in expected]

    # Same command again: everything is done, nothing is rewritten.
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["already_done"] == 27 and again["scored"] == 0 and sorted(out.glob("part-*.parquet")) == shards

    # Evaluation straight from the archive: the labelled, readable rows, with patient-level intervals.
    assert main(["evaluate", "--predictions", str(out), "--output", str(tmp_path / "eval"), "--bootstrap", "50"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 24 and metrics["threshold"] == pytest.approx(rows_threshold(out))
    y = np.array([rows[p]["true_label"] for p in good])
    pred = np.array([rows[p]["label"] == "PNEUMONIA" for p in good])
    assert metrics["accuracy"] == pytest.approx(float((pred == y).mean()))


def rows_threshold(out: Path) -> float:
    (value,) = {r["threshold"] for r in _read(out)}
    return value


def test_manifest_passthrough_and_resume_scores_only_the_rest(tiny: TinyModel, archive: Path,
                                                              tmp_path: Path) -> None:
    images = sorted(p for p in archive.rglob("*.jpeg") if p.name != "corrupt.jpeg")
    manifest = tmp_path / "m.csv"

    def write_manifest(paths: list[Path]) -> None:
        with manifest.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "patient_id", "site", "status"])
            for i, p in enumerate(paths):
                w.writerow([p, "PNEUMONIA" if "/PNEUMONIA/" in str(p) else "NORMAL", f"p{i // 2}", f"site{i % 3}",
                            "archived"])

    out = tmp_path / "m.parquet"
    write_manifest(images[:10])
    assert main(["batch", "--input", str(manifest), "--output", str(out), "--checkpoint", str(tiny.onnx)]) == 0
    first = _read(out)
    assert len(first) == 10

    missing = tmp_path / "gone.jpeg"  # listed in the manifest, not on disk: an error row
    write_manifest([*images, missing])
    assert main(["batch", "--input", str(manifest), "--output", str(out), "--checkpoint", str(tiny.onnx)]) == 0
    rows = _read(out)
    assert len(rows) == len({r["path"] for r in rows}) == len(images) + 1
    assert [r for r in rows if r["path"] in {f["path"] for f in first}] == first  # the first run's rows, untouched
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(missing)]["status"] == "error" and "no such file" in by_path[str(missing)]["error"]
    assert {r["site"] for r in rows} == {"site0", "site1", "site2"} and by_path[str(images[3])]["group"] == "p1"
    assert {r["input_status"] for r in rows} == {"archived"}  # a manifest column never hides an output column
    assert by_path[str(images[0])]["patient_id"] == "p0"


def test_archive_of_another_model_is_refused(tiny: TinyModel, archive: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.parquet"
    out.mkdir()
    (out / "_run.json").write_text(json.dumps({"model_version": "someothermodel-0123456789"}))
    assert main(["batch", "--input", str(archive), "--output", str(out), "--checkpoint", str(tiny.onnx)]) == 2
    assert "someothermodel-0123456789" in capsys.readouterr().err and not list(out.glob("part-*"))
