"""Inference runs in the precision the model's threshold was fitted in, unless asked otherwise.

A model calibrated in fp32 and run in bf16 gets probabilities different enough to move images across its threshold
(measured on the shipped model), so ``--precision auto`` must not simply pick the fastest autocast.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pneumoscan.cli.main import main
from pneumoscan.inference.predictor import Predictor, inference_precision
from pneumoscan.models.checkpoint import load_checkpoint, save_checkpoint


def _cpu_reports_bf16_units() -> bool:
    """Read /proc/cpuinfo here, independently of pneumoscan.models.hardware, so the tests below do not take their
    expectation from the code they check (on a CPU without the file, lscpu's flags line is used)."""
    text = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
    else:  # pragma: no cover - not Linux
        import subprocess

        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    flags = set(text.split())
    return bool({"amx_bf16", "avx512_bf16"} & flags)


HAS_BF16 = _cpu_reports_bf16_units()


def test_training_records_the_calibration_precision(trained: tuple[Path, Path]) -> None:
    state = load_checkpoint(trained[1])
    assert state["calibration_precision"] == ("bf16" if HAS_BF16 else "fp32")


@pytest.mark.parametrize(("recorded", "expected"), [
    (None, "fp32"), ("fp32", "fp32"), ("nonsense", "fp32"),
    ("bf16", "bf16" if HAS_BF16 else "fp32"),
    ("fp16", "fp32"),  # fp16 autocast only on CUDA
])
def test_auto_follows_the_recorded_precision_when_the_hardware_has_it(recorded: str | None, expected: str) -> None:
    state = {} if recorded is None else {"calibration_precision": recorded}
    assert inference_precision(state, "cpu", "auto") == expected
    assert inference_precision(state, "cpu", "fp32") == "fp32"
    assert inference_precision(state, "cpu", "bf16") == "bf16"


def test_predictor_runs_an_fp32_calibrated_checkpoint_in_fp32(trained: tuple[Path, Path], tmp_path: Path) -> None:
    state = load_checkpoint(trained[1])
    state["calibration_precision"] = "fp32"
    fp32_ckpt = save_checkpoint(state, tmp_path / "fp32.pt")
    assert Predictor.from_checkpoint(fp32_ckpt, device="cpu").backend.hw.precision == "fp32"
    del state["calibration_precision"]  # checkpoints from before the key: fp32
    old = save_checkpoint(state, tmp_path / "old.pt")
    assert Predictor.from_checkpoint(old, device="cpu").backend.hw.precision == "fp32"
    forced = Predictor.from_checkpoint(old, device="cpu", precision="bf16")
    assert forced.backend.hw.precision == "bf16"


def test_predict_and_evaluate_accept_precision(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    images = sorted((data / "test").rglob("*.png"))
    out = tmp_path / "p.csv"
    assert main(["predict", *map(str, images), "--checkpoint", str(ckpt), "--precision", "fp32",
                 "--format", "csv", "--output", str(out)]) == 0
    assert len(list(csv.DictReader(out.open()))) == len(images) > 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--split", "test", "--precision",
                 "fp32", "--no-heatmaps", "--bootstrap", "50", "--output", str(tmp_path / "ev")]) == 0
    with pytest.raises(SystemExit):
        main(["predict", str(images[0]), "--checkpoint", str(ckpt), "--precision", "int4"])
