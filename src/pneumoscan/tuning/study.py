"""Hyperparameter search: an Optuna study over the training configuration, scored on validation ROC-AUC only.

Why it is built this way:

- **Validation only.** Every trial trains on the train part and is scored on the patient-grouped validation split
  that :func:`pneumoscan.training.setup.prepare_data` carves out of it; the test split is never decoded here. All
  trials use the base configuration's ``seed`` and fractions, so they all see the *same* split and their scores are
  comparable — and ``pneumoscan train --config best_config.yaml`` re-creates that split.
- **Resumable.** The study lives in SQLite (``DIR/study.db`` by default) and is opened with ``load_if_exists``:
  re-running the same command continues it and only runs the trials still missing (``--trials`` is the total of
  finished — complete or pruned — trials). A process killed mid-trial leaves that trial RUNNING in the database;
  on the next start such trials are marked FAIL when their process is gone (:func:`fail_stale_trials`), so they
  neither count as finished nor linger as running. The sampler is re-seeded with ``seed + number of trials`` so a
  resumed study does not replay the random start-up trials of the first run.
- **Pruning.** :class:`PruningCallback` (an epoch callback of the training loop) reports the validation ROC-AUC
  after every epoch; the pruner (median by
  default) stops trials that are doing worse than the others at the same epoch, which is where most of the time of a
  search on a 2-core CPU would otherwise go.
- **Decode once.** The decoded images are cached on disk per image size (:mod:`pneumoscan.data.cache`, shared by all
  trials and later runs) and kept in memory per image size for the life of the process.

Output folder::

    study.db            the Optuna study (default storage)
    splits.csv          the split every trial used
    trials/NNNN/        one run folder per trial (config.yaml, data.json, metrics.csv, summary.json, ...); best.pt
                        is kept for the best trial only (``keep_checkpoints`` keeps all), last.pt never
    trials.csv          every trial: state, value, parameters, epochs, duration
    best_config.yaml    the best trial's TrainConfig without ``data``: ``pneumoscan train --config`` accepts it
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from pneumoscan import __version__
from pneumoscan.core.atomic import atomic_write_text
from pneumoscan.data.splits import save_splits
from pneumoscan.errors import ConfigError, DataError, require
from pneumoscan.models.hardware import Hardware, resolve_hardware
from pneumoscan.models.registry import get_spec
from pneumoscan.training.config import OPTIMIZERS, TrainConfig, dump_config
from pneumoscan.training.distributed import DistInfo
from pneumoscan.training.finalize import finalize_run
from pneumoscan.training.setup import build_trainer, prepare_data
from pneumoscan.training.trainer import PreparedData, Trainer

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

DEFAULT_STUDY_NAME = "pneumoscan"
DEFAULT_EPOCHS_PER_TRIAL = 3
PRUNERS = ("median", "hyperband", "none")
STUDY_DB = "study.db"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.yaml"
PARAM_NAMES = ("model", "image_size", "batch_size", "optimizer", "lr", "weight_decay", "augment_strength")
# A RUNNING trial that never recorded its process is stale once it is this old (it dies within seconds otherwise).
STALE_WITHOUT_WORKER = timedelta(minutes=10)
# Base-config keys that may differ between the runs of one study: they change where it runs, not what it learns.
RESUME_MAY_DIFFER = ("device", "workers")


def _optuna() -> Any:
    """Optuna, imported on first use: it is an optional extra (``pneumoscan[tune]``)."""
    return require("optuna", "tune")


# --------------------------------------------------------------------------------------------- search space ---

@dataclass(frozen=True)
class SearchSpace:
    """What a study searches. A dimension with one choice (or ``low == high``) is fixed, not searched.

    Attributes:
        models: architectures (registry names).
        image_sizes: square input sizes in pixels.
        batch_sizes: batch sizes.
        optimizers: optimizer names.
        lr: learning-rate range, searched on a log scale.
        weight_decay: weight-decay range, log scale (linear when it includes 0).
        augment_strength: factor applied to the base augmentation with :meth:`AugmentConfig.scaled` (0 = off).
    """

    models: tuple[str, ...] = ("cnn", "resnet18", "efficientnet_lite0")
    image_sizes: tuple[int, ...] = (128, 192, 224)
    batch_sizes: tuple[int, ...] = (16, 32, 64)
    optimizers: tuple[str, ...] = OPTIMIZERS
    lr: tuple[float, float] = (1e-5, 1e-2)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    augment_strength: tuple[float, float] = (0.0, 2.0)

    def __post_init__(self) -> None:
        for name in ("models", "image_sizes", "batch_sizes", "optimizers"):
            if not getattr(self, name):
                raise ConfigError(f"search space: {name} is empty")
        for model in self.models:
            get_spec(model)  # raises ModelNotFoundError listing the architectures
        bad = [o for o in self.optimizers if o not in OPTIMIZERS]
        if bad:
            raise ConfigError(f"search space: unknown optimizer(s) {', '.join(bad)}; "
                              f"choose from {', '.join(OPTIMIZERS)}")
        if any(not 16 <= s <= 2048 for s in self.image_sizes) or any(b < 1 for b in self.batch_sizes):
            raise ConfigError("search space: image sizes must be 16..2048 and batch sizes at least 1")
        for name in ("lr", "weight_decay", "augment_strength"):
            low, high = getattr(self, name)
            if not 0 <= low <= high or (name == "lr" and low <= 0):
                raise ConfigError(f"search space: {name} range must be 0 <= low <= high (lr > 0), got {low}, {high}")

    def check_base(self, base: TrainConfig) -> None:
        """Refuse combinations that would fail in every trial, before the first one starts."""
        if base.pretrained or base.weights:
            scratch = [m for m in self.models if get_spec(m).timm_name is None]
            if scratch:
                raise ConfigError(f"model(s) {', '.join(scratch)} have no ImageNet weights; leave them out of "
                                  "--models or drop --pretrained")
        if base.weights and len(self.models) > 1:
            raise ConfigError("--weights is one architecture's file: tune a single --model with it")

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw one configuration from ``trial``; keys are :data:`PARAM_NAMES`."""
        return {
            "model": trial.suggest_categorical("model", list(self.models)),
            "image_size": trial.suggest_categorical("image_size", list(self.image_sizes)),
            "batch_size": trial.suggest_categorical("batch_size", list(self.batch_sizes)),
            "optimizer": trial.suggest_categorical("optimizer", list(self.optimizers)),
            "lr": _suggest_range(trial, "lr", self.lr),
            "weight_decay": _suggest_range(trial, "weight_decay", self.weight_decay),
            "augment_strength": _suggest_range(trial, "augment_strength", self.augment_strength, log=False),
        }

    def to_dict(self) -> dict[str, list[Any]]:
        """JSON-ready form, stored with the study so that a resume with another space is refused."""
        return {k: list(v) for k, v in asdict(self).items()}


