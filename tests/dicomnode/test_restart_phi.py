"""Durability (kill -9 mid-burst, restart: nothing lost, nothing duplicated) and PHI discipline of the logs."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pydicom
import pytest

from pneumoscan.dicomnode.report import read_result
from tests.dicomnode.orthanc import free_port
from tests.dicomnode.support import PHI_STRINGS, echo, make_dx, node_process, send, wait_for


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM instances GROUP BY state").fetchall())


def _assert_no_phi(text: str, where: str) -> None:
    leaked = [s for s in PHI_STRINGS if s.lower() in text.lower()]
    assert not leaked, f"patient identifiers {leaked} in {where}"


def test_kill9_restart_loses_and_duplicates_nothing(tmp_path: Path, orthanc: Any) -> None:
    out, log, port = tmp_path / "node", tmp_path / "node.log", free_port()
    forward = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
    study = pydicom.uid.generate_uid()
    sent = [make_dx(seed=i, study_uid=study) for i in range(8)]
    with node_process(out, port, forward=forward, log=log, extra=["--batch-size", "2"]) as proc:
        assert send(port, sent) == [0] * len(sent)  # all durably queued before each Success
        wait_for(lambda: sum(v for k, v in _counts(out / "queue.sqlite").items() if k != "pending") >= 2, 60,
                 "a few instances to be scored")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    before = _counts(out / "queue.sqlite")
    assert before.get("pending", 0) > 0, f"the kill came too late to test anything: {before}"
    with node_process(out, port, forward=forward, log=log):
        wait_for(lambda: _counts(out / "queue.sqlite") == {"done": len(sent)}, 120, "all instances done")
        assert echo(port) == 0
    uids = {str(ds.SOPInstanceUID) for ds in sent}
    srs = sorted((out / "results").glob("*.sr.dcm"))
    assert {p.name.removesuffix(".sr.dcm") for p in srs} == uids  # one result file per instance, none missing
    in_pacs = [orthanc.dataset(i["ID"]) for i in orthanc.instances_by_modality("SR")]
    mine = [read_result(d)["source_sop_instance_uid"] for d in in_pacs if d.StudyInstanceUID == study]
    assert sorted(mine) == sorted(uids)  # exactly one SR per instance in the PACS
    _assert_no_phi(log.read_text(errors="replace"), "the node's -vv log")


def test_logs_hold_no_patient_identifiers(tmp_path: Path, onnx_scorer: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Every log record (all loggers, DEBUG) of a run over good and bad instances carrying identifying tags."""
    from pneumoscan.dicomnode.node import DicomNode, NodeConfig, Peer

    caplog.set_level(logging.DEBUG)
    for name in ("pneumoscan", "pynetdicom", "highdicom", "pydicom"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    # Forward to a port where nothing listens: the failure path logs too.
    node = DicomNode(NodeConfig(output=tmp_path / "node", host="127.0.0.1", port=0,
                                forward=Peer("NOBODY", "127.0.0.1", free_port())), onnx_scorer)
    node.start()
    try:
        good, no_pixels, truncated = make_dx(seed=1), make_dx(pixels=False), make_dx(truncate=True)
        broken = make_dx()
        del broken.StudyInstanceUID
        assert send(node.port, [good, no_pixels, truncated, broken]) == [0, 0, 0, 0xC210]
        wait_for(lambda: node.queue.counts()["pending"] == 0 and node.queue.counts()["scored"] == 3, 60,
                 "scoring")
    finally:
        node.stop()
        for name in ("pynetdicom", "highdicom", "pydicom"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert str(good.SOPInstanceUID) in text  # instances are logged, by UID
    assert "pynetdicom" in text  # the library's own debug records were captured too
    _assert_no_phi(text, "the log records")
    # The SR itself does carry the patient (it belongs to the study).
    sr = pydicom.dcmread(tmp_path / "node" / "results" / f"{good.SOPInstanceUID}.sr.dcm")
    assert sr.PatientID == good.PatientID


def test_describe_error_never_quotes_the_message() -> None:
    from pneumoscan.dicomnode.node import describe_error

    try:
        raise ValueError("Invalid value for VR PN: 'Doe^Janet^Q'")
    except ValueError as err:
        text = describe_error(err)
    assert text.startswith("ValueError at test_restart_phi.py:")
    _assert_no_phi(text, "describe_error")
