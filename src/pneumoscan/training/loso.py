"""Leave-one-source-out (LOSO): how well does a model trained on some hospitals do on a hospital it has never seen?

A model that scores 0.98 ROC-AUC on its own test split can be near chance on another collection (different scanners,
populations, label definitions). LOSO measures that gap with the ordinary pipeline: for each source ``S`` of the
``--data`` specs, a model is trained on every *other* source with :func:`pneumoscan.training.setup.fit` (their
train/val parts, validation carved by patient as usual, threshold and temperature chosen on that validation split)
and evaluated with :func:`pneumoscan.inference.evaluate.evaluate_model` on ``S`` held out. For contrast, the same
model is also evaluated on the test split of its own training sources (``splits.csv``, split ``test``).

Output folder::

    without-<S>/          the training run (best.pt, summary.json, splits.csv, ...)
    without-<S>/test/     evaluation report on the in-distribution test split of that run (where it has one)
    holdout-<S>/          evaluation report on S (metrics.json, report.html, ...)
    loso.json             every fold's numbers, the configuration and warnings (rewritten after each fold)
    loso.md               the table: held-out source -> n, ROC-AUC [95% CI], accuracy, sensitivity, specificity

Resumable: a fold whose run has ``summary.json`` and whose held-out report is complete is not redone; an interrupted
run is resumed from its ``last.pt``. A run folder trained with other options stops the command (rather than mixing
configurations in one table).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pneumoscan import __version__
from pneumoscan.errors import ConfigError
from pneumoscan.training.config import TrainConfig, load_config_file

logger = logging.getLogger(__name__)

HOLDOUT_SPLITS = ("all", "test")
#: Options that change how a run is executed, not what it learns: a re-run may change them freely.
_OPERATIONAL = frozenset({"workers", "device"})
#: Files the trainer writes before its first epoch; a run folder holding only these never trained and is restarted.
_PRE_EPOCH_FILES = frozenset({"config.yaml", "data.json", "splits.csv"})
#: Pairs of public sources that share images, so that holding one out while training on the other is not independent.
KNOWN_OVERLAPS: dict[frozenset[str], str] = {
    frozenset({"nih", "rsna"}): "the RSNA challenge images are a subset of NIH ChestX-ray14",
    frozenset({"kermany", "pneumoniamnist"}): "PneumoniaMNIST is a downscaled copy of the Kermany images",
}


@dataclass(frozen=True)
class Fold:
    """One leave-one-source-out fold.

    Attributes:
        source: name of the held-out source (used in the folder names).
        holdout: the ``--data`` spec of the held-out source.
        train: the specs the fold's model is trained on (every other source, in the given order).
        train_sources: the names of those sources.
    """

    source: str
    holdout: str
    train: tuple[str, ...]
    train_sources: tuple[str, ...]

    @property
    def run_name(self) -> str:
        """Folder of the fold's training run."""
        return f"without-{self.source}"

    @property
    def holdout_name(self) -> str:
        """Folder of the fold's held-out evaluation report."""
        return f"holdout-{self.source}"


@dataclass(frozen=True)
class LosoOptions:
    """How the held-out (and in-distribution) evaluations are made.

    Attributes:
        holdout_split: ``all`` evaluates every labelled image of the held-out source; ``test`` only its official
            test split (a source without official splits is then still used whole, as in ``pneumoscan evaluate``).
        n_bootstrap: bootstrap resamples for the 95% intervals (0: none).
        heatmaps: Grad-CAM overlays in the reports' error galleries.
        skip_unreadable: leave unreadable held-out images out (counted in the report) instead of stopping.
        cache_dir: image cache folder for training (None: the default cache).
    """

    holdout_split: str = "all"
    n_bootstrap: int = 2000
    heatmaps: bool = True
    skip_unreadable: bool = False
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.holdout_split not in HOLDOUT_SPLITS:
            raise ConfigError(f"holdout split '{self.holdout_split}' is not valid; choose from "
                              f"{', '.join(HOLDOUT_SPLITS)}")
        if self.n_bootstrap < 0:
            raise ConfigError("the number of bootstrap resamples must be >= 0")


