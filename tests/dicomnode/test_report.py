"""The SR and Secondary Capture: content, references, inherited identifiers, deterministic UIDs, validation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pneumoscan.dicomnode.report import build_heatmap_sc, build_sr, read_result, result_uid
from pneumoscan.dicomnode.scoring import Outcome
from tests.dicomnode.support import make_dx


def _outcome(ds: Any, status: str = "ok") -> Outcome:
    ok = status == "ok"
    return Outcome(str(ds.SOPInstanceUID), status, 0.8125 if ok else None, "PNEUMONIA" if ok else None, 0.71,
                   "adult-frontal", "youden on validation", None if ok else "no pixel data", "efficientnet_lite0",
                   "efficientnet_lite0-abc123")


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("status", ["ok", "out_of_scope", "error"])
def test_sr_content_and_identifiers(tmp_path: Path, status: str) -> None:
    source = make_dx()
    source.PatientAge = "62"  # invalid AS value, as real exports have: must not make the SR invalid
    sr = build_sr(_outcome(source, status), source)
    result = read_result(sr)
    assert result["status"] == status
    assert result["source_sop_instance_uid"] == source.SOPInstanceUID
    assert result["source_sop_class_uid"] == source.SOPClassUID
    assert result["algorithm_name"] == "efficientnet_lite0"
    assert result["algorithm_version"] == "efficientnet_lite0-abc123"
    assert result["threshold"] == pytest.approx(0.71) and result["population"] == "adult-frontal"
    if status == "ok":
        assert result["probability"] == pytest.approx(0.8125) and result["label"] == "PNEUMONIA"
        assert result["reason"] is None
    else:
        assert result["probability"] is None and result["label"] is None and result["reason"] == "no pixel data"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID"):
        assert str(sr[keyword].value) == str(source[keyword].value)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.SOPInstanceUID == result_uid(str(source.SOPInstanceUID), "efficientnet_lite0-abc123", "sr")
    assert build_sr(_outcome(source, status), source).SOPInstanceUID == sr.SOPInstanceUID  # deterministic
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(path) == []
    else:  # highdicom validated the content tree on construction; check the file reads back the same
        import pydicom

        assert read_result(pydicom.dcmread(path)) == result


def test_heatmap_secondary_capture_validates(tmp_path: Path) -> None:
    source = make_dx()
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0] = 200
    sc = build_heatmap_sc(_outcome(source), source, rgb)
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.PatientID == source.PatientID
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID
    assert np.array_equal(sc.pixel_array, rgb)
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    if not shutil.which("dciodvfy"):
        pytest.skip("dciodvfy (Debian dicom3tools) not installed")
    assert _dciodvfy_errors(path) == []
