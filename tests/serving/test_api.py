"""REST API through FastAPI's TestClient: answers, errors, limits, API key, docs, page."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pneumoscan.inference.predictor import Predictor
from pneumoscan.serving.app import create_app, local_swagger_ui
from pneumoscan.serving.service import InferenceService
from pneumoscan.serving.settings import ServeSettings, is_loopback
from tests.serving.support import IMAGE_SIZE, TinyModel, dicom_bytes, gif_bytes, jpeg_bytes, png_bytes

RESULT_KEYS = {"filename", "status", "probability", "label", "threshold", "population", "reason", "gate", "model",
               "version"}


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def _png_of(b64: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(b64)), formats=["PNG"])
    im.load()
    return im


# -- happy paths ---------------------------------------------------------------------------------------------------
def test_healthz(torch_client: TestClient) -> None:
    r = torch_client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["auth_required"] is False


def test_model_endpoint(torch_client: TestClient, tiny: TinyModel) -> None:
    body = torch_client.get("/v1/model").json()
    info = Predictor.from_checkpoint(tiny.checkpoint, precision="fp32").info
    assert body["name"] == "cnn" and body["version"] == info.version and body["backend"] == "torch"
    assert body["image_size"] == IMAGE_SIZE and body["threshold"] == info.threshold
    assert body["threshold_rule"] == info.threshold_rule
    assert body["operating_points"] == info.operating_points
    assert body["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert body["metrics"] == info.metrics and body["heatmaps"] is True


def test_predict_png_matches_predictor(torch_client: TestClient, tiny: TinyModel) -> None:
    data = png_bytes(1)
    r = torch_client.post("/v1/predict", files=_files(("chest.png", data)))
    assert r.status_code == 200, r.text
    body = r.json()
    (result,) = body["results"]
    assert set(result) == RESULT_KEYS
    assert result["filename"] == "chest.png"
    want = Predictor.from_checkpoint(tiny.checkpoint, precision="fp32").predict_sources([data], names=["x"])[0]
    assert result["probability"] == pytest.approx(want.probability, abs=1e-6)
    assert result["label"] == want.label and result["threshold"] == want.threshold
    assert body["model"]["version"] == result["version"] == want.version


def test_predict_several_formats_keeps_order(torch_client: TestClient, tmp_path: Path) -> None:
    files = _files(("a.png", png_bytes(1)), ("b.jpg", jpeg_bytes(2)), ("c.dcm", dicom_bytes(tmp_path)),
                   ("d.dcm", dicom_bytes(tmp_path, photometric="MONOCHROME1", bits_stored=12)))
    r = torch_client.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["a.png", "b.jpg", "c.dcm", "d.dcm"]
    assert all(0.0 <= x["probability"] <= 1.0 and x["label"] in ("NORMAL", "PNEUMONIA") for x in results)
    assert all("error" not in x for x in results)


def test_heatmap_and_preview(torch_client: TestClient) -> None:
    r = torch_client.post("/v1/predict?heatmap=true&preview=true", files=_files(("a.png", png_bytes(1, size=100))))
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    heat, overlay, preview = (_png_of(result[k]) for k in ("heatmap_png_base64", "overlay_png_base64",
                                                             "preview_png_base64"))
    assert heat.size == overlay.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert heat.mode == "RGBA" and overlay.mode == "RGB"
    assert preview.size == (100, 100) and preview.mode == "L"


def test_heatmap_as_form_field(torch_client: TestClient, onnx_client: TestClient) -> None:
    files = _files(("a.png", png_bytes(1)))
    (result,) = torch_client.post("/v1/predict", files=files, data={"heatmap": "true"}).json()["results"]
    assert "overlay_png_base64" in result and "preview_png_base64" not in result
    assert onnx_client.post("/v1/predict", files=files, data={"heatmap": "true"}).status_code == 400
    r = torch_client.post("/v1/predict", files=files, data={"heatmap": "perhaps"})
    assert r.status_code == 422 and r.json()["detail"].startswith("heatmap: expected true or false")


def test_onnx_backend_same_numbers_no_heatmap(torch_client: TestClient, onnx_client: TestClient) -> None:
    files = _files(("a.png", png_bytes(4)), ("b.png", png_bytes(5, positive=False)))
    a = torch_client.post("/v1/predict", files=files).json()["results"]
    b = onnx_client.post("/v1/predict", files=files).json()["results"]
    for x, y in zip(a, b, strict=True):
        assert y["probability"] == pytest.approx(x["probability"], abs=1e-4)
        assert y["version"] == x["version"]
    assert onnx_client.get("/v1/model").json()["heatmaps"] is False
    r = onnx_client.post("/v1/predict?heatmap=true", files=files)
    assert r.status_code == 400
    assert "heatmaps need the torch backend" in r.json()["detail"]
    r = onnx_client.post("/v1/predict?preview=true", files=_files(("a.png", png_bytes(4))))
    assert r.status_code == 200 and "preview_png_base64" in r.json()["results"][0]


# -- bad input -----------------------------------------------------------------------------------------------------
def _bad_files(tmp_path: Path) -> dict[str, tuple[bytes, int, str]]:
    png = png_bytes(1)
    return {
        "text.png": (b"hello, I am not an image", 415, "not an image"),
        "anim.gif": (gif_bytes(), 415, "unsupported image format GIF"),
        "empty.png": (b"", 422, "empty file"),
        "truncated.png": (png[: len(png) // 2], 422, "truncated"),
        "palette.dcm": (dicom_bytes(tmp_path, photometric="PALETTE COLOR"), 415, "PALETTE"),
        "nopixels.dcm": (dicom_bytes(tmp_path, no_pixels=True), 415, "pixel"),
    }


@pytest.mark.parametrize("name", ["text.png", "anim.gif", "empty.png", "truncated.png", "palette.dcm",
                                  "nopixels.dcm"])
@pytest.mark.parametrize("client_name", ["torch_client", "onnx_client"])
def test_single_bad_file(request: pytest.FixtureRequest, tmp_path: Path, name: str, client_name: str) -> None:
    client: TestClient = request.getfixturevalue(client_name)
    data, status, words = _bad_files(tmp_path)[name]
    r = client.post("/v1/predict", files=_files((name, data)))
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{name}: ")
    assert words.lower() in detail.lower()
    # ... and the server still answers a good request.
    ok = client.post("/v1/predict", files=_files(("good.png", png_bytes(1))))
    assert ok.status_code == 200 and ok.json()["results"][0]["probability"] is not None


def test_mixed_batch_gives_per_file_errors(torch_client: TestClient, tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    files = _files(("good1.png", png_bytes(1)), *((n, bad[n][0]) for n in bad), ("good2.jpg", jpeg_bytes(2)))
    r = torch_client.post("/v1/predict", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["good1.png", *bad, "good2.jpg"]
    for x in results[1:-1]:
        assert x["probability"] is None and x["label"] is None
        assert x["error"].startswith(f"{x['filename']}: ")
    assert results[0]["probability"] is not None and results[-1]["probability"] is not None


def test_no_files(torch_client: TestClient) -> None:
    for kwargs in ({}, {"data": {"other": "1"}}, {"content": b"{}", "headers": {"content-type": "application/json"}}):
        r = torch_client.post("/v1/predict", **kwargs)
        assert r.status_code == 422, r.text
        assert isinstance(r.json()["detail"], str)


def test_invalid_query_is_a_string_detail(torch_client: TestClient) -> None:
    r = torch_client.post("/v1/predict?heatmap=maybe", files=_files(("a.png", png_bytes(1))))
    assert r.status_code == 422
    assert "heatmap" in r.json()["detail"]


@pytest.fixture(scope="module")
def limited_client(tiny: TinyModel) -> Iterator[TestClient]:
    """Small limits: 0.01 MB per file, 1000 pixels, 3 files."""
    settings = ServeSettings(checkpoint=tiny.onnx, backend="onnx", max_upload_mb=0.01, max_pixels=1000, max_files=3)
    with TestClient(create_app(settings)) as c:
        yield c


def test_limits(limited_client: TestClient) -> None:
    small = png_bytes(1, size=30)  # 900 pixels, well under 10 kB
    assert limited_client.post("/v1/predict", files=_files(("ok.png", small))).status_code == 200
    r = limited_client.post("/v1/predict", files=_files(("big.png", png_bytes(1, size=40))))  # 1600 pixels
    assert r.status_code == 413 and r.json()["detail"].startswith("big.png: image too large")
    r = limited_client.post("/v1/predict", files=_files(("heavy.png", small + b"\0" * 20_000)))
    assert r.status_code == 413 and "file too large" in r.json()["detail"]
    r = limited_client.post("/v1/predict", files=_files(*[(f"{i}.png", small) for i in range(4)]))
    assert r.status_code == 413 and "too many files" in r.json()["detail"]
    # A body larger than every file at its limit is refused before it is parsed.
    r = limited_client.post("/v1/predict", content=b"x" * 2_000_000,
                            headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413 and "request too large" in r.json()["detail"]
    mixed = limited_client.post("/v1/predict", files=_files(("ok.png", small), ("big.png", png_bytes(1, size=40))))
    assert mixed.status_code == 200
    assert "image too large" in mixed.json()["results"][1]["error"]
    assert limited_client.post("/v1/predict", files=_files(("ok.png", small))).status_code == 200


def test_decompression_bomb_header(limited_client: TestClient) -> None:
    """A tiny file that declares a huge image is refused from its header (413), not decoded."""
    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 10_000
    r = limited_client.post("/v1/predict", files=_files(("bomb.png", buf.getvalue())))
    assert r.status_code == 413 and "too large" in r.json()["detail"]


# -- API key -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed_client(tiny: TinyModel) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(checkpoint=tiny.onnx, backend="onnx", api_key="s3cret-key"))) as c:
        yield c


def test_api_key(keyed_client: TestClient) -> None:
    health = keyed_client.get("/healthz")
    assert health.status_code == 200 and health.json()["auth_required"] is True
    files = _files(("a.png", png_bytes(1)))
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cret-key "}):
        for r in (keyed_client.get("/v1/model", headers=headers),
                  keyed_client.post("/v1/predict", files=files, headers=headers)):
            assert r.status_code == 401
            assert "API key" in r.json()["detail"]
    good = {"X-API-Key": "s3cret-key"}
    assert keyed_client.get("/v1/model", headers=good).status_code == 200
    assert keyed_client.post("/v1/predict", files=files, headers=good).status_code == 200
    assert keyed_client.get("/").status_code == 200  # the page itself is public; it asks for the key


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tiny: TinyModel) -> None:
    monkeypatch.setenv("PNEUMOSCAN_API_KEY", "from-env")
    monkeypatch.setenv("PNEUMOSCAN_MAX_FILES", "2")
    monkeypatch.setenv("PNEUMOSCAN_CHECKPOINT", str(tiny.onnx))
    monkeypatch.setenv("PNEUMOSCAN_BACKEND", "onnx")
    settings = ServeSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"
    assert settings.max_files == 2 and settings.backend == "onnx"
    assert "from-env" not in repr(settings)
    with TestClient(create_app()) as c:  # settings built inside create_app, from the environment
        assert c.get("/v1/model").status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "from-env"}).json()["backend"] == "onnx"
    monkeypatch.setenv("PNEUMOSCAN_API_KEY", "")
    assert ServeSettings().api_key is None


def test_is_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "example.org", "::"))


# -- concurrency -----------------------------------------------------------------------------------------------------
def test_concurrent_requests(onnx_client: TestClient) -> None:
    images = [png_bytes(i) for i in range(6)]
    single = [onnx_client.post("/v1/predict", files=_files(("x.png", d))).json()["results"][0]["probability"]
              for d in images]

    def call(i: int) -> float:
        r = onnx_client.post("/v1/predict", files=_files(("x.png", images[i % 6])))
        assert r.status_code == 200
        return float(r.json()["results"][0]["probability"])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(call, range(24)))
    assert got == pytest.approx([single[i % 6] for i in range(24)], abs=1e-6)


def test_requests_waiting_together_are_batched(tiny: TinyModel) -> None:
    predictor = Predictor.load(tiny.onnx, backend="onnx")
    rng = np.random.default_rng(0)
    jobs = [rng.integers(0, 256, size=(n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8) for n in (1, 2, 1, 3, 1, 1)]
    results: dict[int, np.ndarray] = {}

    async def scenario() -> InferenceService:
        service = InferenceService(predictor, ServeSettings(checkpoint=tiny.onnx, backend="onnx", batch_size=4))

        async def one(i: int) -> None:
            results[i] = await service.probabilities(jobs[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(jobs)):
                tg.start_soon(one, i)
        return service

    service = anyio.run(scenario)
    for i, images in enumerate(jobs):
        np.testing.assert_allclose(results[i], predictor.probabilities_from_prepared(images), atol=1e-6)
    assert service.images_scored == 9
    assert service.batches_run < len(jobs), "requests waiting together should share a batch"


# -- docs and page ---------------------------------------------------------------------------------------------------
def test_openapi_and_docs(torch_client: TestClient) -> None:
    schema = torch_client.get("/openapi.json").json()
    assert {"/healthz", "/v1/model", "/v1/predict"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["Body_predict_v1_predict_post"]
    assert body["properties"]["files"]["items"]["format"] == "binary"  # Swagger UI shows a file picker
    assert list(body["properties"]) == ["files"]
    docs = torch_client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    if local_swagger_ui() is not None:  # offline Swagger UI: every asset it references is served here
        assert "/docs/assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
        assert torch_client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
        assert torch_client.get("/docs/assets/swagger-ui.css").status_code == 200


def test_page_is_self_contained(torch_client: TestClient) -> None:
    r = torch_client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    external = re.compile(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|fetch\(\s*["'`]https?:""")
    assert not external.search(html)
    for asset in ("static/app.js", "static/app.css"):
        assert asset in html
        body = torch_client.get(f"/{asset}")
        assert body.status_code == 200
        assert not external.search(body.text) and "http" not in body.text
