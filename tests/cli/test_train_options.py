"""The training flags are generated from TrainConfig, and a wrong value on the command line stops with the message a
YAML config gets (no training started)."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoscan.cli.main import build_parser, main
from pneumoscan.cli.train import config_from_args
from pneumoscan.training.config import AugmentConfig, SSLConfig, TrainConfig
from pneumoscan.training.options import given

# Flags of train that are not TrainConfig fields.
CLI_ONLY = {"--help", "--config", "--aug-acquisition", "--no-augment", "--cache-dir", "--output", "--resume"}
# A field whose flag is not "--" + its name with dashes.
RENAMED = {"data_options": "--data-option"}


def subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def expected_flags() -> dict[str, str]:
    """dest -> flag for every field of TrainConfig (the nested AugmentConfig as --aug-NAME)."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "augment":
            out.update({f"aug_{a.name}": f"--aug-{a.name}" for a in dataclasses.fields(AugmentConfig)})
        else:
            out[f.name] = RENAMED.get(f.name, "--" + f.name.replace("_", "-"))
    return out


@pytest.mark.parametrize("command", ["train", "tune", "loso"])
def test_every_field_has_exactly_one_generated_flag(command: str) -> None:
    actions = [a for a in subparser(command)._actions if a.option_strings]
    expected = expected_flags()
    for dest, flag in expected.items():
        matching = [a for a in actions if a.dest == dest]
        assert len(matching) == 1, f"{dest}: {len(matching)} flags"
        assert matching[0].option_strings == [flag]
    if command == "train":
        others = {s for a in actions if a.dest not in expected for s in a.option_strings if s.startswith("--")}
        assert others == CLI_ONLY


def test_pretrain_gets_its_training_flags_from_the_same_schema() -> None:
    actions = {a.dest: a for a in subparser("pretrain")._actions if a.option_strings}
    train = {a.dest: a for a in subparser("train")._actions if a.option_strings}
    shared = set(actions) & set(expected_flags())
    assert {"data", "data_options", "lr", "precision", "aug_rotation", "aug_contrast"} <= shared
    assert "aug_gamma" not in actions and "optimizer" not in actions
    for dest in shared:
        assert actions[dest].option_strings == train[dest].option_strings
        assert type(actions[dest]) is type(train[dest])
    assert actions["data"].required and "(default cnn)" in actions["model"].help


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", "--output", "o", *argv]))


def test_defaults_and_flags_as_before() -> None:
    assert parse() == TrainConfig()
    cfg = parse("--data", "a", "--data", "k:b", "--data-option", "views=all", "--lr", "1e-3", "--epochs", "3",
                "--pretrained", "--aug-acquisition", "--aug-text", "0.1", "--precision", "bf16", "--mean", "0.5")
    assert cfg.data == ("a", "k:b") and cfg.data_options == {"views": "all"}
    assert cfg.lr == 0.001 and cfg.epochs == 3 and cfg.pretrained and cfg.precision == "bf16" and cfg.mean == 0.5
    assert cfg.augment.gamma == 0.3 and cfg.augment.text == 0.1  # the preset, then the single option
    off = parse("--no-augment", "--aug-rotation", "5")
    assert all(getattr(off.augment, f.name) == 0.0 for f in dataclasses.fields(AugmentConfig))


def test_command_line_overrides_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 2e-3\nepochs: 4\naugment: {rotation: 3}\ndata_options: {views: all}\n")
    cfg = parse("--config", str(path), "--epochs", "6", "--aug-zoom", "0.1", "--data-option", "size=224")
    assert (cfg.lr, cfg.epochs, cfg.augment.rotation, cfg.augment.zoom) == (0.002, 6, 3.0, 0.1)
    assert cfg.data_options == {"views": "all", "size": "224"}


def test_documented_long_commands_parse() -> None:
    """Commands from README.md and BENCHMARKS.md, parsed without running."""
    args = build_parser().parse_args(
        "tune --data ../shared/data/kermany224 --output runs/tune-kermany --trials 10 --epochs-per-trial 2 "
        "--max-train-images 1000 --models cnn,efficientnet_lite0 --image-sizes 96,128 --timeout-minutes 12".split())
    assert args.max_train_images == 1000 and args.trials == 10
    args = build_parser().parse_args(
        "loso --data kermany:/data/chest_xray --data nih:/data/ChestX-ray14 --data rsna:/data/rsna --model resnet18 "
        "--output runs/loso".split())
    assert config_from_args(args).data == ("kermany:/data/chest_xray", "nih:/data/ChestX-ray14", "rsna:/data/rsna")
    cfg = parse(*"--data /data/chest_xray --lung-crop --lung-margin 0.1 --lung-dim 0.3".split())
    assert cfg.lung_crop and cfg.lung_dim == 0.3
    args = build_parser().parse_args(
        "pretrain --data /data/chest_xray --model efficientnet_lite0 --image-size 128 --epochs 20 "
        "--output runs/ssl".split())
    assert (args.model, args.image_size, args.epochs) == ("efficientnet_lite0", 128, 20)


