"""Per-image intensity standardisation (PreprocessConfig.intensity): CLAHE / histogram equalisation in prepare()."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.data.cache import cache_key, load_or_build
from pneumoscan.data.preprocess import PreprocessConfig, clahe, equalize_histogram, prepare
from pneumoscan.errors import ConfigError
from tests.fixtures import make_xray_like, write_png


def _image(seed: int = 0, size: int = 80) -> np.ndarray:
    return make_xray_like(np.random.default_rng(seed), size, positive=True).astype(np.float32) / 255.0


def test_default_config_prepares_exactly_like_the_bare_size() -> None:
    img = _image()
    assert np.array_equal(prepare(img, PreprocessConfig(image_size=64)), prepare(img, 64))


def test_old_checkpoint_dict_reads_as_no_standardisation() -> None:
    old = {"image_size": 192, "mean": 0.449, "std": 0.226, "version": 1}
    cfg = PreprocessConfig.from_dict(old)
    assert cfg.intensity == "none"
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


def test_clahe_spreads_a_low_contrast_image_and_keeps_shape() -> None:
    rng = np.random.default_rng(0)
    low = (100 + rng.integers(0, 20, (64, 64))).astype(np.uint8)  # values 100..119
    out = clahe(low, clip_limit=2.0, grid=8)
    assert out.shape == low.shape and out.dtype == np.uint8
    assert np.ptp(out) > 2 * np.ptp(low)
    # monotone within a tile neighbourhood: brighter input never maps much darker on a constant-tile image
    flat = np.full((64, 64), 50, np.uint8)
    assert np.ptp(clahe(flat)) == 0


def test_clahe_handles_sizes_not_divisible_by_the_grid() -> None:
    img = (np.arange(67 * 45) % 256).astype(np.uint8).reshape(67, 45)
    assert clahe(img, grid=8).shape == (67, 45)


def test_equalize_flattens_the_histogram() -> None:
    img = (np.linspace(0, 1, 64 * 64) ** 4 * 255).astype(np.uint8).reshape(64, 64)
    out = equalize_histogram(img)
    assert abs(float(out.mean()) - 127.5) < abs(float(img.mean()) - 127.5)


@pytest.mark.parametrize("mode", ["equalize", "clahe"])
def test_prepare_applies_the_configured_mode(mode: str) -> None:
    img = _image(1)
    plain = prepare(img, 64)
    done = prepare(img, PreprocessConfig(image_size=64, intensity=mode))
    assert done.shape == (64, 64) and not np.array_equal(plain, done)


def test_invalid_intensity_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="intensity"):
        PreprocessConfig(intensity="gamma")
    with pytest.raises(ConfigError, match="clahe"):
        PreprocessConfig(intensity="clahe", clahe_clip=0)


def test_cache_key_unchanged_without_standardisation_and_distinct_with_it(tmp_path) -> None:
    paths = [str(write_png(tmp_path / f"{i}.png", (make_xray_like(np.random.default_rng(i), 40, i % 2 == 0))))
             for i in range(3)]
    assert cache_key(paths, 32) == cache_key(paths, PreprocessConfig(image_size=32, mean=0.4, std=0.2))
    assert cache_key(paths, 32) != cache_key(paths, PreprocessConfig(image_size=32, intensity="clahe"))
    plain = load_or_build(paths, 32, tmp_path / "cache", workers=1)
    clahed = load_or_build(paths, PreprocessConfig(image_size=32, intensity="clahe"), tmp_path / "cache", workers=1)
    assert plain.shape == clahed.shape == (3, 32, 32)
    assert not np.array_equal(np.asarray(plain), np.asarray(clahed))
