""":class:`Record`, the loaders for folders and manifests, and the registry of public-collection loaders.

A *data spec* is what the user passes to ``--data`` (read by :func:`pneumoscan.data.sources.load_records`):

- ``PATH`` to a folder in the layout users download (``{train,val,test}/{NORMAL,PNEUMONIA}/*``, the Kaggle layout),
  or a flat ``{NORMAL,PNEUMONIA}/*`` folder (no split: every image is a holdout / to-be-split image);
  a ``manifest.csv`` inside such a folder that lists all its images adds its further columns (``view``, ...);
- ``PATH`` to a manifest CSV with columns ``path,label[,split][,patient_id][,subtype][,source]``; relative paths are
  resolved against the CSV's folder;
- ``FORMAT:PATH`` for a public collection in its publisher's layout (``nih:/data/ChestX-ray14``); loaders register
  themselves with :func:`register_source` when :mod:`pneumoscan.data.sources` imports them; this module imports none.

Labels are integers: 0 = NORMAL, 1 = PNEUMONIA, ``None`` = unknown (predict-only).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pneumoscan import CLASS_NAMES
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".dcm", ".dicom", ".tif", ".tiff", ""})
SPLITS = ("train", "val", "test")
LABEL_ALIASES = {
    "normal": 0, "0": 0, "negative": 0, "no finding": 0,
    "pneumonia": 1, "1": 1, "positive": 1,
}


@dataclass(frozen=True)
class Record:
    """One image with what is known about it.

    Attributes:
        path: absolute path of the image file.
        label: 0 (NORMAL), 1 (PNEUMONIA) or None when unknown.
        split: "train", "val", "test" or None when the source has no official split.
        patient_id: the patient the image belongs to; None when the source does not say (then each image is
            treated as its own patient, and reports say so).
        source: short name of the data source (e.g. "kermany", "nih", "folder").
        subtype: finer finding, e.g. "bacteria" / "virus" for Kermany, used for subgroup metrics.
        extra: any further per-image attributes a loader wants to keep (view, sex, age, ...), as strings.
    """

    path: str
    label: int | None
    split: str | None = None
    patient_id: str | None = None
    source: str = "folder"
    subtype: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def group(self) -> str:
        """The grouping key for patient-level splits: the patient id, or the file itself when unknown."""
        return f"{self.source}:{self.patient_id}" if self.patient_id else f"{self.source}:file:{self.path}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


SourceLoader = Callable[[Path, dict[str, str]], list[Record]]
_SOURCES: dict[str, SourceLoader] = {}
_SOURCE_DOCS: dict[str, str] = {}


def register_source(name: str, doc: str = "") -> Callable[[SourceLoader], SourceLoader]:
    """Register a loader for ``--data name:PATH``. Raises on duplicate names."""

    def deco(fn: SourceLoader) -> SourceLoader:
        if name in _SOURCES:
            raise ValueError(f"data source '{name}' is registered twice")
        _SOURCES[name] = fn
        _SOURCE_DOCS[name] = doc or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        return fn

    return deco


def registered_sources() -> dict[str, SourceLoader]:
    """The registered loaders by name (:mod:`pneumoscan.data.sources` imports and so registers the built-in ones)."""
    return dict(_SOURCES)


def source_docs() -> dict[str, str]:
    """One-line description of each registered loader, by name."""
    return dict(sorted(_SOURCE_DOCS.items()))


def parse_label(value: str, *, where: str) -> int | None:
    """Map a label string (NORMAL/PNEUMONIA/0/1, any case) to 0/1; empty means unknown."""
    text = value.strip().lower()
    if text == "":
        return None
    if text not in LABEL_ALIASES:
        raise DataError(f"{where}: unknown label '{value}' (expected one of {', '.join(CLASS_NAMES)}, 0 or 1)")
    return LABEL_ALIASES[text]


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def load_folder(root: Path, source: str = "folder") -> list[Record]:
    """Read ``root/{train,val,test}/{NORMAL,PNEUMONIA}/*`` or ``root/{NORMAL,PNEUMONIA}/*``.

    Labels and splits come from the folder names, patient ids and subtypes from Kermany-style file names. When the
    folder also holds a ``manifest.csv`` that lists every image found (as ``rsna_adult/`` and ``kermany224/`` do),
    its further columns (``view``, ``sex``, ``age``, ...) are kept in :attr:`Record.extra` and its ``patient_id``
    fills in where the file name gives none, so that ``--data FOLDER`` and ``--data FOLDER/manifest.csv`` can both
    be grouped by view. What the folder says (label, split, patient id, subtype) is never overridden: a folder
    without a manifest, or with one, loads the same records.

    Raises:
        DataError: neither layout is found, a split lacks one of the two classes, or the folder's manifest.csv
            contradicts the folder (another label or split for an image).
    """
    root = root.resolve()
    split_dirs = [root / s for s in SPLITS if (root / s).is_dir()]
    if split_dirs:
        layout = [(d.name, d) for d in split_dirs]
    elif any((root / c).is_dir() for c in CLASS_NAMES):
        layout = [(None, root)]
    else:
        raise DataError(
            f"{root}: wrong layout: expected {{train,val,test}}/{{NORMAL,PNEUMONIA}}/ or {{NORMAL,PNEUMONIA}}/ "
            f"sub-folders (found: {', '.join(sorted(p.name for p in root.iterdir() if p.is_dir())) or 'no folders'})"
        )
    records: list[Record] = []
    for split, folder in layout:
        for label, cls in enumerate(CLASS_NAMES):
            cls_dir = _find_class_dir(folder, cls)
            files = _list_images(cls_dir) if cls_dir else []
            if not files and split in (None, "train"):
                raise DataError(f"{folder / cls}: class folder missing or empty; both NORMAL and PNEUMONIA are needed")
            for f in files:
                records.append(Record(str(f), label, split, patient_id_from_filename(f.name), source, _subtype(f.name)))
    return _with_folder_manifest(root, records)


FOLDER_MANIFEST = "manifest.csv"


def _with_folder_manifest(root: Path, records: list[Record]) -> list[Record]:
    """Add what ``root/manifest.csv`` knows (extra columns, missing patient ids) to the folder's records.

    The manifest is used only when it lists every image of the folder: a partial or stale manifest would give some
    images a view and others none, which a per-view report would silently mistake for a group. An unreadable one is
    skipped with a warning (the folder alone is a valid data set); one that contradicts the folder is an error.
    """
    csv_path = root / FOLDER_MANIFEST
    if not csv_path.is_file() or not records:
        return records
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        logger.warning("%s: not a readable CSV manifest (%s); using the folder layout alone", csv_path, err)
        return records
    by_path: dict[str, tuple[int, dict[str, str]]] = {}
    for i, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        if rel:
            by_path[os.path.normpath(Path(rel) if Path(rel).is_absolute() else root / rel)] = (i, row)
    missing = sum(1 for r in records if os.path.normpath(r.path) not in by_path)
    if missing:
        logger.info("%s does not list %d of the %d images; its columns are not used", csv_path, missing, len(records))
        return records
    out = []
    for r in records:
        i, row = by_path[os.path.normpath(r.path)]
        where = f"{csv_path}:{i}"
        label = parse_label(row.get("label") or "", where=where)
        if label is not None and label != r.label:
            raise DataError(f"{where}: label {CLASS_NAMES[label]} but the image is in a {CLASS_NAMES[r.label]} folder"
                            " (fix or remove the manifest)")
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and r.split is not None and split != r.split:
            raise DataError(f"{where}: split '{split}' but the image is in the '{r.split}' folder "
                            "(fix or remove the manifest)")
        extra = {k: str(v).strip() for k, v in row.items()
                 if k and k not in MANIFEST_COLUMNS and v is not None and str(v).strip()}
        patient = r.patient_id or (row.get("patient_id") or "").strip() or None
        out.append(replace(r, patient_id=patient, extra={**r.extra, **extra}))
    logger.info("%s: columns %s added to %d images", csv_path, ", ".join(sorted({k for r in out for k in r.extra}))
                or "none", len(out))
    return out


def _find_class_dir(folder: Path, cls: str) -> Path | None:
    for p in folder.iterdir():
        if p.is_dir() and p.name.upper() == cls:
            return p
    return None


def patient_id_from_filename(name: str) -> str | None:
    """Kermany naming: ``person1_bacteria_1`` → ``person1``; ``IM-0001-0001`` → ``IM-0001``;
    ``NORMAL2-IM-0012-0001`` → ``NORMAL2-IM-0012``. Other names give None (patient unknown)."""
    stem = Path(name).stem
    if stem.startswith("person") and "_" in stem:
        return stem.split("_", 1)[0]
    parts = stem.split("-")
    if "IM" in parts:
        i = parts.index("IM")
        if len(parts) >= i + 3:
            return "-".join(parts[: i + 2])
    return None


def _subtype(name: str) -> str | None:
    low = name.lower()
    if "bacteria" in low:
        return "bacteria"
    if "virus" in low:
        return "virus"
    return None


MANIFEST_COLUMNS = ("path", "label", "split", "patient_id", "subtype", "source")


def load_manifest(csv_path: Path) -> list[Record]:
    """Read a manifest CSV: ``path,label[,split][,patient_id][,subtype][,source]`` plus any further columns.

    Further columns (``view``, ``sex``, ``age``, ...) are kept as strings in :attr:`Record.extra`, so that reports can
    group by them (``pneumoscan evaluate --group-by view``) and sampling can balance on them; empty cells are left out.

    Raises:
        DataError: the file is not a CSV with at least the ``path`` column, or a row is malformed.
    """
    csv_path = csv_path.resolve()
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            # Named columns only: a row longer than the header has its extra cells under the key None.
            fields = [f for f in (reader.fieldnames or []) if f]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_path}: not a readable CSV manifest ({err})") from err
    if not rows:
        raise DataError(f"{csv_path}: manifest has no rows")
    if "path" not in fields:
        raise DataError(f"{csv_path}: manifest needs a 'path' column (columns: {', '.join(fields)})")
    base = csv_path.parent
    records = []
    for i, row in enumerate(rows, start=2):
        where = f"{csv_path}:{i}"
        rel = (row.get("path") or "").strip()
        if not rel:
            raise DataError(f"{where}: empty path")
        path = Path(rel) if Path(rel).is_absolute() else base / rel
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise DataError(f"{where}: unknown split '{split}' (expected one of {', '.join(SPLITS)})")
        records.append(Record(
            path=str(path),
            label=parse_label(row.get("label") or "", where=where),
            split=split,
            patient_id=(row.get("patient_id") or "").strip() or None,
            source=(row.get("source") or "").strip() or "manifest",
            subtype=(row.get("subtype") or "").strip() or None,
            extra={k: str(v).strip() for k, v in row.items()
                   if k and k not in MANIFEST_COLUMNS and v is not None and str(v).strip()},
        ))
    return records


def distinct_source_names(records: list[Record], spec: str | Path, seen: set[str]) -> list[Record]:
    """Rename the source of ``records`` when an earlier ``--data`` spec already used the same name.

    Two plain folders are both source ``folder``; without this their patients (``person1``) would be merged and
    per-source balancing and reports would see one source. ``seen`` collects the names used so far.
    """
    names = {r.source for r in records}
    clash = names & seen
    if clash:
        label = Path(str(spec).split(":", 1)[-1]).name or "data"
        records = [replace(r, source=f"{r.source}-{label}") if r.source in clash else r for r in records]
        names = {r.source for r in records}
        k = 2
        while names & seen:
            records = [replace(r, source=f"{r.source}-{k}") for r in records]
            names, k = {r.source for r in records}, k + 1
    seen |= names
    return records


def select_split(records: Iterable[Record], split: str) -> list[Record]:
    """Records of one official split; raises :class:`DataError` when the source has none of it."""
    out = [r for r in records if r.split == split]
    if not out:
        have = sorted({r.split or "none" for r in records})
        raise DataError(f"no images in split '{split}' (splits present: {', '.join(have)})")
    return out
