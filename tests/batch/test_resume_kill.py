"""A real kill: ``pneumoscan batch`` SIGKILLed mid-run (driver and its Ray processes), then the same command again.

Slow (two Ray start-ups in subprocesses, ~1-2 min on 2 cores): ``pytest -m slow tests/batch``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import make_dataset_folder
from tests.serving.support import TinyModel

pytestmark = pytest.mark.slow


def _batch(archive: Path, out: Path, model: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pneumoscan.cli.main", "batch", "--input", str(archive), "--output", str(out),
           "--checkpoint", str(model), "--num-cpus", "2", "--batch-size", "2", "--shard-size", "4", "--no-progress"]
    # Own session: the kill reaches the driver and every Ray process it started, and nothing else.
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_killed_run_resumes_exactly_once(tiny: TinyModel, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed (pip install \"pneumoscan[batch]\")")
    pytest.importorskip("ray", reason="ray is not installed (pip install \"pneumoscan[batch]\")")
    archive = make_dataset_folder(tmp_path / "a", {"test": 60}, size=40, seed=5, fmt="png") / "test"
    (archive / "NORMAL" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    n = 121
    out = tmp_path / "o.parquet"

    proc = _batch(archive, out, tiny.onnx, tmp_path / "run1.log")
    deadline = time.monotonic() + 240
    while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
    done_before = sum(pq.read_metadata(out / name).num_rows for name in before)
    assert before, f"no shard was committed before the kill: {(tmp_path / 'run1.log').read_text()[-2000:]}"
    assert done_before < n, "the run finished before it could be killed; the test proves nothing"

    proc = _batch(archive, out, tiny.onnx, tmp_path / "run2.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "run2.log").read_text()[-2000:]
    rows = pq.read_table(out).to_pylist()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == n  # nothing lost, nothing twice
    assert all((out / name).read_bytes() == data for name, data in before.items())  # committed shards untouched
    assert not list(out.glob(".*.tmp"))
    broken = [r for r in rows if r["path"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["status"] == "error"
