"""Data audit: planted exact/near duplicates, a cross-split patient and an unreadable file; the real Kermany audit."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoscan.cli.main import main
from pneumoscan.data import audit
from pneumoscan.data.records import Record
from pneumoscan.data.sources import load_records
from pneumoscan.errors import ConfigError
from tests.fixtures import write_dicom, write_png


def blocky(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A random 12x12 block pattern: perceptual hashes of two such images differ in ~half of their bits."""
    return np.kron(rng.integers(0, 256, size=(12, 12)), np.ones((size // 12, size // 12))).astype(np.uint8)


def make_audit_set(root: Path) -> Path:
    """Kaggle-layout set with: an exact copy across train/test, a JPEG re-encode across train/test, patient person1
    in train and test, a corrupt file, and a 12-bit MONOCHROME1 DICOM."""
    rng = np.random.default_rng(7)
    names = ["train/NORMAL/IM-0001-0001.png", "train/NORMAL/IM-0002-0001.png",
             "train/PNEUMONIA/person1_bacteria_1.png", "train/PNEUMONIA/person2_virus_2.png",
             "test/NORMAL/IM-0003-0001.png", "test/PNEUMONIA/person1_virus_3.png",
             "val/NORMAL/IM-0006-0001.png", "val/PNEUMONIA/person6_bacteria_6.png"]
    images = {}
    for name in names:
        images[name] = blocky(rng)
        write_png(root / name, images[name])
    shutil.copyfile(root / names[0], root / "test/NORMAL/IM-0004-0001.png")  # exact duplicate across splits
    buf = io.BytesIO()
    Image.fromarray(images[names[3]]).save(buf, format="JPEG", quality=85)
    (root / "test/PNEUMONIA/person5_bacteria_5.jpeg").write_bytes(buf.getvalue())  # near duplicate across splits
    (root / "val/PNEUMONIA/person7_bacteria_7.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # corrupt
    write_dicom(root / "val/NORMAL/IM-0008-0001.dcm", rng.integers(0, 4096, size=(32, 32), dtype=np.uint16),
                photometric="MONOCHROME1", bits_stored=12)
    return root


@pytest.fixture()
def audit_set(tmp_path: Path) -> Path:
    return make_audit_set(tmp_path / "set")


def test_audit_finds_planted_problems(audit_set: Path) -> None:
    records = load_records(str(audit_set))
    result = audit.audit_records(records, workers=1)
    json.dumps(result)  # plain JSON types only
    exact = result["exact_duplicates"]
    assert (exact["n_groups"], exact["n_files"], exact["n_cross_split"], exact["n_cross_label"]) == (1, 2, 1, 0)
    assert sorted(Path(f).name for f in exact["groups"][0]["files"]) == ["IM-0001-0001.png", "IM-0004-0001.png"]
    near = result["near_duplicates"]
    assert (near["n_pairs"], near["n_identical_pairs"], near["n_similar_pairs"]) == (2, 1, 1)
    similar = next(p for p in near["pairs"] if not p["identical"])
    assert sorted(Path(f).name for f in similar["files"]) == ["person2_virus_2.png", "person5_bacteria_5.jpeg"]
    assert similar["cross_split"] and not similar["cross_label"]
    assert similar["distance"] <= audit.NEAR_DUPLICATE_DISTANCE
    patients = result["patients"]
    assert (patients["n_multi_split"], patients["by_splits"]) == (1, {"train+test": 1})
    assert patients["patients"][0]["patient_id"] == "person1"
    assert len(result["unreadable"]) == 1
    reason = result["unreadable"][0]["reason"]
    assert "person7_bacteria_7.png" in reason and "\n" not in reason
    stats = result["image_stats"]
    assert stats["formats"] == {"PNG": 9, "JPEG": 1, "DICOM": 1}
    assert stats["photometric"]["MONOCHROME1"] == 1 and stats["bits_stored"]["12"] == 1
    balance = {(r["split"]): (r["normal"], r["pneumonia"]) for r in result["class_balance"]}
    assert balance == {"train": (2, 2), "val": (2, 2), "test": (2, 2)}


def test_markdown_report(audit_set: Path) -> None:
    result = audit.audit_records(load_records(str(audit_set)), workers=1)
    text = audit.format_markdown(result)
    for heading in ("# Data audit", "## Class balance", "## Exact duplicates", "## Near duplicates",
                    "## Patients in more than one split", "## Unreadable files: 1", "## Image properties"):
        assert heading in text
    assert "**across splits**" in text and "`test/NORMAL/IM-0004-0001.png`" in text


def test_max_images_samples_content_only(audit_set: Path) -> None:
    records = load_records(str(audit_set))
    result = audit.audit_records(records, workers=1, max_images=4)
    assert (result["n_audited"], result["sampled"], result["n_records"]) == (4, True, len(records))
    assert result["patients"]["n_multi_split"] == 1  # still computed on every record


def test_quick_leak_check(audit_set: Path) -> None:
    records = load_records(str(audit_set))
    train = [r for r in records if r.split != "test"]
    test = [r for r in records if r.split == "test"]
    messages = audit.quick_leak_check(train, test)
    assert len(messages) == 2
    assert "1 patient(s)" in messages[0] and "folder:person1" in messages[0]
    assert "byte-identical" in messages[1] and "IM-0004-0001.png" in messages[1]
    assert audit.quick_leak_check(train, [r for r in test if "person" not in r.path and "0004" not in r.path]) == []
    same = audit.quick_leak_check(train, train[:1])
    assert any("listed in both" in m for m in same)


def test_near_duplicate_search_strategies_agree() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, size=(300, 256), dtype=np.uint8)
    bits[1] = bits[0]
    bits[1, :5] ^= 1  # distance 5
    bits[2] = bits[0]
    bits[2, 100:118] ^= 1  # distance 18 from 0
    hashes = [np.packbits(b).tobytes().hex() for b in bits]
    pairs = audit.near_duplicate_pairs(hashes, 20)
    assert (0, 1, 5) in pairs and (0, 2, 18) in pairs
    assert sorted(audit._pairs_bucketed(audit._as_bytes(hashes), 20)) == pairs
    with pytest.raises(ConfigError):
        audit.near_duplicate_pairs(hashes, -1)


def test_union_find_groups() -> None:
    uf = audit.UnionFind(6)
    uf.union(0, 1)
    uf.union(1, 2)
    uf.union(4, 5)
    assert uf.groups(range(6)) == [[0, 1, 2], [4, 5]]


def test_process_pool_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = [str(write_png(tmp_path / f"{i}.png", blocky(rng, 24))) for i in range(2 * audit._CHUNK + 2)]
    facts = audit.inspect_images(paths, workers=2)
    assert [f.path for f in facts] == paths and all(f.error is None and f.phash for f in facts)


def test_cli_audit_writes_reports(audit_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code = main(["audit", "--data", str(audit_set), "--output", str(out), "--workers", "1"])
    assert code == 1  # one unreadable file
    assert "# Data audit" in capsys.readouterr().out
    saved = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert saved["exact_duplicates"]["n_groups"] == 1 and saved["data"] == [str(audit_set)]
    assert (out / "audit.md").read_text(encoding="utf-8").startswith("# Data audit")
    assert main(["audit", "--data", str(audit_set), "--data-option", "views"]) == 2  # not key=value


def test_records_without_patient_ids_are_counted() -> None:
    recs = [Record("/nonexistent/a.png", 0, None, None, "rsna"), Record("/nonexistent/b.png", 1, None, None, "rsna")]
    assert audit.patient_overlap(recs)["images_without_patient_id"] == {"rsna": 2}


@pytest.mark.slow
@pytest.mark.realdata
def test_audit_kermany224(shared_data: Path) -> None:
    """The full audit of the real Kermany set finds the documented problems within the time budget."""
    records = load_records(f"kermany:{shared_data / 'kermany224'}")
    started = time.perf_counter()
    result = audit.audit_records(records, workers=2)
    assert time.perf_counter() - started < 120
    exact, near, patients = result["exact_duplicates"], result["near_duplicates"], result["patients"]
    assert (exact["n_groups"], exact["n_files"], exact["n_cross_split"], exact["n_cross_label"]) == (30, 62, 0, 0)
    assert (near["n_pairs"], near["n_identical_pairs"], near["n_cross_split_pairs"]) == (34, 34, 0)
    assert (patients["n_multi_split"], patients["by_splits"]) == (170, {"train+test": 170})
    assert all(len({s.split(":")[1] for s in p["subtypes"]}) == 2 for p in patients["patients"])  # bacteria vs virus
    assert result["unreadable"] == []
    assert result["image_stats"]["common_sizes"] == {"224x224": 5856}
    train = [r for r in records if r.split != "test"]
    leaks = audit.quick_leak_check(train, [r for r in records if r.split == "test"])
    assert len(leaks) == 1 and leaks[0].startswith("170 patient(s)")