# --------------------------------------------------------------------------------------------------- planning ---

def source_name(spec: str) -> str:
    """A short, folder-safe name for a ``--data`` spec: the FORMAT of ``FORMAT:PATH``, else the folder name.

    A manifest CSV is named by its file stem, or by its folder when the file is the generic ``manifest.csv``
    (``shared/data/kermany224/manifest.csv`` -> ``kermany224``).
    """
    text = str(spec)
    fmt, sep, _ = text.partition(":")
    if sep and fmt.isidentifier() and len(fmt) > 1 and not Path(text).exists():  # the rule of load_records
        name = fmt
    else:
        path = Path(text).expanduser()
        is_csv = path.suffix.lower() == ".csv"
        name = (path.parent.name if path.stem.lower() == "manifest" else path.stem) if is_csv else path.name
        name = name or path.resolve().name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "source"


def plan_folds(specs: Sequence[str]) -> list[Fold]:
    """One fold per source, each trained on all the others.

    Names that collide (two folders both called ``chest_xray``) get ``-2``, ``-3``, ... in the order given.

    Raises:
        ConfigError: fewer than two specs, or the same spec given twice.
    """
    specs = [str(s) for s in specs]
    if len(specs) < 2:
        raise ConfigError(f"loso needs at least two --data sources (got {len(specs)}): each one is held out in turn")
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise ConfigError(f"--data {repeated[0]} is given twice; give each source once")
    names: list[str] = []
    for spec in specs:
        base, n = source_name(spec), 1
        while (name := base if n == 1 else f"{base}-{n}") in names:
            n += 1
        names.append(name)
    return [Fold(name, spec, tuple(s for s in specs if s != spec), tuple(x for x in names if x != name))
            for name, spec in zip(names, specs, strict=True)]


def overlap_warnings(folds: Sequence[Fold]) -> list[str]:
    """Warnings for source pairs known to share images (the held-out score would then be optimistic)."""
    names = {re.sub(r"-\d+$", "", f.source) for f in folds}
    return [f"{' and '.join(sorted(pair))} overlap ({why}): holding one out while training on the other is not an "
            "independent test" for pair, why in KNOWN_OVERLAPS.items() if pair <= names]


# --------------------------------------------------------------------------------------------------- training ---

def _check_same_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to reuse a run trained with other options: its numbers would not belong in this table."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = TrainConfig.from_dict(load_config_file(saved_path)).to_dict()
    wanted = cfg.to_dict()
    differ = [f.name for f in fields(TrainConfig)
              if f.name not in _OPERATIONAL and saved.get(f.name) != wanted.get(f.name)]
    if differ:
        raise ConfigError(f"{run_dir} was trained with other options (differs in: {', '.join(differ)}); use another "
                          "--output or remove that folder")


def _clear_unstarted_run(run_dir: Path) -> None:
    """Remove what the trainer wrote before a first epoch that never finished, so that ``fit`` can start over."""
    if not run_dir.is_dir() or (run_dir / "last.pt").exists():
        return
    present = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    if present and present <= _PRE_EPOCH_FILES:
        logger.info("%s never finished an epoch; starting it again", run_dir)
        for name in present:
            (run_dir / name).unlink()


def train_fold(fold: Fold, cfg: TrainConfig, output: Path, cache_dir: Path | None) -> str:
    """Train (or resume) the fold's model; returns ``trained``, ``resumed`` or ``skipped`` (already finished)."""
    from pneumoscan.training.setup import fit

    run_dir = output / fold.run_name
    fold_cfg = cfg.replace(data=fold.train)
    if (run_dir / "summary.json").is_file():
        return "skipped"
    resume = (run_dir / "last.pt").is_file()
    if not resume:
        _clear_unstarted_run(run_dir)
    logger.info("%s %s on %s", "resuming" if resume else "training", fold.run_name, ", ".join(fold.train_sources))
    fit(fold_cfg, run_dir, resume=resume, cache_dir=cache_dir)
    return "resumed" if resume else "trained"


