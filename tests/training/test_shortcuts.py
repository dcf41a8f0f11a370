"""Training-side measures against acquisition shortcuts: scanner/site augmentation, source × view × label balanced
sampling, per-source caps, and selection by the worst group's validation ROC-AUC."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from pneumoscan.cli.main import main
from pneumoscan.data.records import Record
from pneumoscan.errors import ConfigError
from pneumoscan.models.checkpoint import load_checkpoint
from pneumoscan.training.augment import BatchAugment
from pneumoscan.training.config import AugmentConfig, TrainConfig
from pneumoscan.training.setup import _group_weights, cap_per_source
from pneumoscan.training.trainer import acquisition_cell, group_aucs, selection_score
from tests.training.conftest import train_args

ACQ = {"gamma": 0.3, "blur": 1.0, "noise": 0.03, "jpeg": 0.5, "downscale": 0.5, "text": 0.5}
NO_GEOMETRY = {"rotation": 0, "hflip": 0, "zoom": 0, "translate": 0, "brightness": 0, "contrast": 0}


def _batch(n: int = 8, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 1, size, size, generator=g) * 0.5 + 0.25


@pytest.mark.parametrize("name", sorted(ACQ))
def test_each_acquisition_augmentation_changes_images_and_stays_in_range(name: str) -> None:
    cfg = AugmentConfig(**NO_GEOMETRY, **{name: 1.0 if name in ("jpeg", "text") else ACQ[name]})
    x = _batch()
    y = BatchAugment(cfg, torch.Generator().manual_seed(0))(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(x, y)


def test_acquisition_augmentation_is_off_by_default_and_reproducible() -> None:
    assert not AugmentConfig().acquisition
    x = _batch()
    off = BatchAugment(AugmentConfig(**NO_GEOMETRY), torch.Generator().manual_seed(0))(x)
    assert torch.equal(off, x)
    cfg = AugmentConfig(**ACQ)
    a = BatchAugment(cfg, torch.Generator().manual_seed(3))(x)
    b = BatchAugment(cfg, torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)


def test_acquisition_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        AugmentConfig(jpeg=1.5)
    with pytest.raises(ConfigError):
        AugmentConfig(downscale=1.0)
    with pytest.raises(ConfigError):
        AugmentConfig(noise=-0.1)
    with pytest.raises(ConfigError, match="select_by"):
        TrainConfig(select_by="best")


def _records() -> list[Record]:
    out = []
    # a source with the rsna_adult trap: AP mostly pneumonia, PA mostly normal; one normals-only source; a no-view one
    for i in range(40):
        out.append(Record(f"a{i}", int(i < 32), None, f"ap{i}", "rsna_adult", extra={"view": "AP"}))
    for i in range(60):
        out.append(Record(f"p{i}", int(i < 6), None, f"pa{i}", "rsna_adult", extra={"view": "PA"}))
    for i in range(30):
        out.append(Record(f"m{i}", 0, None, f"m{i}", "montgomery", extra={"view": "PA"}))
    for i in range(50):
        out.append(Record(f"k{i}", int(i < 37), None, f"k{i}", "kermany", extra={"view": "frontal"}))
    return out


def test_acquisition_cells() -> None:
    recs = _records()
    assert {acquisition_cell(r) for r in recs} == {"view:AP", "view:PA", "source:kermany"}


def test_group_weights_make_the_label_independent_of_source_and_view() -> None:
    recs = _records()
    w = _group_weights(recs)
    assert w.sum() == pytest.approx(1.0)
    mass: Counter[tuple[str, int]] = Counter()
    for r, wi in zip(recs, w, strict=True):
        mass[(f"{r.source}|{r.extra['view']}", int(r.label))] += wi
    for cell in ("rsna_adult|AP", "rsna_adult|PA", "kermany|frontal"):
        assert mass[(cell, 0)] == pytest.approx(mass[(cell, 1)])
    # each cell keeps its natural share of the draws
    assert mass[("rsna_adult|AP", 0)] + mass[("rsna_adult|AP", 1)] == pytest.approx(40 / len(recs))
    assert mass[("montgomery|PA", 0)] == pytest.approx(30 / len(recs))


def test_cap_per_source_keeps_small_sources_and_the_label_mix() -> None:
    recs = _records()
    capped = cap_per_source(recs, 20, seed=0)
    by = Counter(r.source for r in capped)
    assert by["kermany"] == 20 and by["montgomery"] == 20
    assert Counter(r.label for r in capped if r.source == "kermany")[1] == round(20 * 37 / 50)
    assert cap_per_source(recs, 20, seed=0) == capped
    assert len(cap_per_source(recs, 1000, seed=0)) == len(recs)


def test_selection_rules() -> None:
    recs = _records()
    labels = np.array([r.label for r in recs])
    rng = np.random.default_rng(0)
    scores = labels + rng.normal(0, 0.3, len(labels))
    # make the scores perfect on AP and poor on PA
    for i, r in enumerate(recs):
        if r.extra["view"] == "PA" and r.source == "rsna_adult":
            scores[i] = rng.normal()
    groups = group_aucs(recs, labels, scores)
    assert set(groups) >= {"source:kermany", "source:rsna_adult", "group:view:AP", "group:view:PA",
                           "group:source:kermany"}
    assert "source:montgomery" not in groups  # one class: no ROC-AUC
    pooled = 0.9
    assert selection_score("pooled", pooled, groups) == pooled
    assert selection_score("worst_group", pooled, groups) == min(v for k, v in groups.items()
                                                                 if k.startswith("group:"))
    assert selection_score("worst_source", pooled, groups) == min(groups["source:kermany"],
                                                                  groups["source:rsna_adult"])
    assert selection_score("worst_group", pooled, {}) == pooled


def test_training_records_the_switches_and_the_selection_rule(tiny_data, tmp_path) -> None:
    out = tmp_path / "run"
    assert main(train_args(tiny_data, out, "--intensity", "clahe", "--aug-acquisition", "--balance-groups",
                           "--select-by", "worst_source", "--epochs", "1")) == 0
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["preprocess"]["intensity"] == "clahe"
    assert ckpt["selection"]["rule"] == "worst_source"
    cfg = TrainConfig.from_dict(ckpt["config"])
    assert cfg.balance_groups and cfg.augment.acquisition and cfg.augment.text == pytest.approx(0.3)
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val_select" in header and "val_auc[source:folder]" in header
