"""CLI errors of ``dicom-node`` / ``dicomweb``: one line, non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoscan.cli.main import main


@pytest.mark.parametrize(("extra", "message"), [
    (["--forward", "ORTHANC-localhost-4242"], "expected AET@HOST:PORT"),
    (["--forward", "ORTHANC@host:99999"], "port in 1..65535"),
    (["--ae-title", "A" * 17], "1 to 16 printable ASCII"),
])
def test_bad_options(tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dicom-node", "--output", str(tmp_path), "--port", "0", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_heatmap_needs_torch_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dicom-node", "--output", str(tmp_path), "--port", "0", "--backend", "onnx", "--heatmap"]) == 2
    assert "--heatmap needs the PyTorch backend" in capsys.readouterr().err


def test_dicomweb_bad_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dicomweb", "--url", "pacs:8042", "--state", str(tmp_path / "s.sqlite")]) == 2
    assert "expected the http(s) root" in capsys.readouterr().err


def test_peer_parse() -> None:
    from pneumoscan.dicomnode.node import Peer

    assert Peer.parse("ORTHANC@pacs.local:4242") == Peer("ORTHANC", "pacs.local", 4242)
    assert Peer.parse("PACS@[::1]:104") == Peer("PACS", "::1", 104)


def test_population_without_a_threshold_of_its_own_is_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped model has no adult_pa threshold (too few validation images): one line, exit 2, before listening."""
    assert main(["dicom-node", "--output", str(tmp_path), "--port", "0", "--backend", "onnx",
                 "--population", "adult_pa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adult_pa" in err[0]


def test_population_sets_the_threshold_every_result_is_labelled_at() -> None:
    import argparse

    from pneumoscan.cli.dicom_node import build_scorer

    scorer = build_scorer(argparse.Namespace(checkpoint=None, backend="onnx", heatmap=False, population="pediatric"))
    pops = scorer.predictor.info.populations
    if not (pops.get("pediatric") or {}).get("threshold"):
        pytest.skip("the shipped model has no pediatric threshold")
    assert scorer.predictor.population == "pediatric"
    assert scorer.predictor.threshold_for() == pytest.approx(pops["pediatric"]["threshold"])
    assert scorer.predictor.threshold_for() != pytest.approx(scorer.predictor.threshold_for("all"))
    default = build_scorer(argparse.Namespace(checkpoint=None, backend="onnx", heatmap=False, population=None))
    assert default.predictor.population == default.predictor.info.default_population