def _suggest_range(trial: optuna.Trial, name: str, bounds: tuple[float, float], log: bool = True) -> float:
    low, high = bounds
    return float(trial.suggest_float(name, low, high, log=log and 0 < low < high))


def apply_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The training configuration of one trial: the base with the drawn parameters put in."""
    return base.replace(model=params["model"], image_size=int(params["image_size"]),
                        batch_size=int(params["batch_size"]), optimizer=params["optimizer"], lr=float(params["lr"]),
                        weight_decay=float(params["weight_decay"]),
                        augment=base.augment.scaled(float(params["augment_strength"])))


# ------------------------------------------------------------------------------------------------- trials ---

class PruningCallback:
    """An epoch callback of :class:`~pneumoscan.training.trainer.Trainer` that reports validation ROC-AUC to an Optuna
    trial after every epoch and raises ``optuna.TrialPruned`` when the pruner says so (the trial ends PRUNED, its run
    is not finalized). Everything else (checkpoints, metrics.csv, early stopping) is the loop's."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        optuna = _optuna()
        value = float(metrics["val_roc_auc"])
        if not math.isfinite(value):  # diverged (non-finite logits) or a one-class validation split
            self.trial.set_user_attr("note", f"validation ROC-AUC not finite at epoch {epoch + 1}")
            raise optuna.TrialPruned(f"validation ROC-AUC is not finite at epoch {epoch + 1}")
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("note", f"pruned after epoch {epoch + 1} (val ROC-AUC {value:.4f})")
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} (val ROC-AUC {value:.4f})")


