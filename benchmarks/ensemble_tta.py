"""Do ensembles or test-time augmentation pay? Paired, per group, on validation; test reported only.

Issue 13 asks for ensembles and test-time augmentation (TTA) "where their gain exceeds their CI". This script scores,
on the same images (the ``splits.csv`` of one reference run, whose per-source, patient-grouped val / test splits all
checkpoints share):

- every checkpoint alone, plain and with TTA;
- the ensemble (mean of the calibrated probabilities) of all checkpoints, plain and with TTA.

TTA averages the probability over a few views of the prepared image that training's default augmentation also
draws (so the model knows them): the image itself, its mirror image, a central zoom to 90 % and rotations of ±5°.
Every candidate gets its threshold by Youden's J on the pooled validation images; test images are only scored. For
each candidate and group the paired patient-bootstrap interval of ROC-AUC(candidate) − ROC-AUC(first checkpoint,
plain) says whether a gain is more than noise (``pneumoscan.evaluation.compare.bootstrap_auc_difference``).

Groups as in ``benchmarks/group_eval.py``: ``kermany``, ``adult PA`` (rsna_adult PA + the lung_masks normals),
``view AP``; ``worst group`` = the lowest of the three validation ROC-AUCs (the training's ``--select-by
worst_group``). Lung-crop checkpoints are cropped as in training (the lung model runs once; its maps are cached).

Example::

    python benchmarks/ensemble_tta.py --splits runs/r224/splits.csv \\
        --checkpoint runs/r224/best.pt src/pneumoscan/weights/pneumoscan-efficientnet_lite0-4126e6a4.pt \\
        --output runs/ensemble_tta.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from group_eval import group_metrics, read_split  # noqa: E402  (a sibling benchmark script)

logger = logging.getLogger("ensemble_tta")

GROUPS = ("kermany", "adult PA", "view AP")


def tta_views(images: np.ndarray) -> list[np.ndarray]:
    """The prepared uint8 batch (N, S, S) as the TTA views: itself, mirrored, a 90 % central zoom, rotations of ±5°."""
    side = images.shape[-1]
    margin = int(round(side * 0.05))

    def per_image(fn: Any) -> np.ndarray:
        return np.stack([np.asarray(fn(Image.fromarray(im))) for im in images])

    zoom = per_image(lambda im: im.crop((margin, margin, side - margin, side - margin))
                     .resize((side, side), Image.BILINEAR))
    plus = per_image(lambda im: im.rotate(5, resample=Image.BILINEAR, fillcolor=0))
    minus = per_image(lambda im: im.rotate(-5, resample=Image.BILINEAR, fillcolor=0))
    return [images, images[:, :, ::-1].copy(), zoom, plus, minus]


def checkpoint_probabilities(checkpoint: Path, rows: list[dict[str, str]],
                             cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(plain, TTA) calibrated probabilities of one checkpoint for the rows' images."""
    from pneumoscan.data.cache import load_or_build
    from pneumoscan.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, precision="fp32")
    segmenter = predictor.lung_segmenter() if predictor.info.preprocess.lung_crop else None
    images = load_or_build([r["path"] for r in rows], predictor.info.preprocess, cache_dir, segmenter=segmenter)
    plain, tta = [], []
    for i in range(0, len(rows), 64):
        batch = np.asarray(images[i:i + 64])
        views = [predictor.probabilities_from_prepared(v) for v in tta_views(batch)]
        plain.append(views[0])
        tta.append(np.mean(views, axis=0))
    return np.concatenate(plain), np.concatenate(tta)


def candidate_name(checkpoint: Path) -> str:
    """``runs/r224/best.pt`` -> ``r224``; a named file keeps its stem."""
    return checkpoint.parent.name if checkpoint.stem in ("best", "last") else checkpoint.stem


