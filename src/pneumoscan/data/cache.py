"""Decode-once image cache.

Decoding and resizing a JPEG costs about as much CPU as a training step of a small CNN, and the machine this project
targets has two cores: decoding every epoch would make the data pipeline the bottleneck. So every image is decoded
and resized once (:func:`pneumoscan.data.preprocess.prepare`) into one uint8 array of shape (N, S, S), saved as
``.npy`` and memory-mapped afterwards.

The cache key hashes each file's path, size and modification time, the preprocessing config and the preprocessing
code version: change a file, the image size or :data:`PREPROCESS_VERSION` and a new cache is built.

With a lung crop (:attr:`PreprocessConfig.lung_crop`) the lung model runs once over the images at its own input size
(through this same cache), the lung maps are cached beside the images (``lungs/*.npy``) and every image is cropped
exactly as :meth:`pneumoscan.inference.predictor.Predictor.prepare` crops it
(:func:`pneumoscan.data.lungs.prepare_cropped`). The lung model and the crop options are part of the key. The
caller hands the lung segmenter in (:func:`pneumoscan.inference.lungs.load_lung_segmenter`): ``data`` sits below the
model code and imports none of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from pneumoscan.core.atomic import atomic_path
from pneumoscan.data.lungs import LungGeometry, geometry_from_mask, prepare_cropped
from pneumoscan.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, prepare
from pneumoscan.errors import DataError, ImageReadError

logger = logging.getLogger(__name__)


class LungSegmenter(Protocol):
    """What the cache needs of :class:`pneumoscan.inference.lungs.LungSegmenter`."""

    name: str
    preprocess: PreprocessConfig

    def probabilities_from_prepared(self, batch: np.ndarray) -> np.ndarray: ...


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


def cache_key(paths: Sequence[str], image_size: Size, lung: dict[str, object] | None = None) -> str:
    """Hash of (path, size, mtime) of every file plus the preprocessing: changes when data or preprocessing do.

    A :class:`PreprocessConfig` without intensity standardisation hashes like its bare image size, and ``lung``
    (:meth:`PreprocessConfig.lung_key`) enters the hash only when set, so the keys of caches without either option
    are the ones earlier versions wrote.
    """
    h = hashlib.sha256()
    key = image_size.pixel_key if isinstance(image_size, PreprocessConfig) else {"image_size": int(image_size)}
    spec: dict[str, object] = {**key, "version": PREPROCESS_VERSION}
    if lung is not None:
        spec["lung"] = lung
    h.update(json.dumps(spec, sort_keys=lung is not None).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:24]


def _decode_one(args: tuple[str, Size, PreprocessConfig | None, LungGeometry | None]) -> tuple[np.ndarray | None,
                                                                                                str | None]:
    from pneumoscan.data.io import read_image

    path, size, config, geometry = args
    try:
        if config is not None and geometry is not None:
            return prepare_cropped(read_image(path), config, geometry), None
        return prepare(read_image(path), size), None
    except ImageReadError as err:
        return None, str(err)
    except OSError as err:
        return None, f"{path}: {err.strerror or err}"


def decode_images(paths: Sequence[str], image_size: Size, workers: int = 0, preprocess: PreprocessConfig | None = None,
                  geometries: Sequence[LungGeometry] | None = None) -> np.ndarray:
    """Decode and prepare every image; raise one :class:`DataError` naming the unreadable files.

    Args:
        paths: image files.
        image_size: side of the square output, or the whole :class:`PreprocessConfig` (its intensity option too).
        workers: processes to decode with (0 = number of CPUs, at most 8; 1 = in this process).
        preprocess: with ``geometries``, crop each image to its lungs as this config says.
        geometries: one lung geometry per path (see :func:`lung_geometries`).
    """
    workers = workers or min(8, os.cpu_count() or 1)
    side = _side(image_size)
    out = np.empty((len(paths), side, side), dtype=np.uint8)
    errors: list[str] = []
    if geometries is not None and len(geometries) != len(paths):
        raise ValueError("one lung geometry per path expected")
    jobs = [(p, image_size, preprocess if geometries is not None else None,
             geometries[i] if geometries is not None else None) for i, p in enumerate(paths)]
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


def load_or_build(paths: Sequence[str], image_size: Size, cache_dir: Path | None = None, workers: int = 0,
                  preprocess: PreprocessConfig | None = None, segmenter: LungSegmenter | None = None) -> np.ndarray:
    """Return the (N, S, S) uint8 images for ``paths``, from the cache when it is valid, else decoding them.

    The cache file is written atomically (temp file + ``os.replace``): an interrupted build leaves no partial cache.
    ``cache_dir=None`` uses :func:`default_cache_dir`; pass a path to keep caches elsewhere. With a ``preprocess``
    that crops to the lungs, the images are cropped (see the module docstring) with the lung model ``segmenter``
    (``load_lung_segmenter(preprocess.lung_model)``), needed only when the cache has to be built.

    Raises:
        ValueError: the images must be cropped to the lungs and no ``segmenter`` was given.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if preprocess is None and isinstance(image_size, PreprocessConfig):
        preprocess = image_size
    size: Size = preprocess if preprocess is not None else image_size
    side = _side(size)
    lung = preprocess.lung_key() if preprocess is not None else None
    target = cache_dir / "images" / f"{cache_key(paths, size, lung)}-{len(paths)}x{side}.npy"
    cached = _load_cached(target, (len(paths), side, side))
    if cached is not None:
        return cached
    if lung is not None and preprocess is not None:
        if segmenter is None:
            raise ValueError("cropping to the lungs needs the lung segmenter: pass segmenter="
                             "pneumoscan.inference.lungs.load_lung_segmenter(preprocess.lung_model)")
        geometries = lung_geometries(paths, segmenter, cache_dir, workers)
        arr = decode_images(paths, size, workers, preprocess, geometries)
    else:
        arr = decode_images(paths, size, workers)
    _save_cache(target, arr)
    return arr


def lung_geometries(paths: Sequence[str], segmenter: LungSegmenter, cache_dir: Path | None = None,
                    workers: int = 0) -> list[LungGeometry]:
    """Lung geometry of every image from the lung model ``segmenter``; the lung maps are cached.

    The lung model sees the images exactly as a predictor's does: decoded, resized to the lung model's input size by
    :func:`prepare` (those small images come from this cache too), normalised.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    side = segmenter.preprocess.image_size
    target = cache_dir / "lungs" / f"{cache_key(paths, side, {'lung_model': segmenter.name})}-{len(paths)}x{side}.npy"
    maps = _load_cached(target, (len(paths), side, side))
    if maps is None:
        small = load_or_build(paths, side, cache_dir, workers)
        logger.info("finding the lungs in %d images with %s", len(paths), segmenter.name)
        probs = segmenter.probabilities_from_prepared(small)
        maps = np.rint(probs * 255).astype(np.uint8)
        _save_cache(target, maps)
    return [geometry_from_mask(np.asarray(m)) for m in maps]


def _load_cached(target: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    if not target.is_file():
        return None
    try:
        arr = np.load(target, mmap_mode="r")
        if arr.shape == shape and arr.dtype == np.uint8:
            logger.info("cache hit: %s", target)
            return arr
    except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
        logger.warning("ignoring unreadable cache %s (%s)", target, err)
    return None


def _save_cache(target: Path, arr: np.ndarray) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
        logger.info("cache written: %s (%.1f MB)", target, arr.nbytes / 1e6)
    except OSError as err:  # a read-only home must not stop training
        logger.warning("could not write cache %s: %s", target, err)
