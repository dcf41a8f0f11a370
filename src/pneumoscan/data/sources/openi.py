"""Open-i Indiana University chest X-rays (Demner-Fushman et al., JAMIA 2016): 3,955 reports, 7,470 images.

Two published forms are accepted:

1. NLM's own download (``NLMCXR_reports.tgz`` + ``NLMCXR_png.tgz``)::

       ecgen-radiology/1.xml ... 3955.xml       one report each
       NLMCXR_png/CXR1_1_IM-0001-3001.png ...   one file per <parentImage id="...">

   Each XML is an ``<eCitation>`` with ``<uId id="CXR1"/>``, ``<MeSH><major>Pneumonia/upper lobe/right</major>
   <automatic>...</automatic></MeSH>`` (``<major>normal</major>`` for normal studies) and one ``<parentImage
   id="CXR1_1_IM-0001-3001">`` per image.
2. The Kaggle copy (``raddar/chest-xrays-indiana-university``)::

       indiana_reports.csv       uid,MeSH,Problems,image,indication,comparison,findings,impression
       indiana_projections.csv   uid,filename,projection        projection in {Frontal, Lateral}
       images/images_normalized/1_IM-0001-4001.dcm.png

   ``MeSH`` holds the major terms joined with ``;`` (``Cardiomegaly/borderline;Pulmonary Artery/enlarged``).

Only the Kaggle ``indiana_projections.csv`` says which image is lateral, one row per file. With the Kaggle form each
image's view is the ``projection`` of its own row (looked up by file name). With the XML form, put that file next to
``ecgen-radiology/`` or pass ``views=all``; an XML image is matched to its row by report uid and its whole ``IM-`` code
(``IM-0140-0001-0002``, every number group): many real names carry four numbers, and the images of one study that
share the first two (``1207_IM-0140-0001-0001`` lateral, ``1207_IM-0140-0001-0002`` frontal) must not share a view.
An image whose row is missing or ambiguous gets the view ``unknown`` (left out by ``views=frontal``), with a warning
giving the count.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import check_options, find_dir, keep_existing, read_table
from pneumoscan.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SOURCE = "openi"
_IM = re.compile(r"IM-\d+(?:-\d+)+")  # the whole code: IM-0001-4001 or IM-0140-0001-0002
UNKNOWN = "unknown"
#: (uid, MeSH major terms, [(image id or file name, view)]); the view is None until looked up (XML form).
Report = tuple[str, list[str], list[tuple[str, str | None]]]


@register_source(SOURCE, "Open-i Indiana chest X-rays: ecgen-radiology/*.xml + NLMCXR_png/, or Kaggle indiana_*.csv")
def load_openi(path: Path, options: dict[str, str]) -> list[Record]:
    """Load Open-i (XML or Kaggle CSV form) with MeSH-based labels.

    Args:
        path: the folder holding ``ecgen-radiology/`` or ``indiana_reports.csv``.
        options: ``views``, ``others``.

    Raises:
        DataError: neither form is found, or an XML report cannot be parsed.
        ConfigError: ``views=frontal`` with the XML form and no ``indiana_projections.csv``.
    """
    check_options(SOURCE, options)
    policy = policy_for(SOURCE, options)
    projections: dict[tuple[str, str], str] = {}  # XML form only: the Kaggle rows carry their view themselves
    xml_dir = find_dir(path, ("", "NLMCXR_reports"), "ecgen-radiology")
    if (path / "indiana_reports.csv").is_file():
        reports, images = _kaggle_reports(path), _image_dir(path, ("images/images_normalized", "images", ""))
    elif xml_dir is not None:
        reports, images = _xml_reports(xml_dir / "ecgen-radiology"), _image_dir(path, ("NLMCXR_png", "images", ""))
        projections = _projections(path)
        if policy.views == "frontal" and not projections:
            raise ConfigError(f"{path}: the Open-i XML reports do not say which image is lateral; put the Kaggle "
                              "indiana_projections.csv next to ecgen-radiology/ or pass --data-option views=all")
    else:
        raise DataError(f"{path}: neither ecgen-radiology/ (Open-i XML reports) nor indiana_reports.csv found")
    records = []
    unmatched: list[str] = []
    for uid, terms, files in reports:
        label, subtype = _label(terms, policy.others)
        if label is None:
            continue
        for name, known in files:
            view = known if known is not None else projections.get((uid, _im_part(name)), UNKNOWN)
            if view == UNKNOWN and (known is not None or projections):  # XML alone: unknown views are expected
                unmatched.append(name)
            if policy.views == "frontal" and view != "Frontal":
                continue
            file = name if name.endswith(".png") else f"{name}.png"
            extra = {"view": view, "study_id": uid, "mesh": ";".join(terms)}
            records.append(Record(str(images / file), label, None, None, SOURCE, subtype, extra))
    if unmatched:
        logger.warning("openi: %d images of labelled reports have no unambiguous row in indiana_projections.csv; "
                       "their view is unknown%s (e.g. %s)", len(unmatched),
                       " and they were left out (views=frontal)" if policy.views == "frontal" else "", unmatched[0])
    logger.info("openi: %d images kept from %d reports", len(records), len(reports))
    return keep_existing(records, images, SOURCE)


def _label(terms: list[str], others: str) -> tuple[int | None, str | None]:
    """PNEUMONIA when a MeSH major heading is 'Pneumonia'; NORMAL when the only term is 'normal'."""
    heads = {t.split("/")[0].strip().lower() for t in terms if t.strip()}
    if "pneumonia" in heads:
        return 1, "isolated" if len(heads) == 1 else "with_other_findings"
    if heads == {"normal"}:
        return 0, "normal"
    if heads and others == "negative":
        return 0, "other_findings"
    return None, None


def _im_part(name: str) -> str:
    """The whole ``IM-`` code of an image name (every number group), or the name itself when it has none."""
    match = _IM.search(name)
    return match.group(0) if match else name


def _uid(text: str) -> str:
    """``'CXR12'`` or ``'12'`` -> ``'12'``: the report number shared by both forms."""
    return text[3:] if text.upper().startswith("CXR") else text


def _projections(root: Path) -> dict[tuple[str, str], str]:
    """(report uid, whole IM code) -> 'Frontal' / 'Lateral' from indiana_projections.csv, for the XML form.

    A key that two rows give different views is mapped to ``unknown`` rather than to whichever row came last.
    """
    csv_path = root / "indiana_projections.csv"
    if not csv_path.is_file():
        return {}
    out: dict[tuple[str, str], str] = {}
    for row in read_table(csv_path, ("uid", "filename", "projection")):
        key = (_uid(row["uid"]), _im_part(row["filename"]))
        out[key] = row["projection"] if out.get(key, row["projection"]) == row["projection"] else UNKNOWN
    return out


def _kaggle_reports(root: Path) -> list[Report]:
    """Reports with their files, each with the view of its own row of indiana_projections.csv."""
    reports = read_table(root / "indiana_reports.csv", ("uid", "MeSH"))
    csv_path = root / "indiana_projections.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: not found (the Kaggle form needs it to list each report's images)")
    views: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for row in read_table(csv_path, ("uid", "filename", "projection")):
        name, view = row["filename"], row["projection"] or UNKNOWN
        if name in views:  # listed twice: keep one record; conflicting views make it unknown, not the last row's
            views[name] = view if views[name] == view else UNKNOWN
            continue
        views[name] = view
        files.setdefault(_uid(row["uid"]), []).append(name)
    return [(_uid(r["uid"]), r["MeSH"].split(";"), [(f, views[f]) for f in files.get(_uid(r["uid"]), [])])
            for r in reports]


def _xml_reports(folder: Path) -> list[Report]:
    out = []
    for xml_path in sorted(folder.glob("*.xml")):
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as err:
            raise DataError(f"{xml_path}: not a readable Open-i report ({err})") from err
        uid_el = root.find("uId")
        uid = _uid(uid_el.get("id", "") if uid_el is not None else "") or xml_path.stem
        terms = [(m.text or "").strip() for m in root.iterfind(".//MeSH/major")]
        images: list[tuple[str, str | None]] = [(el.get("id", ""), None) for el in root.iter("parentImage")
                                                if el.get("id")]
        out.append((uid, terms, images))
    if not out:
        raise DataError(f"{folder}: no Open-i XML reports (*.xml)")
    return out


def _image_dir(root: Path, candidates: tuple[str, ...]) -> Path:
    for rel in candidates:
        folder = root / rel if rel else root
        if folder.is_dir() and next(folder.glob("*.png"), None) is not None:
            return folder
    raise DataError(f"{root}: no folder of PNG images found (looked in {', '.join(c or '.' for c in candidates)})")