WRONG = [  # (flags, the same values in YAML, the message)
    (["--lr", "abc"], "lr: abc", "lr: expected a number, got 'abc'"),
    (["--precision", "fp8"], "precision: fp8", "precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
    (["--epochs", "2.5"], "epochs: 2.5", "epochs: expected an integer, got 2.5"),
    (["--epochs", "0"], "epochs: 0", "epochs: must be >= 1, got 0"),
    (["--optimizer", "rmsprop"], "optimizer: rmsprop", "optimizer: 'rmsprop' is not one of adamw, adam, sgd"),
    (["--aug-hflip", "2"], "augment: {hflip: 2}", "augment.hflip: must be >= 0 and <= 1, got 2"),
    (["--max-train-images", "many"], "max_train_images: many", "max_train_images: expected an integer, got 'many'"),
]


@pytest.mark.parametrize(("flags", "text", "message"), WRONG)
def test_wrong_values_give_the_yaml_message_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               flags: list[str], text: str, message: str) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path), "--output", str(out), *flags]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    config = tmp_path / "c.yaml"
    config.write_text(text + "\n")
    assert main(["train", "--config", str(config), "--data", str(tmp_path), "--output", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize("command", [["tune", "--trials", "1"], ["loso"], ["pretrain"]])
def test_every_training_command_checks_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    command: list[str]) -> None:
    out = tmp_path / "run"
    assert main([*command, "--data", str(tmp_path), "--output", str(out), "--lr", "abc"]) == 2
    assert capsys.readouterr().err == "error: lr: expected a number, got 'abc'\n"
    assert not out.exists()


def test_pretrain_options_are_checked_by_the_same_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(tmp_path), "--output", str(out), "--temperature", "warm"]) == 2
    assert capsys.readouterr().err == "error: temperature: expected a number, got 'warm'\n"
    assert main(["pretrain", "--data", str(tmp_path), "--output", str(out), "--data-option", "views"]) == 2
    assert capsys.readouterr().err == "error: --data-option 'views': expected KEY=VALUE, found no '='\n"
    assert not out.exists()


# -- pretrain's own options (SSLConfig) --------------------------------------------------------------------------

#: Flags of pretrain that are neither TrainConfig nor SSLConfig fields.
PRETRAIN_CLI_ONLY = {"--help", "--cache-dir", "--output", "--resume"}
SSL_FLAGS = {"temperature": "--temperature", "projection_dim": "--projection-dim", "hidden_dim": "--hidden-dim",
             "probe": "--no-probe"}


def test_every_ssl_field_has_exactly_one_generated_pretrain_flag() -> None:
    assert {f.name for f in dataclasses.fields(SSLConfig)} == set(SSL_FLAGS)
    actions = [a for a in subparser("pretrain")._actions if a.option_strings]
    for dest, flag in SSL_FLAGS.items():
        matching = [a for a in actions if a.dest == dest]
        assert len(matching) == 1, f"{dest}: {len(matching)} flags"
        assert matching[0].option_strings == [flag]
    train = expected_flags()
    others = {s for a in actions if a.dest not in train and a.dest not in SSL_FLAGS for s in a.option_strings
              if s.startswith("--")}
    assert others == PRETRAIN_CLI_ONLY


def test_pretrain_flags_keep_their_help_and_defaults() -> None:
    helps = {a.dest: a.help for a in subparser("pretrain")._actions}
    assert helps["temperature"] == "NT-Xent temperature (default 0.2)"
    assert helps["projection_dim"] == "output size of the projection head (default 128)"
    assert helps["hidden_dim"] == "hidden size of the projection head (default 512)"
    assert helps["probe"] == "skip the linear probe at the end"
    args = build_parser().parse_args(["pretrain", "--data", "d", "--output", "o"])
    assert SSLConfig.from_dict(given(args, SSLConfig)) == SSLConfig(temperature=0.2, projection_dim=128,
                                                                    hidden_dim=512, probe=True)
    args = build_parser().parse_args(["pretrain", "--data", "d", "--output", "o", "--temperature", "0.5",
                                      "--projection-dim", "64", "--hidden-dim", "256", "--no-probe"])
    assert SSLConfig.from_dict(given(args, SSLConfig)) == SSLConfig(temperature=0.5, projection_dim=64,
                                                                    hidden_dim=256, probe=False)


@pytest.mark.parametrize(("flags", "message"), [
    (["--temperature", "warm"], "temperature: expected a number, got 'warm'"),
    (["--temperature", "0"], "temperature: must be > 0, got 0"),
    (["--projection-dim", "2.5"], "projection_dim: expected an integer, got 2.5"),
    (["--projection-dim", "wide"], "projection_dim: expected an integer, got 'wide'"),
    (["--hidden-dim", "0"], "hidden_dim: must be >= 1, got 0"),
])
def test_wrong_pretrain_values_are_one_line_naming_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              flags: list[str], message: str) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(tmp_path), "--output", str(out), *flags]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


def test_pretrain_help_imports_no_torch() -> None:
    """Why SSLConfig lives in training/config.py: generating the pretrain flags must not pull in the torch code."""
    code = ("import sys\nfrom pneumoscan.cli.main import build_parser\nbuild_parser()\n"
            "import pneumoscan.training.config\nassert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
