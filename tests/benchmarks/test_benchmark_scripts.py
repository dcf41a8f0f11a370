"""The benchmark scripts run end to end on tiny synthetic data: train_throughput (synthetic and cached images, bf16
skipped without bf16 units), run_row (train, evaluate on test, measure, row.json, Markdown table) and linear_probe."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks import run_row, train_throughput
from tests.fixtures import make_dataset_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models, and two threads on a busy 2-core machine spin-wait each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    return make_dataset_folder(root / "data", {"train": 24, "val": 4, "test": 8}, size=48, seed=1)


def throughput_args(*extra: str) -> list[str]:
    return ["--model", "cnn", "--image-size", "32", "--batch-size", "8", "--steps", "2", "--repeats", "2",
            "--warmup", "1", "--device", "cpu", *extra]


def test_train_throughput_synthetic_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tp.json"
    assert train_throughput.main(throughput_args("--json", str(out))) == 0
    text = capsys.readouterr().out
    assert "pipeline/compute" in text and "target pipeline/compute >= 90%" in text
    result = json.loads(out.read_text())
    (row,) = result["results"]
    assert row["channels_last"] is True
    assert row["compute_images_per_s"] > 0 and row["pipeline_images_per_s"] > 0 and row["ratio"] > 0
    assert row["ratio"] == pytest.approx(row["pipeline_images_per_s"] / row["compute_images_per_s"], rel=1e-3)
    assert all(len(v) == 2 for v in row["samples"].values()), "one sample per interleaved round"


def test_train_throughput_cached_data_compares_formats_and_skips_bf16(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(train_throughput.hardware, "cpu_has_bf16", lambda: False)
    out = tmp_path / "tp.json"
    assert train_throughput.main(throughput_args("--data", str(tiny), "--cache-dir", str(tmp_path / "cache"),
                                                 "--workers", "1", "--compare-precision", "--compare-channels-last",
                                                 "--json", str(out))) == 0
    assert "bf16 skipped" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["results"]] == ["fp32, NCHW", "fp32, channels-last"]
    assert "training images, cache" in result["data"]
    assert list((tmp_path / "cache" / "images").glob("*.npy")), "images decoded once into the cache"


def test_train_throughput_bf16_only_without_units_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(train_throughput.hardware, "cpu_has_bf16", lambda: False)
    assert train_throughput.main(throughput_args("--precision", "bf16")) == 2
    assert "nothing to measure: bf16 skipped" in capsys.readouterr().err


def row_args(data: Path, out: Path) -> list[str]:
    return ["--model", "cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--data", str(data),
            "--output", str(out), "--cache-dir", str(out.parent / "cache"), "--bootstrap", "100", "--no-heatmaps",
            "--infer-batches", "2", "--infer-seconds", "0", "--", "--workers", "1"]


def test_run_row_end_to_end_and_table(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cnn-32"
    assert run_row.main(row_args(tiny, out)) == 0
    printed = capsys.readouterr().out
    row = json.loads((out / "row.json").read_text())
    for key in ("accuracy", "sensitivity", "specificity", "f1", "roc_auc"):
        m = row["test"][key]
        assert m["value"] is not None and m["low"] <= m["value"] <= m["high"], key
    assert row["test_images"] == 16 and "split 'test'" in row["test_split"]
    assert row["epochs_run"] == 1 and row["train_images"] > 0 and 0 <= row["val_roc_auc_best"] <= 1
    assert row["train_wall_seconds"] > 0 and row["train_images_per_s_median"] > 0 and row["infer_images_per_s"] > 0
    assert row["parameters"] > 0 and row["best_pt_mb"] > 0 and row["hardware"]
    assert row["commands"]["train"].startswith("pneumoscan train --data") and "--split test" in row["commands"][
        "evaluate"]
    assert "| cnn | 32 | scratch | 1 (best 1) |" in printed
    # Re-running reuses the finished training and only re-evaluates.
    summary_mtime = (out / "train" / "summary.json").stat().st_mtime_ns
    assert run_row.main(row_args(tiny, out)) == 0
    assert (out / "train" / "summary.json").stat().st_mtime_ns == summary_mtime
    assert json.loads((out / "row.json").read_text())["commands"]["train"] == row["commands"]["train"]
    # The table from several rows.
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copy(out / "row.json", other / "row.json")
    capsys.readouterr()
    assert run_row.main(["--rows-from", str(out), str(other / "row.json")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert len(lines) == 4 and lines[0].startswith("| model | size |") and lines[2] == lines[3]


def test_run_row_needs_an_official_test_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset_folder(tmp_path / "notest", {"train": 4, "val": 2}, size=32)
    assert run_row.main(row_args(data, tmp_path / "row")) == 2
    assert "official 'test' split" in capsys.readouterr().err
    assert not (tmp_path / "row").exists()


def test_run_row_with_a_config_file_passes_only_given_options(tmp_path: Path) -> None:
    args = run_row.build_parser().parse_args(["--config", "best_config.yaml", "--epochs", "20", "--data", "d",
                                              "--output", str(tmp_path)])
    argv = run_row.train_argv(args, tmp_path / "train", ["--precision", "fp32"])
    assert argv[argv.index("--config") + 1] == "best_config.yaml" and argv[argv.index("--epochs") + 1] == "20"
    assert "--model" not in argv and "--image-size" not in argv and argv[-2:] == ["--precision", "fp32"]
    plain = run_row.train_argv(run_row.build_parser().parse_args(["--output", str(tmp_path)]), tmp_path / "t", [])
    assert plain[plain.index("--model") + 1] == "resnet18" and plain[plain.index("--image-size") + 1] == "224"
    assert "--max-train-images" not in argv and "--max-train-images" not in plain
    everything = run_row.build_parser().parse_args(["--config", "best_config.yaml", "--max-train-images", "0",
                                                    "--output", str(tmp_path)])
    argv = run_row.train_argv(everything, tmp_path / "t0", [])
    assert argv[argv.index("--max-train-images") + 1] == "0", "0 (all images) overrides a tuning config's subset"


def test_linear_probe_compares_starting_points(tiny: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import linear_probe
    from pneumoscan.cli.main import main as cli

    ssl = tmp_path / "ssl"
    assert cli(["pretrain", "--data", str(tiny), "--model", "cnn", "--image-size", "32", "--epochs", "1",
                "--batch-size", "8", "--no-probe", "--output", str(ssl), "--cache-dir", str(tmp_path / "cache"),
                "--workers", "1"]) == 0
    out = tmp_path / "probe.json"
    assert linear_probe.main(["--data", str(tiny), "--model", "cnn", "--image-size", "32", "--init", "random",
                              "--init", str(ssl / "encoder.pt"), "--cache-dir", str(tmp_path / "cache"),
                              "--json", str(out)]) == 0
    assert "| random |" in capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert [r["init"] for r in results] == ["random", str(ssl / "encoder.pt")]
    assert all(r["val_roc_auc"] is None or 0 <= r["val_roc_auc"] <= 1 for r in results)
