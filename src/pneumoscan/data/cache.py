"""Decode-once image cache.

Decoding and resizing a JPEG costs about as much CPU as a training step of a small CNN, and the machine this project
targets has two cores: decoding every epoch would make the data pipeline the bottleneck. So every image is decoded
and resized once (:func:`pneumoscan.data.preprocess.prepare`) into one uint8 array of shape (N, S, S), saved as
``.npy`` and memory-mapped afterwards.

The cache key hashes each file's path, size and modification time, the preprocessing config and the preprocessing
code version: change a file, the image size or :data:`PREPROCESS_VERSION` and a new cache is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pneumoscan.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, prepare
from pneumoscan.errors import DataError, ImageReadError

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$PNEUMOSCAN_CACHE`` or ``$XDG_CACHE_HOME/pneumoscan`` or ``~/.cache/pneumoscan``."""
    env = os.environ.get("PNEUMOSCAN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pneumoscan"


Size = int | PreprocessConfig  # an int means resizing only (no intensity standardisation)


def _side(image_size: Size) -> int:
    return int(image_size.image_size) if isinstance(image_size, PreprocessConfig) else int(image_size)


def cache_key(paths: Sequence[str], image_size: Size) -> str:
    """Hash of (path, size, mtime) of every file plus the preprocessing: changes when data or preprocessing do.

    A :class:`PreprocessConfig` without intensity standardisation hashes like its bare image size, so caches built
    before that option existed stay valid.
    """
    h = hashlib.sha256()
    key = image_size.pixel_key if isinstance(image_size, PreprocessConfig) else {"image_size": int(image_size)}
    h.update(json.dumps({**key, "version": PREPROCESS_VERSION}).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:24]


def _decode_one(args: tuple[str, Size]) -> tuple[np.ndarray | None, str | None]:
    from pneumoscan.data.io import read_image

    path, size = args
    try:
        return prepare(read_image(path), size), None
    except ImageReadError as err:
        return None, str(err)
    except OSError as err:
        return None, f"{path}: {err.strerror or err}"


def decode_images(paths: Sequence[str], image_size: Size, workers: int = 0) -> np.ndarray:
    """Decode and prepare every image; raise one :class:`DataError` naming the unreadable files.

    Args:
        paths: image files.
        image_size: side of the square output, or the :class:`PreprocessConfig` to prepare with.
        workers: processes to decode with (0 = number of CPUs, at most 8; 1 = in this process).
    """
    workers = workers or min(8, os.cpu_count() or 1)
    side = _side(image_size)
    out = np.empty((len(paths), side, side), dtype=np.uint8)
    errors: list[str] = []
    jobs = [(p, image_size) for p in paths]
    if workers <= 1 or len(paths) < 64:
        results = map(_decode_one, jobs)
        _collect(results, out, errors)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            _collect(pool.map(_decode_one, jobs, chunksize=32), out, errors)
    if errors:
        more = f" (and {len(errors) - 1} more unreadable files)" if len(errors) > 1 else ""
        for e in errors[1:]:
            logger.error("%s", e)
        raise DataError(f"{errors[0]}{more}")
    return out


def _collect(results: object, out: np.ndarray, errors: list[str]) -> None:
    from tqdm import tqdm

    for i, (arr, err) in enumerate(tqdm(results, total=len(out), desc="decode", unit="img", leave=False,
                                        disable=len(out) < 200)):
        if err is not None:
            errors.append(err)
        else:
            out[i] = arr


def load_or_build(paths: Sequence[str], image_size: Size, cache_dir: Path | None = None,
                  workers: int = 0) -> np.ndarray:
    """Return the (N, S, S) uint8 images for ``paths``, from the cache when it is valid, else decoding them.

    The cache file is written atomically (temp file + ``os.replace``): an interrupted build leaves no partial cache.
    ``cache_dir=None`` uses :func:`default_cache_dir`; pass a path to keep caches elsewhere.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    side = _side(image_size)
    target = cache_dir / "images" / f"{cache_key(paths, image_size)}-{len(paths)}x{side}.npy"
    if target.is_file():
        try:
            arr = np.load(target, mmap_mode="r")
            if arr.shape == (len(paths), side, side) and arr.dtype == np.uint8:
                logger.info("image cache hit: %s", target)
                return arr
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable cache %s (%s)", target, err)
    arr = decode_images(paths, image_size, workers)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
        os.replace(tmp, target)
        logger.info("image cache written: %s (%.1f MB)", target, arr.nbytes / 1e6)
    except OSError as err:  # a read-only home must not stop training
        logger.warning("could not write image cache %s: %s", target, err)
    return arr
