"""tcmalloc for long-running commands: found when installed, used by a real ``pneumoscan train`` process, and
switched off by PNEUMOSCAN_TCMALLOC=0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoscan.training.allocator import ENV_SWITCH, find_tcmalloc
from tests.training.conftest import train_args


def test_find_tcmalloc_in_given_folders(tmp_path: Path) -> None:
    assert find_tcmalloc([str(tmp_path)]) is None
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    assert find_tcmalloc([str(tmp_path / "missing"), str(tmp_path)]) == lib


def _train_process(tiny_data: Path, out: Path, switch: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PNEUMOSCAN_ALLOCATOR_REEXEC")}
    env[ENV_SWITCH] = switch
    args = train_args(tiny_data, out, "--epochs", "1")
    done = subprocess.run([sys.executable, "-m", "pneumoscan.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "data.json").read_text())["hardware"]


@pytest.mark.skipif(not sys.platform.startswith("linux") or find_tcmalloc() is None,
                    reason="no tcmalloc library installed (apt-get install libtcmalloc-minimal4)")
def test_train_process_runs_with_tcmalloc_unless_switched_off(tiny_data: Path, tmp_path: Path) -> None:
    assert "tcmalloc" in _train_process(tiny_data, tmp_path / "on", "1")
    assert "tcmalloc" not in _train_process(tiny_data, tmp_path / "off", "0")
