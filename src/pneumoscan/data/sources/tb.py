"""The two NLM tuberculosis sets (Jaeger et al., QIMS 2014): Montgomery County (USA) and Shenzhen (China).

Publisher layouts (``data.lhncbc.nlm.nih.gov/public/Tuberculosis-Chest-X-ray-Datasets/``)::

    MontgomerySet/CXR_png/MCUCXR_0001_0.png          _0 normal, _1 tuberculosis (138 images: 80 / 58)
    MontgomerySet/ClinicalReadings/MCUCXR_0001_0.txt "Patient's Sex: F", "Patient's Age: 027Y", then the reading
    MontgomerySet/ManualMask/{leftMask,rightMask}/   (lung masks; not used)

    ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png      _0 normal, _1 tuberculosis (662 images: 326 / 336)
    ChinaSet_AllFiles/ClinicalReadings/CHNCXR_0001_0.txt   "male 45yrs" (free form), then the reading

Neither set has pneumonia labels: their normals are usable as NORMAL, which makes them holdouts for specificity
(false-positive rate on healthy adults from other hospitals) and nothing else. Tuberculosis images are left out by
default (``others=negative`` counts them as NORMAL, i.e. "not pneumonia"). The clinical readings are optional.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import check_options
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

_SEX_AGE = re.compile(r"(?P<sex>fem\w*|mal\w*)[\s,]*(?P<age>\d+)\s*(?P<unit>\w*)", re.IGNORECASE)
_FIELD = re.compile(r"Patient's\s+(?P<key>Sex|Age)\s*:\s*(?P<value>\S*)", re.IGNORECASE)


def _load(path: Path, options: dict[str, str], source: str, prefix: str, wrappers: tuple[str, ...]) -> list[Record]:
    check_options(source, options)
    policy = policy_for(source, options)
    root = next((path / w for w in wrappers if (path / w / "CXR_png").is_dir()), None)
    if root is None:
        raise DataError(f"{path}: no CXR_png/ folder here or in {', '.join(w for w in wrappers if w)}/")
    pattern = re.compile(rf"^{prefix}_(\d+)_([01])\.png$", re.IGNORECASE)
    records = []
    for file in sorted((root / "CXR_png").iterdir()):
        match = pattern.match(file.name)
        if not match:
            continue
        tb = match.group(2) == "1"
        if tb and policy.others != "negative":
            continue
        extra = {"view": "PA", "tuberculosis": "yes" if tb else "no", **_reading(root, file.stem)}
        records.append(Record(str(file), 0, None, None, source, "tuberculosis" if tb else "normal", extra))
    if not records:
        raise DataError(f"{root / 'CXR_png'}: no {prefix}_NNNN_0.png images")
    logger.info("%s: %d images", source, len(records))
    return records


def _reading(root: Path, stem: str) -> dict[str, str]:
    """Sex, age and the reading text from ClinicalReadings/<stem>.txt (both publishers' formats); {} if absent."""
    txt = root / "ClinicalReadings" / f"{stem}.txt"
    try:
        text = txt.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    rest = []
    for line in (ln.strip() for ln in text.splitlines()):
        field = _FIELD.search(line)
        sex_age = _SEX_AGE.match(line) if not field and "sex" not in out else None
        if field:
            value = field.group("value")
            out[field.group("key").lower()] = value.lstrip("0").rstrip("Yy") if field.group("key").lower() == "age" \
                else value
        elif sex_age:
            out["sex"] = "F" if sex_age.group("sex").lower().startswith("fem") else "M"
            out["age"] = sex_age.group("age") if sex_age.group("unit").lower().startswith("y") else \
                f"{sex_age.group('age')} {sex_age.group('unit')}"
        elif line:
            rest.append(line)
    out["reading"] = " ".join(rest)
    return out


@register_source("montgomery", "Montgomery County TB set: MontgomerySet/CXR_png/MCUCXR_NNNN_{0,1}.png (normals only)")
def load_montgomery(path: Path, options: dict[str, str]) -> list[Record]:
    """Load the Montgomery normals (NORMAL, for specificity); TB images only with ``others=negative``.

    Args:
        path: the ``MontgomerySet`` folder or the folder that contains it.
        options: ``others``.
    """
    return _load(path, options, "montgomery", "MCUCXR", ("", "MontgomerySet", "MontgomerySet/MontgomerySet"))


@register_source("shenzhen", "Shenzhen TB set: ChinaSet_AllFiles/CXR_png/CHNCXR_NNNN_{0,1}.png (normals only)")
def load_shenzhen(path: Path, options: dict[str, str]) -> list[Record]:
    """Load the Shenzhen normals (NORMAL, for specificity); TB images only with ``others=negative``.

    Args:
        path: the ``ChinaSet_AllFiles`` folder or the folder that contains it.
        options: ``others``.
    """
    return _load(path, options, "shenzhen", "CHNCXR",
                 ("", "ChinaSet_AllFiles", "ChinaSet_AllFiles/ChinaSet_AllFiles"))
