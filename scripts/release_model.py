"""Package a trained run as the model shipped inside pneumoscan.

    python scripts/release_model.py --run runs/ref --test-eval runs/ref/test --command "pneumoscan train ..."

(The ONNX export of the shipped checkpoint is written beside it unless --no-onnx.)

Writes ``src/pneumoscan/weights/pneumoscan-<model>-<sha>.pt`` (weights + preprocessing + threshold + temperature +
the test metrics for the model card, without optimizer state) and ``model.json`` (file names, training command, data
hashes, seed, metrics). The sha in the file name is the content hash, as torchvision's ``store_model_weights`` does.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import torch

from pneumoscan.models.checkpoint import file_digest, load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "pneumoscan" / "weights"
KEEP = ("format_version", "model", "state_dict", "epoch", "best_metric", "config", "class_names", "preprocess",
        "threshold", "threshold_rule", "operating_points", "temperature", "history", "version", "created", "data",
        "selection", "calibration_precision", "gate", "populations", "default_population")
HEADLINE = ("accuracy", "recall", "specificity", "precision", "f1", "roc_auc", "pr_auc")


def data_hashes(run: Path) -> dict[str, str]:
    """sha256 over the sorted (split, file name, file sha256) of every image the run used, per split."""
    out = {}
    rows = list(csv.DictReader((run / "splits.csv").open()))
    for split in ("train", "val", "test"):
        h = hashlib.sha256()
        for r in sorted((r for r in rows if r["split"] == split), key=lambda r: r["path"]):
            h.update(f"{Path(r['path']).name}:{hashlib.sha256(Path(r['path']).read_bytes()).hexdigest()}\n".encode())
        out[split] = h.hexdigest()
    return out


def heldout_figures(run: Path, group_eval: dict) -> dict:
    """The carved test patients of rsna_adult and lung_masks with the figures the model card states for them, so that
    tests can recompute them with ``pneumoscan predict`` (tests/inference/test_shipped_model.py)."""
    rows = [r for r in csv.DictReader((run / "splits.csv").open()) if r["split"] == "test"]
    groups = group_eval["results"][0]["groups"]
    rsna = [r for r in rows if r["source"] == "rsna_adult"]
    lung = [r for r in rows if r["source"] in ("montgomery", "shenzhen")]
    out: dict = {"rsna_adult": {"n": len(rsna), "patient_ids": sorted(r["patient_id"] for r in rsna),
                                "within_view": {}}}
    for view in ("PA", "AP"):
        g = groups.get(f"rsna_adult {view}")
        if g and "roc_auc" in g:
            out["rsna_adult"]["within_view"][view] = {"n": g["n"], "roc_auc": g["roc_auc"]["value"],
                                                      "low": g["roc_auc"]["low"], "high": g["roc_auc"]["high"]}
    if lung:
        normal = [groups[k] for k in ("montgomery", "shenzhen") if k in groups]
        n = sum(g["n"] for g in normal)
        spec = sum(g["specificity"]["value"] * g["n"] for g in normal) / n if n else None
        out["lung_masks"] = {"n": len(lung), "patient_ids": sorted(r["patient_id"] for r in lung),
                             "specificity": spec,
                             "per_source": {k: groups[k]["specificity"] for k in ("montgomery", "shenzhen")
                                            if k in groups}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run folder (with best.pt, splits.csv)")
    p.add_argument("--test-eval", type=Path, required=True, help="evaluate output folder on the official test split")
    p.add_argument("--command", required=True, help="the exact training command, recorded for reproduction")
    p.add_argument("--no-onnx", action="store_true", help="do not ship an ONNX export beside the checkpoint")
    p.add_argument("--group-eval", type=Path,
                   help="benchmarks/group_eval.py --output JSON of this checkpoint on the run's test split: its "
                        "rsna_adult within-view and lung_masks figures and held-out patient ids go into model.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    state = load_checkpoint(args.run / "best.pt")
    metrics = json.loads((args.test_eval / "metrics.json").read_text())
    ci = metrics["confidence_intervals"]["metrics"]
    card = {k: {"value": metrics[k], "low": ci.get(k, {}).get("low"), "high": ci.get(k, {}).get("high")}
            for k in HEADLINE}
    card["n"] = metrics["n"]
    card["threshold"] = metrics["threshold"]
    slim = {k: state[k] for k in KEEP if k in state}
    slim["model_card_metrics"] = card
    tmp = WEIGHTS / "staging.pt"
    save_checkpoint(slim, tmp)
    name = f"pneumoscan-{state['model']['name']}-{file_digest(tmp, 8)}.pt"
    for old in WEIGHTS.glob("pneumoscan-*"):
        if old.name != name:
            old.unlink()
    os.replace(tmp, WEIGHTS / name)
    info = {
        "checkpoint": name,
        "model": state["model"]["name"],
        "image_size": state["preprocess"]["image_size"],
        "threshold": state["threshold"],
        "threshold_rule": state["threshold_rule"],
        "temperature": state["temperature"],
        "training_command": args.command,
        "seed": state["config"]["seed"],
        "config": state["config"],
        "data_sha256": data_hashes(args.run),
        "test_metrics": card,
        "torch": torch.__version__,
    }
    if "selection" in state:
        info["selection"] = state["selection"]
    if args.group_eval:
        info["heldout_test"] = heldout_figures(args.run, json.loads(args.group_eval.read_text()))
    if not args.no_onnx:
        # exported from the shipped file itself, so both backends report the same model version and metrics
        from pneumoscan.export.onnx import export_onnx

        onnx_name = name.replace(".pt", ".onnx")
        export_onnx(WEIGHTS / name, WEIGHTS / onnx_name)
        info["onnx"] = onnx_name
    (WEIGHTS / "model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"shipped {WEIGHTS / name} ({(WEIGHTS / name).stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
