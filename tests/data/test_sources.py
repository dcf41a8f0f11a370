"""Loaders for Kermany, NIH ChestX-ray14 and RSNA on tiny copies of their publishers' layouts.

Each fixture reproduces the real file names, column names and ID formats (including quirks such as NIH's unquoted
``OriginalImage[Width,Height]`` header and RSNA's one-row-per-box labels), with 8x8 images.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pneumoscan.data.sources import load_records
from pneumoscan.errors import ConfigError, DataError
from tests.fixtures import write_dicom, write_jpeg, write_png

IMG = np.full((8, 8), 100, dtype=np.uint8)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def assert_one_line(err: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


# ----------------------------------------------------------------------------------------------------------- kermany

KERMANY_FILES = {
    "train/NORMAL": ["IM-0115-0001.jpeg", "NORMAL2-IM-0012-0001.jpeg"],
    "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person3_virus_6.jpeg"],
    "val/NORMAL": ["NORMAL2-IM-1427-0001.jpeg"],
    "val/PNEUMONIA": ["person1946_bacteria_4874.jpeg"],
    "test/NORMAL": ["IM-0001-0001.jpeg"],
    "test/PNEUMONIA": ["person1_virus_6.jpeg", "person100_bacteria_475.jpeg"],
}


def make_kermany(root: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """Kaggle 'chest-xray-pneumonia' zip: chest_xray/{...}, a duplicate chest_xray/chest_xray/ and __MACOSX/."""
    top = root / "chest_xray"
    for folder, names in KERMANY_FILES.items():
        if folder.split("/")[0] not in splits:
            continue
        for name in names:
            write_jpeg(top / folder / name, IMG)
            write_jpeg(top / "chest_xray" / folder / name, IMG)
            (top / "__MACOSX" / "chest_xray" / folder).mkdir(parents=True, exist_ok=True)
            (top / "__MACOSX" / "chest_xray" / folder / f"._{name}").write_bytes(b"\x00\x05\x16\x07")
    (top / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def test_kermany_kaggle_layout_with_wrappers(tmp_path: Path) -> None:
    records = load_records(f"kermany:{make_kermany(tmp_path / 'download')}")
    assert len(records) == sum(len(v) for v in KERMANY_FILES.values())  # no copy from chest_xray/chest_xray
    by_name = {Path(r.path).name + ":" + str(r.split): r for r in records}
    r = by_name["person1_bacteria_1.jpeg:train"]
    assert (r.label, r.patient_id, r.subtype, r.source) == (1, "person1", "bacteria", "kermany")
    assert by_name["person1_virus_6.jpeg:test"].subtype == "virus"
    assert by_name["NORMAL2-IM-0012-0001.jpeg:train"].patient_id == "NORMAL2-IM-0012"
    n = by_name["IM-0115-0001.jpeg:train"]
    assert (n.label, n.patient_id, n.subtype) == (0, "IM-0115", "normal")
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all("__MACOSX" not in r.path and "chest_xray/chest_xray" not in r.path for r in records)


def test_kermany_mendeley_v2_has_no_val(tmp_path: Path) -> None:
    root = make_kermany(tmp_path, splits=("train", "test"))
    records = load_records(f"kermany:{root / 'chest_xray'}")
    assert {r.split for r in records} == {"train", "test"}


def test_kermany_manifest_keeps_sha256(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "train/NORMAL/IM-0001-0001.jpeg", IMG)
    write_jpeg(tmp_path / "test/PNEUMONIA/person2_virus_3.jpeg", IMG)
    write_csv(tmp_path / "manifest.csv", ["path", "label", "split", "patient_id", "subtype", "sha256"], [
        ["train/NORMAL/IM-0001-0001.jpeg", "NORMAL", "train", "IM-0001", "normal", "ab" * 32],
        ["test/PNEUMONIA/person2_virus_3.jpeg", "PNEUMONIA", "test", "person2", "virus", "cd" * 32],
    ])
    records = load_records(f"kermany:{tmp_path}")
    assert [(r.label, r.split, r.patient_id, r.subtype, r.source) for r in records] == [
        (0, "train", "IM-0001", "normal", "kermany"), (1, "test", "person2", "virus", "kermany")]
    assert records[0].extra["sha256"] == "ab" * 32


def test_options_for_other_sources_are_ignored_typos_are_not(tmp_path: Path) -> None:
    root = make_kermany(tmp_path)
    assert load_records(f"kermany:{root}", {"dicom_meta": "yes", "uncertain": "positive"})  # rsna / mimic options
    with pytest.raises(ConfigError) as err:
        load_records(f"kermany:{root}", {"view": "all"})
    assert_one_line(err, "view", "views")


def test_kermany_wrong_layout_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as err:
        load_records(f"kermany:{tmp_path}")
    assert_one_line(err, str(tmp_path), "chest_xray")


# --------------------------------------------------------------------------------------------------------------- nih

NIH_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", ""]
NIH_ROWS = [
    ["00000001_000.png", "Pneumonia", "0", "1", "58", "M", "PA", "2682", "2749", "0.143", "0.143", ""],
    ["00000001_001.png", "No Finding", "1", "1", "58", "M", "PA", "2894", "2729", "0.143", "0.143", ""],
    ["00000002_000.png", "Effusion|Pneumonia", "0", "2", "81", "F", "AP", "2500", "2048", "0.168", "0.168", ""],
    ["00000003_000.png", "Cardiomegaly|Emphysema", "0", "3", "74", "F", "PA", "2500", "2048", "0.168", "0.168", ""],
    ["00000004_000.png", "No Finding", "0", "4", "036Y", "M", "AP", "2048", "2500", "0.168", "0.168", ""],
    ["00000005_000.png", "No Finding", "0", "5", "60", "F", "PA", "2048", "2500", "0.168", "0.168", ""],
]


def make_nih(root: Path, csv_name: str = "Data_Entry_2017.csv", header: list[str] | None = None) -> Path:
    """Kaggle 'nih-chest-xrays/data': Data_Entry_2017.csv, split lists, images_001/images/, images_002/images/."""
    # The real header has no quotes around OriginalImage[Width,Height], hence 12 columns (the last one empty).
    (root).mkdir(parents=True, exist_ok=True)
    lines = [",".join(header or NIH_HEADER)] + [",".join(r) for r in NIH_ROWS]
    (root / csv_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n"
                                             "00000005_000.png\n", encoding="utf-8")
    (root / "test_list.txt").write_text("00000002_000.png\n00000004_000.png\n", encoding="utf-8")
    for i, row in enumerate(NIH_ROWS[:4]):  # 00000005_000.png is missing: a partial download
        write_png(root / f"images_00{1 + i // 2}" / "images" / row[0], IMG)
    write_png(root / "images_001" / "images" / "00000004_000.png", IMG)
    return root


def test_nih_labels_patients_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_nih(tmp_path / "ChestX-ray14")
    with caplog.at_level(logging.WARNING):
        records = {Path(r.path).name: r for r in load_records(f"nih:{root}")}
    assert set(records) == {"00000001_000.png", "00000001_001.png", "00000002_000.png", "00000004_000.png"}
    assert "missing" in caplog.text  # 00000005_000.png is listed but absent
    a, b, c = records["00000001_000.png"], records["00000001_001.png"], records["00000002_000.png"]
    assert (a.label, a.patient_id, a.split, a.subtype) == (1, "00000001", "train", "isolated")
    assert (b.label, b.patient_id, b.split, b.subtype) == (0, "00000001", "train", "normal")
    assert (c.label, c.split, c.subtype, c.extra["view"], c.extra["sex"]) == (1, "test", "with_other_findings", "AP",
                                                                            "F")
    assert records["00000004_000.png"].extra["age"] == "36"
    assert Path(a.path).parent.parent.name == "images_001"


def test_nih_others_negative_and_v2020_columns(tmp_path: Path) -> None:
    header = [h.replace("Patient Gender", "Patient Sex") for h in NIH_HEADER]
    root = make_nih(tmp_path, csv_name="Data_Entry_2017_v2020.csv", header=header)
    records = {Path(r.path).name: r for r in load_records(f"nih:{root}", {"others": "negative"})}
    other = records["00000003_000.png"]
    assert (other.label, other.subtype, other.extra["sex"]) == (0, "other_findings", "F")


def test_nih_errors_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    root.mkdir()
    with pytest.raises(DataError) as err:
        load_records(f"nih:{root}")
    assert_one_line(err, str(root), "Data_Entry_2017")
    write_csv(root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels"], [["00000001_000.png", "Pneumonia"]])
    with pytest.raises(DataError) as err:
        load_records(f"nih:{root}")
    assert_one_line(err, "Data_Entry_2017.csv", "'Patient ID'")


# -------------------------------------------------------------------------------------------------------------- rsna

RSNA_IDS = {
    "opacity": "00436515-870c-4b36-a041-de91049b9ab4",
    "normal": "0004cfab-14fd-4e49-80ba-63a80b6bddd6",
    "not_normal": "00313ee0-9eaa-42f4-b0ab-c148ed3241cd",
}
# RSNA headers store PatientAge as a bare number ("51"), which pydicom flags as an invalid AS value.
RSNA_AGE_WARNING = "ignore:Invalid value for VR AS"


def make_rsna(root: Path, class_file: bool = True) -> Path:
    """Kaggle 'rsna-pneumonia-detection-challenge': labels (one row per box), class info, DICOMs named by id."""
    op, nm, nn = RSNA_IDS["opacity"], RSNA_IDS["normal"], RSNA_IDS["not_normal"]
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], [
        [nn, "", "", "", "", "0"], [nm, "", "", "", "", "0"],
        [op, "264.0", "152.0", "213.0", "379.0", "1"], [op, "562.0", "152.0", "256.0", "453.0", "1"]])
    if class_file:
        write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], [
            [nn, "No Lung Opacity / Not Normal"], [nm, "Normal"], [op, "Lung Opacity"], [op, "Lung Opacity"]])
    for key, image_id in RSNA_IDS.items():
        path = write_dicom(root / "stage_2_train_images" / f"{image_id}.dcm", IMG, patient_id=image_id,
                           compressed="jpeg")
        ds = pydicom.dcmread(path)
        ds.ViewPosition = "AP" if key == "opacity" else "PA"
        ds.PatientSex, ds.PatientAge = "F", "51"
        ds.save_as(path)
    (root / "stage_2_test_images").mkdir()
    return root


@pytest.mark.filterwarnings(RSNA_AGE_WARNING)
def test_rsna_labels_and_image_ids(tmp_path: Path) -> None:
    records = {r.extra["image_id"]: r for r in load_records(f"rsna:{make_rsna(tmp_path)}")}
    assert set(records) == {RSNA_IDS["opacity"], RSNA_IDS["normal"]}  # "Not Normal" excluded by default
    op = records[RSNA_IDS["opacity"]]
    assert (op.label, op.subtype, op.patient_id, op.split, op.extra["boxes"]) == (1, "lung_opacity", None, None, "2")
    assert records[RSNA_IDS["normal"]].label == 0


@pytest.mark.filterwarnings(RSNA_AGE_WARNING)
def test_rsna_options(tmp_path: Path) -> None:
    root = make_rsna(tmp_path)
    options = {"others": "negative", "dicom_meta": "yes"}
    records = {r.extra["image_id"]: r for r in load_records(f"rsna:{root}", options)}
    nn = records[RSNA_IDS["not_normal"]]
    assert (nn.label, nn.subtype) == (0, "not_normal")
    op = records[RSNA_IDS["opacity"]]
    assert (op.extra["view"], op.extra["sex"], op.extra["age"]) == ("AP", "F", "51")


@pytest.mark.filterwarnings(RSNA_AGE_WARNING)
def test_rsna_layout_errors(tmp_path: Path) -> None:
    root = make_rsna(tmp_path, class_file=False)
    with pytest.raises(DataError) as err:
        load_records(f"rsna:{root}")
    assert_one_line(err, "stage_2_detailed_class_info.csv")
    assert len(load_records(f"rsna:{root}", {"others": "negative"})) == 3  # Target alone suffices then
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"],
              [[RSNA_IDS["opacity"], "Normal"], [RSNA_IDS["normal"], "Normal"], [RSNA_IDS["not_normal"], "Normal"]])
    with pytest.raises(DataError) as err:
        load_records(f"rsna:{root}")
    assert_one_line(err, RSNA_IDS["opacity"], "Target=1")
