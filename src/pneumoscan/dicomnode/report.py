"""Results as DICOM: a Comprehensive SR per instance and, optionally, a Secondary Capture of the Grad-CAM overlay.

The SR (Comprehensive SR Storage, built and checked by highdicom) is what a PACS stores and a viewer lists next to
the radiograph. It inherits the Patient and Study modules of the source instance (highdicom copies them from the
``evidence``), so it lands in the same study, and references the source image both in the content tree (an IMAGE
item) and in the Current Requested Procedure Evidence Sequence. Its content tree::

    CONTAINER  (LN 18748-4) Diagnostic imaging report
      CONTAINS IMAGE  (DCM 121322) Source image for image processing operation -> source SOP class / instance
      CONTAINS CODE   Algorithm result status = ok | out of scope | error
      CONTAINS NUM    Probability of pneumonia            (only when status is ok; UCUM "1")
      CONTAINS CODE   (DCM 121071) Finding = PNEUMONIA | NORMAL at the threshold (only when status is ok)
      CONTAINS NUM    Decision threshold                 (UCUM "1")
      CONTAINS TEXT   Threshold population
      CONTAINS TEXT   Threshold rule
      CONTAINS TEXT   Reason                             (why there is no probability; only when there is one)
      CONTAINS TEXT   (DCM 111001) Algorithm Name
      CONTAINS TEXT   (DCM 111003) Algorithm Version
      CONTAINS TEXT   Disclaimer

Codes without a standard equivalent use the private coding scheme ``99PNEUMOSCAN`` (declared in the Coding Scheme
Identification Sequence, PS3.3 C.12.1.1.4). The SR is marked COMPLETE and UNVERIFIED: no human has signed it.

UIDs are deterministic (:func:`result_uid`): the same source instance scored by the same model version always gives
the same SR and Secondary Capture UIDs, which is what makes a re-run after a crash, or a second poll, idempotent in
the PACS.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from pneumoscan import __version__
from pneumoscan.dicomnode.scoring import Outcome
from pneumoscan.errors import require

SCHEME = "99PNEUMOSCAN"
MANUFACTURER = "pneumoscan"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
DISCLAIMER = "Research software, not a medical device: not for diagnostic use without review by a radiologist."
_AGE = re.compile(r"^[0-9]{3}[DWMY]$")
logger = logging.getLogger(__name__)
_STATUS_MEANING = {"ok": "Scored", "out_of_scope": "Out of scope", "error": "Error"}


@contextmanager
def _quiet_warnings(uid: str) -> Iterator[None]:
    """Swallow the warnings highdicom and pydicom raise while building a result and log only how many there were.

    Why: their texts quote attribute values verbatim (e.g. "The string <patient name> is unlikely to represent the
    intended person name"), and warnings end up in logs; a PHI leak through a library warning is still a leak.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if caught:
        kinds = sorted({w.category.__name__ for w in caught})
        logger.debug("%s: %d library warning(s) while building the result (%s; texts withheld: they may quote "
                     "patient attributes)", uid, len(caught), ", ".join(kinds))


def _sanitise_inherited(ds: Any) -> None:
    """Drop inherited optional attributes whose value is invalid for its VR, so that the result validates even when
    the source did not (e.g. PatientAge "62" instead of "062Y" in real exports). Identifiers are never touched."""
    age = ds.get("PatientAge")
    if age is not None and not _AGE.match(str(age)):
        del ds.PatientAge


def _hd() -> Any:
    return require("highdicom", "dicom-node")


def _code(value: str, meaning: str, scheme: str = SCHEME) -> Any:
    return _hd().sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def concepts() -> dict[str, Any]:
    """The concept names used in the content tree, by short key."""
    return {
        "title": _code("18748-4", "Diagnostic imaging report", "LN"),
        "source": _code("121322", "Source image for image processing operation", "DCM"),
        "status": _code("STATUS", "Algorithm result status"),
        "probability": _code("PNEUMONIA-P", "Probability of pneumonia"),
        "finding": _code("121071", "Finding", "DCM"),
        "threshold": _code("THRESHOLD", "Decision threshold"),
        "population": _code("POPULATION", "Threshold population"),
        "threshold_rule": _code("THRESHOLD-RULE", "Threshold rule"),
        "reason": _code("REASON", "Reason"),
        "algorithm_name": _code("111001", "Algorithm Name", "DCM"),
        "algorithm_version": _code("111003", "Algorithm Version", "DCM"),
        "disclaimer": _code("DISCLAIMER", "Disclaimer"),
    }


def result_uid(source_uid: str, version: str, kind: str) -> str:
    """A UID determined by the source instance, the model version and the kind of result ("sr", "sr-series", ...).

    pydicom derives it from a hash of these strings under its own UID root, so it is unique per input and stable
    across runs and machines.
    """
    uid = require("pydicom.uid", "dicom")
    return str(uid.generate_uid(entropy_srcs=[source_uid, version, kind]))  # type: ignore[attr-defined]


def _content(outcome: Outcome, source: Any) -> Any:
    hd = _hd()
    c = concepts()
    unit = _code("1", "no units", "UCUM")
    items: list[Any] = [
        hd.sr.ImageContentItem(name=c["source"], referenced_sop_class_uid=str(source.SOPClassUID),
                               referenced_sop_instance_uid=str(source.SOPInstanceUID), relationship_type="CONTAINS"),
        hd.sr.CodeContentItem(name=c["status"], value=_code(outcome.status.upper(), _STATUS_MEANING[outcome.status]),
                              relationship_type="CONTAINS"),
    ]
    if outcome.status == "ok" and outcome.probability is not None:
        items.append(hd.sr.NumContentItem(name=c["probability"], value=round(float(outcome.probability), 6),
                                          unit=unit, relationship_type="CONTAINS"))
        label = str(outcome.label)
        items.append(hd.sr.CodeContentItem(
            name=c["finding"], value=_code(label, f"{label.capitalize()} at the decision threshold"),
            relationship_type="CONTAINS"))
    items += [
        hd.sr.NumContentItem(name=c["threshold"], value=round(float(outcome.threshold), 6), unit=unit,
                             relationship_type="CONTAINS"),
        hd.sr.TextContentItem(name=c["population"], value=outcome.population, relationship_type="CONTAINS"),
        hd.sr.TextContentItem(name=c["threshold_rule"], value=outcome.threshold_rule[:1024],
                              relationship_type="CONTAINS"),
    ]
    if outcome.reason:
        items.append(hd.sr.TextContentItem(name=c["reason"], value=outcome.reason[:1024],
                                           relationship_type="CONTAINS"))
    items += [
        hd.sr.TextContentItem(name=c["algorithm_name"], value=outcome.model, relationship_type="CONTAINS"),
        hd.sr.TextContentItem(name=c["algorithm_version"], value=outcome.version, relationship_type="CONTAINS"),
        hd.sr.TextContentItem(name=c["disclaimer"], value=DISCLAIMER, relationship_type="CONTAINS"),
    ]
    root = hd.sr.ContainerContentItem(name=c["title"])
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root


def _scheme_identification() -> list[Any]:
    schemes = require("highdicom.coding_schemes", "dicom-node")
    return [schemes.CodingSchemeIdentificationItem(  # type: ignore[attr-defined]
        designator=SCHEME, name="pneumoscan result codes", responsible_organization="pneumoscan")]


def build_sr(outcome: Outcome, source: Any) -> Any:
    """The Comprehensive SR for ``outcome`` about the instance whose header is ``source``.

    Args:
        outcome: the node's answer for the instance.
        source: the source data set (header only is enough: patient, study and SOP identifiers).

    Returns:
        a ``highdicom.sr.ComprehensiveSR`` (a pydicom Dataset), validated by highdicom on construction.
    """
    hd = _hd()
    with _quiet_warnings(outcome.sop_instance_uid):
        sr = hd.sr.ComprehensiveSR(
            evidence=[source], content=_content(outcome, source),
            series_instance_uid=result_uid(str(source.StudyInstanceUID), outcome.version, "sr-series"),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=result_uid(outcome.sop_instance_uid, outcome.version, "sr"),
            instance_number=_instance_number(source), manufacturer=MANUFACTURER, is_complete=True,
            series_description=f"pneumoscan result ({outcome.model})"[:64],
            manufacturer_model_name=outcome.model[:64], software_versions=f"pneumoscan {__version__}",
            coding_schemes=_scheme_identification(),
        )
    _sanitise_inherited(sr)
    return sr


def _instance_number(source: Any) -> int:
    try:
        return max(1, int(source.get("InstanceNumber", 1) or 1))
    except (TypeError, ValueError):
        return 1


def build_heatmap_sc(outcome: Outcome, source: Any, rgb: np.ndarray) -> Any:
    """A Secondary Capture (RGB) of the Grad-CAM overlay, in the source's study, in its own series."""
    hd = _hd()
    orientation = tuple(str(o) for o in list(source.get("PatientOrientation") or ["L", "F"])[:2])
    if len(orientation) != 2:
        orientation = ("L", "F")
    with _quiet_warnings(outcome.sop_instance_uid):
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source, pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
            photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
            series_instance_uid=result_uid(str(source.StudyInstanceUID), outcome.version, "sc-series"),
            sop_instance_uid=result_uid(outcome.sop_instance_uid, outcome.version, "sc"),
            series_number=SC_SERIES_NUMBER, instance_number=_instance_number(source), manufacturer=MANUFACTURER,
            patient_orientation=orientation, transfer_syntax_uid="1.2.840.10008.1.2.1",
            series_description=f"pneumoscan Grad-CAM ({outcome.model})"[:64],
        )
    _sanitise_inherited(sc)
    sc.Laterality = None  # Type 2C in General Series: present and empty (the chest is not a paired structure)
    probability = "" if outcome.probability is None else f"P(pneumonia)={outcome.probability:.3f}; "
    sc.ImageComments = f"Grad-CAM overlay, {probability}{DISCLAIMER}"
    sc.BurnedInAnnotation = "NO"
    sc.DerivationDescription = "Grad-CAM of the pneumonia logit blended over the source image"
    return sc


