"""Training configuration: one frozen dataclass, validated on construction, dumped to the run folder and embedded
in every checkpoint. YAML files (``--config``, and what ``pneumoscan tune`` writes) only supply values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pneumoscan.core.atomic import atomic_write_text
from pneumoscan.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "plateau", "constant")
BALANCE = ("loss", "sampler", "none")
THRESHOLD_RULES = ("youden", "max_f1", "sensitivity", "fixed")
SELECT_BY = ("pooled", "worst_source", "worst_group")
INTENSITY = ("none", "equalize", "clahe")


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation; each part is switched off by setting it to 0.

    Attributes:
        rotation: maximum rotation in degrees (uniform in ±rotation).
        hflip: probability of a horizontal flip.
        zoom: maximum zoom in as a fraction (random resized crop covering 1 − zoom … 1 of the side).
        translate: maximum shift as a fraction of the side.
        brightness: maximum additive brightness change (fraction of the range).
        contrast: maximum multiplicative contrast change (fraction).
        gamma: acquisition: maximum |log γ| of a random gamma curve (0.3 → γ in [0.74, 1.35]).
        blur: acquisition: maximum Gaussian blur sigma in pixels of the model input.
        noise: acquisition: maximum standard deviation of additive Gaussian noise (fraction of the range).
        jpeg: acquisition: probability of a JPEG re-encoding at a random quality between 20 and 90.
        downscale: acquisition: maximum loss of resolution: down-sampled to a side of (1 − downscale … 1) and back.
        text: acquisition: probability of burning in a random text marker ("PORTABLE", "AP", "L", a date, ...).

    The acquisition augmentations imitate other scanners and sites; each is applied to an image with probability 0.5
    (``jpeg`` and ``text``: with their own probability), independently of the label, so that none of these cues can
    carry label information. They default to 0 (off), which keeps every earlier recipe unchanged.
    """

    rotation: float = 10.0
    hflip: float = 0.5
    zoom: float = 0.15
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0
    downscale: float = 0.0
    text: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise ConfigError(f"augment.{f.name} must be >= 0")
        if self.hflip > 1 or self.zoom >= 1:
            raise ConfigError("augment.hflip must be <= 1 and augment.zoom < 1")
        if self.jpeg > 1 or self.text > 1 or self.downscale >= 1:
            raise ConfigError("augment.jpeg and augment.text are probabilities (<= 1); augment.downscale must be < 1")

    @property
    def acquisition(self) -> bool:
        """Whether any scanner/site augmentation is on."""
        return any((self.gamma, self.blur, self.noise, self.jpeg, self.downscale, self.text))

    def scaled(self, strength: float) -> AugmentConfig:
        """All geometric/intensity magnitudes multiplied by ``strength`` (used by tuning); acquisition ones kept."""
        return dataclasses.replace(self, rotation=self.rotation * strength,
                                   hflip=min(1.0, self.hflip * min(strength, 1.0)), zoom=min(0.5, self.zoom * strength),
                                   translate=self.translate * strength, brightness=self.brightness * strength,
                                   contrast=self.contrast * strength)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. See ``pneumoscan train --help`` for each option."""

    data: tuple[str, ...] = ()
    model: str = "resnet18"
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    pretrained: bool = False
    weights: str | None = None
    init_from: str | None = None
    freeze_backbone: bool = False
    drop_rate: float = 0.0
    balance: str = "loss"
    balance_sources: bool = False
    balance_groups: bool = False
    select_by: str = "pooled"
    intensity: str = "none"
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: float | None = None
    std: float | None = None
    lung_crop: bool = False
    lung_margin: float = 0.1
    lung_dim: float = 0.0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    patience: int = 5
    threshold_rule: str = "youden"
    target_sensitivity: float = 0.95
    precision: str = "auto"
    device: str = "auto"
    workers: int = 0
    max_train_images: int | None = None
    max_train_per_source: int | None = None
    max_val_per_source: int | None = None
    precise_bn: int = 0
    data_options: dict[str, str] = field(default_factory=dict)
    leak_check: str = "warn"

    def __post_init__(self) -> None:
        def one_of(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise ConfigError(f"{name} '{getattr(self, name)}' is not valid; choose from {', '.join(options)}")

        one_of("optimizer", OPTIMIZERS)
        one_of("scheduler", SCHEDULERS)
        one_of("balance", BALANCE)
        one_of("threshold_rule", THRESHOLD_RULES)
        one_of("select_by", SELECT_BY)
        one_of("intensity", INTENSITY)
        one_of("leak_check", ("warn", "error", "off"))
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ConfigError("lr must be > 0 and weight_decay >= 0")
        if self.init_from and (self.pretrained or self.weights):
            raise ConfigError("choose one starting point: --init-from or --pretrained/--weights")
        if self.precise_bn < 0:
            raise ConfigError("precise_bn must be >= 0 (number of training images; 0 = off)")
        if not 0 < self.target_sensitivity < 1:
            raise ConfigError("target_sensitivity must be between 0 and 1")
        if not (0 <= self.lung_margin <= 1 and 0 <= self.lung_dim <= 1):
            raise ConfigError("lung_margin and lung_dim must be between 0 and 1")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"] = list(self.data)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from plain values (a YAML file, a checkpoint's ``config``), checking each value's type first so that
        a wrong type is a :class:`ConfigError` naming the option, never a ``TypeError`` from deep inside."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training config must be a mapping of option: value, not {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {name: _typed(name, known[name].type, value) for name, value in data.items() if name != "augment"}
        if "augment" in data:
            aug = data["augment"]
            if isinstance(aug, AugmentConfig):
                values["augment"] = aug
            else:
                if not isinstance(aug, dict):
                    raise ConfigError(f"augment must be a mapping of option: number, not {type(aug).__name__}")
                aug_fields = {f.name: f for f in dataclasses.fields(AugmentConfig)}
                bad = sorted(str(k) for k in set(aug) - set(aug_fields))
                if bad:
                    raise ConfigError(f"unknown augment option(s): {', '.join(bad)}; known: "
                                      f"{', '.join(sorted(aug_fields))}")
                values["augment"] = AugmentConfig(**{k: _typed(f"augment.{k}", aug_fields[k].type, v)
                                                     for k, v in aug.items()})
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _typed(name: str, annotation: object, value: Any) -> Any:
    """``value`` checked against a field annotation (as written: ``int``, ``float | None``, ``tuple[str, ...]``, ...).

    Ints are accepted for floats; bools never count as numbers; ``data`` may be one string or a list of strings.
    """
    kind = str(annotation).replace(" ", "")
    optional = kind.endswith("|None")
    base = kind.removesuffix("|None")
    if value is None and optional:
        return None

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{name} must be {expected}, not {value!r:.60}")

    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
            raise bad("a number")
        return float(value)
    if base == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if base == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if base == "tuple[str,...]":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise bad("a string or a list of strings")
        return tuple(items)
    if base == "dict[str,str]":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad("a mapping of name: value")
        return {k: str(v) for k, v in value.items()}
    return value  # pragma: no cover - a field type added without a rule here


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (values only; never code)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of option: value")
    return data


def dump_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
