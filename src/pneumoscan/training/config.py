"""Training configuration: one frozen dataclass, validated on construction, dumped to the run folder and embedded
in every checkpoint. YAML files (``--config``, and what ``pneumoscan tune`` writes) only supply values.

Every option is declared once, as a field with its metadata (:func:`pneumoscan.training.options.opt`): the same
declaration checks values from YAML, checkpoints and Python, and generates the ``pneumoscan train`` flags
(:func:`pneumoscan.training.options.add_options`). :class:`SSLConfig` (the options of ``pneumoscan pretrain`` on top of
these) is declared the same way; this module imports no torch, so ``--help`` does not load it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pneumoscan.core.atomic import atomic_write_text
from pneumoscan.errors import ConfigError
from pneumoscan.models.precision import Precision
from pneumoscan.training.options import build, opt, validate

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "plateau", "constant")
BALANCE = ("loss", "sampler", "none")
THRESHOLD_RULES = ("youden", "max_f1", "sensitivity", "fixed")
SELECT_BY = ("pooled", "worst_source", "worst_group")
INTENSITY = ("none", "equalize", "clahe")
LEAK_CHECK = ("warn", "error", "off")


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
    carry label information. They default to 0 (off), which keeps every earlier recipe unchanged. The ``--help``
    texts of the ``--aug-*`` flags are the lines above; the bounds are in the fields' metadata.
    """

    rotation: float = field(default=10.0, metadata=opt(ge=0))
    hflip: float = field(default=0.5, metadata=opt(ge=0, le=1))
    zoom: float = field(default=0.15, metadata=opt(ge=0, lt=1))
    translate: float = field(default=0.05, metadata=opt(ge=0))
    brightness: float = field(default=0.1, metadata=opt(ge=0))
    contrast: float = field(default=0.1, metadata=opt(ge=0))
    gamma: float = field(default=0.0, metadata=opt(ge=0))
    blur: float = field(default=0.0, metadata=opt(ge=0))
    noise: float = field(default=0.0, metadata=opt(ge=0))
    jpeg: float = field(default=0.0, metadata=opt(ge=0, le=1))
    downscale: float = field(default=0.0, metadata=opt(ge=0, lt=1))
    text: float = field(default=0.0, metadata=opt(ge=0, le=1))

    def __post_init__(self) -> None:
        validate(self, prefix="augment.")

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


