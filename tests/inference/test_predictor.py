"""pneumoscan.inference.predictor.Predictor on a tiny checkpoint built here (random ``cnn`` weights, no training).

Expectations are computed from the torch module directly (``sigmoid(model(x) / T)``) and from the thresholds written
into the checkpoint, never with the Predictor itself. ONNX parity on a trained model, the shipped model and the
server are tested elsewhere (tests/export, tests/inference/test_shipped_model.py, tests/serving).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pneumoscan.data.io import read_image  # noqa: E402
from pneumoscan.data.preprocess import PreprocessConfig, prepare, to_float  # noqa: E402
from pneumoscan.errors import CheckpointError, ConfigError  # noqa: E402
from pneumoscan.inference.predictor import Predictor  # noqa: E402
from pneumoscan.models.registry import create_model  # noqa: E402
from tests.fixtures import make_xray_like, write_png  # noqa: E402

SIZE = 32
TEMPERATURE = 2.5
MEAN, STD = 0.45, 0.25
POPULATIONS = {
    "all": {"threshold": 0.45, "rule": "youden", "n_val": 200, "n_pos": 90, "definition": "every image"},
    "adult_pa": {"threshold": 0.6, "rule": "youden", "n_val": 80, "n_pos": 30, "definition": "adults, PA view"},
    "pediatric": {"threshold": None, "rule": "youden", "n_val": 12, "n_pos": 3, "definition": "under 18",
                  "note": "only 12 validation images"},
}


def _model() -> Any:
    torch.manual_seed(0)
    model = create_model("cnn", in_chans=1, num_classes=1).eval()
    with torch.no_grad():  # fresh weights give logits of about 1e-3; scaled, probabilities spread over 0.2 .. 0.85
        for p in model.parameters():
            p.mul_(1.5)
    return model


def _state(model: Any, **extra: Any) -> dict[str, Any]:
    state = {"format_version": 1, "model": {"name": "cnn", "num_classes": 1, "in_chans": 1},
             "state_dict": model.state_dict(), "class_names": ["NORMAL", "PNEUMONIA"],
             "preprocess": PreprocessConfig(image_size=SIZE, mean=MEAN, std=STD).to_dict(),
             "threshold": 0.45, "threshold_rule": "youden", "temperature": TEMPERATURE, "epoch": 0}
    state.update(extra)
    return state


@pytest.fixture(scope="module")
def model() -> Any:
    return _model()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model: Any) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(_state(model, populations=POPULATIONS, default_population="all"), path)
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.load(checkpoint, backend="torch", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [make_xray_like(rng, 48, positive=i % 2 == 0).astype(np.float32) / 255 for i in range(12)]


def _expected(model: Any, images: list[np.ndarray]) -> np.ndarray:
    prepared = np.stack([prepare(im, SIZE) for im in images])
    x = (prepared.astype(np.float32) / 255 - MEAN) / STD
    with torch.no_grad():
        logits = model(torch.from_numpy(x[:, None])).reshape(-1).double().numpy()
    return 1 / (1 + np.exp(-logits / TEMPERATURE))


def test_info_comes_from_the_checkpoint(predictor: Predictor, checkpoint: Path) -> None:
    info = predictor.info
    assert (info.name, info.preprocess.image_size, info.temperature) == ("cnn", SIZE, TEMPERATURE)
    assert info.preprocess == PreprocessConfig(image_size=SIZE, mean=MEAN, std=STD)
    assert info.version.startswith("cnn-") and info.class_names == ("NORMAL", "PNEUMONIA")
    assert predictor.population == "all" and predictor.threshold == 0.45


def test_probabilities_are_the_calibrated_model_outputs(predictor: Predictor, model: Any,
                                                        images: list[np.ndarray]) -> None:
    probs = predictor.predict_arrays(images, batch_size=5)  # 3 batches: 5, 5, 2
    assert probs.shape == (12,) and ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs, _expected(model, images), rtol=0, atol=1e-5)
    assert probs.min() < 0.45 and probs.max() > 0.6  # the images fall on both sides of both thresholds
    assert probs.min() > 0.01 and probs.max() < 0.99  # not saturated: the temperature matters
    assert predictor.predict_arrays([]).shape == (0,)


def test_prepared_path_matches_the_preprocessing(predictor: Predictor, images: list[np.ndarray]) -> None:
    prepared = np.stack([prepare(im, SIZE) for im in images])
    np.testing.assert_array_equal(np.stack([predictor.prepare(im) for im in images]), prepared)
    np.testing.assert_allclose(predictor._inputs(prepared)[:, 0], to_float(prepared, predictor.info.preprocess))
    np.testing.assert_allclose(predictor.probabilities_from_prepared(prepared), predictor.predict_arrays(images))


def test_labels_follow_the_selected_populations_threshold(predictor: Predictor, model: Any,
                                                          images: list[np.ndarray]) -> None:
    prepared = np.stack([prepare(im, SIZE) for im in images])
    probs = _expected(model, images)
    names = [f"img{i}" for i in range(len(images))]
    for population, threshold in ((None, 0.45), ("all", 0.45), ("adult_pa", 0.6)):
        results = predictor.predict_prepared(prepared, names, population=population)
        assert [r.path for r in results] == names
        want = ["PNEUMONIA" if p >= threshold else "NORMAL" for p in probs]
        assert [r.label for r in results] == want
        assert {r.threshold for r in results} == {threshold}
        assert {r.population for r in results} == {population or "all"}
        assert {r.status for r in results} == {"ok"}
    assert predictor.label_for(0.6, "adult_pa") == "PNEUMONIA" and predictor.label_for(0.5999, "adult_pa") == "NORMAL"


def test_population_selection(checkpoint: Path, predictor: Predictor) -> None:
    adult = Predictor.load(checkpoint, backend="torch", device="cpu", precision="fp32", population="adult_pa")
    assert adult.population == "adult_pa" and adult.threshold == 0.6 and adult.threshold_for("all") == 0.45
    with pytest.raises(ConfigError, match="population 'pediatric' has no threshold of its own: only 12"):
        predictor.select_population("pediatric")
    with pytest.raises(ConfigError, match="unknown population 'martian'; this model has: all, adult_pa, pediatric"):
        predictor.threshold_for("martian")
    assert predictor.population == "all"  # a refused selection changes nothing


def test_a_checkpoint_without_populations_uses_its_own_threshold(tmp_path: Path, model: Any) -> None:
    path = tmp_path / "plain.pt"
    torch.save(_state(model, threshold=0.3), path)
    pred = Predictor.load(path, backend="torch", device="cpu", precision="fp32")
    assert list(pred.info.populations) == ["all"] and pred.threshold == 0.3


def test_a_default_population_that_does_not_exist_is_refused(tmp_path: Path, model: Any) -> None:
    path = tmp_path / "bad.pt"
    torch.save(_state(model, populations=POPULATIONS, default_population="icu"), path)
    with pytest.raises(CheckpointError, match="default population 'icu'"):
        Predictor.load(path, backend="torch", device="cpu")


def test_bad_files_give_error_results_in_place(tmp_path: Path, predictor: Predictor, model: Any) -> None:
    rng = np.random.default_rng(5)
    good = [write_png(tmp_path / f"g{i}.png", make_xray_like(rng, 40, positive=bool(i))) for i in range(2)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    sources: list[str | bytes] = [str(good[0]), str(broken), b"not an image", str(tmp_path / "gone.png"),
                                  str(good[1])]
    results = predictor.predict_sources(sources, batch_size=2)
    assert [r.status for r in results] == ["ok", "error", "error", "error", "ok"]
    assert [r.path for r in results] == [str(good[0]), str(broken), "<upload 2>", str(tmp_path / "gone.png"),
                                         str(good[1])]
    for r in results[1:4]:
        assert r.probability is None and r.label is None and r.gate is None
        assert r.error and r.error.startswith(f"{r.path}: ") and "\n" not in r.error and r.reason == r.error
        assert r.threshold == 0.45 and r.population == "all"
    want = _expected(model, [read_image(p) for p in good])
    np.testing.assert_allclose([results[0].probability, results[4].probability], want, atol=1e-5)


def test_names_and_progress(tmp_path: Path, predictor: Predictor) -> None:
    rng = np.random.default_rng(6)
    files = [write_png(tmp_path / f"{i}.png", make_xray_like(rng, 40, positive=True)) for i in range(5)]
    done: list[int] = []
    results = predictor.predict_sources([p.read_bytes() for p in files], names=[f"n{i}" for i in range(5)],
                                        batch_size=2, progress=done.append)
    assert [r.path for r in results] == [f"n{i}" for i in range(5)] and done == [2, 2, 1]


def test_an_image_out_of_scope_keeps_its_probability_but_no_label(tmp_path: Path, predictor: Predictor) -> None:
    flat = write_png(tmp_path / "flat.png", np.full((40, 40), 128, np.uint8))
    (result,) = predictor.predict_sources([str(flat)])
    assert result.status == "out_of_scope" and result.label is None and result.reason
    assert result.probability is not None and 0 <= result.probability <= 1


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"backend": "tpu"}, ConfigError, "unknown backend 'tpu'"),
    ({"backend": "onnx"}, ConfigError, "needs an .onnx file"),
])
def test_load_refuses_bad_arguments(checkpoint: Path, kwargs: dict[str, str], error: type[Exception],
                                    fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        Predictor.load(checkpoint, **kwargs)


def test_load_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        Predictor.load(junk, backend="torch")


def test_onnx_backend_agrees_and_keeps_the_populations(tmp_path: Path, checkpoint: Path, predictor: Predictor,
                                                       images: list[np.ndarray]) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from pneumoscan.export.onnx import export_onnx

    out = tmp_path / "tiny.onnx"
    export_onnx(checkpoint, out, exporter="torchscript")
    onnx = Predictor.load(out, population="adult_pa")
    assert onnx.model is None and onnx.info.populations == predictor.info.populations
    assert onnx.threshold == 0.6 and onnx.info.temperature == TEMPERATURE
    np.testing.assert_allclose(onnx.predict_arrays(images), predictor.predict_arrays(images), atol=1e-4)
