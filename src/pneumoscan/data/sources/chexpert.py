"""CheXpert v1.0 (Irvin et al., AAAI 2019): 224,316 images of 65,240 patients; the "-small" copy is the same images
downscaled.

Publisher layout (``CheXpert-v1.0-small.zip`` or ``CheXpert-v1.0``)::

    CheXpert-v1.0-small/train.csv   CheXpert-v1.0-small/valid.csv
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

CSV columns: ``Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, Enlarged Cardiomediastinum, Cardiomegaly,
Lung Opacity, Lung Lesion, Edema, Consolidation, Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion,
Pleural Other, Fracture, Support Devices``; values ``1.0`` / ``0.0`` / ``-1.0`` (uncertain) / blank (not mentioned).
``Path`` starts with the distribution folder name (``CheXpert-v1.0-small/train/...``); it is resolved against the
folder that holds the CSV, whatever that folder is called now.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import check_options, chexpert_label, chexpert_value, keep_existing, read_table
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "chexpert"
WRAPPERS = ("", "CheXpert-v1.0-small", "CheXpert-v1.0")
REQUIRED = ("Path", "Frontal/Lateral", "Pneumonia", "No Finding")
CSV_SPLITS = (("train.csv", "train"), ("valid.csv", "val"))


def find_root(path: Path) -> Path:
    """The folder holding ``train.csv`` / ``valid.csv`` (``path`` itself or its ``CheXpert-v1.0*`` sub-folder)."""
    for rel in WRAPPERS:
        folder = path / rel if rel else path
        if any((folder / name).is_file() for name, _ in CSV_SPLITS):
            return folder
    raise DataError(f"{path}: no CheXpert train.csv or valid.csv here or in {', '.join(w for w in WRAPPERS if w)}/")


@register_source(SOURCE, "CheXpert v1.0(-small): train.csv + valid.csv + train/patientNNNNN/studyN/viewN_*.jpg")
def load_chexpert(path: Path, options: dict[str, str]) -> list[Record]:
    """Load CheXpert train (split ``train``) and valid (split ``val``) with the label policy applied.

    Args:
        path: the ``CheXpert-v1.0-small`` folder or the folder that contains it.
        options: ``views``, ``uncertain``, ``others``.
    """
    check_options(SOURCE, options)
    policy = policy_for(SOURCE, options)
    root = find_root(path)
    records: list[Record] = []
    for name, split in CSV_SPLITS:
        if (root / name).is_file():
            records += _load_csv(root, root / name, split, policy.views, policy.uncertain, policy.others)
        else:
            logger.warning("chexpert: %s not found in %s", name, root)
    return keep_existing(records, root, SOURCE)


def _load_csv(root: Path, csv_path: Path, split: str, views: str, uncertain: str, others: str) -> list[Record]:
    out = []
    rows = read_table(csv_path, REQUIRED)
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path}:{i}"
        frontal = row["Frontal/Lateral"]
        if views == "frontal" and frontal != "Frontal":
            continue
        label, subtype = chexpert_label(chexpert_value(row["Pneumonia"], where),
                                        chexpert_value(row["No Finding"], where), uncertain, others)
        if label is None:
            continue
        rel = PurePosixPath(row["Path"])
        patient = next((p for p in rel.parts if p.startswith("patient")), None)
        if patient is None:
            raise DataError(f"{where}: Path '{row['Path']}' has no patientNNNNN component")
        study = next((p for p in rel.parts if p.startswith("study")), "")
        extra = {"view": row.get("AP/PA") or frontal, "frontal_lateral": frontal, "sex": row.get("Sex", ""),
                 "age": row.get("Age", ""), "study_id": f"{patient}/{study}"}
        parts = rel.parts[1:] if rel.parts[0].lower().startswith("chexpert") else rel.parts
        out.append(Record(str(root.joinpath(*parts)), label, split, patient, SOURCE, subtype, extra))
    logger.info("chexpert: %s: %d of %d images kept by the label policy", csv_path.name, len(out), len(rows))
    return out
