"""TrainConfig: one schema (training.options) checks YAML files, checkpoint configs and Python construction alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from pneumoscan.errors import ConfigError
from pneumoscan.training.config import SSL_AUGMENT, AugmentConfig, SSLConfig, TrainConfig, dump_config, load_config_file
from pneumoscan.training.options import options

REPO = Path(__file__).resolve().parents[2]


def from_yaml(text: str) -> TrainConfig:
    return TrainConfig.from_dict(yaml.safe_load(text))


@pytest.mark.parametrize(("text", "message"), [
    ("lr: abc", "lr: expected a number, got 'abc'"),
    ("precision: fp8", "precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
    ("epochs: 2.5", "epochs: expected an integer, got 2.5"),
    ("epochs: '2.5'", "epochs: expected an integer, got 2.5"),
    ("epochs: true", "epochs: expected an integer, got True"),
    ("epochs: 0", "epochs: must be >= 1, got 0"),
    ("learning_rate: 0.1", "unknown training option 'learning_rate' (did you mean 'lr'?)"),
    ("batchsize: 8", "unknown training option 'batchsize' (did you mean 'batch_size'?)"),
    ('pretrained: "true"', "pretrained: expected true or false, got 'true'"),
    ("pretrained: 1", "pretrained: expected true or false, got 1"),
    ("optimizer: rmsprop", "optimizer: 'rmsprop' is not one of adamw, adam, sgd"),
    ("model: 3", "model: expected a string, got 3"),
    ("data: [a, 1]", "data: expected a string or a list of strings, got ['a', 1]"),
    ("lr: .nan", "lr: expected a finite number, got nan"),
    ("target_sensitivity: 1", "target_sensitivity: must be > 0 and < 1, got 1"),
    ("augment: 3", "augment: expected a mapping of option: value, got 3"),
    ("augment: {rotaton: 3}", "unknown option 'augment.rotaton' (did you mean 'augment.rotation'?)"),
    ("augment: {hflip: 2}", "augment.hflip: must be >= 0 and <= 1, got 2"),
    ("augment: {zoom: abc}", "augment.zoom: expected a number, got 'abc'"),
    ("data_options: [a]", "data_options: expected a mapping of name: value, got ['a']"),
])
def test_wrong_values_are_one_line_naming_option_value_and_rule(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_yaml(text)
    assert str(info.value) == message


def test_unknown_key_without_a_close_one_lists_the_known() -> None:
    with pytest.raises(ConfigError) as info:
        from_yaml("zzz: 1\nlr: 0.1")
    message = str(info.value)
    assert message.startswith("unknown training option 'zzz'; known: data, model,") and "\n" not in message
    assert all(f.name in message for f in dataclasses.fields(TrainConfig))


def test_numbers_written_as_strings_are_read() -> None:
    """PyYAML reads ``1e-3`` (no dot) as a string; the command line gives strings: both are read as numbers."""
    assert yaml.safe_load("lr: 2e-3") == {"lr": "2e-3"}
    cfg = from_yaml("lr: 2e-3\nepochs: '12'\nweight_decay: 0\naugment: {rotation: '5'}")
    assert cfg.lr == 0.002 and isinstance(cfg.lr, float)
    assert cfg.epochs == 12 and isinstance(cfg.epochs, int)
    assert cfg.weight_decay == 0.0 and isinstance(cfg.weight_decay, float)
    assert cfg.augment.rotation == 5.0


def test_values_are_normalised_on_construction() -> None:
    cfg = TrainConfig(data=["a", "b"], epochs=np.int64(3), lr=np.float32(0.5), data_options={"size": 224})
    assert cfg.data == ("a", "b")
    assert type(cfg.epochs) is int and type(cfg.lr) is float
    assert cfg.data_options == {"size": "224"}
    assert TrainConfig.from_dict({"data": "a"}).data == ("a",)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^precision: 'fp8' is not one of auto, fp32, bf16, fp16$"):
        TrainConfig(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^augment\.rotation: must be >= 0, got -1$"):
        AugmentConfig(rotation=-1)
    with pytest.raises(ConfigError, match="choose one starting point"):
        TrainConfig(init_from="e.pt", pretrained=True)
    assert dataclasses.replace(TrainConfig(), augment=AugmentConfig().scaled(2.0)).augment.rotation == 20.0


def test_every_field_has_a_rule_and_its_default_passes() -> None:
    for cls, prefix in ((TrainConfig, ""), (AugmentConfig, "augment."), (SSLConfig, "")):
        for option in options(cls, prefix):
            assert option.check(option.default) == option.default, option.label


def _everything_changed() -> TrainConfig:
    return TrainConfig(
        data=("kermany:a", "b.csv"), model="cnn", image_size=96, epochs=3, batch_size=8, lr=2e-3, weight_decay=0.0,
        optimizer="sgd", scheduler="step", warmup_epochs=1, init_from="e.pt", freeze_backbone=True, drop_rate=0.2,
        balance="sampler", balance_sources=True, balance_groups=True, select_by="worst_group", intensity="clahe",
        label_smoothing=0.1, augment=AugmentConfig(rotation=3.5, gamma=0.3, text=0.3), mean=0.5, std=0.25,
        lung_crop=True, lung_margin=0.2, lung_dim=0.3, val_fraction=0.2, test_fraction=0.1, seed=7, patience=2,
        threshold_rule="sensitivity", target_sensitivity=0.9, precision="bf16", device="cpu", workers=2,
        max_train_images=0, max_train_per_source=10, max_val_per_source=5, precise_bn=64,
        data_options={"views": "all"}, leak_check="error")


def test_dumped_config_loads_back_equal(tmp_path: Path) -> None:
    cfg = _everything_changed()
    unchanged = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) == getattr(TrainConfig(), f.name)}
    assert unchanged == {"pretrained", "weights"}  # excluded by init_from
    dump_config(cfg, tmp_path / "config.yaml")
    assert TrainConfig.from_dict(load_config_file(tmp_path / "config.yaml")) == cfg
    dump_config(TrainConfig(), tmp_path / "default.yaml")
    assert TrainConfig.from_dict(load_config_file(tmp_path / "default.yaml")) == TrainConfig()


def test_the_tuned_config_in_the_repository_loads() -> None:
    """benchmarks/configs/tune-kermany-best.yaml was written by ``pneumoscan tune`` (before some options existed)."""
    cfg = TrainConfig.from_dict(load_config_file(REPO / "benchmarks" / "configs" / "tune-kermany-best.yaml"))
    assert (cfg.model, cfg.image_size, cfg.batch_size, cfg.max_train_images) == ("cnn", 96, 16, 1000)
    assert cfg.lr == pytest.approx(9.31e-4, rel=1e-3) and cfg.augment.rotation == pytest.approx(3.93, rel=1e-3)
    assert cfg.augment.gamma == 0.0 and cfg.select_by == "pooled"  # absent keys: the defaults


def test_bad_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- lr\n- 0.1\n")
    with pytest.raises(ConfigError, match="a config file must be a mapping"):
        load_config_file(path)


@pytest.mark.parametrize(("data", "message"), [
    ({"temperature": "abc"}, "temperature: expected a number, got 'abc'"),
    ({"temperature": 0}, "temperature: must be > 0, got 0"),
    ({"projection_dim": 2.5}, "projection_dim: expected an integer, got 2.5"),
    ({"hidden_dim": 0}, "hidden_dim: must be >= 1, got 0"),
    ({"probe": "false"}, "probe: expected true or false, got 'false'"),
    ({"temprature": 0.1}, "unknown pre-training option 'temprature' (did you mean 'temperature'?)"),
])
def test_ssl_config_wrong_values_are_one_line_naming_the_option(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SSLConfig.from_dict(data)
    assert str(info.value) == message


def test_ssl_config_defaults_and_record_round_trip() -> None:
    """The defaults pretrain has always used, and the ``ssl`` record a run stores (``asdict``) builds it back."""
    ssl = SSLConfig()
    assert (ssl.temperature, ssl.projection_dim, ssl.hidden_dim, ssl.probe) == (0.2, 128, 512, True)
    changed = SSLConfig(temperature="0.5", projection_dim=np.int64(64), hidden_dim=256, probe=False)
    assert type(changed.temperature) is float and type(changed.projection_dim) is int
    assert SSLConfig.from_dict(dataclasses.asdict(changed)) == changed
    with pytest.raises(ConfigError, match=r"^temperature: must be > 0, got -1$"):
        SSLConfig(temperature=-1)
    assert SSL_AUGMENT == AugmentConfig(rotation=15.0, hflip=0.5, zoom=0.5, translate=0.1, brightness=0.3,
                                        contrast=0.4)
