"""What to score: a manifest (CSV or Parquet of paths) or a folder tree of images, as one list of :class:`Item`.

The list is built once, in the driver, before anything runs: it fixes the identity of every image (its path as
written, relative paths resolved against the manifest's folder) and therefore what "already done" means on resume.

- **Manifest** (``.csv`` or ``.parquet``): a ``path`` column, optional ``label`` (NORMAL/PNEUMONIA/0/1, empty =
  unknown) and ``group`` (or ``patient_id``: the unit the evaluation's bootstrap resamples). Every other column is
  carried into the output unchanged, as text (``subtype``, ``split``, ``site``, ...), so the scored archive can be
  analysed by them later without joining back to the manifest.
- **Folder**: every JPEG/PNG/TIFF/BMP/DICOM file below it (by extension, hidden files skipped). A path component
  named ``NORMAL`` or ``PNEUMONIA`` (any case) gives the label, and the Kermany file-name convention gives the patient
  and subtype — the same reading :func:`pneumoscan.data.records.load_folder` makes, so that scoring
  ``kermany224/test`` and evaluating it reproduces ``pneumoscan evaluate --data kermany224 --split test``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pneumoscan import CLASS_NAMES
from pneumoscan.data.records import IMAGE_SUFFIXES, parse_label, patient_id_from_filename
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

#: Manifest columns with a meaning; the rest are passed through.
PATH_COLUMN = "path"
LABEL_COLUMN = "label"
GROUP_COLUMNS = ("group", "patient_id")


@dataclass(frozen=True)
class Item:
    """One image to score.

    Attributes:
        path: the file, as it will appear in the output's ``path`` column (absolute for folders, resolved against
            the manifest folder for relative manifest paths).
        true_label: 0 / 1 when the input says, else None.
        group: patient (or other resampling unit) when known, else None.
        extra: passthrough columns, as text ("" when missing).
    """

    path: str
    true_label: int | None = None
    group: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inputs:
    """The items of one input and the names of its passthrough columns (fixed: every shard has them all)."""

    items: list[Item]
    extra_columns: tuple[str, ...]
    source: str


def load_inputs(spec: str | Path) -> Inputs:
    """Read a manifest or list a folder.

    Raises:
        DataError: missing input, unreadable manifest, no ``path`` column, a bad label, or no images.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        items, extra = _folder(path), ("subtype",)
    elif path.suffix.lower() == ".parquet":
        items, extra = _manifest(path, _parquet_rows(path))
    elif path.suffix.lower() in (".csv", ".txt"):
        items, extra = _manifest(path, _csv_rows(path))
    else:
        raise DataError(f"{path}: not a folder, .csv or .parquet manifest")
    if not items:
        raise DataError(f"{path}: no images found")
    unique = list({it.path: it for it in items}.values())
    if len(unique) < len(items):
        logger.warning("%s: %d duplicate paths scored once", path, len(items) - len(unique))
    return Inputs(unique, extra, str(path))


def _folder(root: Path) -> list[Item]:
    root = root.resolve()
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES - {""})
    items = []
    for f in files:
        parts = [q.upper() for q in f.relative_to(root).parts[:-1]]
        label = next((CLASS_NAMES.index(q) for q in reversed(parts) if q in CLASS_NAMES), None)
        subtype = next((s for s in ("bacteria", "virus") if s in f.name.lower()), "")
        items.append(Item(str(f), label, patient_id_from_filename(f.name), {"subtype": subtype}))
    return items


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise DataError(f"{path}: not a readable CSV manifest ({err})") from err


def _parquet_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    from pneumoscan.batch import require_batch_deps

    require_batch_deps()
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... on a bad file
        raise DataError(f"{path}: not a readable Parquet manifest ({err})") from err
    columns = table.column_names
    data = table.to_pydict()
    rows = [{c: "" if data[c][i] is None else str(data[c][i]) for c in columns} for i in range(table.num_rows)]
    return columns, rows


def _manifest(path: Path, parsed: tuple[list[str], list[dict[str, str]]]) -> tuple[list[Item], tuple[str, ...]]:
    columns, rows = parsed
    if PATH_COLUMN not in columns:
        raise DataError(f"{path}: manifest needs a '{PATH_COLUMN}' column (columns: {', '.join(columns) or 'none'})")
    group_col = next((c for c in GROUP_COLUMNS if c in columns), None)
    extra = tuple(c for c in columns if c not in (PATH_COLUMN, LABEL_COLUMN, "group"))
    base = path.resolve().parent
    items = []
    for i, row in enumerate(rows, start=2):
        rel = (row.get(PATH_COLUMN) or "").strip()
        if not rel:
            raise DataError(f"{path}:{i}: empty path")
        file = Path(rel).expanduser()
        label = parse_label(row.get(LABEL_COLUMN) or "", where=f"{path}:{i}") if LABEL_COLUMN in columns else None
        group = (row.get(group_col) or "").strip() or None if group_col else None
        items.append(Item(str(file if file.is_absolute() else base / file), label, group,
                          {c: row.get(c) or "" for c in extra}))
    return items, extra
