"""NIH ChestX-ray14 (Wang et al., CVPR 2017): 112,120 frontal images of 30,805 patients, 14 text-mined findings.

Publisher layout (NIH Box ``ChestXray-NIHCC``; the Kaggle mirror ``nih-chest-xrays/data`` is the same files)::

    Data_Entry_2017.csv  (or Data_Entry_2017_v2020.csv)
    train_val_list.txt   test_list.txt          # official split, one Image Index per line
    images/00000001_000.png ...                 # NIH Box, after extracting images_001.tar.gz ... images_012.tar.gz
    images_001/images/00000001_000.png ...      # Kaggle

``Data_Entry_2017*.csv`` columns: ``Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age,
Patient Gender`` (``Patient Sex`` in some copies)``, View Position, OriginalImage[Width, Height],
OriginalImagePixelSpacing[x, y]``. ``Finding Labels`` is ``|``-separated (``Cardiomegaly|Effusion``) or
``No Finding``. ``Patient Age`` is an integer (``58``) or, in early copies, ``058Y``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import (
    check_options,
    find_first,
    keep_existing,
    read_id_list,
    read_table,
    view_kept,
)

logger = logging.getLogger(__name__)

SOURCE = "nih"
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "View Position")


@register_source(SOURCE, "NIH ChestX-ray14: Data_Entry_2017*.csv + images*/ (official train_val/test lists)")
def load_nih(path: Path, options: dict[str, str]) -> list[Record]:
    """Load ChestX-ray14 with the official split, real patient ids and the label policy applied.

    Args:
        path: the folder holding ``Data_Entry_2017*.csv`` (or the CSV itself).
        options: ``views``, ``others`` (``uncertain`` does not apply: NIH labels have no uncertainty).

    Raises:
        DataError: CSV missing or lacking columns, no image folder, or none of the listed images present.
    """
    check_options(SOURCE, options)
    policy = policy_for(SOURCE, options)
    root = path.parent if path.is_file() else path
    csv_path = path if path.is_file() else find_first(root, CSV_NAMES, "NIH Data_Entry_2017 CSV")
    rows = read_table(csv_path, REQUIRED)
    splits = _official_split(root)
    index = _index_images(root)
    records = []
    for row in rows:
        record = _record(row, index, splits, policy.views, policy.others, root)
        if record is not None:
            records.append(record)
    logger.info("nih: %d of %d rows kept by the label policy", len(records), len(rows))
    return keep_existing(records, root, SOURCE)


def _official_split(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        if (root / name).is_file():
            out.update(dict.fromkeys(read_id_list(root / name), split))
        else:
            logger.warning("nih: %s not found in %s: images get no official split", name, root)
    return out


def _index_images(root: Path) -> dict[str, str]:
    """File name -> path for ``images/``, ``images_NNN/images/`` and ``images_NNN/`` (whichever exist)."""
    index: dict[str, str] = {}
    folders = [root / "images"] + sorted(p for p in root.glob("images_*") if p.is_dir())
    for folder in folders:
        for sub in (folder / "images", folder):
            if sub.is_dir():
                with os.scandir(sub) as it:
                    index.update((e.name, e.path) for e in it if e.name.endswith(".png"))
    if not index:
        logger.warning("nih: no images/ or images_NNN/images/ folder with PNG files under %s", root)
    return index


def _record(row: dict[str, str], index: dict[str, str], splits: dict[str, str], views: str, others: str,
            root: Path) -> Record | None:
    name = row["Image Index"]
    view = row["View Position"]
    if not view_kept(view, views):
        return None
    findings = {f.strip() for f in row["Finding Labels"].split("|") if f.strip()}
    label, subtype = _label(findings, others)
    if label is None:
        return None
    sex = row.get("Patient Gender") or row.get("Patient Sex") or ""
    extra = {"view": view, "findings": row["Finding Labels"], "sex": sex,
             "age": _age(row.get("Patient Age", "")), "follow_up": row.get("Follow-up #", "")}
    return Record(
        path=index.get(name, str(root / "images" / name)),
        label=label,
        split=splits.get(name),
        patient_id=_patient(row["Patient ID"]),
        source=SOURCE,
        subtype=subtype,
        extra=extra,
    )


def _label(findings: set[str], others: str) -> tuple[int | None, str | None]:
    if "Pneumonia" in findings:
        return 1, "isolated" if len(findings) == 1 else "with_other_findings"
    if findings == {"No Finding"}:
        return 0, "normal"
    if others == "negative":
        return 0, "other_findings"
    return None, None


def _patient(value: str) -> str:
    """``'1'`` -> ``'00000001'``: the form used in the image file names (``00000001_000.png``)."""
    return value.zfill(8) if value.isdigit() else value


def _age(value: str) -> str:
    """``'058Y'`` or ``'58'`` -> ``'58'``; anything else is kept as given."""
    digits = value.strip().rstrip("Yy")
    return str(int(digits)) if digits.isdigit() else value.strip()
