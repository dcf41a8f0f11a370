"""Per-source and within-view figures of checkpoints on a run's validation or test split, with patient-level CIs.

Why a script: a pooled ROC-AUC on ``rsna_adult`` mostly measures "AP film = pneumonia" (see ../shared/data/README.md);
what a model is worth on adults is its ROC-AUC within PA and within AP. Until ``pneumoscan evaluate --group-by view``
is on this branch, this computes those figures, for several checkpoints on the *same* images (the ``splits.csv`` of
one reference run: its per-source, patient-grouped val / test), so that ablation rows are comparable. The threshold is
each checkpoint's own (fixed on its validation split); test is only reported.

Groups: ``kermany`` (accuracy, sensitivity, specificity, ROC-AUC), ``rsna_adult`` pooled / ``PA`` / ``AP``
(ROC-AUC, sensitivity, specificity), ``montgomery`` and ``shenzhen`` (normals only: specificity), ``adult PA``
(rsna_adult PA + the lung_masks normals: ROC-AUC), and ``worst_group`` = min ROC-AUC over {kermany, view PA,
view AP}, the training option ``--select-by worst_group`` on the same split.

Thresholds: with ``--thresholds population`` (the default) each group is counted at the threshold of its population
when the checkpoint has one of its own (``pediatric`` for Kermany, ``adult_pa`` for PA adults, ``adult_ap`` for AP;
fitted on validation by ``pneumoscan calibrate``), else at the model's pooled threshold; ``--thresholds pooled``
uses the pooled one everywhere. ROC-AUC does not depend on it.

Images are decoded once into the training cache (``pneumoscan.data.cache``) with each checkpoint's preprocessing.

Example::

    python benchmarks/group_eval.py --splits runs/abl-r1-adults/splits.csv --split test \\
        --checkpoint runs/abl-r0-kermany/best.pt runs/abl-r1-adults/best.pt --output runs/abl-test.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

VIEWS = ("PA", "AP")


def read_split(splits_csv: Path, split: str) -> list[dict[str, str]]:
    """Rows of ``splits.csv`` (path,label,split,patient_id,source,subtype[,view]) in ``split``."""
    with splits_csv.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    if not rows:
        raise SystemExit(f"{splits_csv}: no rows in split '{split}'")
    return rows


def probabilities(checkpoint: Path, rows: list[dict[str, str]], cache_dir: Path | None) -> tuple[np.ndarray, Any]:
    """Calibrated probabilities for the rows' images and the checkpoint's Predictor (for its threshold)."""
    from pneumoscan.data.cache import load_or_build
    from pneumoscan.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, precision="fp32")
    segmenter = predictor.lung_segmenter() if predictor.info.preprocess.lung_crop else None
    images = load_or_build([r["path"] for r in rows], predictor.info.preprocess, cache_dir, segmenter=segmenter)
    out = [predictor.probabilities_from_prepared(np.asarray(images[i:i + 64])) for i in range(0, len(rows), 64)]
    return np.concatenate(out), predictor


def group_metrics(y: np.ndarray, p: np.ndarray, patients: list[str], threshold: float,
                  n_resamples: int) -> dict[str, Any]:
    """ROC-AUC (when both classes), accuracy, sensitivity, specificity at ``threshold``, with 95% CIs."""
    from pneumoscan.evaluation.bootstrap import bootstrap_ci, standard_metrics

    metrics = standard_metrics(threshold)
    names = ["accuracy", "recall", "specificity"] if len(set(y.tolist())) == 2 else (
        ["specificity"] if y.max() == 0 else ["recall"])
    if len(set(y.tolist())) == 2:
        names.append("roc_auc")
    ci = bootstrap_ci(y, p, {n: metrics[n] for n in names}, groups=patients, n_resamples=n_resamples, seed=0)
    out: dict[str, Any] = {"n": int(len(y)), "pneumonia": int(y.sum())}
    for n in names:
        key = "sensitivity" if n == "recall" else n
        out[key] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ci[n].items()
                    if k in ("value", "low", "high")}
    return out


GROUP_POPULATION = {"kermany": "pediatric", "rsna_adult PA": "adult_pa", "rsna_adult AP": "adult_ap",
                    "montgomery": "adult_pa", "shenzhen": "adult_pa",
                    "adult PA (rsna_adult PA + lung_masks normals)": "adult_pa", "view AP": "adult_ap"}


def group_threshold(info: Any, group: str, mode: str) -> tuple[float, str]:
    """The threshold a group is counted at and the population it comes from (see the module docstring)."""
    populations = getattr(info, "populations", None) or {}
    name = GROUP_POPULATION.get(group)
    if mode == "population" and name in populations and populations[name].get("threshold") is not None:
        return float(populations[name]["threshold"]), name
    return float(info.threshold), "all"


def evaluate(checkpoint: Path, rows: list[dict[str, str]], cache_dir: Path | None,
             n_resamples: int, thresholds: str = "population") -> dict[str, Any]:
    probs, predictor = probabilities(checkpoint, rows, cache_dir)
    threshold = float(predictor.info.threshold)
    y = np.array([int(r["label"]) for r in rows])
    src = np.array([r["source"] for r in rows])
    view = np.array([(r.get("view") or "").upper() for r in rows])
    patients = [f"{r['source']}:{r['patient_id'] or r['path']}" for r in rows]
    masks: dict[str, np.ndarray] = {"kermany": src == "kermany", "rsna_adult": src == "rsna_adult"}
    for v in VIEWS:
        masks[f"rsna_adult {v}"] = (src == "rsna_adult") & (view == v)
    masks["montgomery"] = src == "montgomery"
    masks["shenzhen"] = src == "shenzhen"
    masks["adult PA (rsna_adult PA + lung_masks normals)"] = (view == "PA")
    masks["view AP"] = view == "AP"
    groups = {}
    for name, m in masks.items():
        if m.any():
            t, population = group_threshold(predictor.info, name, thresholds)
            groups[name] = group_metrics(y[m], probs[m], [patients[i] for i in np.flatnonzero(m)], t, n_resamples)
            groups[name].update(threshold=round(t, 6), population=population)
    worst_of = ["kermany", "adult PA (rsna_adult PA + lung_masks normals)", "view AP"]
    aucs = [groups[g]["roc_auc"]["value"] for g in worst_of if g in groups and "roc_auc" in groups[g]]
    return {"checkpoint": str(checkpoint), "threshold": threshold, "threshold_rule": predictor.info.threshold_rule,
            "worst_group_roc_auc": min(aucs) if aucs else None, "groups": groups}


def fmt(g: dict[str, Any] | None, key: str) -> str:
    if not g or key not in g or g[key].get("value") is None:
        return "–"
    v = g[key]
    return f"{v['value']:.3f} ({v['low']:.2f}–{v['high']:.2f})" if v.get("low") is not None else f"{v['value']:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", nargs="+", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True, help="splits.csv of the reference run")
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (patients)")
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("--thresholds", choices=("population", "pooled"), default="population",
                    help="count each group at its population's validation threshold (default) or the pooled one")
    ap.add_argument("--output", type=Path, help="write all results as JSON here")
    args = ap.parse_args(argv)
    rows = read_split(args.splits, args.split)
    results = [evaluate(c, rows, args.cache_dir, args.bootstrap, args.thresholds) for c in args.checkpoint]
    print(f"{args.split} split of {args.splits} ({len(rows)} images); 95% patient-bootstrap intervals")
    print("| checkpoint | worst group AUC | Kermany acc | Kermany AUC | rsna PA AUC | rsna AP AUC | "
          "montgomery spec | shenzhen spec |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        g = r["groups"]
        worst = r["worst_group_roc_auc"] if r["worst_group_roc_auc"] is not None else float("nan")
        print(f"| {r['checkpoint']} | {worst:.3f} | {fmt(g.get('kermany'), 'accuracy')} "
              f"| {fmt(g.get('kermany'), 'roc_auc')} | {fmt(g.get('rsna_adult PA'), 'roc_auc')} "
              f"| {fmt(g.get('rsna_adult AP'), 'roc_auc')} | {fmt(g.get('montgomery'), 'specificity')} "
              f"| {fmt(g.get('shenzhen'), 'specificity')} |")
    if args.output:
        tmp = args.output.with_suffix(".tmp")
        tmp.write_text(json.dumps({"split": args.split, "splits": str(args.splits), "results": results}, indent=2))
        tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
