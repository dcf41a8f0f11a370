"""Label policies: which findings of a public collection count as PNEUMONIA, which as NORMAL, and what is left out.

Public chest X-ray collections were not labelled for "pneumonia vs normal". NIH ChestX-ray14, MIMIC-CXR and CheXpert
have 14 multi-label findings mined from reports, with "uncertain" values; RSNA has "Lung Opacity"; the tuberculosis
and nodule sets have no pneumonia label at all. How these are mapped to our two classes changes every reported
number, so the mapping is explicit, printable and saved with each training run:

>>> from pneumoscan.data.label_policy import describe_policy
>>> describe_policy("chexpert:/data/CheXpert-v1.0-small", {"uncertain": "positive"})["pneumonia"]
'Pneumonia == 1 (uncertain -1 also counted as PNEUMONIA: uncertain=positive)'

Switches every loader understands (passed as ``--data-option key=value``; a switch that does not apply to a source is
ignored with a log line, so one option set can serve several ``--data`` specs):

- ``views=frontal|all`` (default ``frontal``): keep only PA/AP (frontal) images, or every view.
- ``uncertain=exclude|positive|negative`` (default ``exclude``): how uncertain (-1) pneumonia mentions of
  MIMIC-CXR and CheXpert are treated.
- ``others=exclude|negative`` (default ``exclude``): images with findings other than pneumonia (and not marked
  normal) are left out, or counted as NORMAL (i.e. the negative class becomes "not pneumonia"). Leaving them out
  makes the task "pneumonia vs clear lungs", which is what the Kermany benchmark measures; counting them as NORMAL
  makes a harder, clinically closer task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pneumoscan.errors import ConfigError

logger = logging.getLogger(__name__)

VIEWS = ("frontal", "all")
UNCERTAIN = ("exclude", "positive", "negative")
OTHERS = ("exclude", "negative")
NOT_APPLICABLE = "n/a"
SWITCHES: dict[str, tuple[str, ...]] = {"views": VIEWS, "uncertain": UNCERTAIN, "others": OTHERS}
DEFAULTS: dict[str, str] = {"views": "frontal", "uncertain": "exclude", "others": "exclude"}


@dataclass(frozen=True)
class _SourceFacts:
    """What is fixed about a source (its publisher's labels); the switches are applied on top."""

    title: str
    pneumonia: str
    normal: str
    other_findings: str
    patient_ids: str
    split: str
    switches: tuple[str, ...] = ()
    pneumonia_labels: bool = True
    notes: tuple[str, ...] = ()


_FACTS: dict[str, _SourceFacts] = {
    "kermany": _SourceFacts(
        title="Kermany et al. 2018 pediatric chest X-rays (Guangzhou; Mendeley/Kaggle 'chest_xray')",
        pneumonia="images in the PNEUMONIA folders (bacterial and viral; subtype from the file name)",
        normal="images in the NORMAL folders",
        other_findings="none: the collection has only the two classes",
        patient_ids="from file names (personN, IM-xxxx, NORMAL2-IM-xxxx); whether personN names one patient across "
        "bacteria/virus images is not documented",
        split="official train/val/test (val has only 16 images)",
        notes=("170 personN ids occur in both train and test of the official split",),
    ),
    "nih": _SourceFacts(
        title="NIH ChestX-ray14 (Wang et al. 2017)",
        pneumonia="'Pneumonia' among the Finding Labels (alone or with other findings)",
        normal="Finding Labels == 'No Finding'",
        other_findings="images with other findings and no 'Pneumonia'",
        patient_ids="known: 'Patient ID' column (zero-padded to the 8 digits of the file names)",
        split="official train_val_list.txt -> train, test_list.txt -> test (no official val: carve it from train "
        "by patient)",
        switches=("views", "others"),
        notes=("labels were text-mined from reports (NLP); 'Pneumonia' has low precision",
               "all images are frontal (View Position PA or AP)"),
    ),
    "rsna": _SourceFacts(
        title="RSNA Pneumonia Detection Challenge 2018 (stage 2 train; images from NIH ChestX-ray14)",
        pneumonia="Target == 1 (class 'Lung Opacity', radiologist-annotated boxes)",
        normal="class 'Normal'",
        other_findings="class 'No Lung Opacity / Not Normal'",
        patient_ids="unknown: RSNA's 'patientId' identifies an image, not a patient (the real patient of these "
        "NIH images is not published): each image is treated as its own patient",
        split="none (stage 2 test labels were never published)",
        switches=("views", "others"),
        notes=("'Lung Opacity' is opacity suspicious for pneumonia, not a clinical diagnosis",
               "all images are frontal (PA/AP); ViewPosition is read from the DICOM header with dicom_meta=yes",
               "an image with a Target but no row in the detailed class file is excluded, with one warning giving "
               "the count (missing_class=error stops instead)"),
    ),
    "mimic": _SourceFacts(
        title="MIMIC-CXR-JPG 2.x (Beth Israel Deaconess; CheXpert- or NegBio-labelled reports)",
        pneumonia="Pneumonia == 1 in mimic-cxr-2.0.0-chexpert.csv (study-level label, given to every image of the "
        "study)",
        normal="No Finding == 1 and Pneumonia not 1/-1",
        other_findings="studies with other findings (neither Pneumonia == 1 nor No Finding == 1)",
        patient_ids="known: subject_id",
        split="official mimic-cxr-2.0.0-split.csv (train / validate -> val / test)",
        switches=("views", "uncertain", "others"),
        notes=("labels were text-mined from reports; studies without a label row are left out",),
    ),
    "chexpert": _SourceFacts(
        title="CheXpert v1.0 (Stanford; train labelled by the CheXpert labeller, valid by 3 radiologists)",
        pneumonia="Pneumonia == 1",
        normal="No Finding == 1 and Pneumonia not 1/-1",
        other_findings="images with other findings (neither Pneumonia == 1 nor No Finding == 1)",
        patient_ids="known: patientNNNNN from the Path column",
        split="train.csv -> train, valid.csv -> val (the hidden test set is not part of the download)",
        switches=("views", "uncertain", "others"),
    ),
    "openi": _SourceFacts(
        title="Open-i Indiana University chest X-rays (NLM; XML reports or the Kaggle CSV form)",
        pneumonia="a MeSH major term whose heading is 'Pneumonia' (e.g. 'Pneumonia/upper lobe/right')",
        normal="the only MeSH major term is 'normal'",
        other_findings="reports with other MeSH terms and no 'Pneumonia'",
        patient_ids="unknown: a report (uid) is one study; patients are not identified (study id kept in extra)",
        split="none",
        switches=("views", "others"),
        notes=("views come from indiana_projections.csv; the XML alone does not say which image is lateral, so "
               "views=frontal needs that file (or pass views=all)",),
    ),
    "lungmasks": _SourceFacts(
        title="Lung-mask collection: Montgomery County + Shenzhen PA images (NLM) with manual lung masks",
        pneumonia="none: no pneumonia labels",
        normal="manifest finding 'normal' (file names ending _0)",
        other_findings="finding 'tuberculosis' (left out: neither pneumonia nor normal)",
        patient_ids="the image stem (one image per patient)",
        split="none (train/val/test carved by patient)",
        pneumonia_labels=False,
        notes=("adult PA normals from two more hospitals: specificity and acquisition diversity only",
               "Shenzhen masks CC BY-NC-SA 4.0: models trained on them inherit non-commercial, share-alike terms"),
    ),
    "rsna_adult": _SourceFacts(
        title="RSNA Pneumonia Detection Challenge 2018, adult sample (NIH ChestX-ray14 pixels, radiologist labels)",
        pneumonia="RSNA class 'Lung Opacity'",
        normal="RSNA class 'Normal'",
        other_findings="'No Lung Opacity / Not Normal' (not in the sample)",
        patient_ids="manifest patient_id (one image per patient)",
        split="none (train/val/test carved by patient, stratified by label and view)",
        notes=("the view predicts the label (PA mostly normal, AP mostly opacity): report within-view figures",
               "RSNA/Kaggle terms: non-commercial research and education"),
    ),
    "montgomery": _SourceFacts(
        title="Montgomery County tuberculosis screening set (NLM)",
        pneumonia="none: no pneumonia labels",
        normal="file names ending _0 (normal)",
        other_findings="file names ending _1 (tuberculosis)",
        patient_ids="unknown: one image per file number, patients not identified",
        split="none",
        switches=("others",),
        pneumonia_labels=False,
        notes=("holdout for specificity (false-positive rate on normals) only: there is no PNEUMONIA class",),
    ),
    "shenzhen": _SourceFacts(
        title="Shenzhen No.3 Hospital tuberculosis set (NLM, ChinaSet_AllFiles)",
        pneumonia="none: no pneumonia labels",
        normal="file names ending _0 (normal)",
        other_findings="file names ending _1 (tuberculosis)",
        patient_ids="unknown: one image per file number, patients not identified",
        split="none",
        switches=("others",),
        pneumonia_labels=False,
        notes=("holdout for specificity only: there is no PNEUMONIA class",),
    ),
    "jsrt": _SourceFacts(
        title="JSRT digital image database (Japanese Society of Radiological Technology)",
        pneumonia="none: no pneumonia labels",
        normal="JPCNN*.IMG (non-nodule)",
        other_findings="JPCLN*.IMG (lung nodule)",
        patient_ids="unknown: one image per case number, patients not identified",
        split="none",
        switches=("others",),
        pneumonia_labels=False,
        notes=("holdout for specificity only: there is no PNEUMONIA class",
               "raw .IMG files are converted once to 16-bit PNG in the cache folder"),
    ),
    "pneumoniamnist": _SourceFacts(
        title="PneumoniaMNIST (MedMNIST v2/v3; derived from the Kermany images)",
        pneumonia="label 1",
        normal="label 0",
        other_findings="none: the collection has only the two classes",
        patient_ids="unknown: MedMNIST publishes no patient ids (its split was made from Kermany's)",
        split="official train/val/test of the .npz",
        notes=("images are materialised once as PNG files in the cache folder",
               "same source images as kermany: never train on one and test on the other"),
    ),
    "folder": _SourceFacts(
        title="a folder in the Kaggle layout ({train,val,test}/{NORMAL,PNEUMONIA}/*)",
        pneumonia="images in PNEUMONIA folders",
        normal="images in NORMAL folders",
        other_findings="none",
        patient_ids="from Kermany-style file names when they match, else unknown",
        split="from the folder names when present",
    ),
    "manifest": _SourceFacts(
        title="a manifest CSV (path,label[,split][,patient_id][,subtype][,source])",
        pneumonia="label PNEUMONIA/1/positive",
        normal="label NORMAL/0/negative/'no finding'",
        other_findings="none (empty label = unknown, predict-only)",
        patient_ids="from the patient_id column when present",
        split="from the split column when present",
    ),
}


@dataclass(frozen=True)
class LabelPolicy:
    """How one source's labels become NORMAL (0) / PNEUMONIA (1) / left out, with the switches in force.

    Every field is a plain string, bool or tuple so that :meth:`to_dict` is JSON-serialisable and a training run can
    save it next to its checkpoint.

    Attributes:
        source: source name (``nih``, ``chexpert``, ...).
        title: what the collection is.
        pneumonia: what counts as PNEUMONIA.
        normal: what counts as NORMAL.
        excluded: what is left out (semicolon-separated).
        views: ``frontal`` / ``all``, or ``n/a`` when the source has one view only or no view information.
        uncertain: ``exclude`` / ``positive`` / ``negative``, or ``n/a`` when the source has no uncertain labels.
        others: ``exclude`` / ``negative`` (images with other findings), or ``n/a``.
        patient_ids: whether real patient ids are known.
        split: the official split, if any.
        pneumonia_labels: False for sources that have no pneumonia class (usable for specificity only).
        notes: caveats worth printing.
    """

    source: str
    title: str
    pneumonia: str
    normal: str
    excluded: str
    views: str
    uncertain: str
    others: str
    patient_ids: str
    split: str
    pneumonia_labels: bool
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (tuples become lists)."""
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d

    def summary(self) -> str:
        """One line: ``PNEUMONIA = ...; NORMAL = ...; excluded: ...``."""
        return f"PNEUMONIA = {self.pneumonia}; NORMAL = {self.normal}; excluded: {self.excluded}"

    def describe(self) -> str:
        """Multi-line human-readable text for logs and ``pneumoscan sources``."""
        lines = [
            f"{self.source}: {self.title}",
            f"  PNEUMONIA   : {self.pneumonia}",
            f"  NORMAL      : {self.normal}",
            f"  excluded    : {self.excluded}",
            f"  switches    : views={self.views} uncertain={self.uncertain} others={self.others}",
            f"  patient ids : {self.patient_ids}",
            f"  split       : {self.split}",
        ]
        lines += [f"  note        : {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def known_policies() -> tuple[str, ...]:
    """Names that :func:`policy_for` knows (public sources plus ``folder`` and ``manifest``)."""
    return tuple(_FACTS)


def resolve_switches(source: str, options: Mapping[str, str] | None) -> dict[str, str]:
    """The switch values in force for ``source``: validated user values over defaults, ``n/a`` where not applicable.

    Raises:
        ConfigError: a switch has a value outside its choices.
    """
    options = options or {}
    facts = _facts(source)
    out: dict[str, str] = {}
    for key, choices in SWITCHES.items():
        raw = options.get(key)
        value = raw.strip().lower() if isinstance(raw, str) else None
        if value is not None and value not in choices:
            raise ConfigError(f"data option {key}={raw!r} is invalid; choose one of: {', '.join(choices)}")
        if key not in facts.switches:
            if value is not None:
                logger.info("data option %s=%s does not apply to source '%s'; ignored", key, value, source)
            out[key] = NOT_APPLICABLE
        else:
            out[key] = value or DEFAULTS[key]
    return out


def policy_for(source: str, options: Mapping[str, str] | None = None) -> LabelPolicy:
    """The label policy of ``source`` with ``options`` applied.

    Args:
        source: a source name (see :func:`known_policies`).
        options: loader options; only the switches ``views``, ``uncertain`` and ``others`` matter here.

    Raises:
        ConfigError: unknown source or invalid switch value.
    """
    facts = _facts(source)
    sw = resolve_switches(source, options)
    return LabelPolicy(
        source=source,
        title=facts.title,
        pneumonia=_pneumonia_text(facts, sw),
        normal=_normal_text(facts, sw),
        excluded=_excluded_text(facts, sw),
        views=sw["views"],
        uncertain=sw["uncertain"],
        others=sw["others"],
        patient_ids=facts.patient_ids,
        split=facts.split,
        pneumonia_labels=facts.pneumonia_labels,
        notes=facts.notes,
    )


def describe_policy(spec_or_source: str | Path, options: Mapping[str, str] | None = None) -> dict[str, object]:
    """The label policy for a ``--data`` spec or a source name, as a JSON-serialisable dict.

    This is what a training or evaluation run prints and saves (``json.dumps(describe_policy(spec, opts))``) so that
    the meaning of "PNEUMONIA" and "NORMAL" travels with its numbers.

    Args:
        spec_or_source: ``"nih:/data/ChestX-ray14"``, ``"nih"``, a folder path or a manifest CSV path.
        options: the ``--data-option`` values given for that spec.

    Returns:
        :meth:`LabelPolicy.to_dict` plus ``"spec"`` (the input as a string) and ``"summary"`` (one line).

    Raises:
        ConfigError: unknown source name or invalid switch value.
    """
    text = str(spec_or_source)
    source = _source_of_spec(text)
    policy = policy_for(source, options)
    out = policy.to_dict()
    out["spec"] = text
    out["summary"] = policy.summary()
    return out


def _source_of_spec(text: str) -> str:
    fmt, sep, _ = text.partition(":")
    if fmt in _FACTS and (sep or fmt == text):
        return fmt
    if sep and fmt.isidentifier() and len(fmt) > 1 and not Path(text).exists():
        raise ConfigError(f"unknown data format '{fmt}' in '{text}'; known: {', '.join(sorted(_FACTS))}")
    path = Path(text).expanduser()
    return "manifest" if path.suffix.lower() == ".csv" or path.is_file() else "folder"


def _facts(source: str) -> _SourceFacts:
    try:
        return _FACTS[source]
    except KeyError:
        raise ConfigError(f"no label policy for source '{source}'; known: {', '.join(sorted(_FACTS))}") from None


def _pneumonia_text(facts: _SourceFacts, sw: dict[str, str]) -> str:
    if sw["uncertain"] == "positive":
        return f"{facts.pneumonia} (uncertain -1 also counted as PNEUMONIA: uncertain=positive)"
    return facts.pneumonia


def _normal_text(facts: _SourceFacts, sw: dict[str, str]) -> str:
    parts = [facts.normal]
    if sw["others"] == "negative":
        parts.append(f"{facts.other_findings} (others=negative)")
    if sw["uncertain"] == "negative":
        parts.append("uncertain (-1) pneumonia (uncertain=negative)")
    return " + ".join(parts)


def _excluded_text(facts: _SourceFacts, sw: dict[str, str]) -> str:
    parts = []
    if sw["others"] == "exclude":
        parts.append(facts.other_findings)
    if sw["uncertain"] == "exclude":
        parts.append("uncertain (-1) pneumonia labels")
    if sw["views"] == "frontal":
        parts.append("lateral and other non-frontal views")
    return "; ".join(parts) or "nothing"
