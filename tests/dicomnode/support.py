"""Helpers for the DICOM node tests: synthetic DX/CR instances with identifying tags, an SCU, a node runner."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.dicomnode import conformance as conf
from tests.fixtures import make_xray_like

#: Identifying values planted in test instances; none may ever appear in a log line.
PHI = {"PatientName": "Doe^Janet^Q", "PatientID": "MRN-4711-0815", "PatientBirthDate": "19471103",
       "AccessionNumber": "ACC-99887766"}
PHI_STRINGS = ("Doe^Janet", "Janet", "MRN-4711-0815", "19471103", "ACC-99887766")
REPO = Path(__file__).resolve().parents[2]


def make_dx(*, sop_class: str = conf.DX_FOR_PRESENTATION, modality: str = "DX", size: int = 64, seed: int = 0,
            study_uid: str | None = None, pixels: bool = True, truncate: bool = False, body_part: str = "CHEST",
            view: str = "PA", phi: bool = True) -> Any:
    """A small synthetic projection radiograph (pydicom Dataset with file meta), explicit VR little endian."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    for key, value in (PHI if phi else {"PatientName": "Anon^Test", "PatientID": "ANON"}).items():
        setattr(ds, key, value)
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ReferringPhysicianName = ""
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view
    ds.PatientOrientation = ["L", "F"]
    if sop_class != conf.SECONDARY_CAPTURE:
        ds.PresentationIntentType = "FOR PROCESSING" if sop_class == conf.DX_FOR_PROCESSING else "FOR PRESENTATION"
    image = make_xray_like(np.random.default_rng(seed), size, positive=bool(seed % 2))
    ds.set_pixel_data(image, "MONOCHROME2", 8)  # also sets a fresh SOPInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if truncate:
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    if not pixels:
        del ds.PixelData
    return ds


def send(port: int, datasets: Sequence[Any], *, called: str = "PNEUMOSCAN", calling: str = "TESTSCU",
         extra_contexts: Sequence[str] = ()) -> list[int]:
    """C-STORE ``datasets`` over one association; returns each status (-1: not sent, e.g. context refused)."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 30
    wanted = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, ts in sorted(wanted):
        ae.add_requested_context(sop_class, ts)
    for sop_class in extra_contexts:
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "association with the node failed"
    out = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
                out.append(int(status.Status) if status else -1)
            except ValueError:  # pynetdicom: no accepted presentation context for this SOP class
                out.append(-1)
    finally:
        assoc.release()
    return out


def echo(port: int, called: str = "PNEUMOSCAN") -> int:
    """C-ECHO status from the node (-1 when no association)."""
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(conf.VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return -1
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else -1
    finally:
        assoc.release()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def node_process(output: Path, port: int, *, forward: str | None = None, log: Path | None = None,
                 extra: Sequence[str] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """``pneumoscan -vv dicom-node`` as a subprocess (ONNX backend), killed on exit if still running."""
    cmd = [sys.executable, "-m", "pneumoscan.cli.main", "-vv", "dicom-node", "--host", "127.0.0.1", "--port",
           str(port), "--output", str(output), "--backend", "onnx", *extra]
    if forward:
        cmd += ["--forward", forward]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    with open(log or os.devnull, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            wait_for(lambda: proc.poll() is not None or echo(port) == 0, 120, "the node to answer C-ECHO")
            assert proc.poll() is None, f"node exited with {proc.returncode}"
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def expected_status(predictor: Any, ds: Any) -> str:
    """What the node should report for ``ds`` when its header is in scope: the Predictor's own verdict on the same
    bytes ("ok", or "out_of_scope" from the competence gate, or "error" when unreadable)."""
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    pred = predictor.predict_sources([buf.getvalue()], names=[str(ds.SOPInstanceUID)])[0]
    return "error" if pred.error else str(getattr(pred, "status", "ok") or "ok")
