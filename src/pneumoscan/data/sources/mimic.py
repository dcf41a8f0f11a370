"""MIMIC-CXR-JPG 2.x (PhysioNet): 377,110 JPEGs of 65,379 patients, study-level labels mined from reports.

Publisher layout (``physionet.org/files/mimic-cxr-jpg/2.0.0/``; 2.1.0 has the same files)::

    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id,study_id,Atelectasis,...,No Finding,...,Pneumonia,...
    mimic-cxr-2.0.0-negbio.csv.gz     same columns, NegBio labeller (option labeler=negbio)
    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,...,ViewPosition,Rows,Columns,StudyDate,...
    mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split      split in {train, validate, test}
    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg

The ``.csv`` files may also be decompressed. ``pXX`` is ``p`` plus the first two digits of ``subject_id``. Labels
belong to the study and are given to each of its images; ``ViewPosition`` (PA, AP, LATERAL, LL, AP AXIAL, ...; blank
for some) is per image.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import (
    check_options,
    chexpert_label,
    chexpert_value,
    choice,
    find_first,
    keep_existing,
    read_table,
    view_kept,
)

logger = logging.getLogger(__name__)

SOURCE = "mimic"
PREFIX = "mimic-cxr-2.0.0"
SPLITS = {"train": "train", "validate": "val", "test": "test"}


@register_source(SOURCE, "MIMIC-CXR-JPG: mimic-cxr-2.0.0-{chexpert,metadata,split}.csv(.gz) + files/pXX/...")
def load_mimic(path: Path, options: dict[str, str]) -> list[Record]:
    """Load MIMIC-CXR-JPG with the official split, subject ids and the label policy applied.

    Args:
        path: the ``mimic-cxr-jpg/2.0.0`` folder (holding the CSVs and ``files/``).
        options: ``views``, ``uncertain``, ``others`` and ``labeler=chexpert|negbio`` (default chexpert).

    Raises:
        DataError: a CSV is missing or lacks columns, a label value is malformed, or no listed image exists.
    """
    check_options(SOURCE, options)
    policy = policy_for(SOURCE, options)
    labeler = choice(options, "labeler", ("chexpert", "negbio"), "chexpert")
    labels = _study_labels(find_first(path, (f"{PREFIX}-{labeler}.csv",), f"MIMIC {labeler} label CSV"))
    split_csv = find_first(path, (f"{PREFIX}-split.csv",), "MIMIC split CSV")
    splits = {r["dicom_id"]: r["split"] for r in read_table(split_csv, ("dicom_id", "split"))}
    meta_csv = find_first(path, (f"{PREFIX}-metadata.csv",), "MIMIC metadata CSV")
    meta = read_table(meta_csv, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    records = []
    for row in meta:
        if not view_kept(row["ViewPosition"], policy.views):
            continue
        value = labels.get((row["subject_id"], row["study_id"]))
        if value is None:
            continue
        label, subtype = chexpert_label(*value, policy.uncertain, policy.others)
        if label is not None:
            records.append(_record(path, row, label, subtype, splits))
    logger.info("mimic: %d of %d images kept by the label policy", len(records), len(meta))
    return keep_existing(records, path / "files", SOURCE)


def _study_labels(csv_path: Path) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    """(subject_id, study_id) -> (Pneumonia, No Finding) values."""
    out = {}
    rows = read_table(csv_path, ("subject_id", "study_id", "Pneumonia", "No Finding"))
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path}:{i}"
        out[(row["subject_id"], row["study_id"])] = (chexpert_value(row["Pneumonia"], where),
                                                     chexpert_value(row["No Finding"], where))
    return out


def _record(root: Path, row: dict[str, str], label: int, subtype: str | None, splits: dict[str, str]) -> Record:
    subject, study, dicom = row["subject_id"], row["study_id"], row["dicom_id"]
    file = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
    split = splits.get(dicom, "")
    extra = {"view": row["ViewPosition"], "study_id": study, "dicom_id": dicom,
             "study_date": row.get("StudyDate", "")}
    return Record(str(file), label, SPLITS.get(split), subject, SOURCE, subtype, extra)
