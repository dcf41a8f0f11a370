"""The DICOMweb poller over a real Orthanc: QIDO-RS finds, WADO-RS fetches, STOW-RS stores; polling is idempotent."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest

from pneumoscan.cli.main import main
from pneumoscan.dicomnode import conformance as conf
from pneumoscan.dicomnode.report import read_result
from tests.dicomnode.support import expected_status, make_dx


def _upload(orthanc: Any, ds: Any) -> None:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    orthanc.upload(buf.getvalue())


def _srs_of_study(orthanc: Any, study: str) -> list[dict[str, Any]]:
    out = []
    for inst in orthanc.instances_by_modality("SR"):
        ds = orthanc.dataset(inst["ID"])
        if ds.StudyInstanceUID == study:
            out.append(read_result(ds))
    return out


def test_poll_scores_once_and_remembers(tmp_path: Path, orthanc: Any, onnx_scorer: Any,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    study = pydicom.uid.generate_uid()
    good = [make_dx(seed=i, study_uid=study) for i in range(2)]
    bad = make_dx(study_uid=study, truncate=True)
    ct = make_dx(sop_class="1.2.840.10008.5.1.4.1.1.2", modality="CT", study_uid=study)  # not a chest radiograph
    for ds in (*good, bad, ct):
        _upload(orthanc, ds)
    state = tmp_path / "state.sqlite"
    args = ["dicomweb", "--url", orthanc.dicomweb_url, "--study", study, "--state", str(state), "--backend", "onnx"]
    assert main(args) == 0
    assert "3 instances found, 3 scored now, 0 already scored" in capsys.readouterr().out
    results = {r["source_sop_instance_uid"]: r for r in _srs_of_study(orthanc, study)}
    assert set(results) == {str(d.SOPInstanceUID) for d in (*good, bad)}
    for ds in good:
        assert results[str(ds.SOPInstanceUID)]["status"] == expected_status(onnx_scorer.predictor, ds)
    assert results[str(bad.SOPInstanceUID)]["status"] == "error"
    # Second poll (the --poll loop, stopped after 2 rounds): nothing new, nothing stored twice.
    assert main([*args, "--poll", "0.2", "--max-polls", "2"]) == 0
    assert "0 scored now, 6 already scored" in capsys.readouterr().out
    assert len(_srs_of_study(orthanc, study)) == 3


def test_since_finds_only_recent_studies(tmp_path: Path, orthanc: Any, onnx_scorer: Any) -> None:
    from datetime import date

    from pneumoscan.dicomnode.web import ScoredMemory, connect, find_instances, poll

    old, new = make_dx(seed=1), make_dx(seed=2)
    old.StudyDate, new.StudyDate = "19990101", "20300101"
    for ds in (old, new):
        _upload(orthanc, ds)
    client = connect(orthanc.dicomweb_url)
    found = {r.sop_instance_uid for r in find_instances(client, since=date(2029, 12, 31))}
    assert str(new.SOPInstanceUID) in found and str(old.SOPInstanceUID) not in found
    memory = ScoredMemory(tmp_path / "s.sqlite")
    stats = poll(client, onnx_scorer, memory, interval=None, since=date(2029, 12, 31))
    assert stats.scored == len(found) and memory.seen(str(new.SOPInstanceUID))
    assert not memory.seen(str(old.SOPInstanceUID))
    assert conf.DX_FOR_PRESENTATION in {r.sop_class_uid for r in find_instances(client, since=date(2029, 12, 31))}


def test_unreachable_server_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.dicomnode.orthanc import free_port

    rc = main(["dicomweb", "--url", f"http://127.0.0.1:{free_port()}/dicom-web", "--state",
               str(tmp_path / "s.sqlite"), "--backend", "onnx"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: DICOMweb query failed")
