"""Loaders for the specificity holdouts (Montgomery, Shenzhen, JSRT) and PneumoniaMNIST, on publisher-layout copies."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.data.io import read_image
from pneumoscan.data.sources import jsrt, load_records
from pneumoscan.errors import ConfigError, DataError
from tests.data.test_sources import assert_one_line
from tests.fixtures import write_png

IMG = np.full((8, 8), 100, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ montgomery/shenzhen

def make_montgomery(root: Path) -> Path:
    """NLM MontgomerySet: CXR_png/MCUCXR_NNNN_{0,1}.png, ClinicalReadings/*.txt, ManualMask/."""
    base = root / "MontgomerySet"
    readings = {"MCUCXR_0001_0": "Patient's Sex: F \nPatient's Age: 027Y\nnormal\n",
                "MCUCXR_0002_0": "Patient's Sex: M\nPatient's Age: 040Y\nnormal\n",
                "MCUCXR_0104_1": "Patient's Sex: M\nPatient's Age: 052Y\nright upper lobe cavitary TB\n"}
    for stem, text in readings.items():
        write_png(base / "CXR_png" / f"{stem}.png", IMG)
        (base / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (base / "ClinicalReadings" / f"{stem}.txt").write_text(text, encoding="utf-8")
        write_png(base / "ManualMask" / "leftMask" / f"{stem}.png", IMG)
    (base / "CXR_png" / "Thumbs.db").write_bytes(b"\x00")
    return root


def make_shenzhen(root: Path) -> Path:
    """NLM ChinaSet_AllFiles: CXR_png/CHNCXR_NNNN_{0,1}.png and free-form ClinicalReadings."""
    base = root / "ChinaSet_AllFiles"
    readings = {"CHNCXR_0001_0": "male 45yrs\nnormal\n", "CHNCXR_0005_0": "Female, 28yrs\nnormal\n",
                "CHNCXR_0327_1": "male 16month\nSTB,ATB,tuberculosis pleuritis\n"}
    for stem, text in readings.items():
        write_png(base / "CXR_png" / f"{stem}.png", IMG)
        (base / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (base / "ClinicalReadings" / f"{stem}.txt").write_text(text, encoding="utf-8")
    return root


def test_montgomery_normals_only_by_default(tmp_path: Path) -> None:
    records = {Path(r.path).stem: r for r in load_records(f"montgomery:{make_montgomery(tmp_path)}")}
    assert set(records) == {"MCUCXR_0001_0", "MCUCXR_0002_0"}
    r = records["MCUCXR_0001_0"]
    assert (r.label, r.patient_id, r.split, r.subtype, r.source) == (0, None, None, "normal", "montgomery")
    assert (r.extra["sex"], r.extra["age"], r.extra["reading"]) == ("F", "27", "normal")
    everything = load_records(f"montgomery:{tmp_path / 'MontgomerySet'}", {"others": "negative"})
    tb = [r for r in everything if r.subtype == "tuberculosis"]
    assert len(everything) == 3 and tb[0].label == 0 and "cavitary" in tb[0].extra["reading"]


def test_shenzhen_readings(tmp_path: Path) -> None:
    records = {Path(r.path).stem: r for r in load_records(f"shenzhen:{make_shenzhen(tmp_path)}",
                                                          {"others": "negative"})}
    assert (records["CHNCXR_0001_0"].extra["sex"], records["CHNCXR_0001_0"].extra["age"]) == ("M", "45")
    assert records["CHNCXR_0005_0"].extra["sex"] == "F"
    tb = records["CHNCXR_0327_1"]
    assert (tb.subtype, tb.extra["age"], tb.extra["tuberculosis"]) == ("tuberculosis", "16 month", "yes")


def test_tb_sets_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_records(f"shenzhen:{tmp_path}")
    assert_one_line(err, str(tmp_path), "CXR_png")
    (tmp_path / "CXR_png").mkdir()
    with pytest.raises(DataError) as err:
        load_records(f"montgomery:{tmp_path}")
    assert_one_line(err, "CXR_png", "MCUCXR")


# ------------------------------------------------------------------------------------------------------------- jsrt

def write_jsrt(path: Path, value: int) -> Path:
    """A raw .IMG: 2048x2048 big-endian 16-bit words holding 12-bit values, no header; left half = value, right 0."""
    data = np.zeros((jsrt.SIDE, jsrt.SIDE), dtype=">u2")
    data[:, : jsrt.SIDE // 2] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    data.tofile(path)
    return path


def make_jsrt(root: Path) -> Path:
    write_jsrt(root / "NonNodule93images" / "JPCNN001.IMG", 4095)
    write_jsrt(root / "NonNodule93images" / "JPCNN002.IMG", 2000)
    write_jsrt(root / "Nodule154images" / "JPCLN001.IMG", 1000)
    (root / "Clinical_Information").mkdir()
    (root / "Clinical_Information" / "CNNDAT_EN.TXT").write_text(
        "JPCNN001.IMG\t51\tmale\tnon-nodule\nJPCNN002.IMG\t32\tfemale\tnon-nodule\n", encoding="latin-1")
    (root / "Clinical_Information" / "CLNDAT_EN.txt").write_text(
        "JPCLN001.IMG\t5\t15\t53\tmale\t1634\t692\tmalignant\tl.upper lobe\tlung cancer\n", encoding="latin-1")
    return root


def test_jsrt_converts_raw_once_to_png(tmp_path: Path) -> None:
    root, cache = make_jsrt(tmp_path / "jsrt"), tmp_path / "cache"
    records = {r.extra["case"]: r for r in load_records(f"jsrt:{root}", {"cache_dir": str(cache)})}
    assert set(records) == {"JPCNN001", "JPCNN002"}  # nodule case excluded by default
    r = records["JPCNN001"]
    assert (r.label, r.subtype, r.patient_id, r.extra["age"], r.extra["sex"]) == (0, "normal", None, "51", "male")
    assert Path(r.path).parent == cache / "jsrt" and r.path.endswith(".png")
    image = read_image(r.path)
    assert image.shape == (2048, 2048)
    assert image[0, 0] == pytest.approx(0.0) and image[0, -1] == pytest.approx(1.0)  # inverted: density 4095 = black
    mtime = os.stat(r.path).st_mtime_ns
    again = load_records(f"jsrt:{root}", {"cache_dir": str(cache), "others": "negative"})
    assert os.stat(r.path).st_mtime_ns == mtime  # cached, not rewritten
    nodule = next(x for x in again if x.extra["case"] == "JPCLN001")
    assert (nodule.subtype, nodule.extra["diagnosis"], nodule.extra["malignancy"]) == ("nodule", "lung cancer",
                                                                                      "malignant")
    assert not list((cache / "jsrt").glob(".*tmp"))


def test_jsrt_truncated_file_is_listed_raw(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "JPCNN003.IMG").write_bytes(b"\x00" * 1000)
    with caplog.at_level(logging.WARNING):
        records = load_records(f"jsrt:{tmp_path}", {"cache_dir": str(tmp_path / "cache")})
    assert records[0].path.endswith("JPCNN003.IMG") and "1000 bytes" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_records(f"jsrt:{tmp_path / 'empty'}")
    assert_one_line(err, "empty", "JPCLN")


# --------------------------------------------------------------------------------------------------- pneumoniamnist

def make_npz(path: Path, size: int = 28, n: tuple[int, int, int] = (6, 2, 3)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for key, count in zip(("train", "val", "test"), n, strict=True):
        arrays[f"{key}_images"] = rng.integers(0, 256, size=(count, size, size), dtype=np.uint8)
        arrays[f"{key}_labels"] = (np.arange(count) % 2).reshape(-1, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def test_pneumoniamnist_materialises_pngs(tmp_path: Path) -> None:
    npz = make_npz(tmp_path / "medmnist" / "pneumoniamnist.npz")
    make_npz(tmp_path / "medmnist" / "pneumoniamnist_64.npz", size=64)
    cache = tmp_path / "cache"
    records = load_records(f"pneumoniamnist:{npz.parent}", {"cache_dir": str(cache)})  # largest size by default
    assert len(records) == 11 and {r.split for r in records} == {"train", "val", "test"}
    assert [r.label for r in records if r.split == "train"] == [0, 1, 0, 1, 0, 1]
    assert all(r.patient_id is None and r.source == "pneumoniamnist" for r in records)
    assert read_image(records[0].path).shape == (64, 64)
    small = load_records(f"pneumoniamnist:{npz.parent}", {"cache_dir": str(cache), "size": "28"})
    with np.load(npz) as data:
        expected = data["test_images"][2]
    assert np.array_equal(np.rint(read_image(small[-1].path) * 255).astype(np.uint8), expected)
    assert not [p for p in (cache / "pneumoniamnist").iterdir() if p.name.startswith(".")]  # no temp folder left


def test_pneumoniamnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_records(f"pneumoniamnist:{tmp_path}")
    assert_one_line(err, str(tmp_path), "pneumoniamnist")
    npz = make_npz(tmp_path / "pneumoniamnist.npz")
    with pytest.raises(ConfigError):
        load_records(f"pneumoniamnist:{tmp_path}", {"size": "224", "cache_dir": str(tmp_path / "c")})
    np.savez(npz, train_images=np.zeros((1, 28, 28), dtype=np.uint8))  # overwrite with an incomplete file
    with pytest.raises(DataError) as err:
        load_records(f"pneumoniamnist:{npz}", {"cache_dir": str(tmp_path / "c")})
    assert_one_line(err, "train_labels")
