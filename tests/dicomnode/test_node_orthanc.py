"""End to end against a real Orthanc: modality → pneumoscan node → SR forwarded into the PACS → read back."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from pneumoscan.dicomnode import conformance as conf
from pneumoscan.dicomnode.report import read_result
from tests.conftest import SHARED_DATA
from tests.dicomnode.support import echo, expected_status, make_dx, send, wait_for

SIIM = SHARED_DATA / "dicom" / "siim_cr_pa_jpeg_baseline.dcm"


def _srs_in_orthanc(orthanc: Any, source_uid: str) -> list[Any]:
    out = []
    for inst in orthanc.instances_by_modality("SR"):
        ds = orthanc.dataset(inst["ID"])
        if read_result(ds)["source_sop_instance_uid"] == source_uid:
            out.append(ds)
    return out


def _wait_sr(orthanc: Any, source_uid: str, timeout: float = 60) -> Any:
    found: list[Any] = []

    def ready() -> bool:
        found[:] = _srs_in_orthanc(orthanc, source_uid)
        return bool(found)

    wait_for(ready, timeout, f"the SR of {source_uid} in Orthanc")
    assert len(found) == 1, f"{len(found)} SRs for one instance"
    return found[0]


@pytest.mark.realdata
def test_real_chest_xray_sr_reaches_orthanc(running_node: Any, orthanc: Any, onnx_scorer: Any) -> None:
    if not SIIM.is_file():
        pytest.skip(f"real DICOM not found at {SIIM}")
    source = pydicom.dcmread(SIIM)
    assert echo(running_node.port) == 0
    assert send(running_node.port, [source]) == [0]
    sr = _wait_sr(orthanc, str(source.SOPInstanceUID))

    result = read_result(sr)
    expected = onnx_scorer.predictor.predict_sources([SIIM])[0]
    assert result["status"] == getattr(expected, "status", "ok")  # the competence gate's verdict, passed through
    if result["status"] == "ok":
        assert result["probability"] == pytest.approx(expected.probability, abs=1e-6)
        assert result["label"] == expected.label
    else:
        assert result["probability"] is None and result["reason"] == expected.reason
    assert result["threshold"] == pytest.approx(onnx_scorer.predictor.info.threshold, abs=1e-6)
    assert result["algorithm_version"] == onnx_scorer.predictor.info.version
    assert result["source_sop_class_uid"] == str(source.SOPClassUID)
    # Same patient and study as the radiograph, referenced as evidence too.
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate"):
        assert str(sr.get(keyword)) == str(source.get(keyword)), keyword
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    refs = [r.ReferencedSOPInstanceUID for s in evidence.ReferencedSeriesSequence for r in s.ReferencedSOPSequence]
    assert refs == [source.SOPInstanceUID]
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID  # its own series in the study
    # And through DICOMweb (QIDO-RS): the SR is listed in the radiograph's study.
    series = orthanc.get_bytes(f"/dicom-web/studies/{source.StudyInstanceUID}/series?Modality=SR")
    assert str(sr.SeriesInstanceUID).encode() in series


def test_synthetic_dx_keeps_identifiers_and_is_idempotent(running_node: Any, orthanc: Any, onnx_scorer: Any) -> None:
    ds = make_dx(seed=3)
    assert send(running_node.port, [ds]) == [0]
    sr = _wait_sr(orthanc, str(ds.SOPInstanceUID))
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID"):
        assert str(sr.get(keyword)) == str(ds.get(keyword)), keyword
    result = read_result(sr)
    assert result["status"] == expected_status(onnx_scorer.predictor, ds)
    if result["status"] == "ok":
        assert 0.0 <= result["probability"] <= 1.0
    # Sent again: accepted (Success), not scored again, still exactly one result.
    assert send(running_node.port, [ds]) == [0]
    assert running_node.wait_idle(30)
    assert len(_srs_in_orthanc(orthanc, str(ds.SOPInstanceUID))) == 1
    assert len(list((running_node.results).glob(f"{ds.SOPInstanceUID}.*"))) == 1


def test_bad_instances_get_an_sr_or_a_refusal_and_the_node_stays_up(running_node: Any, orthanc: Any) -> None:
    no_pixels = make_dx(pixels=False)
    truncated = make_dx(truncate=True)
    mammo = make_dx(sop_class=conf.DX_FOR_PRESENTATION, modality="MG", body_part="BREAST")
    lateral = make_dx(sop_class=conf.CR_IMAGE_STORAGE, modality="CR", view="LL")
    capture_ot = make_dx(sop_class=conf.SECONDARY_CAPTURE, modality="OT")
    ct = make_dx(sop_class="1.2.840.10008.5.1.4.1.1.2", modality="CT")  # CT Image Storage: not accepted
    statuses = send(running_node.port, [no_pixels, truncated, mammo, lateral, capture_ot, ct])
    assert statuses[:5] == [0, 0, 0, 0, 0]
    assert statuses[5] == -1  # refused at association negotiation: never transferred
    assert echo(running_node.port) == 0

    expected = [(no_pixels, "error", "no pixel data"), (truncated, "error", "truncated or corrupt"),
                (mammo, "out_of_scope", "modality MG"), (lateral, "out_of_scope", "view position LL"),
                (capture_ot, "out_of_scope", "Secondary Capture with modality OT")]
    for ds, status, reason in expected:
        result = read_result(_wait_sr(orthanc, str(ds.SOPInstanceUID)))
        assert result["status"] == status, result
        assert reason in (result["reason"] or ""), result
        assert result["probability"] is None and result["label"] is None
    assert not list(running_node.results.glob(f"{ct.SOPInstanceUID}*"))
    assert running_node.queue.item(str(ct.SOPInstanceUID)) is None
    assert echo(running_node.port) == 0


def test_unparseable_and_misaddressed_are_refused(running_node: Any) -> None:
    ds = make_dx()
    del ds.StudyInstanceUID
    assert send(running_node.port, [ds]) == [0xC210]
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(conf.VERIFICATION)
    assoc = ae.associate("127.0.0.1", running_node.port, ae_title="SOMEONEELSE")
    assert assoc.is_rejected
    assert echo(running_node.port) == 0


@pytest.mark.slow  # loads the PyTorch model and pytorch-grad-cam: 30 s on the shared 2-core machine
def test_heatmap_secondary_capture(tmp_path: Path, orthanc: Any) -> None:
    """--heatmap: a Grad-CAM Secondary Capture next to the SR, in the same study (PyTorch backend)."""
    from pneumoscan.dicomnode.node import DicomNode, NodeConfig, Peer
    from pneumoscan.dicomnode.scoring import Scorer
    from pneumoscan.inference.predictor import Predictor

    node = DicomNode(NodeConfig(output=tmp_path / "node", host="127.0.0.1", port=0,
                                forward=Peer(orthanc.aet, "127.0.0.1", orthanc.dicom_port)),
                     Scorer(Predictor.load(None, backend="torch"), heatmap=True))
    node.start()
    try:
        ds = make_dx(seed=5, size=96)
        assert send(node.port, [ds]) == [0]
        assert node.wait_idle(120)
    finally:
        node.stop()
    sr = _wait_sr(orthanc, str(ds.SOPInstanceUID))
    captures = [orthanc.dataset(i["ID"]) for i in orthanc.instances_by_modality("OT")]
    mine = [c for c in captures if c.StudyInstanceUID == ds.StudyInstanceUID]
    if read_result(sr)["status"] != "ok":  # the competence gate refused this synthetic image: no heatmap then
        assert mine == []
        return
    assert len(mine) == 1
    sc = mine[0]
    assert sc.SOPClassUID == conf.SECONDARY_CAPTURE and sc.PhotometricInterpretation == "RGB"
    assert sc.PatientID == ds.PatientID
    pixels = sc.pixel_array
    assert pixels.shape == (96, 96, 3)
    assert np.ptp(pixels[..., 0].astype(int) - pixels[..., 2].astype(int)) > 0  # colour overlay, not grey


ROUTING_LUA = """
-- docs/DICOM.md: route every CR/DX image the PACS stores to pneumoscan
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Modality'] == 'CR' or tags['Modality'] == 'DX' then
    SendToModality(instanceId, 'pneumoscan')
  end