def trial_dir(output: Path, number: int) -> Path:
    return output / TRIALS_DIR / f"{number:04d}"


def worker_id() -> str:
    """``host:pid`` of this process, stored with each trial so that a later run can tell whether it is still alive."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _DataProvider:
    """Prepared train/val data per image size: decoded once (disk cache), then reused by every trial."""

    def __init__(self, output: Path, cache_dir: Path | None) -> None:
        self.output, self.cache_dir = output, cache_dir
        self._prepared: dict[int, PreparedData] = {}

    def get(self, cfg: TrainConfig) -> PreparedData:
        if cfg.image_size not in self._prepared:
            data = prepare_data(cfg, self.cache_dir)
            if not (self.output / "splits.csv").is_file():
                save_splits(data.splits, self.output / "splits.csv")
            self._prepared[cfg.image_size] = data
        return self._prepared[cfg.image_size]


class _Objective:
    """One trial: draw parameters, train with pruning, finalize the run folder, return the best val ROC-AUC."""

    def __init__(self, base: TrainConfig, space: SearchSpace, output: Path, hw: Hardware, study_name: str,
                 cache_dir: Path | None) -> None:
        self.base, self.space, self.output, self.hw, self.study_name = base, space, output, hw, study_name
        self.data = _DataProvider(output, cache_dir)

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = apply_params(self.base, self.space.suggest(trial))
        run_dir = trial_dir(self.output, trial.number)
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("run_dir", str(run_dir.relative_to(self.output)))
        trial.set_user_attr("config", cfg.to_dict())
        data = self.data.get(cfg)
        self._start_run_dir(run_dir, cfg, data, trial.number)
        trainer = build_trainer(cfg, run_dir, data, self.hw, DistInfo(), callbacks=[PruningCallback(trial)])
        started = time.perf_counter()
        try:
            trainer.run()
        finally:
            trial.set_user_attr("epochs_run", len(trainer.history))
        finalize_run(run_dir, data, trainer, wall_seconds=time.perf_counter() - started)
        return float(trainer.best_auc)

    def _start_run_dir(self, run_dir: Path, cfg: TrainConfig, data: PreparedData, number: int) -> None:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir} already holds a run that is not part of study '{self.study_name}' "
                              "(was study.db removed?); use another --output")
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
        info = {**data.info, "hardware": self.hw.description, "world_size": 1, "pneumoscan": __version__,
                "torch": torch.__version__, "study": self.study_name, "trial": number,
                "splits_file": str(self.output / "splits.csv")}
        atomic_write_text(run_dir / "data.json", json.dumps(info, indent=2, default=str))


# ----------------------------------------------------------------------------------------- study handling ---

def default_storage(output: Path) -> str:
    """``sqlite:///<absolute DIR>/study.db``: absolute, so the study is found from any working directory."""
    return f"sqlite:///{(output / STUDY_DB).resolve()}"