# ------------------------------------------------------------------------------------------------- evaluation ---

def _report_complete(folder: Path) -> bool:
    # report.html is written after metrics.json: both present means the evaluation finished.
    return (folder / "metrics.json").is_file() and (folder / "report.html").is_file()


def _load_metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def _evaluate(checkpoint: Path, data: Sequence[str], split: str, output: Path, cfg: TrainConfig,
              options: LosoOptions) -> dict[str, Any]:
    """The evaluation report in ``output``: read back when complete, else computed by ``evaluate_model``."""
    from pneumoscan.inference.evaluate import evaluate_model

    if _report_complete(output):
        doc = _load_metrics(output)
        done = doc.get("data") or {}
        if done.get("spec") == list(data) and done.get("split") == split:
            return doc
        logger.info("%s holds an evaluation of other data (%s, split %s); evaluating again", output,
                    done.get("spec"), done.get("split"))
    return evaluate_model(checkpoint=checkpoint, data=list(data), split=split, output=output,
                          batch_size=max(64, cfg.batch_size), n_bootstrap=options.n_bootstrap,
                          heatmaps=options.heatmaps, skip_unreadable=options.skip_unreadable, seed=cfg.seed,
                          data_options=dict(cfg.data_options))


def _has_test_rows(splits_csv: Path) -> bool:
    if not splits_csv.is_file():
        return False
    with splits_csv.open(newline="", encoding="utf-8") as fh:
        return any(row.get("split") == "test" for row in csv.DictReader(fh))


