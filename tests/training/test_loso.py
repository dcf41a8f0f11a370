"""Leave-one-source-out: fold planning, the end-to-end command on two tiny sources, and resuming it.

One LOSO run (a Kaggle-layout folder and an NIH ChestX-ray14 layout, 1 epoch each) is shared by the module; tests
that change its folder work on a copy. The reports' matplotlib figures are replaced by a 1x1 PNG here: they take most
of an evaluation's time on a small CPU, and drawing them is tested with the report itself (tests/evaluation) and end
to end in tests/cli/test_cross_dataset.py.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pneumoscan.cli.main import main
from pneumoscan.data.sources import load_records
from pneumoscan.errors import ConfigError
from pneumoscan.evaluation import report
from pneumoscan.training import loso
from pneumoscan.training.loso import LosoOptions, overlap_warnings, plan_folds, source_name
from tests.training.test_multisource import make_kaggle, make_nih_layout

TINY = ("--model", "cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "1",
        "--no-augment", "--bootstrap", "50", "--no-heatmaps")


_PNG_1X1 = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
                         "0000000a49444154789c6360000000020001e221bc330000000049454e44ae426082")


@pytest.fixture(scope="module", autouse=True)
def placeholder_figures() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "_figures", lambda *_args, **_kwargs: dict.fromkeys(report.FIGURES, _PNG_1X1))
        yield


def loso_cmd(out: Path, specs: list[str], *extra: str) -> list[str]:
    args = ["loso", *TINY, "--output", str(out), "--cache-dir", str(out.parent / "cache"), *extra]
    for spec in specs:
        args += ["--data", spec]
    return args


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    base = tmp_path_factory.mktemp("loso-data")
    return [str(make_kaggle(base / "chest_xray")), f"nih:{make_nih_layout(base / 'ChestX-ray14')}"]


@pytest.fixture(scope="module")
def loso_run(specs: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loso") / "loso"
    assert main(loso_cmd(out, specs)) == 0
    return out


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any training attempt fail the test: the folds under test must be reused."""
    from pneumoscan.training import setup

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(setup, "fit", refuse)


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "loso"))


def _result(out: Path) -> dict:
    return json.loads((out / "loso.json").read_text(encoding="utf-8"))


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------------- planning

@pytest.mark.parametrize(("spec", "name"), [
    ("nih:/data/ChestX-ray14", "nih"),
    ("/data/chest_xray", "chest_xray"),
    ("/data/chest_xray/", "chest_xray"),
    ("/shared/data/kermany224/manifest.csv", "kermany224"),
    ("/data/site b/labels.csv", "labels"),
    ("/data/St. Mary's (2021)", "St._Mary_s_2021"),
])
def test_source_name(spec: str, name: str) -> None:
    assert source_name(spec) == name


def test_plan_folds_trains_on_all_other_sources() -> None:
    folds = plan_folds(["nih:/a", "/b/chest_xray", "/c/chest_xray"])
    assert [f.source for f in folds] == ["nih", "chest_xray", "chest_xray-2"]
    assert folds[0].train == ("/b/chest_xray", "/c/chest_xray")
    assert folds[2].train_sources == ("nih", "chest_xray")
    assert (folds[1].run_name, folds[1].holdout_name) == ("without-chest_xray", "holdout-chest_xray")


@pytest.mark.parametrize(("specs", "needle"), [([], "at least two"), (["nih:/a"], "at least two"),
                                               (["nih:/a", "nih:/a"], "given twice")])
def test_bad_source_lists_are_config_errors(specs: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        plan_folds(specs)


def test_one_source_is_a_one_line_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loso", "--data", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: loso needs at least two --data sources") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_overlapping_public_sources_are_flagged() -> None:
    warnings = overlap_warnings(plan_folds(["nih:/a", "rsna:/b", "/c/site"]))
    assert len(warnings) == 1 and "RSNA" in warnings[0]
    assert overlap_warnings(plan_folds(["nih:/a", "/c/site"])) == []


def test_holdout_split_is_checked() -> None:
    with pytest.raises(ConfigError, match="holdout split"):
        LosoOptions(holdout_split="val")


def test_run_folder_that_never_trained_is_cleared(tmp_path: Path) -> None:
    run = tmp_path / "without-x"
    run.mkdir()
    for name in ("config.yaml", "data.json", "splits.csv"):
        (run / name).write_text("x", encoding="utf-8")
    loso._clear_unstarted_run(run)
    assert list(run.iterdir()) == []
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    (run / "config.yaml").write_text("x", encoding="utf-8")
    loso._clear_unstarted_run(run)  # anything the trainer did not write: left alone (fit then refuses the folder)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "notes.txt"]