def group_masks(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    src = np.array([r["source"] for r in rows])
    view = np.array([(r.get("view") or "").upper() for r in rows])
    return {"kermany": src == "kermany", "adult PA": view == "PA", "view AP": view == "AP",
            "rsna_adult PA": (src == "rsna_adult") & (view == "PA"),
            "rsna_adult AP": (src == "rsna_adult") & (view == "AP"),
            "lung_masks normals": np.isin(src, ["montgomery", "shenzhen"])}


def score(y: np.ndarray, p: np.ndarray, base: np.ndarray, patients: list[str], threshold: float,
          masks: dict[str, np.ndarray], n_resamples: int) -> dict[str, Any]:
    """Per group: ``group_eval``'s figures at ``threshold`` plus the paired CI of the ROC-AUC difference to ``base``."""
    from pneumoscan.evaluation.compare import bootstrap_auc_difference

    out: dict[str, Any] = {}
    for name, m in masks.items():
        if not m.any():
            continue
        ym, pm, gm = y[m], p[m], [patients[i] for i in np.flatnonzero(m)]
        g = group_metrics(ym, pm, gm, threshold, n_resamples)
        if "roc_auc" in g:
            diff = bootstrap_auc_difference(ym, pm, base[m], groups=gm, n_resamples=n_resamples, seed=0)
            g["roc_auc_minus_base"] = {"low": diff["ci_low"], "high": diff["ci_high"]}
        out[name] = g
    return out

def evaluate_candidates(probs: dict[str, dict[str, np.ndarray]], rows: dict[str, list[dict[str, str]]],
                        n_resamples: int) -> list[dict[str, Any]]:
    from pneumoscan.evaluation.thresholds import choose_threshold

    first = next(iter(probs))
    results = []
    for name, by_split in probs.items():
        y_val = np.array([int(r["label"]) for r in rows["val"]])
        threshold = float(choose_threshold(y_val, by_split["val"], "youden"))
        entry: dict[str, Any] = {"candidate": name, "threshold": threshold}
        for split, split_rows in rows.items():
            y = np.array([int(r["label"]) for r in split_rows])
            patients = [f"{r['source']}:{r['patient_id'] or r['path']}" for r in split_rows]
            entry[split] = score(y, by_split[split], probs[first][split], patients, threshold,
                                 group_masks(split_rows), n_resamples)
        aucs = [entry["val"][g]["roc_auc"]["value"] for g in GROUPS if "roc_auc" in entry["val"].get(g, {})]
        entry["val_worst_group"] = min(aucs) if aucs else None
        results.append(entry)
    return results


def fmt(g: dict[str, Any] | None, key: str) -> str:
    if not g or key not in g or g[key].get("value") is None:
        return "–"
    v = g[key]
    return f"{v['value']:.3f} ({v['low']:.2f}–{v['high']:.2f})"


def fmt_diff(g: dict[str, Any] | None) -> str:
    d = (g or {}).get("roc_auc_minus_base")
    return "–" if not d or d["low"] is None else f"{d['low']:+.3f}…{d['high']:+.3f}"


def print_table(results: list[dict[str, Any]]) -> None:
    print("| candidate | threshold | val worst group | val Kermany AUC | val adult PA AUC (Δ vs base) | val AP AUC | "
          "test Kermany acc | test Kermany AUC (Δ) | test rsna PA AUC (Δ) | test rsna AP AUC | "
          "test lung_masks spec |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        v, t = r["val"], r["test"]
        print(f"| {r['candidate']} | {r['threshold']:.3f} | {r['val_worst_group']:.3f} "
              f"| {fmt(v.get('kermany'), 'roc_auc')} | {fmt(v.get('adult PA'), 'roc_auc')} "
              f"[{fmt_diff(v.get('adult PA'))}] | {fmt(v.get('view AP'), 'roc_auc')} "
              f"| {fmt(t.get('kermany'), 'accuracy')} | {fmt(t.get('kermany'), 'roc_auc')} "
              f"[{fmt_diff(t.get('kermany'))}] | {fmt(t.get('rsna_adult PA'), 'roc_auc')} "
              f"[{fmt_diff(t.get('rsna_adult PA'))}] | {fmt(t.get('rsna_adult AP'), 'roc_auc')} "
              f"| {fmt(t.get('lung_masks normals'), 'specificity')} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", nargs="+", type=Path, required=True, help="the first one is the base")
    ap.add_argument("--splits", type=Path, required=True, help="splits.csv of the reference run")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (patients)")
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("--output", type=Path, help="write all results as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = {split: read_split(args.splits, split) for split in ("val", "test")}
    probs: dict[str, dict[str, np.ndarray]] = {}
    names = [candidate_name(c) for c in args.checkpoint]
    for ckpt, name in zip(args.checkpoint, names, strict=True):
        per_split = {split: checkpoint_probabilities(ckpt, r, args.cache_dir) for split, r in rows.items()}
        probs[name] = {s: v[0] for s, v in per_split.items()}
        probs[f"{name} + TTA"] = {s: v[1] for s, v in per_split.items()}
        logger.info("scored %s", ckpt)
    if len(args.checkpoint) > 1:
        for suffix in ("", " + TTA"):
            members = [f"{n}{suffix}" for n in names]
            probs[f"ensemble of {len(members)}{suffix}"] = {
                s: np.mean([probs[m][s] for m in members], axis=0) for s in rows}
    results = evaluate_candidates(probs, rows, args.bootstrap)
    print(f"{args.splits}: val {len(rows['val'])} / test {len(rows['test'])} images; 95% patient-bootstrap "
          f"intervals; Δ = paired interval of the ROC-AUC difference to {next(iter(probs))}")
    print_table(results)
    if args.output:
        from pneumoscan.core.atomic import atomic_write_text

        atomic_write_text(args.output, json.dumps({"splits": str(args.splits), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
