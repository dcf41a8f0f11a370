"""Reproduce one row of BENCHMARKS.md: train, evaluate on the official test split, measure, record.

Why a script: a benchmark row is only worth something when anyone can re-create it with one command and see exactly
how it was made. This runs the public commands — ``pneumoscan train``, then ``pneumoscan evaluate --split test`` on
the best validation checkpoint (threshold and temperature chosen on validation, never on test) — then measures
inference speed with the :class:`~pneumoscan.inference.predictor.Predictor` (batch 32, PyTorch backend, the
precision the model was calibrated in) and gathers into ``OUTPUT/row.json``:

- test accuracy, sensitivity, specificity, F1 and ROC-AUC, each with its 95% patient-level bootstrap interval
  (``metrics.json``'s ``confidence_intervals``);
- best validation ROC-AUC, epochs run, training wall time (``summary.json``), median training images/s
  (``metrics.csv``), inference images/s, parameters, best.pt size, hardware (``data.json``), the exact commands.

It prints the row as Markdown. ``--rows-from DIR [DIR ...]`` prints the whole table from earlier rows; that is how
BENCHMARKS.md's table is made. Re-running a row whose training finished reuses it (and resumes an interrupted one),
so a failed evaluation does not cost the training again.

Examples::

    python benchmarks/run_row.py --model resnet18 --image-size 128 --epochs 3 --output runs/bench/resnet18-128
    python benchmarks/run_row.py --model efficientnet_lite0 --image-size 192 --pretrained --epochs 10 \\
        --output runs/bench/lite0-192 -- --precision fp32
    python benchmarks/run_row.py --config runs/tune/best_config.yaml --epochs 20 --output runs/bench/tuned
    python benchmarks/run_row.py --rows-from runs/bench/*
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks.run_row")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("PNEUMOSCAN_SHARED_DATA", REPO.parent / "shared" / "data")) / "kermany224"
# Metric in metrics.json -> (column title, key of its interval in confidence_intervals.metrics).
TEST_METRICS = {"accuracy": ("accuracy", "accuracy"), "sensitivity": ("sensitivity", "recall"),
                "specificity": ("specificity", "specificity"), "f1": ("F1", "f1"), "roc_auc": ("ROC-AUC", "roc_auc")}
# Row options passed to pneumoscan train, with their defaults when no --config file supplies them.
TRAIN_DEFAULTS: dict[str, Any] = {"model": "resnet18", "image_size": 224, "epochs": 10, "batch_size": 32, "seed": 0}
COLUMNS = ("model", "size", "start", "epochs", "train images", "test accuracy", "sensitivity", "specificity",
           "F1", "ROC-AUC", "val ROC-AUC", "train time", "train img/s", "infer img/s", "params (M)", "best.pt (MB)",
           "hardware")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Arguments after -- are passed to pneumoscan train unchanged.")
    p.add_argument("--rows-from", nargs="+", type=Path, metavar="DIR",
                   help="print the Markdown table of these rows (folders with row.json, or row.json files) and exit")
    p.add_argument("--config", type=Path, help="training config YAML (e.g. pneumoscan tune's best_config.yaml); "
                                               "the options below override it")
    for name, default in TRAIN_DEFAULTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default),
                       help=f"default {default} (or the --config file's value)")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--max-train-images", type=int, help="train on a random subset; 0 = all (overrides a config's)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"data spec with an official test split "
                                                             f"(default {DEFAULT_DATA})")
    p.add_argument("--output", type=Path, help="row folder: train/, test/, row.json")
    p.add_argument("--cache-dir", type=Path, help="image cache folder (default: pneumoscan's)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the test intervals")
    p.add_argument("--no-heatmaps", action="store_true", help="evaluation report without Grad-CAM images")
    p.add_argument("--infer-batches", type=int, default=20, help="timed inference batches of 32 (at least)")
    p.add_argument("--infer-seconds", type=float, default=5.0, help="time inference for at least this long")
    return p


# ------------------------------------------------------------------------------------------------ commands ---

def train_argv(args: argparse.Namespace, train_dir: Path, extra: Sequence[str]) -> list[str]:
    """The ``pneumoscan train`` arguments for this row (or a resume of an interrupted one)."""
    if (train_dir / "last.pt").is_file():
        argv = ["train", "--output", str(train_dir), "--resume"]
    else:
        argv = ["train", "--data", args.data, "--output", str(train_dir)]
        if args.config:
            argv += ["--config", str(args.config)]
        for name, default in TRAIN_DEFAULTS.items():
            value = getattr(args, name)
            if value is not None or not args.config:
                argv += [f"--{name.replace('_', '-')}", str(default if value is None else value)]
        if args.pretrained:
            argv.append("--pretrained")
        if args.max_train_images is not None:  # 0 (= all images) must reach train to override a config's subset
            argv += ["--max-train-images", str(args.max_train_images)]
        argv += list(extra)
    if args.cache_dir:
        argv += ["--cache-dir", str(args.cache_dir)]
    return argv


def evaluate_argv(args: argparse.Namespace, train_dir: Path, test_dir: Path) -> list[str]:
    argv = ["evaluate", "--checkpoint", str(train_dir / "best.pt"), "--data", args.data, "--split", "test",
            "--output", str(test_dir), "--bootstrap", str(args.bootstrap), "--seed", str(args.seed or 0)]
    return argv + (["--no-heatmaps"] if args.no_heatmaps else [])


class StepFailed(Exception):
    """A pneumoscan command of the row failed; it has already printed why. ``code`` is its exit code."""

    def __init__(self, command: str, code: int) -> None:
        super().__init__(f"pneumoscan {command} failed (exit code {code})")
        self.code = code


def pneumoscan(argv: list[str]) -> None:
    """Run a pneumoscan command in this process (same interpreter, same logging); raise when it fails."""
    from pneumoscan.cli.main import main as cli

    logger.info("running: pneumoscan %s", shlex.join(argv))
    code = cli(argv)
    if code != 0:
        raise StepFailed(argv[0], code)


def check_test_split(spec: str) -> int:
    """Number of official test images; a row without an official test split would evaluate on something else."""
    from pneumoscan.data.sources import load_records
    from pneumoscan.errors import DataError

    n = sum(1 for r in load_records(spec) if r.split == "test" and r.label is not None)
    if not n:
        raise DataError(f"{spec}: no labelled images in an official 'test' split; a benchmark row needs one")
    return n


# ------------------------------------------------------------------------------------------- measurements ---

def inference_images_per_s(checkpoint: Path, args: argparse.Namespace) -> tuple[float, str]:
    """Median images/s of the Predictor on batches of 32 real test images, decoded beforehand (model cost only)."""
    from pneumoscan.data.cache import load_or_build
    from pneumoscan.inference.evaluate import select_records
    from pneumoscan.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    records, _ = select_records([args.data], "test")
    paths = [r.path for r in records[:32]]
    images = np.asarray(load_or_build(paths, predictor.info.preprocess.image_size, args.cache_dir))
    batch = np.resize(images, (32, *images.shape[1:]))  # a full batch even from a tiny test split
    for _ in range(2):  # warm-up: kernel selection
        predictor.probabilities_from_prepared(batch)
    rates: list[float] = []
    deadline = time.perf_counter() + args.infer_seconds
    while len(rates) < args.infer_batches or time.perf_counter() < deadline:
        start = time.perf_counter()
        predictor.probabilities_from_prepared(batch)
        rates.append(len(batch) / (time.perf_counter() - start))
    backend = getattr(predictor.backend, "hw", None)
    return statistics.median(rates), f"torch ({backend.description})" if backend else type(predictor.backend).__name__


def _read_json(path: Path) -> dict[str, Any]:
    from pneumoscan.errors import DataError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from err


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _metric(doc: dict[str, Any], name: str, ci_key: str) -> dict[str, float | None]:
    cis = (doc.get("confidence_intervals") or {}).get("metrics") or {}
    ci = cis.get(ci_key) or {}
    return {"value": doc.get(name), "low": ci.get("low"), "high": ci.get("high")}


def _median_train_ips(metrics_csv: Path) -> float | None:
    with metrics_csv.open(encoding="utf-8") as fh:
        values = [float(r["images_per_s"]) for r in csv.DictReader(fh) if r.get("images_per_s")]
    return statistics.median(values) if values else None


def collect_row(out: Path, commands: dict[str, str], infer: tuple[float, str]) -> dict[str, Any]:
    """Everything the table needs, from the run folder and the evaluation."""
    from pneumoscan.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from pneumoscan.models.registry import count_parameters

    train_dir, test_dir = out / "train", out / "test"
    summary, data_info = _read_json(train_dir / "summary.json"), _read_json(train_dir / "data.json")
    test = _read_json(test_dir / "metrics.json")
    config = _read_yaml(train_dir / "config.yaml")
    best = train_dir / "best.pt"
    params = count_parameters(build_model_from_checkpoint(load_checkpoint(best)))
    return {
        "model": config["model"], "image_size": config["image_size"],
        "pretrained": bool(config.get("pretrained") or config.get("weights")),
        "init": _init_kind(config),
        "epochs_max": config["epochs"], "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
        "train_images": data_info["splits"]["train"]["n"], "val_images": data_info["splits"]["val"]["n"],
        "test_images": test["n"], "test_split": (test.get("data") or {}).get("selection"),
        "test": {k: _metric(test, k, ci_key) for k, (_, ci_key) in TEST_METRICS.items()},
        "test_threshold": test.get("threshold"), "threshold_rule": test.get("threshold_rule"),
        "ci_method": {k: v for k, v in (test.get("confidence_intervals") or {}).items() if k != "metrics"},
        "val_roc_auc_best": summary["best_val_roc_auc"], "train_wall_seconds": summary["wall_seconds"],
        "train_images_per_s_median": _median_train_ips(train_dir / "metrics.csv"),
        "infer_images_per_s": round(infer[0], 2), "infer_batch_size": 32, "infer_backend": infer[1],
        "parameters": params, "best_pt_mb": round(best.stat().st_size / 1e6, 2),
        "hardware": data_info.get("hardware") or summary.get("hardware"), "torch": data_info.get("torch"),
        "pneumoscan": data_info.get("pneumoscan"), "commands": commands,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _init_kind(config: dict[str, Any]) -> str:
    """Where the weights started: scratch, ImageNet, self-supervised (pneumoscan pretrain) or another checkpoint."""
    if config.get("pretrained") or config.get("weights"):
        return "ImageNet"
    init_from = config.get("init_from")
    if not init_from:
        return "scratch"
    try:
        from pneumoscan.models.checkpoint import load_checkpoint

        kind = load_checkpoint(init_from).get("kind")
    except Exception:  # noqa: BLE001 - the file may have moved since; the row is still valid
        kind = None
    return "SimCLR (own)" if kind == "ssl-encoder" else "checkpoint"


# ------------------------------------------------------------------------------------------------ markdown ---

def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(m: dict[str, float | None]) -> str:
    if m["value"] is None:
        return "n/a"
    band = f" ({_num(m['low'])}–{_num(m['high'])})" if m["low"] is not None and m["high"] is not None else ""
    return f"{_num(m['value'])}{band}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown_row(row: dict[str, Any]) -> str:
    init = row.get("init") or ("ImageNet" if row["pretrained"] else "scratch")
    cells = [row["model"], row["image_size"], init,
             f"{row['epochs_run']} (best {row['best_epoch']})", row["train_images"],
             *(_with_ci(row["test"][k]) for k in TEST_METRICS), _num(row["val_roc_auc_best"]),
             _duration(row["train_wall_seconds"]), _num(row["train_images_per_s_median"], 1),
             _num(row["infer_images_per_s"], 1), _num(row["parameters"] / 1e6, 2), _num(row["best_pt_mb"], 1),
             row["hardware"]]
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    note = ("\nTest metrics on the official test split at the threshold chosen on validation; 95% bootstrap "
            "intervals (by patient) in parentheses.")
    return "\n".join([header, *(markdown_row(r) for r in rows)]) + "\n" + note


def rows_from(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [_read_json(p / "row.json" if p.is_dir() else p) for p in paths]


# ---------------------------------------------------------------------------------------------------- main ---

def train(args: argparse.Namespace, out: Path, extra: Sequence[str]) -> str:
    """Train (or resume, or reuse a finished training); returns the command that made the run."""
    train_dir, record = out / "train", out / "train-command.txt"
    if (train_dir / "summary.json").is_file():
        logger.warning("%s: training already complete; reusing it", train_dir)
        return record.read_text(encoding="utf-8").strip() if record.is_file() else "(reused)"
    t_argv = train_argv(args, train_dir, extra)
    command = shlex.join(["pneumoscan", *t_argv])
    if not record.is_file():  # a resumed run keeps the command that started it
        record.write_text(command + "\n", encoding="utf-8")
    pneumoscan(t_argv)
    return record.read_text(encoding="utf-8").strip()


def run_row(args: argparse.Namespace, extra: Sequence[str], argv: Sequence[str]) -> dict[str, Any]:
    """Train, evaluate on test, measure inference, write row.json; returns the row."""
    out: Path = args.output
    check_test_split(args.data)
    out.mkdir(parents=True, exist_ok=True)
    commands = {"row": shlex.join(["python", "benchmarks/run_row.py", *argv]), "train": train(args, out, extra)}
    e_argv = evaluate_argv(args, out / "train", out / "test")
    commands["evaluate"] = shlex.join(["pneumoscan", *e_argv])
    pneumoscan(e_argv)
    row = collect_row(out, commands, inference_images_per_s(out / "train" / "best.pt", args))
    tmp = out / ".row.json.tmp"
    tmp.write_text(json.dumps(row, indent=2), encoding="utf-8")
    os.replace(tmp, out / "row.json")
    return row


def main(argv: Sequence[str] | None = None) -> int:
    from pneumoscan.errors import PneumoError

    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.rows_from:
            print(markdown_table(rows_from(args.rows_from)))
            return 0
        if args.output is None:
            print("error: --output is required (or --rows-from)", file=sys.stderr)
            return 2
        row = run_row(args, extra, argv)
    except StepFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except PneumoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_table([row]))
    print(f"written: {args.output / 'row.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
