"""Helpers shared by the public-collection loaders: option checks, CSV reading, file lookup, cache writes."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pneumoscan.core.atomic import atomic_path
from pneumoscan.data.label_policy import SWITCHES
from pneumoscan.data.records import Record
from pneumoscan.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Options every loader accepts: the label-policy switches and the cache folder.
COMMON_OPTIONS = frozenset({*SWITCHES, "cache_dir"})
#: Options only some loaders use. Another loader ignores them (with a log line), so that one ``--data-option`` set can
#: serve several ``--data`` specs; a key known to no loader is an error (most likely a typo).
LOADER_OPTIONS: dict[str, tuple[str, ...]] = {
    "rsna": ("dicom_meta", "missing_class"),
    "mimic": ("labeler",),
    "jsrt": ("invert",),
    "pneumoniamnist": ("size",),
}
FRONTAL_VIEWS = frozenset({"PA", "AP"})
YES = frozenset({"1", "yes", "true", "on"})
NO = frozenset({"0", "no", "false", "off"})


def check_options(source: str, options: dict[str, str]) -> None:
    """Reject option keys that no loader understands (a typo would otherwise be silently ignored).

    Keys meant for another loader (:data:`LOADER_OPTIONS`) are ignored with a log line.

    Raises:
        ConfigError: a key known to no loader, with the valid keys listed.
    """
    mine = COMMON_OPTIONS | set(LOADER_OPTIONS.get(source, ()))
    known = COMMON_OPTIONS.union(*LOADER_OPTIONS.values())
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown data option(s) {', '.join(unknown)} for '{source}'; valid: "
                          f"{', '.join(sorted(mine))} (and {', '.join(sorted(known - mine))} for other sources)")
    for key in sorted(set(options) - mine):
        logger.info("data option %s does not apply to source '%s'; ignored", key, source)


def flag(options: dict[str, str], key: str, default: bool) -> bool:
    """A yes/no option. Raises :class:`ConfigError` on anything else."""
    raw = options.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in YES:
        return True
    if value in NO:
        return False
    raise ConfigError(f"data option {key}={raw!r} is invalid; use yes or no")


def choice(options: dict[str, str], key: str, choices: Sequence[str], default: str) -> str:
    """An option restricted to ``choices``. Raises :class:`ConfigError` otherwise."""
    value = options.get(key, default).strip().lower()
    if value not in choices:
        raise ConfigError(f"data option {key}={options[key]!r} is invalid; choose one of: {', '.join(choices)}")
    return value


def find_first(root: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``root/name`` (also ``name + '.gz'``) that exists.

    Raises:
        DataError: none exists; the message names the folder and the file names looked for.
    """
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{root}: {what} not found (looked for {', '.join(names)})")


def find_dir(root: Path, candidates: Sequence[str], marker: str) -> Path | None:
    """The first ``root/candidate`` folder that contains ``marker`` (a file or folder name), or None."""
    for rel in candidates:
        folder = root / rel if rel else root
        if (folder / marker).exists():
            return folder
    return None


def read_table(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Read a CSV (plain or ``.gz``) into dict rows, checking the header first.

    Args:
        path: the CSV file.
        required: column names that must be present.

    Raises:
        DataError: unreadable file or missing columns; the message names the file and lists its columns.
    """
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8-sig") if path.suffix == ".gz" else \
            path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot read ({err})") from err
    reader = csv.DictReader(io.StringIO(text))
    fields = [f for f in (reader.fieldnames or []) if f]
    missing = [c for c in required if c not in fields]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)} (columns: {', '.join(fields) or 'none'})"
        )
    try:
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err})") from err


def read_id_list(path: Path) -> set[str]:
    """Non-empty stripped lines of a text file (NIH's train_val_list.txt / test_list.txt)."""
    try:
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from err


def keep_existing(records: list[Record], where: Path, source: str) -> list[Record]:
    """Drop records whose file is missing (partial downloads are common), logging how many; fail if none is left.

    Raises:
        DataError: the metadata lists images but none of them exists under ``where``.
    """
    kept = [r for r in records if os.path.isfile(r.path)]
    missing = len(records) - len(kept)
    if records and not kept:
        raise DataError(f"{where}: none of the {len(records)} images listed for '{source}' exists "
                        f"(e.g. {records[0].path})")
    if missing:
        example = next(r.path for r in records if not os.path.isfile(r.path))
        logger.warning("%s: %d of %d listed images are missing and were skipped (e.g. %s)",
                       source, missing, len(records), example)
    return kept


def cache_root(options: dict[str, str]) -> Path:
    """``options['cache_dir']``, else ``$PNEUMOSCAN_CACHE``, ``$XDG_CACHE_HOME/pneumoscan`` or ``~/.cache/pneumoscan``.

    Same rule as the decoded-image cache so that one environment variable moves every cache.
    """
    if options.get("cache_dir"):
        return Path(options["cache_dir"]).expanduser()
    env = os.environ.get("PNEUMOSCAN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pneumoscan"


def file_key(path: Path) -> str:
    """A short key that changes when the file changes (size and modification time), cheap for big files."""
    st = path.stat()
    return f"{st.st_size:x}-{st.st_mtime_ns:x}"


def write_png_atomic(target: Path, array: np.ndarray) -> None:
    """Write a uint8 or uint16 grey image as PNG so that readers never see a half-written file.

    The PNG is written to a temporary file in the same folder and renamed over ``target`` (atomic on POSIX), so two
    processes converting the same image at once both end with one valid file.
    """
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, mode=0o600) as tmp, open(tmp, "wb") as fh:  # owner-only, as always
        Image.fromarray(array).save(fh, format="PNG")


def view_kept(view: str, views: str) -> bool:
    """Whether an image with DICOM-style ``view`` (PA, AP, LATERAL, LL, ...) passes ``views=frontal|all``."""
    return views != "frontal" or view.strip().upper() in FRONTAL_VIEWS


_CHEXPERT_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": None}


def chexpert_value(value: str, where: str) -> int | None:
    """Parse a CheXpert-labeller cell: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank not mentioned.

    Raises:
        DataError: any other value (a sign of a wrong file or a shifted column).
    """
    try:
        return _CHEXPERT_VALUES[value.strip()]
    except KeyError:
        raise DataError(f"{where}: unexpected label value '{value}' (expected 1.0, 0.0, -1.0 or blank)") from None


def chexpert_label(pneumonia: int | None, no_finding: int | None, uncertain: str, others: str
                   ) -> tuple[int | None, str | None]:
    """Map the Pneumonia and No Finding values of MIMIC-CXR / CheXpert to (label, subtype) under the policy.

    Returns ``(None, None)`` for an image the policy leaves out.
    """
    if pneumonia == 1:
        return 1, "pneumonia"
    if pneumonia == -1:
        if uncertain == "positive":
            return 1, "uncertain_pneumonia"
        if uncertain == "negative":
            return 0, "uncertain_pneumonia"
        return None, None
    if no_finding == 1:
        return 0, "normal"
    if others == "negative":
        return 0, "other_findings"
    return None, None
