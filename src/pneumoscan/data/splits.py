"""Patient-grouped, stratified, reproducible splits.

The official Kermany validation split has 16 images — useless for choosing anything — so the validation set is carved
out of the development images (official train + official val), grouped by patient so that no patient is on both
sides, and stratified by label. The official test split is never touched here: it is only for the final report.
When a source has no official split at all, a test split is carved the same way.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from pneumoscan.core.atomic import atomic_path
from pneumoscan.data.records import Record
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)


def grouped_split(records: Sequence[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split records into (rest, held_out) with about ``fraction`` of them held out, by patient and by label.

    Uses scikit-learn's ``StratifiedGroupKFold`` with ``round(1 / fraction)`` folds and keeps fold 0.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < fraction < 1:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    # Stratify by source, label and view (when the manifest names one), so that every source is represented in the
    # held-out part in its own class mix, and within a source its PA/AP mix (the rsna_adult view trap) is kept too.
    labels = np.array([f"{r.source}|{r.label}|{(r.extra or {}).get('view', '').upper()}" for r in records])
    groups = np.array([r.group for r in records])
    n_splits = max(2, round(1 / fraction))
    n_groups = len(set(groups.tolist()))
    if n_groups < n_splits:
        raise DataError(f"only {n_groups} patients: too few to hold out {fraction:.0%} of them by patient")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest_idx, held_idx = next(splitter.split(np.zeros(len(records)), labels, groups))
    return [records[i] for i in rest_idx], [records[i] for i in held_idx]


def make_splits(records: Sequence[Record], *, val_fraction: float = 0.15, test_fraction: float = 0.15,
                seed: int = 0) -> dict[str, list[Record]]:
    """Assign every labelled record to train, val or test.

    Official test records stay test. Everything else (official train and val, or all records when the source has no
    split) is the development pool; for a source without test records, ``test_fraction`` of its pool is carved out as
    test first; then ``val_fraction`` of what remains of every source becomes val. Both carvings are grouped by
    patient, stratified by label (and view), reproducible from ``seed``, and done per source: a source's train / val
    / test do not change when other sources are added to the run, so runs with and without the adult sets share
    their Kermany validation and every run shares its test images.
    """
    labelled = [r for r in records if r.label is not None]
    if len(labelled) < len(records):
        logger.warning("%d records have no label and are left out of training", len(records) - len(labelled))
    test = [r for r in labelled if r.split == "test"]
    pool = [r for r in labelled if r.split != "test"]
    if not pool:
        raise DataError("no training images: every labelled image is in the test split")
    for source in sorted({r.source for r in pool} - {r.source for r in test}):
        own = [r for r in pool if r.source == source]
        rest, carved = grouped_split(own, test_fraction, seed)
        pool = [r for r in pool if r.source != source] + rest
        test += carved
        logger.info("%s has no official test split: carved %d images (grouped by patient) as test", source,
                    len(carved))
    train, val = [], []
    sources = sorted({r.source for r in pool})
    for source in sources:
        own = [r for r in pool if r.source == source] if len(sources) > 1 else list(pool)
        rest, held = grouped_split(own, val_fraction, seed + 1)
        train += rest
        val += held
    out = {
        "train": [replace(r, split="train") for r in train],
        "val": [replace(r, split="val") for r in val],
        "test": [replace(r, split="test") for r in test],
    }
    for name, recs in out.items():
        if name != "test" and len({r.label for r in recs}) < 2:
            raise DataError(f"the {name} split has only one class; both NORMAL and PNEUMONIA are needed")
    assert_disjoint_patients(out)
    return out


def assert_disjoint_patients(splits: dict[str, list[Record]]) -> None:
    """Raise :class:`DataError` if a patient group appears in two carved splits (train/val)."""
    seen: dict[str, str] = {}
    for name in ("train", "val"):
        for r in splits.get(name, []):
            other = seen.setdefault(r.group, name)
            if other != name:
                raise DataError(f"patient {r.group} is in both {other} and {name}")


def shared_patients(a: Sequence[Record], b: Sequence[Record]) -> set[str]:
    """Patient groups present in both lists (unknown patients never match)."""
    ga = {r.group for r in a if r.patient_id}
    return {r.group for r in b if r.patient_id and r.group in ga}


def save_splits(splits: dict[str, list[Record]], path: Path) -> None:
    """Write ``path,label,split,patient_id,source,subtype,view`` for every record, atomically (``view`` from the
    manifest when it has one, so that the file is a manifest ``pneumoscan evaluate --group-by view`` can read)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "patient_id", "source", "subtype", "view"])
        for name in ("train", "val", "test"):
            for r in splits.get(name, []):
                w.writerow([r.path, r.label, name, r.patient_id or "", r.source, r.subtype or "",
                            (r.extra or {}).get("view", "")])