def make_pruner(name: str | Any, epochs: int) -> Any:
    """A pruner by name (``median``, ``hyperband``, ``none``), or an Optuna pruner object passed through.

    The median pruner waits for 3 finished trials and never prunes after the first epoch, whose score mostly reflects
    the learning-rate warm-up; Hyperband uses the epochs as its resource.
    """
    optuna = _optuna()
    if not isinstance(name, str):
        return name
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner '{name}'; choose from {', '.join(PRUNERS)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our pid, reused: the process that ran the trial has ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(trial: optuna.trial.FrozenTrial, now: datetime) -> bool:
    """Whether a RUNNING trial's process is gone. Trials run on another host are left alone: we cannot tell."""
    worker = trial.user_attrs.get("worker")
    if worker is None:
        started = trial.datetime_start
        return started is None or now - started > STALE_WITHOUT_WORKER
    host, _, pid = str(worker).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose process has died (killed mid-trial) as FAIL; returns their numbers.

    Optuna leaves a trial RUNNING when its process is killed. Without this, ``trials.csv`` would show it running
    forever. A trial that another live process (on this host) is running, or one from another host, is left as is.
    """
    optuna = _optuna()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    failed = []
    now = datetime.now()
    for trial in running:
        if _is_stale(trial, now):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed.append(trial.number)
        else:
            logger.warning("trial %d is RUNNING in another process (%s); leaving it", trial.number,
                           trial.user_attrs.get("worker", "unknown"))
    if failed:
        logger.warning("marked %d interrupted trial(s) as failed: %s", len(failed), ", ".join(map(str, failed)))
        earlier = list(study.user_attrs.get("interrupted_trials", []))
        study.set_user_attr("interrupted_trials", sorted(set(earlier + failed)))
    return failed


def _check_same_study(study: optuna.Study, space: SearchSpace, base: TrainConfig, output: Path) -> None:
    """Record the search space and base config with a new study; refuse to resume one with different ones.

    Trials of one study must be comparable (same data, same split, same budget) and Optuna rejects a parameter whose
    choices changed, so a changed command gets a clear error instead of a mixed study.
    """
    stored_space, stored_base = study.user_attrs.get("search_space"), study.user_attrs.get("base_config")
    base_dict = json.loads(json.dumps(base.to_dict()))
    if stored_space is None:
        folder = output / TRIALS_DIR
        if study.trials or (folder.is_dir() and any(folder.iterdir())):
            raise ConfigError(f"{folder} holds trials of another study; use another --output for study "
                              f"'{study.study_name}'")
        study.set_user_attr("search_space", space.to_dict())
        study.set_user_attr("base_config", base_dict)
        return
    problems = [f"search space {k}: {stored_space.get(k)} -> {v}" for k, v in space.to_dict().items()
                if stored_space.get(k) != v]
    problems += [f"{k}: {stored_base.get(k)!r} -> {v!r}" for k, v in base_dict.items()
                 if k not in RESUME_MAY_DIFFER and stored_base.get(k) != v]
    if problems:
        raise ConfigError(f"study '{study.study_name}' was started with other settings ({'; '.join(problems)}); "
                          "run the same command to resume it, or choose another --study-name/--output")


def _finished_states() -> tuple[Any, ...]:
    state = _optuna().trial.TrialState
    return (state.COMPLETE, state.PRUNED)


# ------------------------------------------------------------------------------------------------ outputs ---

@dataclass
class StudyResult:
    """What a call to :func:`run_study` did and where the study stands."""

    study_name: str
    storage: str
    output: Path
    counts: dict[str, int]
    ran: int
    stale_failed: list[int] = field(default_factory=list)
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_config: Path | None = None
    trials_csv: Path | None = None

    def summary_lines(self) -> list[str]:
        """A short human summary (printed by ``pneumoscan tune``)."""
        counts = ", ".join(f"{v} {k.lower()}" for k, v in self.counts.items() if v)
        lines = [f"study '{self.study_name}' ({self.storage}): {sum(self.counts.values())} trials ({counts or 'none'});"
                 f" {self.ran} run now"]
        if self.stale_failed:
            lines.append(f"interrupted trials marked failed: {', '.join(map(str, self.stale_failed))}")
        if self.best_number is None:
            lines.append("no trial has completed yet: no best configuration")
            return lines
        params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in self.best_params.items())
        lines += [f"best: trial {self.best_number}, validation ROC-AUC {self.best_value:.4f} ({params})",
                  f"best config: {self.best_config}", f"all trials: {self.trials_csv}",
                  f"train it: pneumoscan train --config {self.best_config} --data SPEC --output runs/best"]
        return lines


def _fmt_param(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the highest value (lowest number on ties), or None."""
    complete = study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.COMPLETE,))
    complete = [t for t in complete if t.value is not None and math.isfinite(t.value)]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def write_best_config(study: optuna.Study, path: Path) -> Path | None:
    """Write the best trial's TrainConfig (without ``data``) as YAML; None when no trial has completed."""
    best = best_trial(study)
    if best is None or "config" not in best.user_attrs:
        return None
    values = TrainConfig.from_dict(best.user_attrs["config"]).to_dict()  # validates what the trial stored
    values.pop("data")
    header = (f"# pneumoscan tune: best of study '{study.study_name}', trial {best.number}, "
              f"validation ROC-AUC {best.value:.4f} after {best.user_attrs.get('epochs_run', '?')} epoch(s).\n"
              f"# epochs and max_train_images are the tuning budget; raise them for the final run, e.g.\n"
              f"#   pneumoscan train --config {path.name} --data SPEC --epochs 20 --max-train-images 0 --output DIR\n")
    atomic_write_text(path, header + yaml.safe_dump(values, sort_keys=False))
    return path


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """Every trial with its state, value, parameters, epochs run, duration and run folder."""
    trials = study.get_trials(deepcopy=False)
    extra = sorted({k for t in trials for k in t.params} - set(PARAM_NAMES))
    params = [*PARAM_NAMES, *extra]
    interrupted = set(study.user_attrs.get("interrupted_trials", []))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", "epochs_run", "duration_s", "started", *params, "run_dir", "note"])
    for t in trials:
        duration = t.duration.total_seconds() if t.duration is not None else None
        writer.writerow([t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}",
                         t.user_attrs.get("epochs_run", ""), "" if duration is None else f"{duration:.1f}",
                         t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else "",
                         *(t.params.get(p, "") for p in params), t.user_attrs.get("run_dir", ""),
                         _note(t, interrupted)])
    atomic_write_text(path, buf.getvalue())
    return path


