"""RSNA Pneumonia Detection Challenge (2018), stage 2 training set: 26,684 frontal DICOMs with opacity boxes.

Publisher layout (Kaggle ``rsna-pneumonia-detection-challenge``)::

    stage_2_train_labels.csv           patientId,x,y,width,height,Target   (one row per box; Target 0 rows have no box)
    stage_2_detailed_class_info.csv    patientId,class   class in {Lung Opacity, Normal, No Lung Opacity / Not Normal}
    stage_2_train_images/<patientId>.dcm
    stage_2_test_images/<patientId>.dcm   (no labels were ever published: not loaded)

``patientId`` (a UUID such as ``0004cfab-14fd-4e49-80ba-63a80b6bddd6``) is also the DICOM PatientID, but it names an
*image*: the images come from NIH ChestX-ray14 and the mapping to NIH patients was not published, so one patient may
have several images here. Records therefore get ``patient_id=None`` and the UUID goes to ``extra['image_id']``.
The stage 1 files (``stage_1_*``) are accepted when the stage 2 ones are absent.

An image with a Target but no row in the detailed class file (a truncated or edited copy of the file) is left out
with one warning giving the count, as missing image files are; ``missing_class=error`` stops the load instead.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import (
    check_options,
    choice,
    find_first,
    flag,
    keep_existing,
    read_table,
    view_kept,
)
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "rsna"
CLASSES = {"Lung Opacity": "lung_opacity", "Normal": "normal", "No Lung Opacity / Not Normal": "not_normal"}
MISSING_CLASS = ("exclude", "error")


@register_source(SOURCE, "RSNA Pneumonia Detection Challenge: stage_2_train_labels.csv + stage_2_train_images/*.dcm")
def load_rsna(path: Path, options: dict[str, str]) -> list[Record]:
    """Load the RSNA stage 2 training images with the label policy applied.

    Args:
        path: the competition folder.
        options: ``others`` (what to do with "No Lung Opacity / Not Normal"), ``views`` (only used with
            ``dicom_meta=yes``: every RSNA image is frontal), ``dicom_meta=yes|no`` (default no): read
            ViewPosition, PatientSex and PatientAge from each DICOM header (about 1-2 ms per file), and
            ``missing_class=exclude|error`` (default exclude): what to do with an image that has a Target but no row
            in the detailed class file.

    Raises:
        DataError: missing CSV/columns/image folder, class info that contradicts Target, or (with
            ``missing_class=error``) an image without a class row.
    """
    check_options(SOURCE, options)
    policy = policy_for(SOURCE, options)
    strict = choice(options, "missing_class", MISSING_CLASS, "exclude") == "error"
    labels_csv = find_first(path, ("stage_2_train_labels.csv", "stage_1_train_labels.csv"), "RSNA train labels CSV")
    stage = labels_csv.name.split("_train")[0]
    targets, boxes, lines = _targets(labels_csv)
    classes = _classes(path, stage, policy.others)
    images = path / f"{stage}_train_images"
    if not images.is_dir():
        raise DataError(f"{images}: folder of training DICOMs not found")
    records = []
    unclassed = []
    for image_id, target in targets.items():
        cls = _class_of(image_id, target, classes, labels_csv)
        if cls is None:  # named by its line in the labels CSV: the id is also the DICOM PatientID, kept out of logs
            if strict:
                raise DataError(f"{labels_csv}:{lines[image_id]}: this image has a Target but no row in the "
                                "detailed class info (missing_class=error)")
            unclassed.append(image_id)
            continue
        label = 1 if target == 1 else 0 if cls == "normal" or policy.others == "negative" else None
        if label is None:
            continue
        extra = {"image_id": image_id, "class": cls, "boxes": str(boxes[image_id]), "view": "frontal"}
        records.append(Record(str(images / f"{image_id}.dcm"), label, None, None, SOURCE, cls, extra))
    if unclassed:
        logger.warning("rsna: %d of %d images have a Target but no row in the detailed class info and were excluded "
                       "(e.g. the image of %s:%d; --data-option missing_class=error to stop instead)",
                       len(unclassed), len(targets), labels_csv.name, lines[unclassed[0]])
    records = keep_existing(records, images, SOURCE)
    if flag(options, "dicom_meta", False):
        records = _with_dicom_meta(records, policy.views)
    logger.info("rsna: %d images kept of %d (%d without a class row excluded)", len(records), len(targets),
                len(unclassed))
    return records


def _targets(csv_path: Path) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Image id -> Target (0/1), -> number of boxes and -> its first line, from the one-row-per-box label CSV."""
    targets: dict[str, int] = {}
    boxes: dict[str, int] = defaultdict(int)
    lines: dict[str, int] = {}
    for i, row in enumerate(read_table(csv_path, ("patientId", "Target")), start=2):
        if row["Target"] not in ("0", "1"):
            raise DataError(f"{csv_path}:{i}: Target must be 0 or 1, got '{row['Target']}'")
        image_id, target = row["patientId"], int(row["Target"])
        targets[image_id] = max(target, targets.get(image_id, 0))
        boxes[image_id] += target
        lines.setdefault(image_id, i)
    return targets, boxes, lines


