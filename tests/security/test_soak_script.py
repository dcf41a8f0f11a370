"""``benchmarks/soak.py`` end to end, tiny: a real server on the tiny ONNX model, 40 requests with 25% garbage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import soak
from tests.serving.support import TinyModel, tiny_model, xray


def test_tiny_soak_run_counts_statuses_and_memory(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tiny: TinyModel = tiny_model(tmp_path_factory.getbasetemp())
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.fromarray(xray(i, size=48)).save(images / f"{i}.jpeg", format="JPEG")
    out = tmp_path / "soak.json"
    code = soak.main(["--checkpoint", str(tiny.onnx), "--backend", "onnx", "--images", str(images), "--requests",
                      "40", "--concurrency", "4", "--garbage", "0.25", "--rss-every", "0.2", "--output", str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report["unexpected_samples"]
    assert report["requests"] == 40 and sum(report["status_counts"].values()) == 40
    garbage = sum(v for k, v in report["status_counts"].items() if k.startswith("4"))
    assert report["status_counts"]["200"] + garbage == 40 and 0 < garbage < 40
    assert report["latency_ms"]["real"]["n"] == report["status_counts"]["200"]
    assert report["rss_start_mb"] > 0 and report["rss_max_mb"] >= report["rss_end_mb"] > 0
    assert report["server_alive"] and report["unexpected"] == 0
    printed = capsys.readouterr().out
    assert "statuses" in printed and "RSS MB" in printed and ("levels off" in printed or "STILL GROWING" in printed)


def test_garbage_set_is_all_bad_input() -> None:
    from pneumoscan.data.io import read_image
    from pneumoscan.errors import ImageReadError

    for name, data in soak.garbage_files().items():
        with pytest.raises(ImageReadError):
            read_image(data, name=name)
