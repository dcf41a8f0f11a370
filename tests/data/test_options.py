"""``--data-option KEY=VALUE``: one parser (pneumoscan.data.options), one-line errors, used by every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoscan.cli.main import main
from pneumoscan.data.options import parse_data_options
from pneumoscan.errors import ConfigError


@pytest.mark.parametrize("items, expected", [
    ([], {}),
    (None, {}),
    (["views=all"], {"views": "all"}),
    ([" uncertain = positive ", "views=all"], {"uncertain": "positive", "views": "all"}),
    (["size=128", "size=64"], {"size": "64"}),  # the last one wins, as for a plain argparse option
    (["expr=a=b"], {"expr": "a=b"}),  # only the first '=' splits
    (["others="], {"others": ""}),
])
def test_parse(items: list[str] | None, expected: dict[str, str]) -> None:
    assert parse_data_options(items) == expected


@pytest.mark.parametrize("item, problem", [
    ("views", "found no '='"),
    ("", "found no '='"),
    ("=all", "the key is empty"),
    ("  =all", "the key is empty"),
])
def test_errors_name_the_option_the_item_and_the_problem(item: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_data_options(["views=all", item])
    assert str(info.value) == f"--data-option {item!r}: expected KEY=VALUE, {problem}"


def test_error_is_one_line_and_names_the_given_option() -> None:
    with pytest.raises(ConfigError) as info:
        parse_data_options(["bad\nitem"], option="data_options")
    message = str(info.value)
    assert "\n" not in message and message.startswith("data_options 'bad\\nitem':")


def _bad_option_argv(command: str, tmp_path: Path) -> list[str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    out = tmp_path / "out"
    common = ["--data-option", "views=all", "--data-option", "uncertain"]
    return {
        "train": ["train", "--data", str(data), "--output", str(out)],
        "pretrain": ["pretrain", "--data", str(data), "--output", str(out)],
        "evaluate": ["evaluate", "--data", str(data), "--output", str(out)],
        "calibrate": ["calibrate", "--checkpoint", str(tmp_path / "none.pt"), "--output", str(out)],
        "audit": ["audit", "--data", str(data)],
        "sources": ["sources", "chexpert"],
    }[command] + common


@pytest.mark.parametrize("command", ["train", "pretrain", "evaluate", "calibrate", "audit", "sources"])
def test_every_command_refuses_a_bad_data_option(command: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_bad_option_argv(command, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: --data-option 'uncertain': expected KEY=VALUE, found no '='"
    assert not (tmp_path / "out").exists()


def test_train_merges_command_line_options_over_the_config_file(tmp_path: Path) -> None:
    from pneumoscan.cli.main import build_parser
    from pneumoscan.cli.train import config_from_args

    config = tmp_path / "c.yaml"
    config.write_text("data_options:\n  views: all\n  uncertain: negative\n", encoding="utf-8")
    args = build_parser().parse_args(["train", "--config", str(config), "--data", "x", "--output", "o",
                                      "--data-option", "uncertain = positive"])
    assert dict(config_from_args(args).data_options) == {"views": "all", "uncertain": "positive"}
