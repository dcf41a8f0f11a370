"""Open-i and RSNA loaders on fixtures that reproduce two traps of the publishers' real files.

1. Many real Open-i file names carry four numbers (``1207_IM-0140-0001-0001.dcm.png`` lateral,
   ``1207_IM-0140-0001-0002.dcm.png`` frontal). A loader that keyed the view by report uid + the first two numbers
   gave both images one view and lost frontal images (177 of 3,818 on the real Kaggle files). The expected counts
   here are computed from the fixture's own rows, not through the loader's code.
2. A real-size RSNA class file that is one row short (a truncated or edited copy) used to stop the whole load; now the
   image is left out with a counted warning, and ``missing_class=error`` restores the stop.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.data.label_policy import policy_for
from pneumoscan.data.sources import load_records
from pneumoscan.errors import ConfigError, DataError
from tests.data.test_sources import assert_one_line, write_csv
from tests.data.test_sources_reports import OPENI_XML
from tests.fixtures import write_dicom, write_png

IMG = np.full((8, 8), 100, dtype=np.uint8)

# ------------------------------------------------------------------------------------------------------------- openi

# MeSH strings as in indiana_reports.csv, with the label the documented policy gives them (None = excluded by default).
MESH = [
    ("normal", 0),
    ("Pneumonia/upper lobe/right", 1),
    ("Pneumonia/lower lobe/left;Opacity/lung/base/left", 1),
    ("Cardiomegaly/borderline;Pulmonary Artery/enlarged", None),
    ("Calcified Granuloma/lung/upper lobe/right", None),
]


def openi_rows(seed: int = 17) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Reports ``{uid: MeSH}`` and projection rows ``[(uid, filename, projection)]`` in the real naming.

    Half of the studies have four-number names whose first two numbers are shared by a frontal and a lateral image,
    in both orders (the lateral first, as in report 1207, or the frontal first); some have a third image; the others
    have the common two-number names (``1_IM-0001-4001.dcm.png``).
    """
    rng = random.Random(seed)
    reports: dict[str, str] = {}
    rows: list[tuple[str, str, str]] = [
        ("1207", "1207_IM-0140-0001-0001.dcm.png", "Lateral"),  # the pair quoted in the issue
        ("1207", "1207_IM-0140-0001-0002.dcm.png", "Frontal"),
    ]
    reports["1207"] = "normal"
    for n in range(60):
        uid = str(1300 + n)
        reports[uid] = MESH[n % len(MESH)][0]
        series = f"IM-{2000 + n:04d}"
        if n % 2:  # four numbers: one series, images -0001-0001, -0001-0002 (, -0001-0003)
            views = ["Frontal", "Lateral"] if rng.random() < 0.5 else ["Lateral", "Frontal"]
            if n % 3 == 0:
                views.append(rng.choice(["Frontal", "Lateral"]))
            rows += [(uid, f"{uid}_{series}-0001-{k + 1:04d}.dcm.png", v) for k, v in enumerate(views)]
        else:  # two numbers: IM-xxxx-1001 frontal, IM-xxxx-2001 lateral (sometimes only the frontal)
            rows.append((uid, f"{uid}_{series}-1001.dcm.png", "Frontal"))
            if rng.random() < 0.7:
                rows.append((uid, f"{uid}_{series}-2001.dcm.png", "Lateral"))
    return reports, rows


def expected_openi(reports: dict[str, str], rows: list[tuple[str, str, str]], frontal_only: bool) -> Counter[int]:
    """Images per label straight from the rows and the label table above."""
    label_of = dict(MESH)
    return Counter(label_of[reports[uid]] for uid, _, view in rows
                   if label_of[reports[uid]] is not None and (view == "Frontal" or not frontal_only))


def make_kaggle(root: Path, reports: dict[str, str], rows: list[tuple[str, str, str]]) -> Path:
    write_csv(root / "indiana_reports.csv", ["uid", "MeSH", "Problems", "image", "indication", "comparison",
                                             "findings", "impression"],
              [[uid, mesh, mesh.split("/")[0], "Xray Chest PA and Lateral", "", "", "", ""]
               for uid, mesh in reports.items()])
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"], [list(r) for r in rows])
    for _, name, _ in rows:
        write_png(root / "images" / "images_normalized" / name, IMG)
    return root


