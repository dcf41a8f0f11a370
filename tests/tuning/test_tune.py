"""``pneumoscan tune``: a small study end to end, resume (also after a killed trial), pruning, and the best config
going back into ``pneumoscan train``. Everything runs on tiny synthetic images at 32 px with the custom CNN."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from pneumoscan.cli.main import main
from pneumoscan.training.config import TrainConfig
from tests.fixtures import make_dataset_folder

optuna = pytest.importorskip("optuna")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: these models are tiny, and two threads on a busy 2-core machine spin-wait each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle-layout folder with train/val/test images; a cache folder sits beside it."""
    root = tmp_path_factory.mktemp("tune")
    return make_dataset_folder(root / "data", {"train": 24, "val": 4, "test": 8}, size=48, seed=1)


def tune_args(data: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return ["tune", "--data", str(data), "--output", str(out), "--trials", str(trials), "--epochs-per-trial", "1",
            "--models", "cnn", "--image-sizes", "32", "--batch-sizes", "8,16", "--cache-dir",
            str(data.parent / "cache"), "--workers", "1", *extra]


@pytest.fixture(scope="module")
def study_dir(tiny: Path) -> Path:
    """A finished 3-trial study; tests that change it work on a copy."""
    out = tiny.parent / "study"
    assert main(tune_args(tiny, out, 3)) == 0
    return out


def read_trials(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "trials.csv").open(encoding="utf-8")))


def load(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="pneumoscan", storage=f"sqlite:///{out / 'study.db'}")


def test_study_writes_trials_best_config_and_never_decodes_test(study_dir: Path, tiny: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    rows = read_trials(study_dir)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert {"model", "image_size", "batch_size", "optimizer", "lr", "weight_decay", "augment_strength"} <= set(rows[0])
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    for r in rows:
        folder = study_dir / r["run_dir"]
        assert (folder / "metrics.csv").is_file() and (folder / "summary.json").is_file()
        assert not (folder / "last.pt").exists()
    assert len(list(study_dir.glob("trials/*/best.pt"))) == 1, "only the best trial keeps its checkpoint"
    best = yaml.safe_load((study_dir / "best_config.yaml").read_text(encoding="utf-8"))
    assert "data" not in best and best["epochs"] == 1 and best["model"] == "cnn"
    cfg = TrainConfig.from_dict(best)
    study = load(study_dir)
    assert cfg.lr == pytest.approx(study.best_params["lr"])
    # Only train and val were decoded: the cache holds arrays of exactly those sizes, never the test split's.
    splits = json.loads((study_dir / "trials" / "0000" / "data.json").read_text())["splits"]
    cached = {int(p.name.rsplit("-", 1)[1].split("x")[0]) for p in (tiny.parent / "cache" / "images").glob("*.npy")}
    assert cached == {splits["train"]["n"], splits["val"]["n"]}
    assert splits["test"]["n"] not in cached


def test_resume_runs_only_missing_trials_and_fails_a_killed_one(study_dir: Path, tiny: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "study"
    shutil.copytree(study_dir, out)
    # A trial whose process was killed: RUNNING in the database, its process gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = load(out).ask()
    killed.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    capsys.readouterr()
    assert main(tune_args(tiny, out, 4)) == 0
    assert "1 run now" in capsys.readouterr().out
    states = {t.number: t.state.name for t in load(out).trials}
    assert states[killed.number] == "FAIL"
    assert sorted(states.values()) == ["COMPLETE"] * 4 + ["FAIL"]
    rows = read_trials(out)
    assert len(rows) == 5 and rows[killed.number]["note"].startswith("interrupted")
    assert main(tune_args(tiny, out, 4)) == 0  # enough trials already: nothing runs
    assert "0 run now" in capsys.readouterr().out
    assert len(load(out).trials) == 5


def test_resume_with_another_search_space_is_refused(study_dir: Path, tiny: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "study"
    shutil.copytree(study_dir, out)
    args = tune_args(tiny, out, 4)
    args[args.index("--batch-sizes") + 1] = "8"
    assert main(args) == 2
    assert "started with other settings" in capsys.readouterr().err


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_trials_report_every_epoch_and_are_pruned(tiny: Path, tmp_path: Path) -> None:
    from pneumoscan.tuning.study import SearchSpace, run_study

    base = TrainConfig(data=(str(tiny),), epochs=2, workers=1)
    space = SearchSpace(models=("cnn",), image_sizes=(32,), batch_sizes=(16,))
    result = run_study(base, tmp_path / "pruned", n_trials=2, space=space, pruner=AlwaysPrune(),
                       cache_dir=tiny.parent / "cache")
    trials = load(tmp_path / "pruned").trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(list(t.intermediate_values) == [0] for t in trials), "pruned after the first epoch's report"
    assert all(t.user_attrs["epochs_run"] == 1 for t in trials)
    assert result.best_number is None and not (tmp_path / "pruned" / "best_config.yaml").exists()
    assert "pruned after epoch 1" in read_trials(tmp_path / "pruned")[0]["note"]


def test_best_config_trains_with_pneumoscan_train(study_dir: Path, tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "best"
    assert main(["train", "--config", str(study_dir / "best_config.yaml"), "--data", str(tiny), "--output", str(run),
                 "--cache-dir", str(tiny.parent / "cache")]) == 0
    trained = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    best = yaml.safe_load((study_dir / "best_config.yaml").read_text(encoding="utf-8"))
    assert trained == {**best, "data": [str(tiny)]}
    assert (run / "summary.json").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", "cnn"], "either --model"),
    (["--pretrained"], "no ImageNet weights"),
    (["--lr-range", "1e-3"], "LOW,HIGH"),
])
def test_bad_options_stop_before_training(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str], message: str) -> None:
    assert main(tune_args(tiny, tmp_path / "s", 1, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "trials").exists()


def test_explicit_train_options_fix_dimensions() -> None:
    from pneumoscan.cli.main import build_parser
    from pneumoscan.cli.tune import base_config_from_args, search_space_from_args

    args = build_parser().parse_args(["tune", "--data", "x", "--output", "o", "--trials", "1", "--lr", "0.01",
                                      "--optimizer", "sgd", "--no-augment", "--epochs", "4"])
    space = search_space_from_args(args)
    assert space.lr == (0.01, 0.01) and space.optimizers == ("sgd",) and space.augment_strength == (1.0, 1.0)
    assert space.models == ("cnn", "resnet18", "efficientnet_lite0") and space.batch_sizes == (16, 32, 64)
    assert base_config_from_args(args).epochs == 4
