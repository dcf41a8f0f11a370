"""A ``kill -9`` during a checkpoint save leaves ``.last.pt.<pid>.tmp``; ``--resume`` removes it and continues.

The training runs in a real subprocess. Its ``torch.save`` (a third-party function, not ours) is wrapped so that
the second save of ``last.pt`` writes the whole temp file and then waits: the test sees the temp file, SIGKILLs the
process at that moment (between ``torch.save`` and ``os.replace``: the worst point, a full-size leftover) and
resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pneumoscan.models.checkpoint import TEMP_FILE, load_checkpoint, remove_stale_temp_files
from tests.fixtures import make_dataset_folder

CHILD = r"""
import os, sys, time
from pathlib import Path
import torch
real_save = torch.save
marker = Path(os.environ["PAUSE_MARKER"])
count = {"last": 0}

def paused_save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if Path(f).name.startswith(".last.pt."):
        count["last"] += 1
        if count["last"] == 2:  # the second epoch's last.pt: a resumable last.pt exists already
            marker.write_text(str(f))
            time.sleep(120)

torch.save = paused_save
from pneumoscan.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", "cnn", "--image-size", "16", "--epochs", "2",
            "--batch-size", "8", "--output", str(out), "--cache-dir", str(out.parent / "cache"), "--workers", "0",
            "--patience", "5", *extra]


def test_kill_during_save_then_resume_removes_the_leftover(tmp_path: Path) -> None:
    data = make_dataset_folder(tmp_path / "data", {"train": 12, "val": 4, "test": 2}, size=24, seed=3)
    run = tmp_path / "run"
    marker = tmp_path / "paused"
    env = {**os.environ, "PAUSE_MARKER": str(marker), "HF_HUB_OFFLINE": "1", "PNEUMOSCAN_TCMALLOC": "0"}
    log = tmp_path / "train.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, *_train(data, run)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, f"training ended before the paused save:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no paused save within 120 s:\n{log.read_text()}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftover = Path(marker.read_text())
    assert leftover.name == f".last.pt.{proc.pid}.tmp" and leftover.is_file() and leftover.stat().st_size > 0
    assert TEMP_FILE.match(leftover.name)
    assert load_checkpoint(run / "last.pt")["epoch"] == 0  # epoch 1's last.pt survived intact
    assert not (run / "summary.json").exists()

    done = subprocess.run([sys.executable, "-m", "pneumoscan.cli.main", "train", "--output", str(run), "--resume",
                           "--cache-dir", str(tmp_path / "cache"), "--workers", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert not leftover.exists(), "the stale temp file must be removed on --resume"
    assert not [p for p in run.iterdir() if TEMP_FILE.match(p.name)]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and (run / "summary.json").is_file()


def test_remove_stale_temp_files_touches_only_temp_files(tmp_path: Path) -> None:
    keep = ["last.pt", "best.pt", "metrics.csv", "last.pt.tmp.bak", ".hidden", "notes.tmp.txt", "x.tmp"]
    stale = [".last.pt.4242.tmp", ".best.pt.17.tmp", ".metrics.csv.tmp", ".data.json.tmp"]
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".dir.1.tmp").mkdir()
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, ".dir.1.tmp"])
