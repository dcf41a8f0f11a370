"""``pneumoscan predict``: probabilities and labels for image files, folders and globs (JPEG, PNG, DICOM).

Every result carries a ``status``: ``ok`` (labelled), ``out_of_scope`` (the competence gate refused the image: it is
not a frontal chest X-ray like the model's training images; ``reason`` says why, ``label`` is empty and the
probability is shown for information only, in brackets in the table) or ``error`` (unreadable). The population
whose threshold was applied is named in every row (``--population`` to choose another).
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pneumoscan.core.atomic import atomic_write_bytes
from pneumoscan.errors import DataError
from pneumoscan.models.precision import PRECISIONS

logger = logging.getLogger(__name__)
FIELDS = ("path", "status", "probability", "label", "threshold", "population", "model", "version", "reason",
          "distribution_score", "error")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict pneumonia probability for images", description=__doc__)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("--checkpoint", help="best.pt of a run or an .onnx export (default: the shipped model)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto (default): ONNX Runtime when the model has its export and no --explain/--precision is "
                        "asked (same labels, ~3x faster), else PyTorch")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--output", "-o", type=Path, help="write the results to this file instead of stdout")
    p.add_argument("--explain", type=Path, metavar="DIR", help="write a Grad-CAM overlay PNG per image into DIR")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--population", help="operating point to label at (default: the model's default population; "
                                        "`pneumoscan models --checkpoint` or GET /v1/model list them)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="torch autocast; auto: the precision the model's threshold was fitted in, when this hardware "
                        "runs it natively (else fp32). bf16 is faster on CPUs with bf16 units but shifts probabilities")
    p.set_defaults(func=run)


def expand_paths(items: Sequence[str]) -> list[str]:
    """Files as given, folders searched recursively for files, globs expanded; order kept, duplicates dropped."""
    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out += [str(p) for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
        elif path.exists():
            out.append(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"{item}: no files match")
            out += [m for m in matches if Path(m).is_file()]
        else:
            out.append(item)  # reported per file as missing, without stopping the others
    return list(dict.fromkeys(out))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pneumoscan.inference.predictor import Predictor, resolve_backend

    paths = expand_paths(args.paths)
    if not paths:
        raise DataError("no input files")
    backend = resolve_backend(args.backend, args.checkpoint, heatmaps=bool(args.explain), precision=args.precision)
    predictor = Predictor.load(args.checkpoint, backend=backend, precision=args.precision,
                               population=args.population)
    with tqdm(total=len(paths), unit="img", desc="predict", disable=len(paths) < 50 or not sys.stderr.isatty(),
              leave=False) as bar:
        results = predictor.predict_sources(paths, batch_size=args.batch_size, progress=bar.update)
    for r in results:
        if r.error:
            logger.error("%s", r.error)
    shares: dict[int, float | None] = {}
    if args.explain:
        shares = _write_heatmaps(predictor, [r for r in results if not r.error], args.explain)
    rows = [r.to_dict() for r in results]
    for row, r in zip(rows, results, strict=True):
        if id(r) in shares:
            row["heatmap_lung_fraction"] = shares[id(r)]
    text = render(rows, args.format)
    if args.output:
        _atomic_write(args.output, text)
    else:
        sys.stdout.write(text)
    failed = sum(1 for r in results if r.error)
    refused = sum(1 for r in results if r.status == "out_of_scope")
    if refused:
        print(f"{refused} of {len(results)} images are out of scope for this model (no label given; see 'reason')",
              file=sys.stderr)
    if failed:
        print(f"{failed} of {len(results)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            gate = r.get("gate") or {}
            score = gate.get("distribution_score")
            w.writerow({**r, "probability": "" if r["probability"] is None else repr(float(r["probability"])),
                        "label": r["label"] or "", "reason": r.get("reason") or "", "error": r["error"] or "",
                        "distribution_score": "" if score is None else repr(float(score))})
        return buf.getvalue()
    return _table(rows)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = rows[0]
    width = min(70, max(len(r["path"]) for r in rows))
    lines = [f"model {head['model']} ({head['version']}), population {head.get('population') or '-'}, "
             f"threshold {head['threshold']:.4f}",
             f"{'path':<{width}}  {'P(pneumonia)':>12}  label"]
    for r in rows:
        path = r["path"] if len(r["path"]) <= width else "…" + r["path"][-(width - 1):]
        if r["error"]:
            lines.append(f"{path:<{width}}  {'-':>12}  ERROR: {r['error']}")
            continue
        lungs = r.get("lungs") or {}
        note = "  (no lungs found: full image used)" if lungs and not lungs.get("lungs_found") else ""
        if r.get("status") == "out_of_scope":
            # The probability of an image the model cannot judge is no finding: bracketed, no label.
            prob = f"({r['probability']:.4f})"
            lines.append(f"{path:<{width}}  {prob:>12}  OUT OF SCOPE: {r.get('reason')}{note}")
        else:
            if r.get("heatmap_lung_fraction") is not None:
                note += f"  heatmap {r['heatmap_lung_fraction']:.0%} in lungs"
            lines.append(f"{path:<{width}}  {r['probability']:>12.4f}  {r['label']}{note}")
    if any(r.get("status") == "out_of_scope" for r in rows):
        lines.append("(bracketed probabilities are of images outside the model's scope: not findings)")
    return "\n".join(lines) + "\n"


def _write_heatmaps(predictor: Any, results: list[Any], folder: Path) -> dict[int, float | None]:
    """Write one Grad-CAM overlay per result; returns each result's heatmap share inside the lungs (by id)."""
    from pneumoscan.data.io import read_image
    from pneumoscan.explain.gradcam import explain_image, overlay_png

    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    shares: dict[int, float | None] = {}
    for r in results:
        explained = explain_image(predictor, read_image(r.path))
        shares[id(r)] = explained["heatmap_lung_fraction"]
        png = overlay_png(explained["prepared"], explained["heatmap"])
        stem = Path(r.path).stem
        name, k = f"{stem}_gradcam.png", 1
        while name in used:
            k += 1
            name = f"{stem}_{k}_gradcam.png"
        used.add(name)
        _atomic_write_bytes(folder / name, png)
    return shares


def _atomic_write(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
