"""Print the BENCHMARKS.md ablation table from two ``group_eval.py`` outputs (validation and test, same checkpoints).

The selection figure is the validation worst-group ROC-AUC (min over Kermany, adult PA = rsna_adult PA + lung_masks
normals, and AP); the test columns are only reported. Example::

    python benchmarks/ablation_table.py runs/abl-val.json runs/abl-test.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PA = "adult PA (rsna_adult PA + lung_masks normals)"


def _v(g: dict[str, Any] | None, key: str, ci: bool = False) -> str:
    if not g or key not in g or g[key].get("value") is None:
        return "–"
    m = g[key]
    if ci and m.get("low") is not None:
        return f"{m['value']:.3f} ({m['low']:.2f}–{m['high']:.2f})"
    return f"{m['value']:.3f}"


def main(argv: list[str]) -> int:
    val, test = (json.loads(Path(p).read_text())["results"] for p in argv[:2])
    print("| run | **val worst group** | val Kermany | val adult PA | val AP | test Kermany acc | test Kermany AUC "
          "| test rsna_adult PA AUC | test rsna_adult AP AUC | test lung_masks normals spec (M / S) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v, t in zip(val, test, strict=True):
        gv, gt = v["groups"], t["groups"]
        name = Path(v["checkpoint"]).parent.name
        worst = f"{v['worst_group_roc_auc']:.3f}" if v["worst_group_roc_auc"] is not None else "–"
        print(f"| {name} | **{worst}** | {_v(gv.get('kermany'), 'roc_auc')} | {_v(gv.get(PA), 'roc_auc')} "
              f"| {_v(gv.get('view AP'), 'roc_auc')} | {_v(gt.get('kermany'), 'accuracy', True)} "
              f"| {_v(gt.get('kermany'), 'roc_auc', True)} | {_v(gt.get('rsna_adult PA'), 'roc_auc', True)} "
              f"| {_v(gt.get('rsna_adult AP'), 'roc_auc', True)} "
              f"| {_v(gt.get('montgomery'), 'specificity')} / {_v(gt.get('shenzhen'), 'specificity')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
