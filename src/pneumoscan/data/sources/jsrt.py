"""JSRT digital image database (Shiraishi et al., AJR 2000): 247 PA chest films, 154 with a lung nodule, 93 without.

Publisher layout (``db.jsrt.or.jp/eng.php``; folder names vary between copies, files are found recursively)::

    Nodule154images/JPCLN001.IMG ... JPCLN154.IMG      lung nodule
    NonNodule93images/JPCNN001.IMG ... JPCNN093.IMG    no nodule
    CLNDAT_EN.txt   tab-separated: file, subtlety, size [mm], age, sex, x, y, malignant/benign, location, diagnosis
    CNNDAT_EN.TXT   tab-separated: file, age, sex, non-nodule

The ``.IMG`` files are headerless raw data: 2048 x 2048 pixels, 12 bits stored in 16-bit big-endian words
(8,388,608 bytes), 0.175 mm pixels, values proportional to film optical density (high = dark). ``read_image`` only
knows standard formats, so each file is converted once into a 16-bit PNG (inverted so that 0 is black, scaled from
12 to 16 bits) in ``<cache>/jsrt/``, written atomically and keyed by the source file's size and modification time.
Set ``invert=no`` if your copy is already stored with 0 = black. PNG copies named ``JPCLN001.png`` are used as is.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import cache_root, check_options, file_key, flag, write_png_atomic
from pneumoscan.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "jsrt"
SIDE = 2048
RAW_BYTES = SIDE * SIDE * 2
MAX_VALUE = 4095
_NAME = re.compile(r"^JPC(LN|NN)(\d{3})\.(IMG|png)$", re.IGNORECASE)
_INFO = re.compile(r"JPC(?:LN|NN)\d{3}(?:\.IMG)?", re.IGNORECASE)


@register_source(SOURCE, "JSRT nodule database: JPCLN*.IMG / JPCNN*.IMG raw 2048x2048 (non-nodule images as NORMAL)")
def load_jsrt(path: Path, options: dict[str, str]) -> list[Record]:
    """Load the JSRT non-nodule images as NORMAL (nodule images only with ``others=negative``).

    Args:
        path: the JSRT folder (searched recursively for ``JPC*.IMG``).
        options: ``others``, ``cache_dir`` and ``invert=yes|no`` (default yes, see the module docstring).

    Raises:
        DataError: no JSRT image found.
    """
    check_options(SOURCE, options)
    policy = policy_for(SOURCE, options)
    invert = flag(options, "invert", True)
    files = _find_images(path)
    info = _read_info(path)
    cache = cache_root(options) / "jsrt"
    records = []
    for case, file in sorted(files.items()):
        nodule = case.startswith("JPCLN")
        if nodule and policy.others != "negative":
            continue
        png = _as_png(file, cache, invert)
        extra = {"view": "PA", "nodule": "yes" if nodule else "no", "case": case, "original": str(file),
                 **info.get(case, {})}
        records.append(Record(str(png), 0, None, None, SOURCE, "nodule" if nodule else "normal", extra))
    logger.info("jsrt: %d images (%d files found)", len(records), len(files))
    return records


def _find_images(path: Path) -> dict[str, Path]:
    """Case name (``JPCNN001``) -> file, preferring the raw ``.IMG`` over a ``.png`` copy."""
    out: dict[str, Path] = {}
    for file in sorted(path.rglob("JPC*")):
        match = _NAME.match(file.name)
        if match and file.is_file():
            case = f"JPC{match.group(1).upper()}{match.group(2)}"
            if case not in out or file.suffix.upper() == ".IMG":
                out[case] = file
    if not out:
        raise DataError(f"{path}: no JSRT images (JPCLN###.IMG / JPCNN###.IMG) found")
    return out


def read_raw(file: Path) -> np.ndarray:
    """Read one raw JSRT ``.IMG`` as uint16 (2048, 2048) with the stored 12-bit values.

    Raises:
        DataError: the file size is not 2048 x 2048 x 2 bytes (truncated or not a JSRT image).
    """
    size = file.stat().st_size
    if size != RAW_BYTES:
        raise DataError(f"{file}: {size} bytes, expected {RAW_BYTES} for a 2048x2048 16-bit JSRT image")
    data = np.fromfile(file, dtype=">u2").reshape(SIDE, SIDE)
    return np.minimum(data, MAX_VALUE).astype(np.uint16)


def raw_to_display(raw: np.ndarray, invert: bool) -> np.ndarray:
    """12-bit density values -> 16-bit grey with 0 = black (inverted unless ``invert`` is False)."""
    grey = (MAX_VALUE - raw) if invert else raw
    return (grey.astype(np.uint32) * 65535 // MAX_VALUE).astype(np.uint16)


def _as_png(file: Path, cache: Path, invert: bool) -> Path:
    """The PNG to read for ``file``: itself if already PNG, else its cached conversion (made once)."""
    if file.suffix.lower() == ".png":
        return file
    target = cache / f"{file.stem}-{file_key(file)}{'-inv' if invert else ''}.png"
    if target.is_file():
        return target
    try:
        write_png_atomic(target, raw_to_display(read_raw(file), invert))
    except DataError as err:
        logger.warning("jsrt: %s; the raw file is listed instead and will be reported unreadable", err)
        return file
    return target


def _read_info(path: Path) -> dict[str, dict[str, str]]:
    """Case -> {age, sex, diagnosis...} from CLNDAT_EN.txt / CNNDAT_EN.TXT when present (any case, recursive)."""
    out: dict[str, dict[str, str]] = {}
    for file in path.rglob("*"):
        name = file.name.upper()
        if name.startswith(("CLNDAT", "CNNDAT")) and name.endswith(".TXT") and file.is_file():
            out.update(_parse_info(file.read_text(encoding="latin-1"), nodule=name.startswith("CLN")))
    return out


def _parse_info(text: str, nodule: bool) -> dict[str, dict[str, str]]:
    """Split at each case name (some copies run records together on one line) and map the tab fields."""
    keys = ("subtlety", "size_mm", "age", "sex", "x", "y", "malignancy", "location", "diagnosis") if nodule \
        else ("age", "sex", "diagnosis")
    names = [m.group(0).upper().split(".")[0] for m in _INFO.finditer(text)]
    chunks = _INFO.split(text)[1:]
    out = {}
    for case, chunk in zip(names, chunks, strict=False):
        fields = [f.strip() for f in re.split(r"\t+", chunk.strip())]
        out[case] = {k: v for k, v in zip(keys, fields, strict=False) if v}
    return out
