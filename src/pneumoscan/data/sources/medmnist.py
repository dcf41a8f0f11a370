"""PneumoniaMNIST (MedMNIST v2, Yang et al., Sci Data 2023; MedMNIST+ sizes 64/128/224): Kermany's images,
centre-cropped and resized, in one ``.npz``.

Publisher files (``zenodo.org/records/10519652``, ``medmnist.com``)::

    pneumoniamnist.npz        28 x 28
    pneumoniamnist_64.npz / _128.npz / _224.npz   (MedMNIST+)

Keys ``train_images (4708, S, S) uint8``, ``train_labels (4708, 1)``, ``val_images (524, ...)``, ``val_labels``,
``test_images (624, ...)``, ``test_labels``; label 1 = pneumonia, 0 = normal. There are no patient ids.

``read_image`` reads files, so the arrays are written once as PNG files to
``<cache>/pneumoniamnist/<file>-<size>-<mtime>/{train,val,test}/NNNNN.png``: built in a temporary folder and renamed
into place (atomic), so an interrupted or concurrent build never leaves a half-filled folder behind.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pneumoscan.data.records import Record, register_source
from pneumoscan.data.sources._common import cache_root, check_options, file_key
from pneumoscan.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SOURCE = "pneumoniamnist"
SPLITS = (("train", "train"), ("val", "val"), ("test", "test"))
_FILE = re.compile(r"^pneumoniamnist(?:_(\d+))?\.npz$")
_DONE = ".complete"


@register_source(SOURCE, "PneumoniaMNIST: pneumoniamnist[_64|_128|_224].npz (official train/val/test)")
def load_pneumoniamnist(path: Path, options: dict[str, str]) -> list[Record]:
    """Load PneumoniaMNIST with its official split, materialising the images as PNG files once.

    Args:
        path: the ``.npz`` file or a folder holding ``pneumoniamnist*.npz``.
        options: ``cache_dir`` and ``size=28|64|128|224`` (which file to use when several are present; default the
            largest one found).

    Raises:
        DataError: no npz file, or one without the expected arrays.
        ConfigError: the requested size is not present.
    """
    check_options(SOURCE, options)
    npz = _pick_file(path, options.get("size"))
    folder = _materialise(npz, cache_root(options) / SOURCE)
    records = []
    for key, split in SPLITS:
        labels = np.load(folder / f"{key}_labels.npy")
        for i, value in enumerate(labels):
            records.append(Record(str(folder / key / f"{i:05d}.png"), int(value), split, None, SOURCE, None,
                                  {"index": str(i), "npz": npz.name}))
    logger.info("pneumoniamnist: %d images from %s (cached in %s)", len(records), npz, folder)
    return records


def _pick_file(path: Path, size: str | None) -> Path:
    if path.is_file():
        return path
    found = {int(m.group(1) or 28): p for p in path.glob("pneumoniamnist*.npz") if (m := _FILE.match(p.name))}
    if not found:
        raise DataError(f"{path}: no pneumoniamnist.npz or pneumoniamnist_<size>.npz found")
    if size is None:
        return found[max(found)]
    if not size.isdigit() or int(size) not in found:
        raise ConfigError(f"data option size={size!r}: available sizes in {path}: {', '.join(map(str, sorted(found)))}")
    return found[int(size)]


def _materialise(npz: Path, cache: Path) -> Path:
    """Write the PNGs (and the label arrays) once; returns the finished folder."""
    target = cache / f"{npz.stem}-{file_key(npz)}"
    if (target / _DONE).is_file():
        return target
    from PIL import Image

    arrays = _read_npz(npz)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{npz.stem}.", dir=cache))
    try:
        for key, _ in SPLITS:
            images, labels = arrays[f"{key}_images"], arrays[f"{key}_labels"].reshape(-1)
            (tmp / key).mkdir()
            for i, image in enumerate(images):
                Image.fromarray(_grey(image)).save(tmp / key / f"{i:05d}.png", format="PNG")
            np.save(tmp / f"{key}_labels.npy", labels.astype(np.int64))
        (tmp / _DONE).write_text(str(npz), encoding="utf-8")
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished folder into place; if another process won the race, keep theirs."""
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / _DONE).is_file():
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)


def _read_npz(npz: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(npz) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{npz}: not a readable .npz ({err})") from err
    for key, _ in SPLITS:
        for part in ("images", "labels"):
            if f"{key}_{part}" not in arrays:
                raise DataError(f"{npz}: missing array '{key}_{part}' (has: {', '.join(sorted(arrays))})")
        if len(arrays[f"{key}_images"]) != len(arrays[f"{key}_labels"]):
            raise DataError(f"{npz}: {key}_images and {key}_labels differ in length")
    labels = np.concatenate([arrays[f"{k}_labels"].reshape(-1) for k, _ in SPLITS])
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{npz}: labels must be 0 or 1 (PneumoniaMNIST), found {sorted(set(labels.tolist()))[:5]}")
    return arrays


def _grey(image: np.ndarray) -> np.ndarray:
    """uint8 (S, S) as stored; an (S, S, 3) copy (other MedMNIST sets) is reduced to its first channel."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., 0]
    return np.ascontiguousarray(image, dtype=np.uint8)
