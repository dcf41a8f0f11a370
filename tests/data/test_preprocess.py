"""pneumoscan.data.preprocess: prepare() (resize + quantise), to_float(), and the PreprocessConfig stored in every
checkpoint. Intensity standardisation (CLAHE, equalisation) is tested in test_intensity.py, the lung options'
validation and cache keys in tests/segment/test_lungs.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumoscan.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, prepare, to_float
from pneumoscan.errors import ConfigError

LUNG_KEYS = {"lung_crop", "lung_margin", "lung_dim", "lung_model"}


@pytest.mark.parametrize("shape", [(64, 64), (30, 90), (300, 17), (16, 16)])
@pytest.mark.parametrize("size", [16, 40])
def test_prepare_gives_square_uint8_of_the_configured_size(shape: tuple[int, int], size: int) -> None:
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    for arg in (size, PreprocessConfig(image_size=size)):
        out = prepare(image, arg)
        assert out.shape == (size, size) and out.dtype == np.uint8


def test_prepare_quantises_by_rounding_and_clips() -> None:
    # At the input size there is no resampling: each value is round(v * 255), clipped to 0..255.
    values = np.array([0.0, 0.2, 0.6, 1.0, -0.1, 1.3, 0.5 / 255 + 0.001, 0.5 / 255 - 0.001], dtype=np.float32)
    image = np.tile(values, (16, 2))
    out = prepare(image, 16)
    np.testing.assert_array_equal(out[0, :8], [0, 51, 153, 255, 0, 255, 1, 0])
    assert (out == out[0]).all()


@pytest.mark.parametrize("value", [0.0, 0.25, 0.8, 1.0])
def test_a_constant_image_stays_constant_when_resized(value: float) -> None:
    out = prepare(np.full((37, 101), value, dtype=np.float32), 24)
    assert (out == round(value * 255)).all()


def test_resize_squashes_without_keeping_the_aspect_ratio() -> None:
    # Left third black, rest white, in a wide image: after squashing to a square the edge is still a third across.
    image = np.ones((20, 120), dtype=np.float32)
    image[:, :40] = 0.0
    out = prepare(image, 30)
    assert (out[:, :8] == 0).all() and (out[:, 12:] == 255).all()
    assert (np.diff(out.astype(int), axis=1) >= 0).all()  # monotone across the edge (bilinear, no ringing)


def test_prepare_accepts_float64_and_refuses_non_grey() -> None:
    image = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    np.testing.assert_array_equal(prepare(image, 32), prepare(image.astype(np.float32), 32))
    with pytest.raises(ValueError, match="2-D grey"):
        prepare(np.zeros((32, 32, 3), dtype=np.float32), 32)


def test_to_float_values_dtype_and_shape() -> None:
    batch = np.array([[[0, 51], [255, 102]]] * 3, dtype=np.uint8)  # (3, 2, 2)
    plain = to_float(batch, PreprocessConfig(image_size=16))
    assert plain.dtype == np.float32 and plain.shape == (3, 2, 2)
    np.testing.assert_allclose(plain[0], [[0.0, 0.2], [1.0, 0.4]], atol=1e-7)
    norm = to_float(batch, PreprocessConfig(image_size=16, mean=0.2, std=0.5))
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm[1], [[-0.4, 0.0], [1.6, 0.4]], atol=1e-6)
    assert batch.dtype == np.uint8 and batch[0, 1, 0] == 255  # the input is not modified


def test_to_dict_of_the_default_config() -> None:
    assert PreprocessConfig().to_dict() == {"image_size": 224, "mean": 0.0, "std": 1.0, "version": PREPROCESS_VERSION}


def test_lung_keys_are_omitted_when_lung_crop_is_off() -> None:
    off = PreprocessConfig(image_size=64, lung_margin=0.3, lung_dim=0.5, lung_model="ignored").to_dict()
    assert not LUNG_KEYS & set(off)
    assert off == {"image_size": 64, "mean": 0.0, "std": 1.0, "version": PREPROCESS_VERSION}
    on = PreprocessConfig(image_size=64, lung_crop=True, lung_margin=0.3, lung_dim=0.5, lung_model="lung-x").to_dict()
    assert {k: on[k] for k in LUNG_KEYS} == {"lung_crop": True, "lung_margin": 0.3, "lung_dim": 0.5,
                                             "lung_model": "lung-x"}


@pytest.mark.parametrize("config", [
    PreprocessConfig(),
    PreprocessConfig(image_size=96, mean=0.449, std=0.226),
    PreprocessConfig(image_size=64, lung_crop=True, lung_margin=0.2, lung_dim=0.25, lung_model="lung-unet-12345678"),
    PreprocessConfig(image_size=48, intensity="clahe", clahe_clip=3.0, clahe_grid=4),
])
def test_dict_round_trip_through_json(config: PreprocessConfig) -> None:
    stored = json.loads(json.dumps(config.to_dict()))  # as in a checkpoint or ONNX metadata
    assert PreprocessConfig.from_dict(stored) == config


def test_from_dict_reads_strings_and_fills_missing_fields() -> None:
    cfg = PreprocessConfig.from_dict({"image_size": "128", "mean": "0.5"})
    assert cfg == PreprocessConfig(image_size=128, mean=0.5, std=1.0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"image_size": 8}, "image_size"),
    ({"image_size": 4096}, "image_size"),
    ({"std": 0.0}, "std"),
    ({"std": -1.0}, "std"),
])
def test_invalid_configs_are_config_errors(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        PreprocessConfig(**kwargs)  # type: ignore[arg-type]


def test_keys_for_caches() -> None:
    assert PreprocessConfig(image_size=64, mean=0.3, std=0.2).pixel_key == {"image_size": 64}  # normalisation: not
    assert PreprocessConfig(image_size=64).lung_key() is None
    assert PreprocessConfig(image_size=64, lung_crop=True, lung_model="m").lung_key() == {
        "model": "m", "margin": 0.1, "dim": 0.0}
