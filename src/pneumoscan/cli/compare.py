"""``pneumoscan compare EVAL_A EVAL_B``: paired comparison of two models evaluated on the same images.

Reads the ``predictions.csv`` that ``pneumoscan evaluate`` writes (columns at least ``path,label,probability``,
optionally ``patient_id``), matches the rows by ``path`` and runs the paired DeLong test plus a paired bootstrap of
the ROC-AUC difference (by patient when patient ids are present). Heavy imports happen inside :func:`run` so that
``pneumoscan --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.errors import DataError

REQUIRED_COLUMNS = ("path", "label", "probability")


@dataclass(frozen=True)
class Predictions:
    """One evaluation's predictions keyed by image path."""

    name: str
    source: Path
    label: dict[str, int]
    probability: dict[str, float]
    patient: dict[str, str | None]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``compare`` sub-command."""
    p = subparsers.add_parser(
        "compare",
        help="compare two evaluated models on the same images (paired DeLong test, patient-level bootstrap)",
        description="Compare the ROC-AUC of two models evaluated on the same images. EVAL_A and EVAL_B are output "
        "folders of 'pneumoscan evaluate' (or their predictions.csv files); rows are matched by path.",
    )
    p.add_argument("eval_a", metavar="EVAL_A", help="evaluation folder or predictions.csv of model A")
    p.add_argument("eval_b", metavar="EVAL_B", help="evaluation folder or predictions.csv of model B")
    p.add_argument("--output", "-o", metavar="FILE", help="write the full result as JSON to FILE")
    p.add_argument("--n-bootstrap", type=int, default=2000, metavar="N",
                   help="paired bootstrap resamples (default: 2000; 0 skips the bootstrap)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.set_defaults(func=run)
    return p


def _csv_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "predictions.csv"
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected an evaluation folder with predictions.csv)")
    return path


def _model_name(csv_path: Path) -> str:
    """The model name from the evaluation's metrics.json when present, else the folder name."""
    try:
        name = json.loads((csv_path.parent / "metrics.json").read_text(encoding="utf-8"))["model"]["name"]
        return str(name)
    except (OSError, ValueError, KeyError, TypeError):
        return csv_path.parent.name or str(csv_path)


def _parse_row(row: dict[str, str], where: str) -> tuple[str, int, float, str | None]:
    from pneumoscan.data.records import parse_label

    path = (row.get("path") or "").strip()
    label = parse_label(row.get("label") or "", where=where)
    if not path or label is None:
        raise DataError(f"{where}: empty path or label")
    try:
        prob = float(row.get("probability") or "")
    except ValueError as err:
        raise DataError(f"{where}: probability '{row.get('probability')}' is not a number") from err
    return path, label, prob, (row.get("patient_id") or "").strip() or None


def load_predictions(spec: str) -> Predictions:
    """Read an evaluation's predictions.csv (folder or file).

    Raises:
        DataError: missing file or columns, bad values, or a path listed twice.
    """
    path = _csv_path(spec)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = [_parse_row(row, f"{path}:{i}") for i, row in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from err
    if not rows:
        raise DataError(f"{path}: no predictions")
    paths = [r[0] for r in rows]
    if len(set(paths)) != len(paths):
        dup = next(p for i, p in enumerate(paths) if p in paths[:i])
        raise DataError(f"{path}: image '{dup}' is listed more than once")
    return Predictions(_model_name(path), path, {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows},
                       {r[0]: r[3] for r in rows})


def _match(a: Predictions, b: Predictions) -> list[str]:
    """Common image paths in A's order; DataError when the image sets or labels differ."""
    only_a = [p for p in a.label if p not in b.label]
    only_b = [p for p in b.label if p not in a.label]
    if only_a or only_b:
        example = (only_a or only_b)[0]
        raise DataError(f"the two evaluations cover different images: {len(only_a)} only in {a.source}, "
                        f"{len(only_b)} only in {b.source} (e.g. '{example}')")
    differ = [p for p in a.label if a.label[p] != b.label[p]]
    if differ:
        raise DataError(f"{len(differ)} images have different true labels in the two evaluations (e.g. '{differ[0]}')")
    return list(a.label)


def _groups(a: Predictions, b: Predictions, paths: list[str]) -> list[str | None] | None:
    """Patient ids (A's, else B's); None when neither file has any."""
    groups = [a.patient[p] or b.patient[p] for p in paths]
    return groups if any(g is not None for g in groups) else None


def _table(a: Predictions, b: Predictions, res: dict[str, object]) -> str:
    """Readable summary of a comparison result."""
    boot = res["bootstrap"]
    patients = f"{res['n_patients']} patients" if res["n_patients"] is not None else "patients unknown"
    z = "n/a" if res["z"] is None else f"{res['z']:.2f}"
    lines = [
        f"Paired ROC-AUC comparison on {res['n']} images ({res['n_positive']} PNEUMONIA, {res['n_negative']} NORMAL; "
        f"{patients})",
        "",
        f"  A  {a.name:<32} ROC-AUC {res['auc_a']:.4f}  (SE {res['auc_a_se']:.4f})",
        f"  B  {b.name:<32} ROC-AUC {res['auc_b']:.4f}  (SE {res['auc_b_se']:.4f})",
        "",
        f"  difference A - B   {res['difference']:+.4f}",
        f"  DeLong             95% CI [{res['ci_low']:+.4f}, {res['ci_high']:+.4f}]   z = {z}   "
        f"p = {res['p_value']:.4g}",
    ]
    if boot is not None and boot["ci_low"] is not None:
        lines.append(f"  bootstrap ({boot['unit']}) 95% CI [{boot['ci_low']:+.4f}, {boot['ci_high']:+.4f}]   "
                     f"({boot['n_resamples_used']} resamples)")
    lines += [f"  note: {note}" for note in res["notes"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Compare the two evaluations, print a table, optionally write JSON. Returns 0."""
    import numpy as np

    from pneumoscan.core.atomic import atomic_write_text
    from pneumoscan.evaluation.compare import compare_models
    from pneumoscan.evaluation.report import dumps_json

    a, b = load_predictions(args.eval_a), load_predictions(args.eval_b)
    paths = _match(a, b)
    y = np.array([a.label[p] for p in paths])
    res = compare_models(y, np.array([a.probability[p] for p in paths]), np.array([b.probability[p] for p in paths]),
                         _groups(a, b, paths), n_resamples=args.n_bootstrap, seed=args.seed)
    print(_table(a, b, res))
    if args.output:
        doc = {"a": {"name": a.name, "predictions": str(a.source)}, "b": {"name": b.name, "predictions": str(b.source)},
               **res}
        out = Path(args.output).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, dumps_json(doc))
        print(f"\nwritten: {out}")
    return 0