def _classes(root: Path, stage: str, others: str) -> dict[str, str] | None:
    """Image id -> class key; None when the class file is absent and not needed (others=negative)."""
    try:
        csv_path = find_first(root, (f"{stage}_detailed_class_info.csv",), "RSNA detailed class info CSV")
    except DataError:
        if others == "negative":
            return None
        raise
    out: dict[str, str] = {}
    for i, row in enumerate(read_table(csv_path, ("patientId", "class")), start=2):
        if row["class"] not in CLASSES:
            raise DataError(f"{csv_path}:{i}: unknown class '{row['class']}' (expected one of {', '.join(CLASSES)})")
        out[row["patientId"]] = CLASSES[row["class"]]
    return out


def _class_of(image_id: str, target: int, classes: dict[str, str] | None, labels_csv: Path) -> str | None:
    """The class key of one image; None when the class file exists but has no row for it.

    Raises:
        DataError: the class contradicts Target (the two files disagree: a wrong or mismatched file).
    """
    if classes is None:
        return "lung_opacity" if target else "no_opacity"
    cls = classes.get(image_id)
    if cls is None:
        return None
    if (cls == "lung_opacity") != (target == 1):
        raise DataError(f"{labels_csv}: image {image_id} has Target={target} but class '{cls}'")
    return cls


def _with_dicom_meta(records: list[Record], views: str) -> list[Record]:
    """Add ViewPosition/PatientSex/PatientAge from the headers; drop non-frontal views when views=frontal."""
    import pydicom  # a core dependency, imported here only to keep `import pneumoscan.data.sources` cheap

    out = []
    for r in records:
        try:
            ds = pydicom.dcmread(r.path, stop_before_pixels=True,
                                 specific_tags=["ViewPosition", "PatientSex", "PatientAge", "PatientID"])
        except Exception as err:  # pydicom raises many types for a bad header; keep the file, the audit will report it
            logger.warning("rsna: cannot read the DICOM header of %s (%s)", r.path, err)
            out.append(r)
            continue
        view = str(ds.get("ViewPosition", "") or "")
        if view and not view_kept(view, views):
            continue
        if str(ds.get("PatientID", r.extra["image_id"])) != r.extra["image_id"]:
            logger.warning("rsna: %s has PatientID %s, not its file name", r.path, ds.get("PatientID"))
        extra = {**r.extra, "view": view or "frontal", "sex": str(ds.get("PatientSex", "") or ""),
                 "age": str(ds.get("PatientAge", "") or "")}
        out.append(Record(r.path, r.label, r.split, r.patient_id, r.source, r.subtype, extra))
    return out