#: ``--aug-acquisition``: moderate imitation of other scanners and sites (each part applied to half the images).
ACQUISITION_PRESET = {"gamma": 0.3, "blur": 1.0, "noise": 0.03, "jpeg": 0.5, "downscale": 0.5, "text": 0.3}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; each field is one ``pneumoscan train`` option (``--help``)."""

    data: tuple[str, ...] = field(default=(), metadata=opt(
        "folder ({train,val,test}/{NORMAL,PNEUMONIA}), manifest CSV or FORMAT:PATH; repeatable", metavar="SPEC"))
    model: str = field(default="resnet18", metadata=opt("architecture (see `pneumoscan models`)"))
    image_size: int = field(default=224, metadata=opt("square input size in pixels"))
    epochs: int = field(default=10, metadata=opt("maximum epochs", ge=1, aka=("epoch", "n_epochs")))
    batch_size: int = field(default=32, metadata=opt("images per step", ge=1))
    lr: float = field(default=1e-3, metadata=opt("learning rate", gt=0, aka=("learning_rate",)))
    weight_decay: float = field(default=1e-4, metadata=opt("weight decay of the optimizer", ge=0))
    optimizer: str = field(default="adamw", metadata=opt("optimizer", choices=OPTIMIZERS))
    scheduler: str = field(default="cosine", metadata=opt("learning-rate schedule", choices=SCHEDULERS))
    warmup_epochs: int = field(default=0, metadata=opt("epochs of learning-rate warm-up"))
    pretrained: bool = field(default=False, metadata=opt("start from ImageNet weights"))
    weights: str | None = field(default=None, metadata=opt("local ImageNet weights file for --pretrained (offline)"))
    init_from: str | None = field(default=None, metadata=opt(
        "start from these weights: encoder.pt from `pneumoscan pretrain`, or a pneumoscan checkpoint of the same "
        "architecture (the classifier is re-initialised when it does not fit)", metavar="FILE"))
    freeze_backbone: bool = field(default=False, metadata=opt("train only the classifier head"))
    drop_rate: float = field(default=0.0, metadata=opt("dropout rate before the classifier"))
    balance: str = field(default="loss", metadata=opt("class imbalance: weighted loss, sampler or none",
                                                      choices=BALANCE))
    balance_sources: bool = field(default=False, metadata=opt("sample every --data source equally often"))
    balance_groups: bool = field(default=False, metadata=opt(
        "sample so that within every source × view cell NORMAL and PNEUMONIA are equally frequent (no acquisition "
        "cue predicts the label in training)"))
    select_by: str = field(default="pooled", metadata=opt(
        "early stopping / best checkpoint by the validation ROC-AUC pooled, of the worst source, or of the worst "
        "acquisition group (view:PA, view:AP, source:<no-view source>)", choices=SELECT_BY))
    intensity: str = field(default="none", metadata=opt(
        "per-image intensity standardisation, recorded in the checkpoint and applied by predict, serve and ONNX: "
        "none, equalize (histogram) or clahe", choices=INTENSITY))
    label_smoothing: float = field(default=0.0, metadata=opt("label smoothing of the loss"))
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata=opt(prefix="aug", aka=("augmentation",)))
    mean: float | None = field(default=None, metadata=opt("input normalisation mean (default: by pretrained or not)"))
    std: float | None = field(default=None, metadata=opt(
        "input normalisation standard deviation (default: by pretrained or not)"))
    lung_crop: bool = field(default=False, metadata=opt(
        "crop every image to its lung fields (shipped lung U-Net) before resizing; recorded in the checkpoint, so "
        "predict/evaluate/serve crop the same way (images without lungs are used whole)"))
    lung_margin: float = field(default=0.1, metadata=opt(
        "with --lung-crop: margin around the lung box, fraction of its width/height", ge=0, le=1))
    lung_dim: float = field(default=0.0, metadata=opt(
        "with --lung-crop: darken what lies outside the lungs (0 = off; 1 = black)", ge=0, le=1))
    val_fraction: float = field(default=0.15, metadata=opt("share of train patients held out for validation"))
    test_fraction: float = field(default=0.15, metadata=opt("share carved as test when the data has no test split"))
    seed: int = field(default=0, metadata=opt("random seed (split, initialisation, sampling)"))
    patience: int = field(default=5, metadata=opt("early stopping: epochs without val ROC-AUC gain"))
    threshold_rule: str = field(default="youden", metadata=opt("how the default threshold is chosen on val",
                                                               choices=THRESHOLD_RULES))
    target_sensitivity: float = field(default=0.95, metadata=opt("for --threshold-rule sensitivity", gt=0, lt=1))
    precision: Precision = field(default="auto", metadata=opt("autocast (auto: by hardware)"))
    device: str = field(default="auto", metadata=opt("auto, cpu or cuda[:N]"))
    workers: int = field(default=0, metadata=opt("decode processes for the image cache (0 = all cores)"))
    max_train_images: int | None = field(default=None, metadata=opt(
        "train on a random subset (quick experiments); 0 = all images"))
    max_train_per_source: int | None = field(default=None, metadata=opt(
        "at most N training images of every source (random, same label mix; short experiments)", metavar="N"))
    max_val_per_source: int | None = field(default=None, metadata=opt(
        "at most N validation images of every source", metavar="N"))
    precise_bn: int = field(default=0, metadata=opt(
        "before each validation, recompute BatchNorm statistics as an exact average over N training images (fixes "
        "lagging statistics of briefly trained networks; 0 = off)", metavar="N", ge=0))
    data_options: dict[str, str] = field(default_factory=dict, metadata=opt(
        "loader / label-policy option, e.g. uncertain=positive, views=all (repeatable)", flag="--data-option",
        metavar="KEY=VALUE"))
    leak_check: str = field(default="warn", metadata=opt("train/test shared patients or images", choices=LEAK_CHECK))

    def __post_init__(self) -> None:
        validate(self)  # types, choices and bounds of every field, as declared above
        if self.init_from and (self.pretrained or self.weights):
            raise ConfigError("choose one starting point: --init-from or --pretrained/--weights")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"] = list(self.data)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from plain values (a YAML file, a checkpoint's ``config``, the command line): unknown keys and wrong
        types or values are a one-line :class:`ConfigError` naming the option (:mod:`pneumoscan.training.options`)."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training config must be a mapping of option: value, not {type(data).__name__}")
        return build(cls, data, what="training option")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: The augmentation of ``pneumoscan pretrain`` unless flags change it. Views for contrastive learning must differ much
#: more than supervised augmentation would make them: large crops, stronger intensity changes (SimCLR's ablations:
#: crop + colour distortion carry most of the benefit).
SSL_AUGMENT = AugmentConfig(rotation=15.0, hflip=0.5, zoom=0.5, translate=0.1, brightness=0.3, contrast=0.4)


@dataclass(frozen=True)
class SSLConfig:
    """Self-supervised (SimCLR) options of ``pneumoscan pretrain``, on top of the data/model/optimiser fields of
    :class:`TrainConfig`; each field is one ``pneumoscan pretrain`` flag (``--help``).

    Attributes:
        temperature: softmax temperature of the NT-Xent loss (0.1–0.5 in the SimCLR paper; lower is sharper).
        projection_dim: output size of the projection head (discarded after pre-training).
        hidden_dim: hidden size of the projection head.
        probe: fit a logistic-regression linear probe on the frozen features at the end and report its validation
            ROC-AUC (labels are used only for this report, never for the weights).
    """

    temperature: float = field(default=0.2, metadata=opt("NT-Xent temperature", gt=0))
    projection_dim: int = field(default=128, metadata=opt("output size of the projection head", ge=1))
    hidden_dim: int = field(default=512, metadata=opt("hidden size of the projection head", ge=1))
    probe: bool = field(default=True, metadata=opt("skip the linear probe at the end"))  # the flag is --no-probe

    def __post_init__(self) -> None:
        validate(self)  # types and bounds, as declared above

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSLConfig:
        """Build from plain values (the command line, a run's ``ssl`` record): unknown keys and wrong types or
        values are a one-line :class:`ConfigError` naming the option."""
        return build(cls, data, what="pre-training option")


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