end
"""


def test_pacs_auto_routing_round_trip(tmp_path: Path, onnx_scorer: Any) -> None:
    """The deployment picture: modality → PACS (Lua auto-routing from docs/DICOM.md) → pneumoscan → PACS."""
    from pneumoscan.dicomnode.node import DicomNode, NodeConfig, Peer
    from tests.dicomnode.orthanc import Orthanc, free_port, orthanc_missing

    reason = orthanc_missing()
    if reason:
        pytest.skip(reason)
    node_port = free_port()
    lua = tmp_path / "route.lua"
    lua.write_text(ROUTING_LUA)
    pacs = Orthanc(tmp_path / "pacs", extra={"LuaScripts": [str(lua)],
                                             "DicomModalities": {"pneumoscan": ["PNEUMOSCAN", "127.0.0.1", node_port]}})
    with pacs:
        node = DicomNode(NodeConfig(output=tmp_path / "node", host="127.0.0.1", port=node_port,
                                    forward=Peer(pacs.aet, "127.0.0.1", pacs.dicom_port)), onnx_scorer)
        node.start()
        try:
            ds = make_dx(seed=7, modality="CR", sop_class=conf.CR_IMAGE_STORAGE)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            pacs.upload(buf.getvalue())  # the modality stores into the PACS
            sr = _wait_sr(pacs, str(ds.SOPInstanceUID))
        finally:
            node.stop()
    assert read_result(sr)["status"] == expected_status(onnx_scorer.predictor, ds)
    assert sr.StudyInstanceUID == ds.StudyInstanceUID
