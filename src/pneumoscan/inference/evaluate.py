"""Evaluate a model on labelled images: predict with the :class:`Predictor`, then hand the numbers to the report.

The threshold, temperature and operating points come from the model (chosen on validation when it was trained); this
module never chooses anything on the data it evaluates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.data.records import Record, distinct_source_names
from pneumoscan.data.sources import load_records
from pneumoscan.errors import DataError
from pneumoscan.inference.predictor import Predictor

logger = logging.getLogger(__name__)


def select_records(data: Sequence[str], split: str, options: dict[str, str] | None = None) -> tuple[list[Record], str]:
    """Records to evaluate and a note on how they were chosen.

    ``split`` names an official split; a source that has no split information is used whole (a holdout data set).
    ``all`` takes every labelled image.
    """
    chosen: list[Record] = []
    notes = []
    seen: set[str] = set()
    for spec in data:
        records = distinct_source_names(load_records(spec, options), spec, seen)
        has_splits = any(r.split for r in records)
        if split == "all" or not has_splits:
            picked = records
            notes.append(f"{spec}: all {len(records)} images" + ("" if has_splits or split == "all" else
                                                                   " (the source has no official split)"))
        else:
            picked = [r for r in records if r.split == split]
            if not picked:
                have = sorted({r.split for r in records if r.split})
                raise DataError(f"{spec}: no images in split '{split}' (splits present: {', '.join(have)})")
            notes.append(f"{spec}: split '{split}', {len(picked)} images")
        chosen += picked
    unlabelled = [r for r in chosen if r.label is None]
    if unlabelled:
        logger.warning("%d images have no label and are left out of the evaluation", len(unlabelled))
        chosen = [r for r in chosen if r.label is not None]
    if not chosen:
        raise DataError("no labelled images to evaluate")
    return chosen, "; ".join(notes)


def evaluate_model(*, checkpoint: str | Path | None, data: Sequence[str], split: str, output: str | Path,
                   backend: str = "torch", batch_size: int = 32, n_bootstrap: int = 2000, heatmaps: bool = True,
                   skip_unreadable: bool = False, seed: int = 0,
                   data_options: dict[str, str] | None = None, precision: str = "auto",
                   group_by: Sequence[str] = (), population: str | None = None) -> dict[str, Any]:
    """Predict on the selected images and write the evaluation report; returns the metrics dict.

    ``precision`` is the torch autocast (see :func:`~pneumoscan.inference.predictor.inference_precision`);
    ``population`` the operating point whose threshold the labels are counted at (None: the model's default).
    Every image is scored, also those the competence gate refuses: the report measures the model.
    ``group_by`` names columns (a record field such as ``source`` or ``subtype``, a manifest column kept in
    :attr:`Record.extra` such as ``view`` or ``sex``, or the derived ``age_band``) to report pooled and per-group
    figures by (:mod:`pneumoscan.evaluation.groups`); ``source`` is added whenever the images come from several
    sources. The columns are checked before anything is predicted.
    """
    from pneumoscan.evaluation.groups import group_columns
    from pneumoscan.evaluation.report import write_evaluation_report

    records, note = select_records(data, split, data_options)
    by = list(dict.fromkeys(group_by))
    if len({r.source for r in records}) > 1 and "source" not in by:
        by.append("source")
    columns = group_columns(table_rows(records), by) if by else {}
    predictor = Predictor.load(checkpoint, backend=backend, precision=precision, population=population)
    results = predictor.predict_sources([r.path for r in records], batch_size=batch_size,
                                        progress=_progress_bar(len(records)))
    failed = [p for p in results if p.error]
    if failed and not skip_unreadable:
        more = f" (and {len(failed) - 1} more; --skip-unreadable leaves them out)" if len(failed) > 1 else ""
        raise DataError(f"{failed[0].error}{more}")
    keep = [i for i, p in enumerate(results) if not p.error]
    records = [records[i] for i in keep]
    columns = {name: [values[i] for i in keep] for name, values in columns.items()}
    probs = np.array([results[i].probability for i in keep], dtype=np.float64)
    y_true = np.array([r.label for r in records], dtype=np.int64)
    known = sum(1 for r in records if r.patient_id)
    subgroups = _subgroups(records)
    info = predictor.info
    heatmap_fn = _heatmap_fn(predictor) if heatmaps and predictor.model is not None else None
    return write_evaluation_report(
        Path(output), y_true=y_true, probs=probs, threshold=predictor.threshold,
        threshold_rule=str(info.populations[predictor.population].get("rule") or info.threshold_rule),
        operating_points=info.operating_points or None,
        groups=[r.group if r.patient_id else None for r in records] if known else None,
        temperature=info.temperature, paths=[r.path for r in records], subgroups=subgroups, group_by=columns,
        model_info={"name": info.name, "version": info.version, "checkpoint": str(checkpoint or "shipped model"),
                    "backend": backend, "image_size": info.preprocess.image_size,
                    "population": predictor.population,
                    "out_of_scope": sum(1 for i in keep if results[i].status == "out_of_scope")},
        data_info={"spec": list(data), "split": split, "selection": note, "n_unreadable": len(failed),
                   "unreadable": [p.error for p in failed][:50],
                   "all_patient_ids_known": known == len(records),
                   "images_with_patient_id": known,
                   "label_policy": _policies(data, data_options), **_lung_note(results)},
        heatmap_fn=heatmap_fn, n_bootstrap=n_bootstrap, seed=seed,
    )


def _lung_note(results: Sequence[Any]) -> dict[str, Any]:
    """For models that crop to the lungs: how many images were used whole because no lungs were found in them."""
    reports = [(p.path, p.lungs) for p in results if not p.error and getattr(p, "lungs", None)]
    if not reports:
        return {}
    whole = [{"path": path, "reason": lungs.get("lung_fallback")} for path, lungs in reports
             if not lungs.get("lungs_found")]
    if whole:
        logger.warning("lung crop: no lungs found in %d of %d images (used whole)", len(whole), len(reports))
    return {"lung_crop": {"n": len(reports), "no_lungs_found": len(whole), "images_used_whole": whole[:50]}}


def _policies(data: Sequence[str], options: dict[str, str] | None) -> dict[str, str]:
    """One-line label policy per spec, so a report says what its labels meant."""
    try:
        from pneumoscan.data.label_policy import describe_policy
    except ImportError:
        return {}
    out = {}
    for spec in data:
        try:
            out[spec] = str(describe_policy(spec, options or {}).get("summary", ""))
        except (KeyError, ValueError, DataError):
            out[spec] = "labels as given by the folder / manifest"
    return out


def table_rows(records: Sequence[Record]) -> list[dict[str, object]]:
    """One predictions-table row per record: its extra columns, overlaid by the record's own fields (so a manifest
    column cannot shadow ``source`` or ``label``); what :func:`~pneumoscan.evaluation.groups.group_columns` reads."""
    return [{**r.extra, "path": r.path, "label": r.label, "split": r.split, "patient_id": r.patient_id,
             "source": r.source, "subtype": r.subtype} for r in records]


def _subgroups(records: list[Record]) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    if any(r.subtype for r in records):
        out["subtype"] = [r.subtype or ("normal" if r.label == 0 else None) for r in records]
    if len({r.source for r in records}) > 1:
        out["source"] = [r.source for r in records]
    return out


def _heatmap_fn(predictor: Predictor) -> Any:
    from pneumoscan.data.io import read_image
    from pneumoscan.explain.gradcam import explain_prepared, overlay_png

    def fn(path: str) -> bytes:
        prepared = predictor.prepare(read_image(path))
        return overlay_png(prepared, explain_prepared(predictor, prepared))

    return fn


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total, desc="predict", unit="img", leave=False, disable=total < 64)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update
