"""``pneumoscan evaluate --predictions``: the evaluation report of a scored archive, without running the model.

The archive is what ``pneumoscan batch`` wrote (:mod:`pneumoscan.batch.sink`); the report is the same
:func:`pneumoscan.evaluation.report.write_evaluation_report` that ``evaluate --data`` writes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.batch import require_batch_deps
from pneumoscan.batch.sink import read_archive
from pneumoscan.errors import DataError
from pneumoscan.evaluation.groups import group_columns
from pneumoscan.evaluation.report import write_evaluation_report

logger = logging.getLogger(__name__)


def evaluate_predictions(*, predictions: str | Path, output: str | Path, n_bootstrap: int = 2000,
                         seed: int = 0, group_by: Sequence[str] = ()) -> dict[str, Any]:
    """The evaluation report of a scored archive (``pneumoscan batch`` output), without running the model again.

    Builds the same inputs :func:`pneumoscan.inference.evaluate.evaluate_model` hands to the report — labels,
    calibrated probabilities, patient groups, subtype/source subgroups, rows in path order — from the archive's
    ``true_label``, ``probability`` and ``group`` columns; threshold, rule and operating points come from the model
    metadata stored with the shards. Rows without a true label, and error rows, are left out and counted in the
    report. ``group_by`` names archive columns (``source``, a passthrough manifest column such as ``view``, or the
    derived ``age_band``) as in :func:`pneumoscan.inference.evaluate.evaluate_model`.

    Raises:
        DataError: no archive there, or no labelled, scored rows in it.
    """
    require_batch_deps()
    table, meta = read_archive(predictions)
    rows = sorted(table.to_pylist(), key=lambda r: r["path"])  # the order evaluate --data gives a folder
    failed = [r for r in rows if r.get("probability") is None]
    unlabelled = [r for r in rows if r.get("probability") is not None and r.get("true_label") is None]
    rows = [r for r in rows if r.get("probability") is not None and r.get("true_label") is not None]
    if unlabelled:
        logger.warning("%d scored images have no label and are left out of the evaluation", len(unlabelled))
    if failed:
        logger.warning("%d images could not be scored (error rows) and are left out", len(failed))
    if not rows:
        raise DataError(f"{predictions}: no labelled, scored images to evaluate (the input needs a label column)")
    versions = sorted({str(r.get("model_version")) for r in rows})
    if len(versions) > 1:
        raise DataError(f"{predictions}: scores of several models ({', '.join(versions)}); evaluate one at a time")
    threshold = float(meta.get("threshold", rows[0]["threshold"]))
    subgroups: dict[str, list[str | None]] = {}
    if any(r.get("subtype") for r in rows):
        subgroups["subtype"] = [r.get("subtype") or ("normal" if r["true_label"] == 0 else None) for r in rows]
    several = len({r.get("source") for r in rows}) > 1
    if several:
        subgroups["source"] = [r.get("source") for r in rows]
    # A patient id names a patient within its source (as Record.group does).
    groups = [(f"{r.get('source')}:{r['group']}" if several else r["group"]) if r.get("group") else None
              for r in rows]
    by = list(dict.fromkeys(group_by))
    if several and "source" not in by:
        by.append("source")
    columns = group_columns(rows, by) if by else {}
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[str(r.get("status") or "ok")] = statuses.get(str(r.get("status") or "ok"), 0) + 1
    known = sum(1 for g in groups if g)
    return write_evaluation_report(
        Path(output), y_true=np.array([int(r["true_label"]) for r in rows], dtype=np.int64),
        probs=np.array([float(r["probability"]) for r in rows], dtype=np.float64), threshold=threshold,
        threshold_rule=str(meta.get("threshold_rule", "as stored in the archive")),
        operating_points=meta.get("operating_points") or None, groups=groups if known else None,
        temperature=meta.get("temperature"), paths=[r["path"] for r in rows], subgroups=subgroups,
        group_by=columns,
        model_info={"name": meta.get("name", rows[0].get("model")), "version": versions[0],
                    "checkpoint": f"scored archive {predictions}", "backend": meta.get("backend", rows[0]["backend"]),
                    "image_size": meta.get("image_size")},
        data_info={"spec": [str(predictions)], "split": "as scored", "selection":
                   f"{predictions}: {len(rows)} labelled, scored images (pneumoscan batch)",
                   "n_unreadable": len(failed), "unreadable": [r.get("error") for r in failed][:50],
                   "n_unlabelled": len(unlabelled), "status_counts": statuses,
                   "all_patient_ids_known": known == len(rows), "images_with_patient_id": known},
        heatmap_fn=None, n_bootstrap=n_bootstrap, seed=seed,
    )