def xml_id(name: str) -> str:
    """NLM parentImage id of a Kaggle file name: ``1207_IM-0140-0001-0002.dcm.png`` -> ``CXR1207_IM-0140-0001-0002``."""
    return "CXR" + name.removesuffix(".dcm.png")


def make_xml(root: Path, reports: dict[str, str], rows: list[tuple[str, str, str]]) -> Path:
    """NLM form (ecgen-radiology/*.xml, NLMCXR_png/) with the Kaggle indiana_projections.csv beside it."""
    (root / "ecgen-radiology").mkdir(parents=True)
    for uid, mesh in reports.items():
        majors = "\n".join(f"      <major>{t}</major>" for t in mesh.split(";"))
        parents = "\n".join(f'   <parentImage id="{xml_id(name)}"/>' for u, name, _ in rows if u == uid)
        text = OPENI_XML.format(uid=uid, findings="", impression="", mesh=majors, images=parents)
        (root / "ecgen-radiology" / f"{uid}.xml").write_text(text, encoding="utf-8")
    for _, name, _ in rows:
        write_png(root / "NLMCXR_png" / f"{xml_id(name)}.png", IMG)
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"], [list(r) for r in rows])
    return root


def test_openi_fixture_reproduces_the_collision() -> None:
    """Guard on the fixture itself: keys of uid + first two IM numbers mix frontal and lateral images."""
    _, rows = openi_rows()
    views_by_old_key: dict[tuple[str, str], set[str]] = {}
    for uid, name, view in rows:
        old_key = (uid, re.search(r"IM-\d+-\d+", name).group(0))  # type: ignore[union-attr]
        views_by_old_key.setdefault(old_key, set()).add(view)
    assert sum(v == {"Frontal", "Lateral"} for v in views_by_old_key.values()) >= 20


@pytest.mark.parametrize("form", ["kaggle", "xml"])
def test_openi_counts_equal_the_rows_with_four_number_names(tmp_path: Path, form: str) -> None:
    reports, rows = openi_rows()
    root = (make_kaggle if form == "kaggle" else make_xml)(tmp_path, reports, rows)
    view_of = {name: view for _, name, view in rows}

    frontal = load_records(f"openi:{root}")
    assert Counter(r.label for r in frontal) == expected_openi(reports, rows, frontal_only=True)
    every = load_records(f"openi:{root}", {"views": "all"})
    assert Counter(r.label for r in every) == expected_openi(reports, rows, frontal_only=False)

    for r in every:  # each image carries the view of its own row
        stem = Path(r.path).name
        name = stem if form == "kaggle" else stem.removeprefix("CXR").removesuffix(".png") + ".dcm.png"
        assert r.extra["view"] == view_of[name], name
    names = {Path(r.path).name for r in frontal}
    first = "1207_IM-0140-0001-0002.dcm.png" if form == "kaggle" else "CXR1207_IM-0140-0001-0002.png"
    assert first in names and first.replace("0002", "0001") not in names


def test_openi_duplicate_rows_with_conflicting_views_become_unknown(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    reports = {"5": "normal"}
    rows = [("5", "5_IM-0005-0001-0001.dcm.png", "Frontal"), ("5", "5_IM-0005-0001-0002.dcm.png", "Lateral")]
    root = make_kaggle(tmp_path, reports, rows)
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"],
              [list(r) for r in rows] + [["5", "5_IM-0005-0001-0001.dcm.png", "Lateral"]])
    with caplog.at_level(logging.WARNING, logger="pneumoscan"):
        every = load_records(f"openi:{root}", {"views": "all"})
    assert sorted((Path(r.path).name, r.extra["view"]) for r in every) == [
        ("5_IM-0005-0001-0001.dcm.png", "unknown"), ("5_IM-0005-0001-0002.dcm.png", "Lateral")]
    assert "1 images of labelled reports have no unambiguous row" in caplog.text


