"""Label policies: explicit, JSON-serialisable, retrievable for a spec; the `pneumoscan sources` listing."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from pneumoscan.cli.main import main
from pneumoscan.data.label_policy import DEFAULTS, LabelPolicy, describe_policy, known_policies, policy_for
from pneumoscan.data.sources import available_sources, parse_data_options
from pneumoscan.errors import ConfigError


def test_every_registered_source_has_a_policy() -> None:
    sources = available_sources()
    assert set(sources) == {"kermany", "nih", "rsna", "mimic", "chexpert", "openi", "montgomery", "shenzhen", "jsrt",
                            "pneumoniamnist", "lungmasks", "rsna_adult"}
    assert set(sources) <= set(known_policies())
    for name in sources:
        policy = policy_for(name)
        assert json.loads(json.dumps(policy.to_dict()))["source"] == name
        assert policy.pneumonia and policy.normal and policy.excluded and policy.patient_ids


def test_policy_is_frozen() -> None:
    policy = policy_for("nih")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.views = "all"  # type: ignore[misc]
    assert isinstance(policy, LabelPolicy)


def test_defaults_and_switches() -> None:
    chexpert = policy_for("chexpert")
    assert (chexpert.views, chexpert.uncertain, chexpert.others) == (DEFAULTS["views"], "exclude", "exclude")
    assert "uncertain" in chexpert.excluded and "lateral" in chexpert.excluded
    pos = policy_for("chexpert", {"uncertain": "positive", "views": "all", "others": "negative"})
    assert "uncertain" in pos.pneumonia and "lateral" not in pos.excluded and pos.excluded == "nothing"
    assert "others=negative" in pos.normal
    rsna = policy_for("rsna")
    assert "Not Normal" in rsna.excluded and rsna.normal == "class 'Normal'" and "unknown" in rsna.patient_ids
    for holdout in ("montgomery", "shenzhen", "jsrt"):
        assert policy_for(holdout).pneumonia_labels is False
    assert policy_for("kermany").uncertain == "n/a"


def test_invalid_switch_value() -> None:
    with pytest.raises(ConfigError, match="exclude, positive, negative"):
        policy_for("mimic", {"uncertain": "maybe"})
    with pytest.raises(ConfigError):
        policy_for("unknown-source")


def test_not_applicable_switch_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pneumoscan.data.label_policy"):
        assert policy_for("nih", {"uncertain": "positive"}).uncertain == "n/a"
    assert "does not apply" in caplog.text


def test_describe_policy_for_specs(tmp_path) -> None:
    d = describe_policy("chexpert:/data/CheXpert-v1.0-small", {"uncertain": "positive"})
    assert d["source"] == "chexpert" and d["uncertain"] == "positive" and d["spec"].startswith("chexpert:")
    assert d["summary"].startswith("PNEUMONIA = ")
    assert describe_policy("nih")["source"] == "nih"
    assert describe_policy(tmp_path)["source"] == "folder"
    assert describe_policy(tmp_path / "manifest.csv")["source"] == "manifest"
    with pytest.raises(ConfigError):
        describe_policy("bogus:/data/x")
    json.dumps(d)


def test_parse_data_options() -> None:
    assert parse_data_options(["views=all", " uncertain = positive "]) == {"views": "all", "uncertain": "positive"}
    assert parse_data_options(None) == {}
    with pytest.raises(ConfigError):
        parse_data_options(["views"])


def test_cli_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    for name in available_sources():
        assert f"\n{name}: " in out
    assert main(["sources", "chexpert", "--json", "--data-option", "uncertain=negative"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["chexpert"] and data["chexpert"]["uncertain"] == "negative"
    assert main(["sources", "nope"]) == 2
