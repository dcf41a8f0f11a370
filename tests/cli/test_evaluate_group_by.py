"""``pneumoscan evaluate --group-by``: a flat folder with a manifest (view, age, ward columns), by folder and by CSV."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pneumoscan.cli.main import main


@pytest.fixture(scope="module")
def flat_with_manifest(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 16 test images as a flat ``{NORMAL,PNEUMONIA}/`` folder with a manifest.csv carrying view, age and ward;
    ward "icu" holds PNEUMONIA images only."""
    data, _ = trained
    root = tmp_path_factory.mktemp("flat")
    rows = ["path,label,patient_id,view,age,ward"]
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir()
        for i, src in enumerate(sorted((data / "test" / cls).iterdir())):
            shutil.copy(src, root / cls / src.name)
            view = "AP" if i % 2 else "PA"
            ward = "icu" if cls == "PNEUMONIA" and i < 3 else "general"
            rows.append(f"{cls}/{src.name},{cls},pt-{cls}-{i // 2},{view},{20 + 9 * i},{ward}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _evaluate(ckpt: Path, spec: str | Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(spec), "--output", str(out), "--no-heatmaps",
                 "--bootstrap", "100", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_group_by_view_from_folder_and_from_manifest(trained: tuple[Path, Path], flat_with_manifest: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, ckpt = trained
    doc = _evaluate(ckpt, flat_with_manifest, tmp_path / "folder", "--group-by", "view", "--group-by", "age_band",
                    "--group-by", "ward")
    out = capsys.readouterr().out
    assert "by view:" in out and "view = AP" in out and "view = PA" in out and "confounding check" in out
    groups = doc["groups"]
    assert set(groups["by"]) == {"view", "age_band", "ward"}
    assert groups["unit"] == "patient" and groups["pooled"]["n_patients"] == 8
    views = groups["by"]["view"]["groups"]
    assert set(views) == {"AP", "PA"} and sum(g["n"] for g in views.values()) == 16
    assert groups["pooled"]["roc_auc"] == pytest.approx(doc["roc_auc"])
    assert set(groups["by"]["age_band"]["groups"]) == {"18-39", "40-59", "60+"}
    icu = groups["by"]["ward"]["groups"]["icu"]
    assert (icu["n"], icu["n_negative"], icu["roc_auc"]) == (3, 0, None) and "no ROC-AUC" in icu["note"]
    assert "By group" in (tmp_path / "folder" / "report.html").read_text()
    # the manifest path gives the same per-view figures
    again = _evaluate(ckpt, flat_with_manifest / "manifest.csv", tmp_path / "csv", "--group-by", "view")
    assert again["groups"]["by"]["view"] == groups["by"]["view"]


def test_unknown_group_column_fails_before_predicting(trained: tuple[Path, Path], flat_with_manifest: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, ckpt = trained
    out = tmp_path / "e"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(flat_with_manifest), "--output", str(out),
                 "--group-by", "veiw"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot group by 'veiw'" in err and "view" in err
    assert not (out / "metrics.json").exists()


def test_several_sources_are_always_grouped_by_source(trained: tuple[Path, Path], flat_with_manifest: Path,
                                                      tmp_path: Path) -> None:
    data, ckpt = trained
    doc = _evaluate(ckpt, data, tmp_path / "two", "--data", str(flat_with_manifest), "--split", "test")
    sources = doc["groups"]["by"]["source"]["groups"]
    assert len(sources) == 2 and sum(g["n"] for g in sources.values()) == 32
