"""``lungmasks:`` and ``rsna_adult:`` loaders, and per-source, view-stratified, reproducible splits."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumoscan.data.records import Record
from pneumoscan.data.sources import load_records
from pneumoscan.data.splits import make_splits
from pneumoscan.errors import DataError
from tests.fixtures import make_xray_like, write_png

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _lungmasks(root: Path, n_normal: int = 6, n_tb: int = 4) -> Path:
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n_normal + n_tb):
        tb = i >= n_normal
        prefix = "CHNCXR" if i % 2 else "MCUCXR"
        stem = f"{prefix}_{i:04d}_{int(tb)}"
        write_png(root / "images" / f"{stem}.png", make_xray_like(rng, 32, False))
        rows.append({"image": f"images/{stem}.png", "mask": f"masks/{stem}.png",
                     "source": "shenzhen" if prefix == "CHNCXR" else "montgomery",
                     "finding": "tuberculosis" if tb else "normal", "lung_fraction": "0.25"})
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_lungmasks_keeps_normals_only_as_pa_normal(tmp_path) -> None:
    recs = load_records(f"lungmasks:{_lungmasks(tmp_path)}")
    assert len(recs) == 6
    assert {r.label for r in recs} == {0}
    assert {r.source for r in recs} == {"montgomery", "shenzhen"}
    assert all(r.extra["view"] == "PA" and r.patient_id == Path(r.path).stem for r in recs)
    assert not any(r.path.endswith("_1.png") for r in recs)


def test_lungmasks_bad_manifest_is_a_data_error(tmp_path) -> None:
    (tmp_path / "manifest.csv").write_text("image,label\nx.png,normal\n")
    with pytest.raises(DataError, match="columns"):
        load_records(f"lungmasks:{tmp_path}")
    with pytest.raises(DataError, match="manifest"):
        load_records(f"lungmasks:{tmp_path / 'nope'}")


def test_rsna_adult_loader_names_the_source_and_keeps_the_view(tmp_path) -> None:
    rng = np.random.default_rng(1)
    lines = ["path,label,patient_id,view,age"]
    for i in range(4):
        write_png(tmp_path / f"{i}.png", make_xray_like(rng, 32, i % 2 == 1))
        lines.append(f"{i}.png,{'PNEUMONIA' if i % 2 else 'NORMAL'},p{i},{'AP' if i < 2 else 'PA'},40")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    recs = load_records(f"rsna_adult:{tmp_path}")
    assert {r.source for r in recs} == {"rsna_adult"}
    assert [r.extra["view"] for r in recs] == ["AP", "AP", "PA", "PA"]


def _pool(source: str, n: int, seed: int, views: bool) -> list[Record]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        view = ("AP" if rng.random() < 0.5 else "PA") if views else ""
        label = int(rng.random() < (0.7 if view == "AP" else 0.3))
        out.append(Record(f"/{source}/{i}.png", label, None, f"{source}{i}", source,
                          extra={"view": view} if views else {}))
    return out


def test_splits_are_per_source_and_do_not_move_when_a_source_is_added() -> None:
    a = _pool("kermanyish", 200, 0, views=False)
    b = _pool("adult", 200, 1, views=True)
    alone = make_splits(a, val_fraction=0.2, test_fraction=0.25, seed=0)
    both = make_splits(a + b, val_fraction=0.2, test_fraction=0.25, seed=0)
    for name in ("train", "val", "test"):
        assert sorted(r.path for r in alone[name]) == sorted(r.path for r in both[name] if r.source == "kermanyish")
    again = make_splits(a + b, val_fraction=0.2, test_fraction=0.25, seed=0)
    assert [r.path for r in again["test"]] == [r.path for r in both["test"]]
    # every split of the adult source holds both views and both labels within each view
    for name in ("val", "test"):
        cells = Counter((r.extra["view"], r.label) for r in both[name] if r.source == "adult")
        assert set(cells) == {("AP", 0), ("AP", 1), ("PA", 0), ("PA", 1)}
    patients = {n: {r.patient_id for r in both[n]} for n in both}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])


@pytest.mark.realdata
def test_shared_adult_sets_split_by_patient_and_view() -> None:
    if not (SHARED / "rsna_adult" / "manifest.csv").is_file() or not (SHARED / "lung_masks").is_dir():
        pytest.skip("../shared/data/rsna_adult or lung_masks not present")
    recs = load_records(f"rsna_adult:{SHARED / 'rsna_adult'}") + load_records(f"lungmasks:{SHARED / 'lung_masks'}")
    assert Counter(r.source for r in recs) == {"rsna_adult": 353, "shenzhen": 279, "montgomery": 80}
    splits = make_splits(recs, val_fraction=0.2, test_fraction=0.25, seed=0)
    test = Counter((r.extra.get("view"), r.label) for r in splits["test"] if r.source == "rsna_adult")
    assert min(test.values()) >= 5  # both labels within PA and within AP in the held-out test