# ------------------------------------------------------------------------------------------------ end to end

def test_each_source_is_held_out_once(loso_run: Path, specs: list[str]) -> None:
    result = _result(loso_run)
    assert [(f["source"], f["trained_on"], f["status"]) for f in result["folds"]] == [
        ("chest_xray", ["nih"], "trained"), ("nih", ["chest_xray"], "trained")]
    for fold, holdout, trained in ((result["folds"][0], specs[0], specs[1]), (result["folds"][1], specs[1], specs[0])):
        run = loso_run / f"without-{fold['source']}"
        assert (run / "summary.json").is_file() and (run / "best.pt").is_file()
        data = json.loads((run / "data.json").read_text(encoding="utf-8"))
        assert [s["spec"] for s in data["sources"]] == [trained]
        held_out_paths = {r.path for r in load_records(holdout)}
        assert held_out_paths.isdisjoint(r["path"] for r in _rows(run / "splits.csv"))
        doc = json.loads((loso_run / f"holdout-{fold['source']}" / "metrics.json").read_text(encoding="utf-8"))
        assert doc["data"]["spec"] == [holdout] and doc["data"]["split"] == "all"
        assert fold["holdout"]["n"] == doc["n"] == len(held_out_paths)
        assert (loso_run / f"holdout-{fold['source']}" / "report.html").is_file()
        n_test = sum(r["split"] == "test" for r in _rows(run / "splits.csv"))
        assert fold["in_distribution"]["n"] == n_test > 0
        assert (run / "test" / "report.html").is_file()


def test_table_lists_every_held_out_source(loso_run: Path) -> None:
    text = (loso_run / "loso.md").read_text(encoding="utf-8")
    assert "| held-out source | trained on | n (PNEUMONIA / NORMAL) | ROC-AUC [95% CI] | accuracy | sensitivity | " \
           "specificity | threshold | in-distribution test ROC-AUC [95% CI] |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split(" | ")[0] for r in rows] == ["| `chest_xray`", "| `nih`"]
    result = _result(loso_run)
    nih = result["folds"][1]["holdout"]
    assert f"{nih['n']} ({nih['n_positive']} / {nih['n_negative']})" in rows[1]
    assert f"{nih['roc_auc']:.3f} [" in rows[1] and "patients known" in text
    assert result["config"]["model"] == "cnn" and result["holdout_split"] == "all"


def test_rerun_skips_finished_folds(loso_run: Path, specs: list[str], no_training: None,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = (loso_run / "holdout-nih" / "metrics.json").stat().st_mtime_ns
    assert main(loso_cmd(loso_run, specs)) == 0
    assert [f["status"] for f in _result(loso_run)["folds"]] == ["skipped", "skipped"]
    assert (loso_run / "holdout-nih" / "metrics.json").stat().st_mtime_ns == before
    out = capsys.readouterr().out
    assert "| `nih` | `chest_xray` |" in out and out.rstrip().endswith("loso.md")


def test_interrupted_fold_is_resumed(loso_run: Path, specs: list[str], tmp_path: Path) -> None:
    out = _copy(loso_run, tmp_path)
    (out / "without-nih" / "summary.json").unlink()  # stopped after its last epoch, before finishing
    (out / "holdout-nih" / "report.html").unlink()  # and its held-out evaluation never completed
    assert main(loso_cmd(out, specs)) == 0
    assert [f["status"] for f in _result(out)["folds"]] == ["skipped", "resumed"]
    assert (out / "without-nih" / "summary.json").is_file() and (out / "holdout-nih" / "report.html").is_file()


def test_holdout_test_split_reevaluates_without_training(loso_run: Path, specs: list[str], tmp_path: Path,
                                                         no_training: None) -> None:
    out = _copy(loso_run, tmp_path)
    assert main(loso_cmd(out, specs, "--holdout-split", "test")) == 0
    result = _result(out)
    assert result["holdout_split"] == "test"
    for fold, spec in zip(result["folds"], specs, strict=True):
        assert fold["holdout"]["n"] == sum(r.split == "test" for r in load_records(spec))
        doc = json.loads((out / f"holdout-{fold['source']}" / "metrics.json").read_text(encoding="utf-8"))
        assert doc["data"]["split"] == "test"


def test_changed_options_are_refused_before_training(loso_run: Path, specs: list[str], no_training: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(loso_cmd(loso_run, specs, "--lr", "0.01")) == 2
    err = capsys.readouterr().err
    assert "trained with other options (differs in: lr)" in err