def test_openi_xml_image_without_a_row_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reports, rows = openi_rows()
    root = make_xml(tmp_path, reports, rows)
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"], [list(r) for r in rows[1:]])
    with caplog.at_level(logging.WARNING, logger="pneumoscan"):
        frontal = load_records(f"openi:{root}")
    assert Counter(r.label for r in frontal) == expected_openi(reports, rows[1:], frontal_only=True)
    assert "openi: 1 images of labelled reports have no unambiguous row" in caplog.text
    assert "CXR1207_IM-0140-0001-0001" in caplog.text


# -------------------------------------------------------------------------------------------------------------- rsna

RSNA_CLASS = {0: "Normal", 1: "Lung Opacity", 2: "No Lung Opacity / Not Normal"}


def rsna_rows(seed: int = 3) -> list[tuple[str, int, int]]:
    """(patientId, kind 0/1/2 as in RSNA_CLASS, number of boxes) for 24 images with real-style UUIDs."""
    rng = random.Random(seed)
    out = []
    for n in range(24):
        image_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        kind = n % 3
        out.append((image_id, kind, (1 + n % 2) if kind == 1 else 0))
    return out


def make_rsna(root: Path, images: list[tuple[str, int, int]], drop_class_row_of: str | None) -> Path:
    """stage_2_* files: one label row per box, one class row per label row (as in the real files), minus one row."""
    labels, classes = [], []
    for image_id, kind, boxes in images:
        for b in range(max(boxes, 1)):
            labels.append([image_id, *(["264.0", str(152.0 + b), "213.0", "379.0"] if boxes else [""] * 4),
                           "1" if boxes else "0"])
            classes.append([image_id, RSNA_CLASS[kind]])
        write_dicom(root / "stage_2_train_images" / f"{image_id}.dcm", IMG, patient_id=image_id)
    classes = [row for row in classes if row[0] != drop_class_row_of]
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], labels)
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], classes)
    return root


@pytest.mark.parametrize("kind", [0, 1], ids=["normal", "single_box_opacity"])
def test_rsna_class_file_one_row_short_loads_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      kind: int) -> None:
    images = rsna_rows()
    dropped = next(i for i, k, boxes in images if k == kind and boxes <= 1)
    root = make_rsna(tmp_path, images, drop_class_row_of=dropped)
    line = 2 + sum(max(boxes, 1) for _, _, boxes in images[:[i for i, _, _ in images].index(dropped)])
    with caplog.at_level(logging.WARNING, logger="pneumoscan"):
        records = load_records(f"rsna:{root}")
    kept = [(i, k) for i, k, _ in images if i != dropped and k != 2]  # "Not Normal" excluded by default
    assert sorted((r.extra["image_id"], r.label) for r in records) == sorted(kept)
    assert f"rsna: 1 of {len(images)} images have a Target but no row in the detailed class info" in caplog.text
    assert f"stage_2_train_labels.csv:{line}" in caplog.text
    assert dropped not in caplog.text  # the id is also the DICOM PatientID

    with pytest.raises(DataError) as err:
        load_records(f"rsna:{root}", {"missing_class": "error"})
    assert_one_line(err, f"stage_2_train_labels.csv:{line}", "no row in the detailed class info", "missing_class=error")
    assert dropped not in str(err.value)
    with pytest.raises(ConfigError):
        load_records(f"rsna:{root}", {"missing_class": "maybe"})


def test_rsna_complete_class_file_warns_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images = rsna_rows()
    root = make_rsna(tmp_path, images, drop_class_row_of=None)
    with caplog.at_level(logging.WARNING, logger="pneumoscan"):
        records = load_records(f"rsna:{root}", {"others": "negative", "missing_class": "error"})
    assert Counter(r.label for r in records) == Counter(1 if k == 1 else 0 for _, k, _ in images)
    assert "no row in the detailed class info" not in caplog.text


def test_rsna_policy_names_the_missing_class_rule() -> None:
    assert any("missing_class=error" in note for note in policy_for("rsna").notes)
