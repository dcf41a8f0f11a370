"""Two small adult sets in the project's shared layout: ``lungmasks:`` (the normals of the lung-mask collection) and
``rsna_adult:`` (the radiologist-labelled RSNA sample with its view column).

``lungmasks:PATH`` reads ``PATH/manifest.csv`` (``image,mask,source,finding,lung_fraction``): 704 adult PA chest
X-rays from Montgomery County (``MCUCXR_*``) and Shenzhen (``CHNCXR_*``) with manual lung masks. Only the normals
(``finding`` = normal, 359) are kept, as NORMAL, with source ``montgomery`` / ``shenzhen``, view PA and the image stem
as patient id (one image per patient). Tuberculosis images are left out: they are neither pneumonia nor normal.
Licence: NLM sets public for research (Jaeger et al. 2014); the Shenzhen masks are CC BY-NC-SA 4.0.

``rsna_adult:PATH`` reads ``PATH/manifest.csv`` (``path,label,patient_id,...,view,...``) like a plain manifest but
names the source ``rsna_adult`` (a plain manifest would be source ``manifest``), so reports, splits, balancing and
selection can tell it from the others. Its ``view`` column (PA / AP) predicts the label: see its README.

Neither set has a split: training carves test and validation out of each source by patient.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from pneumoscan.data.records import Record, load_manifest, register_source
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

LUNGMASK_COLUMNS = ("image", "source", "finding")


def _manifest(path: Path) -> Path:
    csv_path = path / "manifest.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise DataError(f"{path}: no manifest.csv here")
    return csv_path


@register_source("lungmasks", "lung-mask collection: manifest.csv of Montgomery/Shenzhen PA images (normals only)")
def load_lungmasks(path: Path, options: dict[str, str]) -> list[Record]:
    """Load the adult PA normals of the lung-mask collection (source montgomery / shenzhen, label NORMAL).

    Args:
        path: the collection folder (with ``manifest.csv``) or the manifest itself.
        options: unused (accepted for the loader signature).

    Raises:
        DataError: no manifest, missing columns, or no normal image on disk.
    """
    csv_path = _manifest(path)
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_path}: not a readable CSV manifest ({err})") from err
    missing = [c for c in LUNGMASK_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise DataError(f"{csv_path}: manifest needs the columns {', '.join(LUNGMASK_COLUMNS)} "
                        f"(missing: {', '.join(missing)})")
    records, absent, left_out = [], 0, 0
    for row in rows:
        if (row.get("finding") or "").strip().lower() != "normal":
            left_out += 1
            continue
        image = csv_path.parent / (row.get("image") or "").strip()
        if not image.is_file():
            absent += 1
            continue
        source = (row.get("source") or "").strip().lower() or "lungmasks"
        extra = {"view": "PA", "finding": "normal"}
        if row.get("lung_fraction"):
            extra["lung_fraction"] = row["lung_fraction"].strip()
        records.append(Record(str(image.resolve()), 0, None, image.stem, source, "normal", extra))
    if absent:
        logger.warning("%s: %d listed normal images are missing on disk; skipped", csv_path, absent)
    if not records:
        raise DataError(f"{csv_path}: no normal images found")
    logger.info("lungmasks: %d normals kept, %d tuberculosis images left out", len(records), left_out)
    return records


@register_source("rsna_adult", "RSNA adult sample: manifest.csv with view/age/sex (source rsna_adult)")
def load_rsna_adult(path: Path, options: dict[str, str]) -> list[Record]:
    """Load the rsna_adult manifest as source ``rsna_adult`` (view, age, sex kept in :attr:`Record.extra`).

    Args:
        path: the folder with ``manifest.csv`` or the manifest itself.
        options: unused.
    """
    from dataclasses import replace

    records = load_manifest(_manifest(path))
    return [replace(r, source="rsna_adult") if r.source == "manifest" else r for r in records]
