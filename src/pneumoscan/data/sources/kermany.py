"""Kermany et al. (2018) pediatric chest X-rays, as published on Mendeley Data and mirrored on Kaggle.

Layouts found in the wild (all accepted; give any of these folders):

- Kaggle ``chest-xray-pneumonia``: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``, often with a second
  copy under ``chest_xray/chest_xray/`` and a ``__MACOSX/`` folder of resource forks (both ignored);
- Mendeley v2 ``ChestXRay2017.zip``: ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg`` (no val);
- Mendeley v3 ``ZhangLabData``: ``CellData/chest_xray/{train,test}/...``;
- a folder with a ``manifest.csv`` (``path,label,split,patient_id,subtype[,sha256]``), e.g. the 224-px copy in
  ``shared/data/kermany224``: the manifest is used as is (its sha256 column is kept in ``extra``).

File names carry the patient and the subtype: ``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg``,
``IM-0001-0001.jpeg``, ``NORMAL2-IM-0012-0001.jpeg``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from pneumoscan.data.records import SPLITS, Record, load_folder, load_manifest, register_source
from pneumoscan.data.sources._common import check_options, read_table
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "kermany"
_WRAPPERS = ("", "chest_xray", "chest_xray/chest_xray", "CellData/chest_xray", "ZhangLabData/CellData/chest_xray")


def find_root(path: Path) -> Path:
    """The folder that holds ``train/`` etc. (or ``manifest.csv``) under ``path`` or its known wrapper folders.

    Raises:
        DataError: no wrapper holds the layout; the message names ``path`` and what was looked for.
    """
    if path.is_file():
        return path
    for rel in _WRAPPERS:
        folder = path / rel if rel else path
        if (folder / "manifest.csv").is_file():
            return folder / "manifest.csv"
        if any((folder / s).is_dir() for s in SPLITS):
            return folder
    raise DataError(
        f"{path}: not a Kermany chest_xray folder (expected train/ and test/ with NORMAL/ and PNEUMONIA/, "
        f"or manifest.csv, here or under {', '.join(w for w in _WRAPPERS if w)})"
    )


@register_source(SOURCE, "Kermany/Kaggle pediatric chest X-rays: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}")
def load_kermany(path: Path, options: dict[str, str]) -> list[Record]:
    """Load the Kermany pediatric set (folder layout or its manifest) with the official split.

    Args:
        path: the download folder, the ``chest_xray`` folder, or a ``manifest.csv``.
        options: only the common options; the label-policy switches do not apply (two classes, frontal only).
    """
    check_options(SOURCE, options)
    root = find_root(path)
    if root.is_file():
        return _from_manifest(root)
    return [_finish(r, "") for r in load_folder(root, source=SOURCE)]


def _from_manifest(csv_path: Path) -> list[Record]:
    csv_path = csv_path.resolve()
    rows = read_table(csv_path, required=("path", "label"))
    sha = {(csv_path.parent / row["path"]).as_posix(): row.get("sha256", "") for row in rows}
    out = [_finish(r, sha.get(Path(r.path).as_posix(), "")) for r in load_manifest(csv_path)]
    logger.info("kermany: %d images from %s", len(out), csv_path)
    return out


def _finish(record: Record, sha256: str) -> Record:
    """Set source, a uniform subtype (normal / bacteria / virus) and extra (view; sha256 when the manifest has it)."""
    extra = {"view": "frontal", **({"sha256": sha256} if sha256 else {})}
    subtype = record.subtype or ("normal" if record.label == 0 else None)
    return dataclasses.replace(record, source=SOURCE, subtype=subtype, extra=extra)
