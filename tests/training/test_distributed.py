"""DDP with torchrun: 2 CPU processes, gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pneumoscan.models.checkpoint import load_checkpoint
from tests.training.conftest import train_args


@pytest.mark.slow  # ~17 s of two torchrun processes on 2 cores; keeps the default suite under 5 minutes
def test_torchrun_two_processes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "pneumoscan.cli.main", *train_args(tiny_data, out, "--epochs", "2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "data.json").read_text())
    assert info["world_size"] == 2
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert not any(k.startswith("module.") for k in state["state_dict"]), "saved without the DDP wrapper prefix"
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert (out / "summary.json").is_file()
