"""Loaders for the report-labelled collections (MIMIC-CXR-JPG, CheXpert, Open-i) on tiny publisher-layout copies."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.data.sources import load_records
from pneumoscan.errors import ConfigError, DataError
from tests.data.test_sources import assert_one_line, write_csv
from tests.fixtures import write_jpeg, write_png

IMG = np.full((8, 8), 100, dtype=np.uint8)

# ------------------------------------------------------------------------------------------------------------- mimic

CHEXPERT_FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
                     "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other",
                     "Pneumonia", "Pneumothorax", "Support Devices"]
META_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
               "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
               "PatientOrientationCodeSequence_CodeMeaning"]
# (subject, study, {finding: value}); value strings as in the CSV: 1.0 / 0.0 / -1.0 / "" (blank)
MIMIC_STUDIES = [
    ("10000032", "50414267", {"Pneumonia": "1.0", "Consolidation": "1.0"}),  # pneumonia
    ("10000032", "53189527", {"No Finding": "1.0"}),  # normal
    ("10000764", "57375967", {"Pneumonia": "-1.0", "Atelectasis": "1.0"}),  # uncertain pneumonia
    ("10000898", "50771383", {"Pneumonia": "0.0", "Cardiomegaly": "1.0"}),  # other finding
]
MIMIC_IMAGES = [  # dicom_id, study index, view, split
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", 0, "PA", "train"),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", 0, "LATERAL", "train"),
    ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", 1, "AP", "train"),
    ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", 2, "AP", "validate"),
    ("fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818", 3, "PA", "test"),
]


def make_mimic(root: Path) -> Path:
    """physionet.org/files/mimic-cxr-jpg/2.0.0: gzipped CSVs and files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg."""
    root.mkdir(parents=True, exist_ok=True)
    labels = [[s, t] + [f.get(c, "") for c in CHEXPERT_FINDINGS] for s, t, f in MIMIC_STUDIES]
    meta, split = [], []
    for dicom, k, view, part in MIMIC_IMAGES:
        subject, study, _ = MIMIC_STUDIES[k]
        meta.append([dicom, subject, study, "CHEST (PA AND LAT)", view, "3056", "2544", "21800506", "213014.531",
                     "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
        split.append([dicom, study, subject, part])
        write_jpeg(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", IMG)
    for name, header, rows in (("chexpert", ["subject_id", "study_id"] + CHEXPERT_FINDINGS, labels),
                               ("metadata", META_HEADER, meta),
                               ("split", ["dicom_id", "study_id", "subject_id", "split"], split)):
        plain = write_csv(root / f"mimic-cxr-2.0.0-{name}.csv", header, rows)
        (root / f"{plain.name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    return root


def test_mimic_default_policy(tmp_path: Path) -> None:
    records = {r.extra["dicom_id"]: r for r in load_records(f"mimic:{make_mimic(tmp_path)}")}
    assert set(records) == {MIMIC_IMAGES[0][0], MIMIC_IMAGES[2][0]}  # lateral, uncertain and other excluded
    pos, neg = records[MIMIC_IMAGES[0][0]], records[MIMIC_IMAGES[2][0]]
    assert (pos.label, pos.patient_id, pos.split, pos.extra["view"], pos.extra["study_id"]) == (
        1, "10000032", "train", "PA", "50414267")
    assert (neg.label, neg.subtype) == (0, "normal")
    assert Path(pos.path).relative_to(tmp_path).parts[:4] == ("files", "p10", "p10000032", "s50414267")


@pytest.mark.parametrize(("uncertain", "expected"), [("positive", 1), ("negative", 0)])
def test_mimic_uncertain_and_views(tmp_path: Path, uncertain: str, expected: int) -> None:
    options = {"uncertain": uncertain, "views": "all", "others": "negative"}
    records = {r.extra["dicom_id"]: r for r in load_records(f"mimic:{make_mimic(tmp_path)}", options)}
    assert len(records) == 5
    unc = records[MIMIC_IMAGES[3][0]]
    assert (unc.label, unc.subtype, unc.split) == (expected, "uncertain_pneumonia", "val")
    assert records[MIMIC_IMAGES[1][0]].extra["view"] == "LATERAL"
    assert records[MIMIC_IMAGES[4][0]].label == 0


def test_mimic_errors(tmp_path: Path) -> None:
    root = make_mimic(tmp_path)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataError) as err:
        load_records(f"mimic:{root}")
    assert_one_line(err, str(root), "mimic-cxr-2.0.0-split.csv")
    with pytest.raises(ConfigError):
        load_records(f"mimic:{root}", {"uncertain": "maybe"})
    with pytest.raises(ConfigError):
        load_records(f"mimic:{root}", {"view": "frontal"})  # typo of 'views'


# ---------------------------------------------------------------------------------------------------------- chexpert

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                   "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


def chexpert_row(path: str, frontal: str, ap_pa: str, **labels: str) -> list[str]:
    row = dict.fromkeys(CHEXPERT_HEADER, "")
    row.update({"Path": path, "Sex": "Female", "Age": "68", "Frontal/Lateral": frontal, "AP/PA": ap_pa})
    row.update({k.replace("_", " "): v for k, v in labels.items()})
    return [row[h] for h in CHEXPERT_HEADER]


def make_chexpert(root: Path) -> Path:
    """CheXpert-v1.0-small.zip: CheXpert-v1.0-small/{train,valid}.csv, Path prefixed with the folder name."""
    base = root / "CheXpert-v1.0-small"
    train = [
        chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP",
                     Pneumonia="1.0"),
        chexpert_row("CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", "Frontal", "PA",
                     No_Finding="1.0"),
        chexpert_row("CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg", "Lateral", "",
                     No_Finding="1.0"),
        chexpert_row("CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg", "Frontal", "AP",
                     Pneumonia="-1.0", Edema="1.0"),
        chexpert_row("CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg", "Frontal", "AP",
                     Pneumonia="0.0", Cardiomegaly="1.0", Support_Devices="1.0"),
    ]
    valid = [chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP",
                          No_Finding="1.0", Pneumonia="0.0")]
    write_csv(base / "train.csv", CHEXPERT_HEADER, train)
    write_csv(base / "valid.csv", CHEXPERT_HEADER, valid)
    for row in train + valid:
        write_jpeg(root / row[0], IMG)
    return root


def test_chexpert_default_policy(tmp_path: Path) -> None:
    records = {(r.patient_id, Path(r.path).name): r for r in load_records(f"chexpert:{make_chexpert(tmp_path)}")}
    assert set(records) == {("patient00001", "view1_frontal.jpg"), ("patient00002", "view1_frontal.jpg"),
                            ("patient64541", "view1_frontal.jpg")}
    pos = records[("patient00001", "view1_frontal.jpg")]
    assert (pos.label, pos.split, pos.extra["view"], pos.extra["study_id"]) == (1, "train", "AP", "patient00001/study1")
    val = records[("patient64541", "view1_frontal.jpg")]
    assert (val.label, val.split) == (0, "val")
    assert Path(pos.path).is_file()


def test_chexpert_options(tmp_path: Path) -> None:
    root = make_chexpert(tmp_path) / "CheXpert-v1.0-small"  # the inner folder works too
    options = {"uncertain": "positive", "views": "all", "others": "negative"}
    records = {(r.patient_id, Path(r.path).name): r for r in load_records(f"chexpert:{root}", options)}
    assert len(records) == 6
    assert (records[("patient00003", "view1_frontal.jpg")].label, records[("patient00003", "view1_frontal.jpg")].subtype
            ) == (1, "uncertain_pneumonia")
    assert records[("patient00002", "view2_lateral.jpg")].extra["frontal_lateral"] == "Lateral"
    assert records[("patient00004", "view1_frontal.jpg")].subtype == "other_findings"


def test_chexpert_bad_value_names_the_row(tmp_path: Path) -> None:
    root = make_chexpert(tmp_path)
    write_csv(root / "CheXpert-v1.0-small" / "valid.csv", CHEXPERT_HEADER, [
        chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP",
                     Pneumonia="yes")])
    with pytest.raises(DataError) as err:
        load_records(f"chexpert:{root}")
    assert_one_line(err, "valid.csv:2", "'yes'")


# ------------------------------------------------------------------------------------------------------------- openi

OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{uid}"/>
   <pmcId id="{uid}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{uid}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>
"""
# uid -> (MeSH major terms, [(XML parentImage id, Kaggle file name, projection)])
OPENI_REPORTS = {
    "1": (["normal"], [("CXR1_1_IM-0001-3001", "1_IM-0001-3001.dcm.png", "Frontal"),
                       ("CXR1_1_IM-0001-4001", "1_IM-0001-4001.dcm.png", "Lateral")]),
    "2": (["Pneumonia/upper lobe/right", "Opacity/lung/upper lobe/right"],
          [("CXR2_IM-0652-1001", "2_IM-0652-1001.dcm.png", "Frontal")]),
    "3": (["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
          [("CXR3_IM-1384-1001", "3_IM-1384-1001.dcm.png", "Frontal")]),
}


def make_openi_xml(root: Path) -> Path:
    """NLM download: ecgen-radiology/<uid>.xml and NLMCXR_png/<parentImage id>.png."""
    for uid, (terms, images) in OPENI_REPORTS.items():
        mesh = "\n".join(f"      <major>{t}</major>" for t in terms) + "\n      <automatic>lung</automatic>"
        parents = "\n".join(f'   <parentImage id="{i}">\n      <figureId>F{n + 1}</figureId>\n'
                            f"      <caption>Xray Chest PA and Lateral</caption>\n   </parentImage>"
                            for n, (i, _, _) in enumerate(images))
        xml = OPENI_XML.format(uid=uid, findings="The lungs are clear.", impression="Normal chest x-XXXX.", mesh=mesh,
                               images=parents)
        (root / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
        (root / "ecgen-radiology" / f"{uid}.xml").write_text(xml, encoding="utf-8")
        for image_id, _, _ in images:
            write_png(root / "NLMCXR_png" / f"{image_id}.png", IMG)
    return root


def make_openi_kaggle(root: Path, with_images: bool = True) -> Path:
    """Kaggle raddar/chest-xrays-indiana-university: indiana_reports.csv, indiana_projections.csv, images."""
    reports, projections = [], []
    for uid, (terms, images) in OPENI_REPORTS.items():
        reports.append([uid, ";".join(terms), ";".join(t.split("/")[0] for t in terms), "Xray Chest PA and Lateral",
                        "Positive TB test", "None.", "The lungs are clear.", "Normal chest x-XXXX."])
        for _, name, projection in images:
            projections.append([uid, name, projection])
            if with_images:
                write_png(root / "images" / "images_normalized" / name, IMG)
    write_csv(root / "indiana_reports.csv", ["uid", "MeSH", "Problems", "image", "indication", "comparison",
                                             "findings", "impression"], reports)
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"], projections)
    return root


def test_openi_kaggle_form(tmp_path: Path) -> None:
    records = {Path(r.path).name: r for r in load_records(f"openi:{make_openi_kaggle(tmp_path)}")}
    assert set(records) == {"1_IM-0001-3001.dcm.png", "2_IM-0652-1001.dcm.png"}  # lateral and report 3 excluded
    assert (records["2_IM-0652-1001.dcm.png"].label, records["2_IM-0652-1001.dcm.png"].subtype) == (
        1, "with_other_findings")
    normal = records["1_IM-0001-3001.dcm.png"]
    assert (normal.label, normal.patient_id) == (0, None)
    assert (normal.extra["study_id"], normal.extra["view"]) == ("1", "Frontal")


def test_openi_xml_form_needs_projections_for_frontal(tmp_path: Path) -> None:
    root = make_openi_xml(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_records(f"openi:{root}")
    assert_one_line(err, "indiana_projections.csv", "views=all")
    every = load_records(f"openi:{root}", {"views": "all", "others": "negative"})
    assert sorted((Path(r.path).name, r.label) for r in every) == [
        ("CXR1_1_IM-0001-3001.png", 0), ("CXR1_1_IM-0001-4001.png", 0), ("CXR2_IM-0652-1001.png", 1),
        ("CXR3_IM-1384-1001.png", 0)]
    make_openi_kaggle(root, with_images=False)  # adds the CSVs only: projections now known
    (root / "indiana_reports.csv").unlink()  # keep the XML form
    frontal = {Path(r.path).name: r for r in load_records(f"openi:{root}")}
    assert set(frontal) == {"CXR1_1_IM-0001-3001.png", "CXR2_IM-0652-1001.png"}
    assert frontal["CXR2_IM-0652-1001.png"].extra["mesh"].startswith("Pneumonia/upper lobe/right")


def test_openi_bad_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_records(f"openi:{tmp_path}")
    assert_one_line(err, str(tmp_path), "ecgen-radiology")
    (tmp_path / "ecgen-radiology").mkdir()
    (tmp_path / "ecgen-radiology" / "1.xml").write_text("<eCitation><MeSH>", encoding="utf-8")
    write_png(tmp_path / "NLMCXR_png" / "CXR1_IM-0001-1001.png", IMG)
    with pytest.raises(DataError) as err:
        load_records(f"openi:{tmp_path}", {"views": "all"})
    assert_one_line(err, "1.xml")