def read_result(ds: Any) -> dict[str, Any]:
    """The pneumoscan fields of an SR made by :func:`build_sr`, read back from its content tree (for consumers and
    tests): ``{"status", "probability", "label", "threshold", "population", "threshold_rule", "reason",
    "algorithm_name", "algorithm_version", "source_sop_instance_uid", "source_sop_class_uid"}``."""
    by_code = {c.value: k for k, c in concepts().items()}
    out: dict[str, Any] = dict.fromkeys(("status", "probability", "label", "threshold", "population",
                                         "threshold_rule", "reason", "algorithm_name", "algorithm_version",
                                         "source_sop_instance_uid", "source_sop_class_uid"))
    for item in ds.get("ContentSequence", []):
        key = by_code.get(str(item.ConceptNameCodeSequence[0].CodeValue))
        kind = str(item.ValueType)
        if key == "source" and kind == "IMAGE":
            ref = item.ReferencedSOPSequence[0]
            out["source_sop_instance_uid"] = str(ref.ReferencedSOPInstanceUID)
            out["source_sop_class_uid"] = str(ref.ReferencedSOPClassUID)
        elif kind == "NUM" and key in ("probability", "threshold"):
            out[key] = float(item.MeasuredValueSequence[0].NumericValue)
        elif kind == "CODE" and key == "status":
            out["status"] = str(item.ConceptCodeSequence[0].CodeValue).lower()
        elif kind == "CODE" and key == "finding":
            out["label"] = str(item.ConceptCodeSequence[0].CodeValue)
        elif kind == "TEXT" and key in out:
            out[key] = str(item.TextValue)
    return out
