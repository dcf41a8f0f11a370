"""Manifest CSVs: the known columns become Record fields, any further column is kept in Record.extra."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoscan.data.records import load_records
from pneumoscan.errors import DataError


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
