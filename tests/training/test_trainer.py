"""End-to-end training: run folder contents, checkpoints, resume, early stopping, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoscan.cli.main import main
from pneumoscan.models.checkpoint import load_checkpoint
from tests.fixtures import write_png
from tests.training.conftest import train_args


def test_train_writes_complete_run(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out)) == 0
    for name in ("config.yaml", "data.json", "splits.csv", "metrics.csv", "best.pt", "last.pt",
                 "val_predictions.csv", "summary.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_roc_auc", "lr", "images_per_s"} <= set(rows[0])
    best = torch.load(out / "best.pt", weights_only=True)  # plain data: loads without unpickling code
    assert best["model"]["name"] == "cnn" and best["preprocess"]["image_size"] == 32
    assert 0.0 < best["threshold"] < 1.0 and "validation" in best["threshold_rule"]
    assert set(best["operating_points"]) >= {"youden", "max_f1", "sensitivity_95", "fixed"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2


def test_splits_are_patient_grouped_and_test_untouched(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--epochs", "1")) == 0
    rows = list(csv.DictReader((out / "splits.csv").open()))
    by_split: dict[str, set[str]] = {}
    for r in rows:
        by_split.setdefault(r["split"], set()).add(r["patient_id"])
    assert by_split["train"].isdisjoint(by_split["val"])
    test_paths = {r["path"] for r in rows if r["split"] == "test"}
    assert test_paths and all("/test/" in p for p in test_paths)
    assert {r["label"] for r in rows if r["split"] == "val"} == {"0", "1"}


def test_resume_continues_exactly(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted after epoch 2 of 4, then resumed == 4 epochs in one go (same weights, same losses)."""
    from pneumoscan.training import trainer as trainer_mod

    full = tmp_path / "full"
    assert main(train_args(tiny_data, full, "--epochs", "4", "--patience", "10")) == 0
    part = tmp_path / "part"
    original = trainer_mod.Trainer._end_epoch

    def interrupt_after_second(self: trainer_mod.Trainer, epoch: int, *args: object) -> None:
        original(self, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_end_epoch", interrupt_after_second)
    assert main(train_args(tiny_data, part, "--epochs", "4", "--patience", "10")) == 130
    assert not (part / "summary.json").exists(), "an interrupted run must not look complete"
    monkeypatch.setattr(trainer_mod.Trainer, "_end_epoch", original)
    assert main(["train", "--output", str(part), "--resume", "--cache-dir", str(tmp_path / "cache")]) == 0
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(v, b["state_dict"][k], msg=k)
    la = [r["train_loss"] for r in csv.DictReader((full / "metrics.csv").open())]
    lb = [r["train_loss"] for r in csv.DictReader((part / "metrics.csv").open())]
    assert la == lb


def test_resume_restores_optimizer_and_scheduler(tiny_data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted after epoch 1 of 3 and resumed: the AdamW moments and the cosine schedule carry on from last.pt.

    A resume that rebuilt the optimizer or scheduler fresh would restart the moments at zero and the learning rate
    at its peak; the resumed run's optimizer state, scheduler state and per-epoch learning rates then differ from
    an uninterrupted run's."""
    from pneumoscan.training import trainer as trainer_mod

    args = ("--epochs", "3", "--patience", "10", "--optimizer", "adamw", "--scheduler", "cosine")
    full = tmp_path / "full"
    assert main(train_args(tiny_data, full, *args)) == 0
    part = tmp_path / "part"
    original = trainer_mod.Trainer._end_epoch

    def interrupt_after_first(self: trainer_mod.Trainer, epoch: int, *rest: object) -> None:
        original(self, epoch, *rest)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_end_epoch", interrupt_after_first)
    assert main(train_args(tiny_data, part, *args)) == 130
    saved = load_checkpoint(part / "last.pt")
    assert saved["optimizer"]["state"], "optimizer moments saved at the interruption"
    assert saved["scheduler"]["last_epoch"] == 1
    monkeypatch.setattr(trainer_mod.Trainer, "_end_epoch", original)
    assert main(["train", "--output", str(part), "--resume", "--cache-dir", str(tmp_path / "cache")]) == 0
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert a["scheduler"] == b["scheduler"] and b["scheduler"]["last_epoch"] == 3
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for key, moments in a["optimizer"]["state"].items():
        for name, value in moments.items():
            torch.testing.assert_close(value, b["optimizer"]["state"][key][name], msg=f"{key}.{name}")
    lr_full = [r["lr"] for r in csv.DictReader((full / "metrics.csv").open())]
    lr_part = [r["lr"] for r in csv.DictReader((part / "metrics.csv").open())]
    assert lr_full == lr_part and len(set(lr_full)) == 3


def test_output_folder_must_be_empty_without_resume(tiny_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    assert main(train_args(tiny_data, out)) == 2
    assert "not empty" in capsys.readouterr().err


def test_early_stopping(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # lr so small nothing improves after the first epoch's AUC: patience 1 stops after epoch 2 or 3
    assert main(train_args(tiny_data, out, "--epochs", "8", "--patience", "1", "--lr", "1e-9",
                           "--no-augment")) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) < 8


def test_training_learns_the_synthetic_finding(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--epochs", "6", "--lr", "3e-3", "--patience", "10")) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert max(float(r["val_roc_auc"]) for r in rows) > 0.8


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"this is not an image", "not an image"),
])
def test_bad_image_stops_training_with_one_line(tiny_data: Path, tmp_path: Path, content: bytes, problem: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    bad = data / "train" / "NORMAL" / "IM-9999-0001.png"
    bad.write_bytes(content)
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and problem in err[0]
    assert not out.exists(), "no half-written run folder"


def test_truncated_jpeg_is_reported(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from tests.fixtures import write_jpeg

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    bad = write_jpeg(data / "train" / "PNEUMONIA" / "person999_virus_1.jpeg", (64, 64))
    bad.write_bytes(bad.read_bytes()[:200])
    assert main(train_args(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err.lower()


@pytest.mark.parametrize("layout", ["missing_class", "wrong_layout", "no_images"])
def test_bad_layouts(tmp_path: Path, layout: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    if layout == "missing_class":
        write_png(data / "train" / "NORMAL" / "IM-0001-0001.png", (32, 32))
    elif layout == "wrong_layout":
        write_png(data / "images" / "a.png", (32, 32))
    else:
        (data / "train" / "NORMAL").mkdir(parents=True)
        (data / "train" / "PNEUMONIA").mkdir(parents=True)
    assert main(train_args(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and str(data) in err
    assert not (tmp_path / "run").exists()


def test_unknown_model_lists_choices(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(tiny_data, tmp_path / "run", "--model", "alexnet")) == 2
    assert "resnet18" in capsys.readouterr().err


def test_manifest_input(tiny_data: Path, tmp_path: Path) -> None:
    rows = ["path,label,split,patient_id"]
    for p in sorted(tiny_data.rglob("*.png")):
        split, label = p.parent.parent.name, p.parent.name
        rows.append(f"{p},{label},{split},{p.stem.split('_')[0].rsplit('-', 1)[0]}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    assert main(train_args(manifest, tmp_path / "run", "--epochs", "1")) == 0


def test_config_file_and_overrides(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: cnn\nlr: 0.002\nepochs: 1\naugment: {rotation: 0, hflip: 0}\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(tiny_data), "--image-size", "32",
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]) == 0
    state = load_checkpoint(out / "best.pt")
    assert state["config"]["lr"] == 0.002 and state["config"]["augment"]["rotation"] == 0


def test_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    assert main(["train", "--config", str(cfg), "--data", str(tmp_path), "--output", str(tmp_path / "r")]) == 2
    assert "unknown training option 'learning_rate' (did you mean 'lr'?)" in capsys.readouterr().err


def test_image_cache_is_reused_and_invalidated(tiny_data: Path, tmp_path: Path) -> None:
    from pneumoscan.data.cache import load_or_build

    paths = [str(p) for p in sorted(tiny_data.rglob("*.png"))[:6]]
    a = load_or_build(paths, 32, tmp_path, workers=1)
    b = load_or_build(paths, 32, tmp_path, workers=1)
    assert isinstance(b, np.memmap) and np.array_equal(a, b)
    assert len(list((tmp_path / "images").glob("*.npy"))) == 1
    load_or_build(paths, 40, tmp_path, workers=1)  # other preprocessing -> new cache
    assert len(list((tmp_path / "images").glob("*.npy"))) == 2


class _Recorder:
    """An epoch callback that keeps what it is shown and stops the run after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after, self.seen = stop_after, []

    def on_epoch_end(self, trainer: object, epoch: int, metrics: dict[str, object]) -> None:
        from pneumoscan.training.trainer import StopTraining

        self.seen.append((epoch, dict(metrics)))
        if self.stop_after is not None and epoch + 1 >= self.stop_after:
            raise StopTraining(f"enough after {epoch + 1}")


def _callback_run(tiny_data: Path, tmp_path: Path, callbacks: list[_Recorder]) -> object:
    from pneumoscan.models.hardware import resolve_hardware
    from pneumoscan.training.config import TrainConfig
    from pneumoscan.training.distributed import DistInfo
    from pneumoscan.training.setup import build_trainer, prepare_data

    cfg = TrainConfig(data=(str(tiny_data),), model="cnn", image_size=32, epochs=4, batch_size=8, patience=10,
                      device="cpu", precision="fp32", workers=1)
    data = prepare_data(cfg, tmp_path / "cache")
    (tmp_path / "run").mkdir()
    trainer = build_trainer(cfg, tmp_path / "run", data, resolve_hardware("cpu", "fp32"), DistInfo(),
                            callbacks=callbacks)
    trainer.run()
    return trainer


def test_epoch_callbacks_see_every_epoch_and_can_stop_training(tiny_data: Path, tmp_path: Path) -> None:
    watcher, stopper = _Recorder(), _Recorder(stop_after=2)
    trainer = _callback_run(tiny_data, tmp_path, [watcher, stopper])
    assert [e for e, _ in watcher.seen] == [0, 1] == [e for e, _ in stopper.seen]
    assert [m for _, m in watcher.seen] == trainer.history  # each epoch's metrics.csv row, as written
    assert {"val_roc_auc", "val_select", "train_loss", "best"} <= set(watcher.seen[0][1])
    assert trainer.stopped_by == "enough after 2"
    assert len(trainer.history) == 2 and trainer.cfg.epochs == 4
    assert load_checkpoint(trainer.run_dir / "last.pt")["epoch"] == 1  # the stopping epoch was saved first


def test_without_a_stop_every_epoch_reaches_the_callbacks(tiny_data: Path, tmp_path: Path) -> None:
    watcher = _Recorder()
    trainer = _callback_run(tiny_data, tmp_path, [watcher])
    assert [e for e, _ in watcher.seen] == [0, 1, 2, 3] and trainer.stopped_by is None