def summarize_metrics(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of one evaluation that go into the LOSO table (from a ``metrics.json`` document)."""
    cis = (doc.get("confidence_intervals") or {}).get("metrics") or {}
    auc_ci = cis.get("roc_auc") or {}
    data = doc.get("data") or {}
    return {
        "n": doc["n"], "n_positive": doc["n_positive"], "n_negative": doc["n_negative"],
        "roc_auc": doc.get("roc_auc"), "roc_auc_ci": [auc_ci.get("low"), auc_ci.get("high")],
        "accuracy": doc.get("accuracy"), "sensitivity": doc.get("sensitivity", doc.get("recall")),
        "specificity": doc.get("specificity"), "threshold": doc.get("threshold"),
        "patients_known": data.get("all_patient_ids_known", doc.get("patients_known")),
        "selection": data.get("selection"),
    }


def evaluate_fold(fold: Fold, cfg: TrainConfig, output: Path, options: LosoOptions) -> dict[str, Any]:
    """Held-out and in-distribution evaluations of the fold's model, as table rows."""
    run_dir = output / fold.run_name
    checkpoint = run_dir / "best.pt"
    holdout = _evaluate(checkpoint, [fold.holdout], options.holdout_split, output / fold.holdout_name, cfg, options)
    in_dist = None
    if _has_test_rows(run_dir / "splits.csv"):
        in_dist = summarize_metrics(_evaluate(checkpoint, [str(run_dir / "splits.csv")], "test", run_dir / "test",
                                              cfg, options))
    else:
        logger.warning("%s has no test split: no in-distribution score", run_dir)
    return {"holdout": summarize_metrics(holdout), "in_distribution": in_dist}


# ------------------------------------------------------------------------------------------------------ driver ---

def run_loso(cfg: TrainConfig, output: str | Path, options: LosoOptions | None = None) -> dict[str, Any]:
    """Run every fold (skipping finished ones) and write ``loso.json`` and ``loso.md`` into ``output``.

    Args:
        cfg: the training configuration; ``cfg.data`` lists every source (at least two).
        output: the LOSO folder (created; may hold an earlier, interrupted LOSO run of the same configuration).
        options: evaluation options (held-out split, bootstrap, heatmaps, cache folder).

    Returns:
        The content of ``loso.json``.

    Raises:
        ConfigError: fewer than two sources, a repeated source, or a fold folder trained with other options.
        DataError: a source cannot be loaded, split or evaluated (from the trainer and evaluator).
    """
    options = options or LosoOptions()
    output = Path(output)
    folds = plan_folds(cfg.data)
    warnings = overlap_warnings(folds)
    for text in warnings:
        logger.warning("loso: %s", text)
    for fold in folds:  # before any training: a conflict found after hours of training would waste them
        _check_same_config(output / fold.run_name, cfg.replace(data=fold.train))
    output.mkdir(parents=True, exist_ok=True)
    result = _result_header(cfg, folds, options, warnings)
    for i, fold in enumerate(folds, start=1):
        logger.info("loso fold %d/%d: holding out %s", i, len(folds), fold.source)
        status = train_fold(fold, cfg, output, options.cache_dir)
        row = {"source": fold.source, "spec": fold.holdout, "trained_on": list(fold.train_sources),
               "trained_on_specs": list(fold.train), "run": fold.run_name, "report": f"{fold.holdout_name}/report.html",
               "status": status, **evaluate_fold(fold, cfg, output, options)}
        result["folds"].append(row)
        _write(output, result)
    logger.info("loso written to %s", output / "loso.md")
    return result


def _result_header(cfg: TrainConfig, folds: Sequence[Fold], options: LosoOptions,
                   warnings: list[str]) -> dict[str, Any]:
    return {"holdout_split": options.holdout_split, "n_bootstrap": options.n_bootstrap,
            "sources": [{"name": f.source, "spec": f.holdout} for f in folds], "warnings": warnings,
            "config": cfg.to_dict(), "pneumoscan_version": __version__, "folds": []}


def _write(output: Path, result: Mapping[str, Any]) -> None:
    from pneumoscan.core.atomic import atomic_write_text
    from pneumoscan.evaluation.report import dumps_json

    atomic_write_text(output / "loso.json", dumps_json(result))
    atomic_write_text(output / "loso.md", format_markdown(result))


# --------------------------------------------------------------------------------------------------- rendering ---

def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _auc_text(m: Mapping[str, Any] | None) -> str:
    if not m:
        return "n/a"
    low, high = m["roc_auc_ci"]
    band = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{_num(m['roc_auc'])}{band}"


def _row(fold: Mapping[str, Any]) -> str:
    h, ind = fold["holdout"], fold["in_distribution"]
    cells = [f"`{fold['source']}`", ", ".join(f"`{s}`" for s in fold["trained_on"]),
             f"{h['n']} ({h['n_positive']} / {h['n_negative']})", _auc_text(h), _num(h["accuracy"]),
             _num(h["sensitivity"]), _num(h["specificity"]), _num(h["threshold"]),
             f"{_auc_text(ind)} (n = {ind['n']})" if ind else "n/a"]
    return "| " + " | ".join(cells) + " |"


def format_markdown(result: Mapping[str, Any]) -> str:
    """``loso.md``: one table row per held-out source, then how each held-out set was chosen and any warnings."""
    cfg = result["config"]
    split = result["holdout_split"]
    chosen = "all labelled images" if split == "all" else "official test split; all images of a source without one"
    lines = [
        "# Leave-one-source-out evaluation", "",
        f"Model `{cfg['model']}`, {cfg['image_size']} px, seed {cfg['seed']}. Each row: a model trained on every "
        "other source (validation carved by patient; threshold and temperature chosen on it), evaluated on the "
        f"held-out source ({chosen}) at that threshold. In-distribution: the same model on the test split of its own "
        "training sources. ROC-AUC with a 95% bootstrap interval (by patient where patients are known, else by "
        "image).", "",
        "| held-out source | trained on | n (PNEUMONIA / NORMAL) | ROC-AUC [95% CI] | accuracy | sensitivity | "
        "specificity | threshold | in-distribution test ROC-AUC [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(f) for f in result["folds"]]
    lines += ["", "Held-out images:"]
    lines += [f"- `{f['source']}`: {f['holdout']['selection']}; patients "
              f"{'known' if f['holdout']['patients_known'] else 'unknown (each image counted as its own patient)'}; "
              f"report `{f['report']}`" for f in result["folds"]]
    if result["warnings"]:
        lines += ["", "Warnings:"] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"