def _note(trial: optuna.trial.FrozenTrial, interrupted: set[int]) -> str:
    if trial.number in interrupted:
        return "interrupted: its process ended mid-trial; marked failed on resume"
    if trial.state.name == "FAIL" and not trial.user_attrs.get("note"):
        return "failed: see the log of the run that ran it"
    return str(trial.user_attrs.get("note", ""))


def remove_checkpoints(study: optuna.Study, output: Path, keep_all: bool) -> None:
    """Delete ``last.pt`` of finished trials (tuning never resumes a trial) and ``best.pt`` of all but the best.

    A ResNet-18 trial leaves ~90 MB of checkpoints; fifty trials would fill a small disk. Trials still running are
    not touched.
    """
    best = best_trial(study)
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING" or "run_dir" not in t.user_attrs:
            continue
        folder = output / t.user_attrs["run_dir"]
        (folder / "last.pt").unlink(missing_ok=True)
        if not keep_all and (best is None or t.number != best.number):
            (folder / "best.pt").unlink(missing_ok=True)


def write_outputs(study: optuna.Study, output: Path, keep_checkpoints: bool = False) -> None:
    """Refresh trials.csv, best_config.yaml and the checkpoints; called after every trial and at the end."""
    write_trials_csv(study, output / TRIALS_CSV)
    write_best_config(study, output / BEST_CONFIG)
    remove_checkpoints(study, output, keep_checkpoints)


