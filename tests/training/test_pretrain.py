"""Self-supervised pre-training (``pneumoscan pretrain``) and fine-tuning from its encoder (``--init-from``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoscan.cli.main import main
from pneumoscan.errors import ConfigError
from pneumoscan.models import create_model
from pneumoscan.models.checkpoint import load_checkpoint
from pneumoscan.models.init_weights import classifier_keys, load_init_weights
from pneumoscan.training.config import TrainConfig
from pneumoscan.training.pretrain import nt_xent_loss
from pneumoscan.training.setup import build_model, preprocess_for
from tests.training.conftest import train_args


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(data), "--model", "cnn", "--image-size", "32", "--epochs", "2",
            "--batch-size", "8", "--output", str(out), "--cache-dir", str(out.parent / "cache"), "--workers", "1",
            *extra]


@pytest.fixture(scope="module")
def encoder_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ssl") / "run"
    assert main(pretrain_args(tiny_data, out)) == 0
    return out


def test_nt_xent_rewards_matching_views() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(8, 16, generator=gen)
    matched = torch.cat([base, base + 0.01 * torch.randn(8, 16, generator=gen)])
    unrelated = torch.randn(16, 16, generator=gen)
    assert float(nt_xent_loss(matched, 0.2)) < 0.5
    # random embeddings: about log(2N - 1), the loss of guessing among the other 15 rows
    assert abs(float(nt_xent_loss(unrelated, 1.0)) - math.log(15)) < 0.5
    with pytest.raises(ValueError):
        nt_xent_loss(torch.randn(3, 4), 0.2)


def test_pretrain_writes_encoder_and_report(encoder_run: Path) -> None:
    state = load_checkpoint(encoder_run / "encoder.pt")
    assert state["kind"] == "ssl-encoder" and state["model"] == {"name": "cnn", "num_classes": 0, "in_chans": 1}
    assert not any(k.startswith("classifier.") for k in state["state_dict"])
    report = json.loads((encoder_run / "pretrain.json").read_text())
    assert [row["epoch"] for row in report["history"]] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in report["history"])
    # the split is the one pneumoscan train makes: only train images, never validation or test
    assert report["split"]["sizes"]["train"]["n"] == state["split"]["sizes"]["train"]["n"]
    assert report["split"]["sizes"]["val"]["n"] > 0
    auc = report["linear_probe"]["val_roc_auc"]
    assert auc is None or 0.0 <= auc <= 1.0


def test_init_from_loads_every_weight_but_the_head(encoder_run: Path, tiny_data: Path) -> None:
    cfg = TrainConfig(data=(str(tiny_data),), model="cnn", image_size=32, init_from=str(encoder_run / "encoder.pt"))
    model = build_model(cfg)
    saved = load_checkpoint(encoder_run / "encoder.pt")["state_dict"]
    own = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(own[key], value), key
    assert classifier_keys(model) == {"classifier.weight", "classifier.bias"}
    # the normalisation the encoder learned with is kept
    assert preprocess_for(cfg).to_dict()["mean"] == load_checkpoint(encoder_run / "encoder.pt")["preprocess"]["mean"]


def test_init_from_wrong_architecture_or_file(encoder_run: Path, tmp_path: Path) -> None:
    model = create_model("resnet18")
    with pytest.raises(ConfigError, match="weights are for model 'cnn'"):
        load_init_weights(model, encoder_run / "encoder.pt", "resnet18")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt"):
        load_init_weights(create_model("cnn"), bad, "cnn")
    with pytest.raises(ConfigError, match="choose one starting point"):
        TrainConfig(model="cnn", init_from=str(bad), pretrained=True)


def test_fine_tune_from_encoder_end_to_end(encoder_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    assert main(train_args(tiny_data, out, "--init-from", str(encoder_run / "encoder.pt"))) == 0
    best = load_checkpoint(out / "best.pt")
    assert best["config"]["init_from"] == str(encoder_run / "encoder.pt")
    assert (out / "summary.json").is_file()


def test_pretrain_resume_matches_uninterrupted(tiny_data: Path, tmp_path: Path, encoder_run: Path) -> None:
    out = tmp_path / "resumed"
    assert main(pretrain_args(tiny_data, out, "--epochs", "1", "--no-probe")) == 0
    assert main(["pretrain", "--data", str(tiny_data), "--epochs", "2", "--output", str(out), "--resume",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    straight = load_checkpoint(encoder_run / "encoder.pt")["state_dict"]
    resumed = load_checkpoint(out / "encoder.pt")["state_dict"]
    for key in straight:
        assert np.allclose(straight[key].float().numpy(), resumed[key].float().numpy(), atol=1e-5), key


def test_pretrain_refuses_non_empty_output(tiny_data: Path, encoder_run: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(pretrain_args(tiny_data, encoder_run)) != 0
    assert "not empty" in capsys.readouterr().err
