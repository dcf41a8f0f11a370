"""Multi-source training end to end: two tiny sources in different publisher layouts, trained and evaluated together.

The builders below write *learnable* copies of the NIH ChestX-ray14 and RSNA layouts (real file, column and id
formats, as in ``tests/data/test_sources.py``, but with enough synthetic X-rays — :func:`make_xray_like` — for a
patient-grouped train/val/test carving and a tiny model to learn something). The loader tests' own fixtures have
four or three 8x8 images, too few to train on, so they are not reused here; their header constant is.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.cli.main import main
from pneumoscan.data.records import Record
from pneumoscan.data.sources import load_records
from pneumoscan.data.splits import make_splits
from pneumoscan.training.config import TrainConfig
from pneumoscan.training.setup import _sampling_weights
from tests.data.test_sources import NIH_HEADER, write_csv
from tests.fixtures import make_dataset_folder, make_xray_like, write_dicom, write_png

SIZE = 32  # image side of every synthetic source: small enough for a 2-core CPU
RSNA_CLASSES = {1: "Lung Opacity", 0: "Normal"}


# ------------------------------------------------------------------------------------------------------ builders

def make_kaggle(root: Path, seed: int = 1, fmt: str = "png") -> Path:
    """Kaggle/Mendeley layout ``{train,val,test}/{NORMAL,PNEUMONIA}`` with Kermany file names (28 images)."""
    return make_dataset_folder(root, {"train": 8, "val": 2, "test": 4}, size=SIZE, seed=seed, fmt=fmt)  # type: ignore


def _nih_row(name: str, findings: str, patient: int, follow_up: int) -> list[str]:
    return [name, findings, str(follow_up), str(patient), "045", "F" if patient % 2 else "M", "PA", "2500", "2048",
            "0.168", "0.168", ""]


def make_nih_layout(root: Path, n_patients: int = 20, n_test: int = 6, seed: int = 2) -> Path:
    """Kaggle 'nih-chest-xrays/data' layout with ``n_patients`` patients of 1-2 images each.

    Odd patients have pneumonia (``Pneumonia`` or ``Infiltration|Pneumonia``), even ones ``No Finding``; every
    fifth patient also has an ``Effusion`` image that the default label policy leaves out. The last ``n_test``
    patients are in ``test_list.txt``, the others in ``train_val_list.txt``; images are split over
    ``images_001/images`` and ``images_002/images`` as in the Kaggle copy.
    """
    rng = np.random.default_rng(seed)
    rows: list[list[str]] = []
    lists: dict[str, list[str]] = {"train_val_list.txt": [], "test_list.txt": []}
    for patient in range(1, n_patients + 1):
        positive = patient % 2 == 1
        findings = ["Pneumonia" if patient % 3 else "Infiltration|Pneumonia"] if positive else ["No Finding"]
        findings += ["No Finding" if not positive else "Pneumonia"] * (patient % 4 == 0)
        findings += ["Effusion"] * (patient % 5 == 0)
        for follow_up, finding in enumerate(findings):
            name = f"{patient:08d}_{follow_up:03d}.png"
            rows.append(_nih_row(name, finding, patient, follow_up))
            folder = root / f"images_00{1 + patient % 2}" / "images"
            write_png(folder / name, make_xray_like(rng, SIZE, positive="Pneumonia" in finding))
            lists["test_list.txt" if patient > n_patients - n_test else "train_val_list.txt"].append(name)
    lines = [",".join(NIH_HEADER)] + [",".join(r) for r in rows]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name, names in lists.items():
        (root / name).write_text("\n".join(names) + "\n", encoding="utf-8")
    return root


def make_rsna_layout(root: Path, n_images: int = 24, seed: int = 3) -> Path:
    """Kaggle 'rsna-pneumonia-detection-challenge' layout: one label row per box, class info, ``<uuid>.dcm``.

    Half the images are ``Lung Opacity`` (two boxes each), half ``Normal``; every third DICOM is JPEG-compressed,
    so that decoding compressed transfer syntaxes is exercised through training and evaluation.
    """
    rng = np.random.default_rng(seed)
    labels, classes = [], []
    for i in range(n_images):
        target = i % 2
        image_id = f"{i:08x}-{seed:04x}-4e49-80ba-{i * 7919:012x}"
        boxes = [["264.0", "152.0", "213.0", "379.0"], ["562.0", "152.0", "256.0", "453.0"]] if target else [[""] * 4]
        labels += [[image_id, *box, str(target)] for box in boxes]
        classes += [[image_id, RSNA_CLASSES[target]]] * len(boxes)
        write_dicom(root / "stage_2_train_images" / f"{image_id}.dcm", make_xray_like(rng, SIZE, bool(target)),
                    patient_id=image_id, compressed="jpeg" if i % 3 == 0 else None)
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], labels)
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], classes)
    return root


def train_cmd(out: Path, *data: str, extra: tuple[str, ...] = ()) -> list[str]:
    """``pneumoscan train`` on the given specs with the tiny-CPU settings used throughout these tests."""
    args = ["train", "--model", "cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "1",
            "--no-augment", "--output", str(out), "--cache-dir", str(out.parent / "cache"), *extra]
    for spec in data:
        args += ["--data", spec]
    return args


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One Kaggle folder and one NIH layout (both with an official test split) and one RSNA layout (none)."""
    base = tmp_path_factory.mktemp("multisource")
    return {"kaggle": make_kaggle(base / "chest_xray"), "nih": make_nih_layout(base / "ChestX-ray14"),
            "rsna": make_rsna_layout(base / "rsna")}


