"""pneumoscan.data.cache: the decode-once (N, S, S) uint8 image cache.

What the module promises: the cached array holds exactly the prepared pixels, a valid cache is memory-mapped instead
of decoding again, the key changes when a file, the image size or the preprocessing code changes, an unreadable or
mismatched cache file is ignored and rebuilt, an unwritable cache folder does not stop training, and unreadable images
are one DataError naming the file. (The intensity and lung parts of the key: test_intensity.py, segment/test_lungs.py.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.data import cache
from pneumoscan.data.cache import cache_key, decode_images, default_cache_dir, load_or_build
from pneumoscan.data.io import read_image
from pneumoscan.data.preprocess import prepare
from pneumoscan.errors import DataError
from tests.fixtures import make_xray_like, write_png

SIZE = 24


@pytest.fixture
def pixels() -> list[np.ndarray]:
    """Five uint8 images already at the cache's size: cached exactly as they are (no resampling)."""
    rng = np.random.default_rng(7)
    return [make_xray_like(rng, SIZE, positive=i % 2 == 0) for i in range(5)]


@pytest.fixture
def paths(tmp_path: Path, pixels: list[np.ndarray]) -> list[str]:
    return [str(write_png(tmp_path / "img" / f"{i}.png", im)) for i, im in enumerate(pixels)]


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / "images").glob("*.npy"))


def test_round_trip_keeps_the_pixels(tmp_path: Path, paths: list[str], pixels: list[np.ndarray]) -> None:
    arr = load_or_build(paths, SIZE, tmp_path / "c", workers=1)
    assert arr.shape == (5, SIZE, SIZE) and arr.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(arr), np.stack(pixels))
    (file,) = _cache_files(tmp_path / "c")
    assert file.name.endswith(f"-5x{SIZE}.npy")
    np.testing.assert_array_equal(np.load(file), np.stack(pixels))
    assert [p.name for p in file.parent.iterdir()] == [file.name]  # no temporary file left behind


def test_resized_images_are_the_prepared_images(tmp_path: Path, paths: list[str]) -> None:
    arr = load_or_build(paths, 16, tmp_path / "c", workers=1)
    np.testing.assert_array_equal(np.asarray(arr), np.stack([prepare(read_image(p), 16) for p in paths]))


def test_a_hit_maps_the_same_file_without_decoding(tmp_path: Path, paths: list[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    first = np.asarray(load_or_build(paths, SIZE, tmp_path / "c", workers=1)).copy()
    (file,) = _cache_files(tmp_path / "c")
    before = file.stat()

    def no_decoding(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("a valid cache must not be decoded again")

    monkeypatch.setattr(cache, "decode_images", no_decoding)
    with caplog.at_level(logging.INFO, logger="pneumoscan.data.cache"):
        again = load_or_build(paths, SIZE, tmp_path / "c", workers=1)
    assert isinstance(again, np.memmap) and Path(again.filename) == file
    np.testing.assert_array_equal(again, first)
    after = file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "cache hit" in caplog.text


def test_key_changes_with_the_files_the_size_and_the_code(paths: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache_key(paths, SIZE)
    assert key == cache_key(list(paths), SIZE) and len(key) == 24
    assert cache_key(paths, SIZE + 1) != key
    assert cache_key(paths[::-1], SIZE) != key  # the order is the row order of the array
    assert cache_key(paths[:-1], SIZE) != key
    assert cache_key([*paths[:-1], paths[-1] + ".missing"], SIZE) != key  # a missing file still gives a key
    monkeypatch.setattr(cache, "PREPROCESS_VERSION", cache.PREPROCESS_VERSION + 1)
    assert cache_key(paths, SIZE) != key


def test_a_changed_file_builds_a_new_cache(tmp_path: Path, paths: list[str], pixels: list[np.ndarray]) -> None:
    load_or_build(paths, SIZE, tmp_path / "c", workers=1)
    replacement = 255 - pixels[2]
    write_png(paths[2], replacement)
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later modification time, whatever the clock
    arr = load_or_build(paths, SIZE, tmp_path / "c", workers=1)
    np.testing.assert_array_equal(np.asarray(arr[2]), replacement)
    assert len(_cache_files(tmp_path / "c")) == 2


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "wrong_shape", "wrong_dtype"])
def test_a_bad_cache_file_is_ignored_and_rebuilt(tmp_path: Path, paths: list[str], pixels: list[np.ndarray],
                                                 damage: str, caplog: pytest.LogCaptureFixture) -> None:
    load_or_build(paths, SIZE, tmp_path / "c", workers=1)
    (file,) = _cache_files(tmp_path / "c")
    good = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        file.write_bytes(b"")
    elif damage == "garbage":
        file.write_bytes(b"not a numpy file at all" * 10)
    elif damage == "wrong_shape":
        np.save(file, np.zeros((4, SIZE, SIZE), np.uint8))
    else:
        np.save(file, np.zeros((5, SIZE, SIZE), np.float32))
    with caplog.at_level(logging.INFO, logger="pneumoscan.data.cache"):
        arr = load_or_build(paths, SIZE, tmp_path / "c", workers=1)
    np.testing.assert_array_equal(np.asarray(arr), np.stack(pixels))
    assert "cache hit" not in caplog.text
    assert file.read_bytes() == good  # rewritten whole
    if damage in ("truncated", "empty", "garbage"):
        assert "ignoring unreadable cache" in caplog.text


def test_an_unwritable_cache_folder_only_warns(tmp_path: Path, paths: list[str], pixels: list[np.ndarray],
                                              caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "c"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="pneumoscan.data.cache"):
        arr = load_or_build(paths, SIZE, blocker, workers=1)
    np.testing.assert_array_equal(arr, np.stack(pixels))
    assert "could not write cache" in caplog.text and blocker.is_file()


def test_unreadable_images_are_one_data_error_naming_the_file(tmp_path: Path, paths: list[str]) -> None:
    broken = tmp_path / "img" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    missing = str(tmp_path / "img" / "gone.png")
    with pytest.raises(DataError) as info:
        load_or_build([*paths, str(broken), missing], SIZE, tmp_path / "c", workers=1)
    message = str(info.value)
    assert message.startswith(str(broken)) and "(and 1 more unreadable files)" in message and "\n" not in message
    assert not (tmp_path / "c" / "images").exists() or not _cache_files(tmp_path / "c")


def test_decode_images_checks_the_geometries(paths: list[str]) -> None:
    with pytest.raises(ValueError, match="one lung geometry per path"):
        decode_images(paths, SIZE, workers=1, geometries=[])


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PNEUMOSCAN_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PNEUMOSCAN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pneumoscan"
