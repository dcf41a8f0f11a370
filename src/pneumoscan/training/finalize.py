"""After training: calibrate and choose the operating points on validation, then mark the run complete.

With the best weights, the validation logits are computed once; a temperature is fitted on them (Guo et al. 2017),
and the operating points (Youden's J, max F1, target sensitivity) are chosen on the calibrated validation
probabilities. The rule named by ``threshold_rule`` becomes the model's default threshold. Everything is written into
``best.pt``, so evaluation and prediction read it from there; the test split plays no part.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoscan.core.atomic import atomic_write_text
from pneumoscan.models.checkpoint import load_checkpoint, save_checkpoint
from pneumoscan.training.forward import predict_logits

if TYPE_CHECKING:
    from pneumoscan.training.trainer import PreparedData, Trainer

logger = logging.getLogger(__name__)

MIN_CALIBRATION_IMAGES = 50


def rule_key(rule: str, target_sensitivity: float) -> str:
    """Name of an operating point: ``youden``, ``max_f1``, ``sensitivity_95``, ``fixed``."""
    from pneumoscan.evaluation.thresholds import sensitivity_key

    return sensitivity_key(target_sensitivity) if rule == "sensitivity" else rule


def choose_operating_points(labels: np.ndarray, logits: np.ndarray, rule: str,
                            target_sensitivity: float) -> dict[str, Any]:
    """Temperature, operating points and the default threshold from validation labels and logits."""
    from pneumoscan.evaluation.calibration import fit_temperature
    from pneumoscan.evaluation.thresholds import operating_points

    if len(labels) >= MIN_CALIBRATION_IMAGES and len(set(labels.tolist())) == 2:
        temperature = float(fit_temperature(logits, labels))
    else:  # a temperature fitted on a handful of images is noise; keep the raw probabilities
        logger.warning("validation has %d images: too few to fit a temperature; using 1.0", len(labels))
        temperature = 1.0
    probs = 1.0 / (1.0 + np.exp(-logits / temperature))
    points = {k: float(v) for k, v in operating_points(labels, probs, target_sensitivity=target_sensitivity).items()}
    points["fixed"] = 0.5
    key = rule_key(rule, target_sensitivity)
    return {"temperature": temperature, "operating_points": points, "threshold": points[key],
            "threshold_rule": f"{key} on the patient-grouped validation split ({len(labels)} images)",
            "val_probs": probs}


def finalize_run(run_dir: Path, data: PreparedData, trainer: Trainer, wall_seconds: float) -> None:
    cfg = trainer.cfg
    best_path = run_dir / "best.pt"
    if not best_path.is_file():  # no epoch ever produced a finite ROC-AUC: keep the last weights
        save_checkpoint(load_checkpoint(run_dir / "last.pt"), best_path)
    best = load_checkpoint(best_path)
    trainer.model.load_state_dict(best["state_dict"])
    labels = data.labels["val"]
    logits = predict_logits(trainer.model, data.images["val"], batch_size=max(64, cfg.batch_size),
                            preprocess=trainer.preprocess, hw=trainer.hw)
    ops = choose_operating_points(labels, logits, cfg.threshold_rule, cfg.target_sensitivity)
    probs = ops.pop("val_probs")
    best.update(ops)
    # The threshold and temperature hold for logits computed this way; inference reproduces it by default.
    best["calibration_precision"] = trainer.hw.precision
    best["history"] = trainer.history
    best["data"] = {"train_images": len(data.labels["train"]), "val_images": len(labels),
                    "sources": [s["spec"] for s in data.info["sources"]]}
    save_checkpoint(best, best_path)
    _write_val_predictions(run_dir / "val_predictions.csv", data, logits, probs)
    _fit_gate(best_path, run_dir)
    best_row = next((r for r in trainer.history if r["epoch"] == int(best["epoch"]) + 1), {})
    summary = {
        "model": cfg.model, "epochs_run": len(trainer.history), "best_epoch": int(best["epoch"]) + 1,
        "best_val_roc_auc": best_row.get("val_roc_auc", best["best_metric"]),
        "selection": {**best.get("selection", {"rule": "pooled"}), "best_value": best["best_metric"]},
        "best_val_groups": {k[8:-1]: v for k, v in best_row.items() if k.startswith("val_auc[")},
        "threshold": ops["threshold"],
        "threshold_rule": ops["threshold_rule"], "temperature": ops["temperature"],
        "operating_points": ops["operating_points"], "wall_seconds": round(wall_seconds, 1),
        "hardware": trainer.hw.description, "calibration_precision": trainer.hw.precision, "checkpoint": str(best_path),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    logger.info("run complete: best val %s %.4f at epoch %d; threshold %.4f (%s)", cfg.select_by, best["best_metric"],
                summary["best_epoch"], ops["threshold"], ops["threshold_rule"])


def _fit_gate(best_path: Path, run_dir: Path) -> None:
    """Add the competence gate and per-population thresholds to ``best.pt`` (``pneumoscan calibrate`` does the same
    for older runs). Cheap next to training: one forward pass over a sample of the training images and over the
    validation images. A failure leaves the checkpoint as it was, with a warning."""
    from pneumoscan.errors import PneumoError
    from pneumoscan.inference.calibrate import MIN_AUTO_VAL, calibrate_checkpoint

    n_val = int(load_checkpoint(best_path).get("data", {}).get("val_images", 0))
    if n_val < MIN_AUTO_VAL:
        logger.info("competence gate not fitted: %d validation images, fewer than the %d its threshold needs "
                    "(image checks still apply; `pneumoscan calibrate` fits one anyway)", n_val, MIN_AUTO_VAL)
        return
    try:
        report = calibrate_checkpoint(best_path, best_path, splits_csv=run_dir / "splits.csv")
    except (PneumoError, ValueError, OSError) as err:
        logger.warning("competence gate not fitted (%s); run `pneumoscan calibrate --checkpoint %s`", err, best_path)
        return
    atomic_write_text(run_dir / "gate_report.json", json.dumps(report, indent=2))
    logger.info("competence gate: %.1f%% of validation images refused; populations %s (default %s)",
                100 * report["val_refused"]["refused_rate"], ", ".join(report["populations"]),
                report["default_population"])


def _write_val_predictions(path: Path, data: PreparedData, logits: np.ndarray, probs: np.ndarray) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "logit", "probability", "patient_id"])
    for r, lg, p in zip(data.splits["val"], logits, probs, strict=True):
        w.writerow([r.path, r.label, f"{lg:.6f}", f"{p:.6f}", r.patient_id or ""])
    atomic_write_text(path, buf.getvalue())
