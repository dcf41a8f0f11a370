"""Patient-grouped, stratified, reproducible splits; the official test split is never moved."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pneumoscan.data.records import Record
from pneumoscan.data.splits import grouped_split, make_splits, save_splits, shared_patients
from pneumoscan.errors import DataError


def _records(n_patients: int = 40, per_patient: int = 3, source: str = "s", split: str | None = "train",
             positive_every: int = 3) -> list[Record]:
    out = []
    for p in range(n_patients):
        label = 0 if p % positive_every == 0 else 1
        for k in range(per_patient):
            out.append(Record(f"/x/{source}/{p}_{k}.png", label, split, f"p{p}", source))
    return out


def _groups(records: list[Record]) -> set[str]:
    return {r.group for r in records}


def test_grouped_split_keeps_each_patient_on_one_side() -> None:
    rest, held = grouped_split(_records(), 0.25, seed=0)
    assert _groups(rest).isdisjoint(_groups(held))
    assert len(rest) + len(held) == 120
    assert 0.15 < len(held) / 120 < 0.35
    assert {r.label for r in held} == {0, 1}, "stratified: both classes held out"


def test_split_is_reproducible_and_depends_on_the_seed() -> None:
    records = _records()
    a = [r.path for r in grouped_split(records, 0.2, seed=3)[1]]
    b = [r.path for r in grouped_split(records, 0.2, seed=3)[1]]
    c = [r.path for r in grouped_split(records, 0.2, seed=4)[1]]
    assert a == b
    assert a != c


def test_make_splits_never_moves_official_test_images() -> None:
    test = _records(10, source="s", split="test")
    splits = make_splits(_records(40, source="s") + test, val_fraction=0.2, seed=0)
    assert sorted(r.path for r in splits["test"]) == sorted(r.path for r in test)
    assert _groups(splits["train"]).isdisjoint(_groups(splits["val"]))
    assert all(r.split == name for name, recs in splits.items() for r in recs)


def test_a_source_without_test_split_gets_one_carved_by_patient() -> None:
    official = _records(40, source="kermany") + _records(8, source="kermany", split="test")
    adults = [Record(r.path, r.label, None, r.patient_id, "adult") for r in _records(40, source="adult")]
    splits = make_splits(official + adults, val_fraction=0.2, test_fraction=0.2, seed=0)
    adult_test = [r for r in splits["test"] if r.source == "adult"]
    adult_dev = [r for r in splits["train"] + splits["val"] if r.source == "adult"]
    assert adult_test and _groups(adult_test).isdisjoint(_groups(adult_dev))
    assert {r.source for r in splits["val"]} == {"kermany", "adult"}, "validation holds every source"
    kermany_test = [r for r in splits["test"] if r.source == "kermany"]
    assert len(kermany_test) == 8 * 3, "a source with an official test split is not carved again"


def test_unlabelled_records_are_left_out() -> None:
    records = _records(30) + [Record("/x/unknown.png", None, "train", "u1", "s")]
    splits = make_splits(records, val_fraction=0.2, seed=0)
    assert "/x/unknown.png" not in {r.path for recs in splits.values() for r in recs}


def test_one_class_is_an_error() -> None:
    records = [Record(f"/x/{i}.png", 1, "train", f"p{i}", "s") for i in range(30)]
    with pytest.raises(DataError, match="only one class"):
        make_splits(records + _records(5, split="test"), val_fraction=0.2, seed=0)


def test_too_few_patients_is_an_error() -> None:
    with pytest.raises(DataError, match="too few to hold out"):
        grouped_split(_records(3, per_patient=5), 0.2, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(DataError, match="between 0 and 1"):
        grouped_split(_records(), fraction, seed=0)


def test_unknown_patients_never_match() -> None:
    a = [Record("/a.png", 0, "train", None, "s"), Record("/b.png", 0, "train", "p1", "s")]
    b = [Record("/c.png", 1, "test", None, "s"), Record("/d.png", 1, "test", "p1", "s")]
    assert shared_patients(a, b) == {"s:p1"}


def test_save_splits_writes_every_record(tmp_path: Path) -> None:
    splits = make_splits(_records(30) + _records(5, split="test"), val_fraction=0.2, seed=0)
    path = tmp_path / "splits.csv"
    save_splits(splits, path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == sum(len(v) for v in splits.values())
    assert {"path", "label", "split", "patient_id", "source", "subtype"} <= set(rows[0])
    assert not list(tmp_path.glob("*.tmp"))
