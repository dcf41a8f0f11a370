"""Manifest CSVs: the known columns become Record fields, any further column is kept in Record.extra; a folder's
own manifest.csv adds its columns to the folder's records."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoscan.data.records import patient_id_from_filename
from pneumoscan.data.sources import load_records
from pneumoscan.errors import DataError
from tests.fixtures import make_dataset_folder, write_png


def test_manifest_keeps_extra_columns(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text(
        "path,label,patient_id,view,sex,age\n"
        "a.png,NORMAL,p1,PA,F,41\n"
        "b.png,PNEUMONIA,p2,AP,,\n", encoding="utf-8")
    a, b = load_records(tmp_path / "m.csv")
    assert (a.label, a.patient_id, a.extra) == (0, "p1", {"view": "PA", "sex": "F", "age": "41"})
    assert b.extra == {"view": "AP"}  # empty cells are not kept
    assert a.source == "manifest" and a.split is None


def test_manifest_unknown_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label,split\na.png,NORMAL,holdout\n", encoding="utf-8")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        load_records(tmp_path / "m.csv")


@pytest.mark.realdata
def test_rsna_adult_manifest_carries_view() -> None:
    manifest = Path("../shared/data/rsna_adult/manifest.csv")
    if not manifest.is_file():
        pytest.skip("../shared/data/rsna_adult not present")
    records = load_records(manifest)
    assert len(records) == 353
    views = {r.extra.get("view") for r in records}
    assert views == {"PA", "AP"}


# ------------------------------------------------------------------------------------- folder + manifest.csv ---

def _write_manifest(folder: Path, header: str, rows: list[str]) -> None:
    (folder / "manifest.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")


def test_kermany_like_folder_with_manifest_loads_the_same_records(tmp_path: Path) -> None:
    """A Kaggle-layout folder whose manifest.csv says what the folder says gives exactly the records of today."""
    data = make_dataset_folder(tmp_path / "k", {"train": 4, "val": 2, "test": 2}, size=16)
    before = load_records(data)
    rows = [f"{Path(r.path).relative_to(data).as_posix()},{'PNEUMONIA' if r.label else 'NORMAL'},{r.split},"
            f"manifest-{i},{r.subtype or 'normal'},{i:064x}" for i, r in enumerate(before)]
    _write_manifest(data, "path,label,split,patient_id,subtype,sha256", rows)
    after = load_records(data)
    assert after == before  # path, label, split, patient id, source, subtype all unchanged
    assert [r.patient_id for r in after] == [r.patient_id for r in before]
    assert all(set(r.extra) == {"sha256"} for r in after)


def test_flat_folder_with_manifest_gets_its_columns(tmp_path: Path) -> None:
    for cls, name in (("NORMAL", "a1.jpg"), ("NORMAL", "b2.jpg"), ("PNEUMONIA", "c3.jpg")):
        (tmp_path / cls).mkdir(exist_ok=True)
        write_png(tmp_path / cls / name, (8, 8))
    _write_manifest(tmp_path, "path,label,patient_id,age,sex,view", [
        "NORMAL/a1.jpg,NORMAL,pa,36,M,PA", "NORMAL/b2.jpg,NORMAL,pb,,F,AP", "PNEUMONIA/c3.jpg,PNEUMONIA,pc,70,F,AP"])
    by_name = {Path(r.path).name: r for r in load_records(tmp_path)}
    assert by_name["a1.jpg"].extra == {"age": "36", "sex": "M", "view": "PA"}
    assert by_name["b2.jpg"].extra == {"sex": "F", "view": "AP"}
    assert [by_name[n].patient_id for n in ("a1.jpg", "b2.jpg", "c3.jpg")] == ["pa", "pb", "pc"]
    assert {r.source for r in by_name.values()} == {"folder"} and by_name["c3.jpg"].label == 1
    # the manifest path gives the same images, labels, patients and columns
    from_manifest = {Path(r.path).name: r for r in load_records(tmp_path / "manifest.csv")}
    assert {n: (r.label, r.patient_id, r.extra) for n, r in from_manifest.items()} == \
        {n: (r.label, r.patient_id, r.extra) for n, r in by_name.items()}


def test_folder_manifest_that_misses_images_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for cls, name in (("NORMAL", "a.png"), ("PNEUMONIA", "b.png")):
        (tmp_path / cls).mkdir()
        write_png(tmp_path / cls / name, (8, 8))
    _write_manifest(tmp_path, "path,label,view", ["NORMAL/a.png,NORMAL,PA"])
    with caplog.at_level("INFO", logger="pneumoscan.data.records"):
        records = load_records(tmp_path)
    assert all(r.extra == {} for r in records) and "does not list 1 of the 2 images" in caplog.text
    (tmp_path / "manifest.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert load_records(tmp_path) == records  # unreadable: the folder alone


def test_folder_manifest_that_contradicts_the_folder_is_an_error(tmp_path: Path) -> None:
    data = make_dataset_folder(tmp_path / "k", {"train": 2, "test": 2}, size=16)
    records = load_records(data)
    rel = [Path(r.path).relative_to(data).as_posix() for r in records]
    names = ["NORMAL", "PNEUMONIA"]
    wrong = names[1 - records[0].label]
    _write_manifest(data, "path,label,split", [f"{p},{wrong if i == 0 else names[r.label]},{r.split}"
                                               for i, (p, r) in enumerate(zip(rel, records, strict=True))])
    right = names[records[0].label]
    with pytest.raises(DataError, match=rf"manifest.csv:2: label {wrong} but the image is in a {right} folder"):
        load_records(data)
    _write_manifest(data, "path,label,split", [f"{p},,{'val' if i == 1 else r.split}"
                                               for i, (p, r) in enumerate(zip(rel, records, strict=True))])
    with pytest.raises(DataError, match=rf"manifest.csv:3: split 'val' but the image is in the '{records[1].split}'"):
        load_records(data)


@pytest.mark.realdata
def test_rsna_adult_folder_carries_view_like_its_manifest() -> None:
    folder = Path("../shared/data/rsna_adult")
    if not (folder / "manifest.csv").is_file():
        pytest.skip("../shared/data/rsna_adult not present")
    via_folder = {r.path: (r.label, r.patient_id, r.extra.get("view")) for r in load_records(folder)}
    via_manifest = {r.path: (r.label, r.patient_id, r.extra.get("view")) for r in load_records(folder / "manifest.csv")}
    assert len(via_folder) == 353 and via_folder == via_manifest


@pytest.mark.realdata
def test_kermany224_folder_records_unchanged_by_its_manifest(shared_data: Path) -> None:
    from pneumoscan.data.records import _list_images

    folder = shared_data / "kermany224"
    records = load_records(folder)
    assert len(records) == 5856 and {r.source for r in records} == {"folder"}
    for r in records[::97]:  # what the folder layout and file names alone say
        parts = Path(r.path).relative_to(folder).parts
        assert (r.split, r.label) == (parts[0], int(parts[1] == "PNEUMONIA"))
        assert r.patient_id == patient_id_from_filename(parts[-1])
        assert r.subtype == (None if r.label == 0 else r.subtype) and set(r.extra) == {"sha256"}
    assert len(_list_images(folder)) == len(records)
