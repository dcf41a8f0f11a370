"""The gate's training sample: every source as fully represented as its size allows (inference.calibrate)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from pneumoscan.data.records import Record
from pneumoscan.inference.calibrate import sample_per_source


def _records(counts: dict[str, int]) -> list[Record]:
    return [Record(path=f"{s}/{i}.png", label=i % 2, split="train", patient_id=f"{s}{i}", source=s)
            for s, n in counts.items() for i in range(n)]


def test_small_sources_are_kept_whole_and_the_rest_share_what_is_left() -> None:
    records = _records({"kermany": 4484, "rsna_adult": 226, "shenzhen": 179, "montgomery": 51})
    sample = sample_per_source(records, 800, np.random.default_rng(0))
    got = Counter(r.source for r in sample)
    assert got == {"montgomery": 51, "shenzhen": 179, "rsna_adult": 226, "kermany": 344}
    assert len({r.path for r in sample}) == 800
    assert [records.index(r) for r in sample] == sorted(records.index(r) for r in sample)  # order kept


def test_equal_shares_when_every_source_is_large_and_all_when_few() -> None:
    records = _records({"a": 500, "b": 500, "c": 500})
    got = Counter(r.source for r in sample_per_source(records, 300, np.random.default_rng(1)))
    assert got == {"a": 100, "b": 100, "c": 100}
    few = _records({"a": 3, "b": 2})
    assert sample_per_source(few, 10, np.random.default_rng(0)) == few


def test_the_sample_depends_on_the_generator_only() -> None:
    records = _records({"a": 1000, "b": 40})
    one = sample_per_source(records, 200, np.random.default_rng(7))
    two = sample_per_source(records, 200, np.random.default_rng(7))
    other = sample_per_source(records, 200, np.random.default_rng(8))
    assert one == two and one != other
