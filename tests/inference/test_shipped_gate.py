"""The shipped model's competence gate: a photo, a black image and an inverted X-ray come back out_of_scope from
`pneumoscan predict` (both backends) and from `POST /v1/predict`, while real chest X-rays are labelled."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.cli.main import main

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "src" / "pneumoscan" / "weights"
EXAMPLES = REPO / "examples" / "xrays" / "test"
pytestmark = pytest.mark.skipif(not (WEIGHTS / "model.json").is_file(), reason="this build ships no model")


def _shipped() -> dict:
    return json.loads((WEIGHTS / "model.json").read_text())


@pytest.fixture(scope="module")
def not_xrays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pneumoscan.inference.gate_probes import colour_photo_png

    folder = tmp_path_factory.mktemp("not-xrays")
    photo = folder / "photo.png"
    photo.write_bytes(colour_photo_png())
    black = folder / "black.png"
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(black)
    source = np.asarray(Image.open(EXAMPLES / "NORMAL" / "IM-0050-0001.jpeg").convert("L"))
    inverted = folder / "inverted.png"
    Image.fromarray(255 - source).save(inverted)
    return {"photo": photo, "black": black, "inverted": inverted}


def _state() -> dict:
    import torch

    return torch.load(WEIGHTS / _shipped()["checkpoint"], weights_only=True)


def test_shipped_model_has_a_gate_and_its_populations() -> None:
    """MODEL_CARD.md, "Thresholds and populations": default `all` at the model's threshold, `pediatric` with its
    own, the adult views without one (too few validation images)."""
    state = _state()
    assert state["gate"]["threshold"] > 0 and state["default_population"] == "all"
    pops = state["populations"]
    assert pops["all"]["threshold"] == pytest.approx(state["threshold"], abs=1e-6)
    assert pops["pediatric"]["threshold"] is not None
    assert pops["adult_pa"]["threshold"] is None and pops["adult_ap"]["threshold"] is None


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_refuses_photo_black_and_inverted(not_xrays: dict[str, Path], tmp_path: Path, backend: str) -> None:
    out = tmp_path / "p.csv"
    xrays = sorted(EXAMPLES.rglob("*.jpeg"))
    assert main(["predict", *map(str, not_xrays.values()), *map(str, xrays), "--backend", backend, "--format", "csv",
                 "--output", str(out)]) == 0
    rows = {Path(r["path"]).stem: r for r in csv.DictReader(out.open())}
    for name in not_xrays:
        assert rows[name]["status"] == "out_of_scope" and rows[name]["label"] == "", rows[name]
        assert rows[name]["reason"]
    labelled = [rows[p.stem] for p in xrays]
    assert sum(r["status"] == "ok" for r in labelled) >= len(labelled) - 1  # real X-rays: labelled (<= 1 refused)
    assert all(r["population"] == _state()["default_population"] for r in rows.values())


def test_api_refuses_photo_black_and_inverted(not_xrays: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from pneumoscan.serving.app import create_app
    from pneumoscan.serving.settings import ServeSettings

    with TestClient(create_app(ServeSettings(precision="fp32"))) as client:
        model = client.get("/v1/model").json()
        default = _state()["default_population"]
        assert model["default_population"] == default and model["gate"]["distribution_check"]
        for name, path in not_xrays.items():
            r = client.post("/v1/predict", files=[("files", (path.name, path.read_bytes(), "image/png"))])
            assert r.status_code == 200, r.text
            (result,) = r.json()["results"]
            assert result["status"] == "out_of_scope" and result["label"] is None, (name, result)
            assert result["population"] == default
        xray = EXAMPLES / "NORMAL" / "IM-0061-0001.jpeg"
        r = client.post("/v1/predict", files=[("files", (xray.name, xray.read_bytes(), "image/jpeg"))])
        assert r.json()["results"][0]["status"] == "ok"
