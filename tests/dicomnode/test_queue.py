"""The durable work queue: keyed by SOP Instance UID, states, retries, crash recovery of orphaned files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoscan.dicomnode.queue import WorkQueue, atomic_write_bytes
from pneumoscan.errors import ConfigError


def test_add_is_keyed_by_sop_instance_uid(tmp_path: Path) -> None:
    q = WorkQueue(tmp_path / "q.sqlite")
    assert q.add("1.2.3", "1.2.840.10008.5.1.4.1.1.1", tmp_path / "a.dcm")
    assert not q.add("1.2.3", "1.2.840.10008.5.1.4.1.1.1", tmp_path / "a.dcm")
    assert q.counts() == {"pending": 1, "scored": 0, "done": 0}
    q.claim("1.2.3")
    q.mark_scored("1.2.3", "ok", [tmp_path / "r.sr.dcm"], forward=True)
    assert q.counts()["scored"] == 1 and q.pending(10) == []
    item = q.to_forward(10)[0]
    assert item.result_paths == (tmp_path / "r.sr.dcm",) and item.attempts == 1
    delay = q.forward_failed("1.2.3", "association failed")
    assert delay > 0 and q.to_forward(10) == []  # backed off
    assert q.to_forward(10, now=10**12)[0].forward_attempts == 1
    q.mark_forwarded("1.2.3")
    assert q.counts() == {"pending": 0, "scored": 0, "done": 1}
    q.close()
    reopened = WorkQueue(tmp_path / "q.sqlite")  # survives a restart
    assert reopened.state_of("1.2.3") == "done"


def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "q.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable"):
        WorkQueue(bad)


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.dcm"
    atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]


def test_node_recovers_orphaned_received_files(tmp_path: Path, onnx_scorer: object) -> None:
    """A file renamed into incoming/ whose row was never committed (kill -9 in between) is enqueued at start-up."""
    from pneumoscan.dicomnode.node import DicomNode, NodeConfig
    from tests.dicomnode.support import make_dx

    ds = make_dx()
    (tmp_path / "incoming").mkdir(parents=True)
    ds.save_as(tmp_path / "incoming" / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    node = DicomNode(NodeConfig(output=tmp_path, host="127.0.0.1", port=0), onnx_scorer)  # type: ignore[arg-type]
    node.start()
    try:
        assert node.wait_idle(60)
        assert node.queue.state_of(str(ds.SOPInstanceUID)) == "done"
        assert (tmp_path / "results" / f"{ds.SOPInstanceUID}.sr.dcm").is_file()
    finally:
        node.stop()


def test_instance_that_keeps_crashing_gets_an_error_sr(tmp_path: Path, onnx_scorer: object) -> None:
    """Claimed MAX_ATTEMPTS times without finishing (the process died each time): no further try, an error SR."""
    import pydicom

    from pneumoscan.dicomnode.node import MAX_ATTEMPTS, process_items
    from pneumoscan.dicomnode.report import read_result
    from tests.dicomnode.support import make_dx

    ds = make_dx()
    uid = str(ds.SOPInstanceUID)
    path = tmp_path / f"{uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    q = WorkQueue(tmp_path / "q.sqlite")
    q.add(uid, str(ds.SOPClassUID), path)
    for _ in range(MAX_ATTEMPTS):
        q.claim(uid)
    process_items(q.pending(10), onnx_scorer, q, tmp_path / "results", forward=False)  # type: ignore[arg-type]
    assert q.state_of(uid) == "done"
    result = read_result(pydicom.dcmread(tmp_path / "results" / f"{uid}.sr.dcm"))
    assert result["status"] == "error" and "not retried" in result["reason"]
