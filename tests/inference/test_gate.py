"""The competence gate (image checks, distribution check) and the per-population operating points, in isolation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.data.records import Record
from pneumoscan.errors import CheckpointError, ConfigError
from pneumoscan.inference.gate import CompetenceGate, colourfulness, fit_gate, image_statistics
from pneumoscan.inference.gate_probes import XRAY_TRANSFORMS, probe_set, sample_photos, transform_xray
from pneumoscan.inference.populations import POOLED, fit_populations, population_of, resolve
from tests.fixtures import make_xray_like

SIZE = 96


def _xrays(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([make_xray_like(rng, SIZE, positive=bool(i % 2)) for i in range(n)])


def _reasons(images: np.ndarray, **kwargs: object) -> list[str | None]:
    return [d.reason for d in CompetenceGate().assess(images, **kwargs)]


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_images_are_refused_as_blank(value: int) -> None:
    (reason,) = _reasons(np.full((1, SIZE, SIZE), value, np.uint8))
    assert reason is not None and reason.startswith("blank or near-uniform")


def test_noise_is_refused_and_radiograph_like_images_pass_the_image_checks() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE)).astype(np.uint8)
    assert all(r is not None and "noise" in r for r in _reasons(noise))
    assert _reasons(_xrays(6)) == [None] * 6


def test_colour_is_measured_from_the_file_and_refused() -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 30
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    chroma = colourfulness(buf.getvalue())
    assert chroma == pytest.approx(200, abs=1)  # max(R,G,B) - min: 200 - 0
    grey_as_rgb = io.BytesIO()
    Image.fromarray(np.repeat(_xrays(1)[0][..., None], 3, axis=2)).save(grey_as_rgb, format="JPEG")
    assert colourfulness(grey_as_rgb.getvalue()) < 3  # a grey radiograph saved as RGB JPEG has (almost) no chroma
    grey = io.BytesIO()
    Image.fromarray(_xrays(1)[0]).save(grey, format="PNG")
    assert colourfulness(grey.getvalue()) is None
    assert colourfulness(b"not an image") is None
    (reason,) = _reasons(_xrays(1), chroma=[chroma])
    assert reason is not None and reason.startswith("colour image")


def test_lung_hook_refuses_images_without_lungs() -> None:
    reasons = _reasons(_xrays(2), lung_fractions=[0.0, 0.3])
    assert reasons[0] is not None and "no lung fields" in reasons[0] and reasons[1] is None


def test_statistics_are_scale_free() -> None:
    img = _xrays(1)[0]
    a, b = image_statistics(img), image_statistics((img // 2).astype(np.uint8))
    assert a["roughness"] == pytest.approx(b["roughness"], rel=0.15)


def _features(n: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    basis = np.random.default_rng(42).normal(size=(8, 40))  # in-distribution features live near an 8-D subspace
    return rng.normal(size=(n, 8)) @ basis + 0.05 * rng.normal(size=(n, 40)) + shift


def test_distribution_check_refuses_far_features_and_about_one_percent_of_validation() -> None:
    rng = np.random.default_rng(0)
    params = fit_gate(_features(600, rng), _features(400, rng), n_components=8)
    gate = CompetenceGate(params)
    val_refused = gate.distances(_features(2000, rng))["score"] > gate.threshold
    assert 0.002 < val_refused.mean() < 0.03
    far = _features(50, rng, shift=3.0)  # off the subspace: caught by the residual
    assert (gate.distances(far)["score"] > gate.threshold).all()
    big = _features(50, rng) * 6  # in the subspace, but far out: caught by the Mahalanobis part
    assert (gate.distances(big)["score"] > gate.threshold).mean() > 0.9
    decisions = gate.assess(_xrays(2), far[:2])
    assert [d.in_scope for d in decisions] == [False, False]
    assert "outside the images this model was trained on" in str(decisions[0].reason)
    assert decisions[0].scores["distribution_score"] > decisions[0].scores["distribution_threshold"]


def test_gate_parameters_are_plain_data(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    params = fit_gate(_features(100, rng), _features(50, rng), train_prepared=_xrays(20), n_components=4)
    torch.save({"gate": params}, tmp_path / "g.pt")
    loaded = torch.load(tmp_path / "g.pt", weights_only=True)["gate"]
    feats = _features(5, rng)
    np.testing.assert_allclose(CompetenceGate(loaded).distances(feats)["score"],
                               CompetenceGate(params).distances(feats)["score"])
    assert set(params["image_limits"]) == {"min_std", "max_chroma", "max_roughness"}


def test_malformed_or_mismatched_gate_is_a_checkpoint_error() -> None:
    rng = np.random.default_rng(2)
    params = fit_gate(_features(100, rng), _features(50, rng), n_components=4)
    with pytest.raises(CheckpointError, match="expects 40 features"):
        CompetenceGate(params).distances(np.zeros((2, 7)))
    with pytest.raises(CheckpointError, match="malformed"):
        CompetenceGate({**params, "precision": [[1.0]]})
    with pytest.raises(CheckpointError, match="newer"):
        CompetenceGate({**params, "format": 99})


def test_probe_kinds() -> None:
    rng = np.random.default_rng(0)
    xr = _xrays(1)[0].astype(np.float32) / 255
    for kind in XRAY_TRANSFORMS:
        out = transform_xray(xr, kind, rng)
        assert out.ndim == 2 and not np.array_equal(out, xr)
    assert len(sample_photos()) >= 2
    kinds = probe_set([xr], SIZE)
    assert {"photo", "black", "noise", "inverted", "rotated_90", "upside_down", "cropped"} <= set(kinds)


# -- populations -------------------------------------------------------------------------------------------------------
def _rec(i: int, label: int, source: str = "folder", path: str = "/d/x", **extra: str) -> Record:
    return Record(path=f"{path}/{i}.png", label=label, source=source, extra=dict(extra))


def test_population_of_reads_column_age_view_and_kermany() -> None:
    assert population_of(_rec(0, 0, population="icu")) == "icu"
    assert population_of(_rec(0, 0, age="7", view="PA")) == "pediatric"
    assert population_of(_rec(0, 0, age="45", view="PA")) == "adult_pa"
    assert population_of(_rec(0, 0, age="70", view="AP")) == "adult_ap"
    assert population_of(_rec(0, 0, age="70")) == "adult"
    assert population_of(_rec(0, 0, path="/data/kermany224/train/NORMAL")) == "pediatric"
    assert population_of(_rec(0, 0, source="kermany")) == "pediatric"
    assert population_of(_rec(0, 0, view="AP")) == "adult_ap"
    assert population_of(_rec(0, 0)) is None


def test_fit_populations_thresholds_small_groups_and_default() -> None:
    rng = np.random.default_rng(0)
    recs, probs = [], []
    for i in range(200):  # pediatric: well separated around 0.7
        y = i % 2
        recs.append(_rec(i, y, path="/d/kermany"))
        probs.append(np.clip(0.7 + (0.2 if y else -0.2) + rng.normal(0, 0.05), 0, 1))
    for i in range(120):  # adult PA: separated around 0.3
        y = i % 2
        recs.append(_rec(1000 + i, y, age="50", view="PA"))
        probs.append(np.clip(0.3 + (0.15 if y else -0.15) + rng.normal(0, 0.05), 0, 1))
    for i in range(20):  # adult AP: too few
        recs.append(_rec(2000 + i, i % 2, age="60", view="AP"))
        probs.append(0.5)
    pops, default = fit_populations(recs, np.array(probs), rule="youden", target_sensitivity=0.95,
                                    model_threshold=0.55, model_rule="youden on validation")
    assert default == POOLED and pops[POOLED]["threshold"] == 0.55
    assert 0.5 < pops["pediatric"]["threshold"] < 0.9 and 0.15 < pops["adult_pa"]["threshold"] < 0.45
    assert pops["adult_pa"]["n_val"] == 120 and pops["adult_pa"]["n_pos"] == 60
    assert pops["adult_ap"]["threshold"] is None and "no threshold of its own" in pops["adult_ap"]["note"]
    with pytest.raises(ConfigError, match="no threshold of its own"):
        resolve(pops, "adult_ap")
    with pytest.raises(ConfigError, match="unknown population"):
        resolve(pops, "martian")


def test_single_population_keeps_the_model_threshold() -> None:
    recs = [_rec(i, i % 2, path="/d/kermany224") for i in range(80)]
    pops, default = fit_populations(recs, np.linspace(0, 1, 80), rule="youden", target_sensitivity=0.95,
                                    model_threshold=0.7105675339698792, model_rule="youden on validation (80)")
    assert default == "pediatric" and list(pops) == ["pediatric"]
    assert pops["pediatric"]["threshold"] == 0.7105675339698792