@pytest.fixture(scope="module")
def two_source_run(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pneumoscan train --data kaggle_dir --data nih:dir --balance-sources`` (1 epoch)."""
    out = tmp_path_factory.mktemp("runs") / "kaggle+nih"
    assert main(train_cmd(out, str(sources["kaggle"]), f"nih:{sources['nih']}", extra=("--balance-sources",))) == 0
    return out


def _splits(run: Path) -> list[dict[str, str]]:
    with (run / "splits.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _test_paths(spec: str) -> set[str]:
    return {r.path for r in load_records(spec) if r.split == "test"}


# ------------------------------------------------------------------------------------------- training together

def test_data_json_keeps_every_label_policy(two_source_run: Path, sources: dict[str, Path]) -> None:
    info = json.loads((two_source_run / "data.json").read_text(encoding="utf-8"))
    specs = [s["spec"] for s in info["sources"]]
    assert specs == [str(sources["kaggle"]), f"nih:{sources['nih']}"]
    policies = {s["label_policy"]["source"]: s["label_policy"] for s in info["sources"]}
    assert set(policies) == {"folder", "nih"}
    assert "PNEUMONIA folders" in policies["folder"]["summary"]
    assert "'Pneumonia' among the Finding Labels" in policies["nih"]["pneumonia"]
    assert policies["nih"]["others"] == "exclude" and "Patient ID" in policies["nih"]["patient_ids"]
    assert [s["n_images"] for s in info["sources"]] == [len(load_records(spec)) for spec in specs]
    assert "balance_sources: true" in (two_source_run / "config.yaml").read_text(encoding="utf-8")


def test_official_test_splits_kept_and_patients_grouped(two_source_run: Path, sources: dict[str, Path]) -> None:
    rows = _splits(two_source_run)
    test = {r["path"] for r in rows if r["split"] == "test"}
    assert test == _test_paths(str(sources["kaggle"])) | _test_paths(f"nih:{sources['nih']}")
    groups = {s: {(r["source"], r["patient_id"]) for r in rows if r["split"] == s} for s in ("train", "val")}
    assert groups["train"].isdisjoint(groups["val"])
    assert {r["source"] for r in rows if r["split"] == "train"} == {"folder", "nih"}
    # NIH has no official val: its official train list is split by patient into train and val
    nih_dev = {r["split"] for r in rows if r["source"] == "nih" and r["split"] != "test"}
    assert nih_dev <= {"train", "val"} and "train" in nih_dev


def test_evaluation_reports_metrics_per_source(two_source_run: Path, sources: dict[str, Path],
                                               tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(two_source_run / "best.pt"), "--data", str(sources["kaggle"]),
            "--data", f"nih:{sources['nih']}", "--split", "test", "--output", str(out), "--bootstrap", "50",
            "--no-heatmaps"]
    assert main(args) == 0
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    per_source = doc["subgroups"]["source"]
    assert set(per_source) == {"folder", "nih"}
    assert per_source["folder"]["n"] == len(_test_paths(str(sources["kaggle"])))
    assert per_source["nih"]["n"] == len(_test_paths(f"nih:{sources['nih']}"))
    assert sum(m["n"] for m in per_source.values()) == doc["n"]
    for m in per_source.values():
        assert {"sensitivity", "specificity", "roc_auc"} <= set(m)
    assert "source = nih" in (out / "report.html").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ sampling weights

def _records(counts: dict[tuple[str, int], int]) -> list[Record]:
    return [Record(f"/x/{source}/{label}/{i}.png", label, "train", f"p{i}", source)
            for (source, label), n in counts.items() for i in range(n)]


def _mass(records: list[Record], weights: np.ndarray, key: object) -> dict[object, float]:
    out: dict[object, float] = {}
    for r, w in zip(records, weights, strict=True):
        out[key(r)] = out.get(key(r), 0.0) + float(w)  # type: ignore[operator]
    return out


def test_balance_sources_samples_every_source_equally() -> None:
    records = _records({("folder", 0): 30, ("folder", 1): 60, ("nih", 0): 6, ("nih", 1): 4})
    weights = _sampling_weights(records, TrainConfig(data=("a", "b"), balance_sources=True))
    assert weights is not None
    mass = _mass(records, weights, lambda r: r.source)
    assert mass["folder"] == pytest.approx(0.5) and mass["nih"] == pytest.approx(0.5)
    assert _sampling_weights(records, TrainConfig(data=("a", "b"))) is None


def test_balance_sources_with_class_sampler_keeps_both_balances() -> None:
    records = _records({("folder", 0): 100, ("nih", 0): 50, ("nih", 1): 50})
    cfg = TrainConfig(data=("a", "b"), balance_sources=True, balance="sampler")
    weights = _sampling_weights(records, cfg)
    assert weights is not None
    assert _mass(records, weights, lambda r: r.source)["folder"] == pytest.approx(0.5)
    nih = [r for r in records if r.source == "nih"]
    nih_w = weights[[i for i, r in enumerate(records) if r.source == "nih"]]
    assert sum(w for r, w in zip(nih, nih_w, strict=True) if r.label == 1) == pytest.approx(0.25)


# ----------------------------------------------------------------------------- sources with and without splits

def test_split_less_source_next_to_official_splits_keeps_official_test(sources: dict[str, Path]) -> None:
    kaggle, rsna = load_records(str(sources["kaggle"])), load_records(f"rsna:{sources['rsna']}")
    splits = make_splits(kaggle + rsna, seed=0)
    kaggle_test = {r.path for r in splits["test"] if r.source == "folder"}
    assert kaggle_test == _test_paths(str(sources["kaggle"]))
    assert {r.source for r in splits["train"]} == {"folder", "rsna"}


def test_split_less_sources_alone_get_a_carved_test(sources: dict[str, Path]) -> None:
    rsna = load_records(f"rsna:{sources['rsna']}")
    splits = make_splits(rsna, test_fraction=0.25, seed=0)
    assert len(splits["test"]) == pytest.approx(len(rsna) * 0.25, abs=2)
    assert {r.path for r in splits["test"]}.isdisjoint(r.path for r in splits["train"] + splits["val"])


def test_every_split_less_source_gets_its_own_test_share(sources: dict[str, Path]) -> None:
    kaggle, rsna = load_records(str(sources["kaggle"])), load_records(f"rsna:{sources['rsna']}")
    splits = make_splits(kaggle + rsna, seed=0)
    assert any(r.source == "rsna" for r in splits["test"])