def _result(study: optuna.Study, output: Path, storage: str, ran: int, stale: list[int]) -> StudyResult:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    result = StudyResult(study.study_name, storage, output, counts, ran, stale, trials_csv=output / TRIALS_CSV)
    best = best_trial(study)
    if best is not None:
        result.best_number, result.best_value, result.best_params = best.number, float(best.value), dict(best.params)
        result.best_config = output / BEST_CONFIG
    return result


# ------------------------------------------------------------------------------------------------ driver ---

def _open_study(storage: str, study_name: str, seed: int, pruner: Any) -> tuple[Any, int]:
    """Create or load the study; the sampler's seed is offset by the trials already there (see module doc)."""
    optuna = _optuna()
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study '{study_name}' in {storage} minimises; it is not a pneumoscan study")
    existing = len(study.trials)
    sampler = optuna.samplers.TPESampler(seed=seed + existing)
    return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner), existing


def run_study(base: TrainConfig, output: str | Path, *, n_trials: int, space: SearchSpace | None = None,
              timeout_s: float | None = None, storage: str | None = None, study_name: str = DEFAULT_STUDY_NAME,
              pruner: str | Any = "median", cache_dir: Path | None = None,
              keep_checkpoints: bool = False) -> StudyResult:
    """Run (or resume) a study until it has ``n_trials`` finished trials or ``timeout_s`` has passed.

    Args:
        base: everything that is not searched (data, epochs per trial, seed, balance, ...). ``base.epochs`` is the
            budget of each trial.
        output: the study folder (created; may hold the same study from an earlier run).
        n_trials: total number of finished (complete or pruned) trials wanted; earlier runs' trials count.
        space: the search space (default :class:`SearchSpace`).
        timeout_s: stop starting new trials after this many seconds (a running trial is finished first).
        storage: Optuna storage URL; default ``sqlite:///<output>/study.db``.
        study_name: the study's name in the storage.
        pruner: ``median``, ``hyperband``, ``none`` or an Optuna pruner object.
        cache_dir: image cache folder (default: the shared pneumoscan cache).
        keep_checkpoints: keep every trial's best.pt instead of only the best trial's.

    Raises:
        ConfigError: invalid settings, or a resume with settings different from the study's.
        DataError: data problems (as for training); also raised when ``--data`` is missing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("pneumoscan tune runs in one process; do not start it with torchrun")
    if n_trials < 1:
        raise ConfigError("--trials must be at least 1")
    if not base.data:
        raise DataError("no --data given")
    space = space or SearchSpace()
    space.check_base(base)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(output)
    study, existing = _open_study(storage, study_name, base.seed, make_pruner(pruner, base.epochs))
    stale = fail_stale_trials(study)
    _check_same_study(study, space, base, output)
    finished = len(study.get_trials(deepcopy=False, states=_finished_states()))
    remaining = max(0, n_trials - finished)
    logger.info("study '%s': %d finished trial(s), %d to run", study_name, finished, remaining)
    try:
        if remaining:
            objective = _Objective(base, space, output, resolve_hardware(base.device, base.precision), study_name,
                                   cache_dir)
            study.optimize(objective, n_trials=remaining, timeout=timeout_s, catch=(torch.OutOfMemoryError,),
                           callbacks=[lambda s, _t: write_outputs(s, output, keep_checkpoints)], gc_after_trial=True)
    finally:
        write_outputs(study, output, keep_checkpoints)
    return _result(study, output, storage, len(study.trials) - existing, stale)


def parse_list(text: str | None, kind: type, default: Sequence[Any]) -> tuple[Any, ...]:
    """``"a,b,c"`` → a tuple of ``kind``; None → ``default``. Used by the CLI for the search-space options."""
    if text is None:
        return tuple(default)
    try:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"cannot read '{text}' as a comma-separated list of {kind.__name__}") from err
    if not values:
        raise ConfigError(f"empty list '{text}'")
    return values
