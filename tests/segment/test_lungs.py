"""Lung geometry, crop, dimming and heatmap share on synthetic lung maps (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoscan.data.lungs import (
    crop_box,
    crop_to_lungs,
    heatmap_lung_fraction,
    lung_geometry,
    lung_map_in_input,
    outline_overlay,
    prepare_cropped,
)
from pneumoscan.data.preprocess import PreprocessConfig, prepare


def two_lungs(size: int = 100) -> np.ndarray:
    """Probability map with two rectangular lungs: x 20–44 and 56–80, y 15–85 (of 100)."""
    probs = np.zeros((size, size), dtype=np.float32)
    probs[15:85, 20:44] = 0.9
    probs[15:85, 56:80] = 0.9
    return probs


def test_geometry_finds_box_and_fraction() -> None:
    geo = lung_geometry(two_lungs())
    assert geo.found and geo.reason is None
    assert geo.box == pytest.approx((0.20, 0.15, 0.80, 0.85))
    assert geo.fraction == pytest.approx(2 * 70 * 24 / 100**2)
    assert geo.mask.dtype == np.uint8 and geo.mask.shape == (100, 100)


def test_geometry_ignores_specks_outside_the_lungs() -> None:
    probs = two_lungs()
    probs[2:4, 95:97] = 1.0  # a speck far right: must not stretch the box
    assert lung_geometry(probs).box == pytest.approx((0.20, 0.15, 0.80, 0.85))


@pytest.mark.parametrize("probs, words", [
    (np.zeros((64, 64), np.float32), "no lung pixels"),
    (np.pad(np.ones((4, 4), np.float32), 30), "below"),
    (np.ones((64, 64), np.float32), "implausibly large"),
    (np.pad(np.ones((60, 6), np.float32), ((2, 2), (29, 29))), "narrow"),
])
def test_no_lungs_falls_back_to_full_image(probs: np.ndarray, words: str) -> None:
    geo = lung_geometry(probs)
    assert not geo.found and words in (geo.reason or "")
    assert geo.box == (0.0, 0.0, 1.0, 1.0)
    image = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    assert crop_to_lungs(image, geo, margin=0.2, dim=0.5) is image
    assert geo.report()["lungs_found"] is False and geo.report()["lung_fallback"] == geo.reason


def test_crop_box_margin_scales_with_box_and_clips() -> None:
    geo = lung_geometry(two_lungs())
    assert crop_box(geo, 0.0, 200, 100) == (40, 15, 160, 85)
    # margin 0.1 of a 0.6 × 0.7 box: 0.06 and 0.07 on each side
    assert crop_box(geo, 0.1, 1000, 1000) == (140, 80, 860, 920)
    assert crop_box(geo, 1.0, 100, 100) == (0, 0, 100, 100)


def test_crop_works_at_any_image_resolution() -> None:
    geo = lung_geometry(two_lungs())
    image = np.tile(np.linspace(0, 1, 400, dtype=np.float32), (300, 1))  # 300 high, 400 wide
    out = crop_to_lungs(image, geo, margin=0.0)
    assert out.shape == (210, 240)
    assert out[0, 0] == pytest.approx(image[45, 80])


def test_dim_darkens_outside_only() -> None:
    geo = lung_geometry(two_lungs())
    image = np.full((100, 100), 0.8, dtype=np.float32)
    out = crop_to_lungs(image, geo, margin=0.0, dim=0.5)
    # crop covers x 20–80, y 15–85; the gap between the lungs (x 44–56) is outside them
    inside, between = out[35, 10], out[35, 30]
    assert inside == pytest.approx(0.8 * (1 - 0.5 * (1 - 0.9)), abs=0.01)
    assert between == pytest.approx(0.8 * 0.5, abs=0.01)
    assert crop_to_lungs(image, geo, margin=0.0, dim=0.0)[35, 30] == pytest.approx(0.8)


def test_prepare_cropped_equals_prepare_of_crop() -> None:
    geo = lung_geometry(two_lungs())
    image = np.random.default_rng(1).random((128, 128)).astype(np.float32)
    cfg = PreprocessConfig(image_size=32, lung_crop=True, lung_margin=0.05, lung_dim=0.2)
    expected = prepare(crop_to_lungs(image, geo, 0.05, 0.2), 32)
    np.testing.assert_array_equal(prepare_cropped(image, cfg, geo), expected)


def test_heatmap_lung_fraction() -> None:
    geo = lung_geometry(two_lungs())
    lung_map = lung_map_in_input(geo, None, 100, 100, 100)
    heat = np.zeros((100, 100))
    heat[50, 30] = 3.0  # inside the left lung
    heat[50, 50] = 1.0  # between the lungs
    assert heatmap_lung_fraction(heat, lung_map) == pytest.approx(0.75)
    assert heatmap_lung_fraction(np.zeros((100, 100)), lung_map) is None
    with pytest.raises(ValueError, match="shape"):
        heatmap_lung_fraction(np.ones((10, 10)), lung_map)


def test_lung_map_in_cropped_input_frame() -> None:
    geo = lung_geometry(two_lungs())
    cropped = lung_map_in_input(geo, 0.0, 60, 100, 100)  # crop = x 20–80, y 15–85, resampled to 60 × 60
    assert cropped[30, 5] > 0.5 and cropped[30, 30] < 0.5 and cropped[30, 55] > 0.5
    assert cropped.mean() == pytest.approx(2 * 24 / 60 * 0.9 * 0.9, abs=0.1)


def test_outline_overlay_draws_the_border() -> None:
    mask = two_lungs() > 0.5
    rgb = outline_overlay(np.full((100, 100), 0.5, np.float32), mask)
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[15, 30]) != (128, 128, 128)  # on the border
    assert tuple(rgb[50, 30]) == (128, 128, 128)  # inside
    assert tuple(rgb[50, 5]) == (128, 128, 128)  # outside


def test_preprocess_config_defaults_keep_old_dict() -> None:
    old = PreprocessConfig(image_size=224, mean=0.449, std=0.226)
    assert set(old.to_dict()) == {"image_size", "mean", "std", "version"}
    assert PreprocessConfig.from_dict(old.to_dict()) == old
    lung = PreprocessConfig(image_size=224, lung_crop=True, lung_margin=0.2, lung_dim=0.3, lung_model="lung-x")
    assert PreprocessConfig.from_dict(lung.to_dict()) == lung
    assert lung.lung_key() == {"model": "lung-x", "margin": 0.2, "dim": 0.3} and old.lung_key() is None


@pytest.mark.parametrize("field, value", [("lung_margin", -0.1), ("lung_margin", 1.5), ("lung_dim", 2.0)])
def test_preprocess_config_rejects_bad_lung_options(field: str, value: float) -> None:
    from pneumoscan.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        PreprocessConfig(**{field: value})


def test_cache_key_without_lung_crop_is_unchanged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import json
    import os

    from pneumoscan.data.cache import cache_key
    from pneumoscan.data.preprocess import PREPROCESS_VERSION

    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    st = os.stat(path)
    h = hashlib.sha256()  # the key as written before lung crops existed
    h.update(json.dumps({"image_size": 64, "version": PREPROCESS_VERSION}).encode())
    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    assert cache_key([str(path)], 64) == h.hexdigest()[:24]
    lung = PreprocessConfig(image_size=64, lung_crop=True, lung_model="m").lung_key()
    other = PreprocessConfig(image_size=64, lung_crop=True, lung_model="m", lung_dim=0.5).lung_key()
    keys = {cache_key([str(path)], 64), cache_key([str(path)], 64, lung), cache_key([str(path)], 64, other)}
    assert len(keys) == 3
