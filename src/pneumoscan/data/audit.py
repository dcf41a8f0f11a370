"""Data audit: the checks to run on a data set before believing any number measured on it.

:func:`audit_records` reports, for a list of :class:`~pneumoscan.data.records.Record`:

- class balance per source and split;
- exact duplicates (SHA-256 of the file bytes) and near duplicates (perceptual hash, pHash, of the decoded image,
  within a Hamming distance), each flagged when it crosses splits, labels or sources: a duplicate across train and
  test inflates test scores, one across labels is a labelling error;
- patients present in more than one split (the leak that patient-level splitting exists to prevent);
- unreadable files, each with its one-line reason;
- the distribution of formats, sizes, bit depths, photometric interpretations and channels (via ``probe_image``).

:func:`quick_leak_check` is the cheap subset a trainer runs before every fit: shared patient ids and byte-identical
files between train(+val) and test. :func:`format_markdown` renders an audit as the report ``pneumoscan audit``
prints and saves.

Near duplicates use ``imagehash.phash`` with ``hash_size=16`` (the signs of the 16x16 lowest DCT frequencies of the
64x64 grey image: 256 bits), an optional dependency (``pip install "pneumoscan[audit]"``). Pairs at Hamming
distance <= :data:`NEAR_DUPLICATE_DISTANCE` are reported (byte-identical pairs included and marked, so the pair count
is comparable with other tools) and grouped with union-find.

Why 256 bits and 20: chest radiographs look alike at low frequencies. On the Kermany set the usual 64-bit pHash puts
distinct patients (even a NORMAL and a PNEUMONIA image) at distance 2-4, so no 64-bit threshold separates copies from
different images. With 256 bits the closest two distinct Kermany images are 38 bits apart, while re-encoding (JPEG
q60), resizing, brightness, contrast and gamma changes of one image stay within 12 bits (measured on 20 Kermany
images; docs/DATASETS.md). Crops of a few percent and rotations of 2 degrees move the hash by 40-66 bits: such copies
are not found by this check.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.data.records import Record
from pneumoscan.errors import ConfigError, ImageReadError, require

logger = logging.getLogger(__name__)

#: The audit result: plain JSON types (str, int, float, bool, None, list, dict).
AuditDict = dict[str, Any]

#: pHash side: ``hash_size**2`` bits (see the module docstring for why 16, i.e. 256 bits).
HASH_SIZE = 16
#: Hamming distance (of 256 bits) up to which two pHashes are near duplicates; see the module docstring.
NEAR_DUPLICATE_DISTANCE = 20
ALL_PAIRS_LIMIT = 20_000
_CHUNK = 32
_MAX_LISTED = 50


@dataclass(frozen=True)
class ImageFacts:
    """What the audit learns about one file. ``error`` is set (and the rest may be None) when it is unreadable."""

    path: str
    sha256: str | None = None
    n_bytes: int | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    bits_stored: int | None = None
    photometric: str | None = None
    channels: int | None = None
    phash: str | None = None
    error: str | None = None


def inspect_image(path: str, hash_size: int = HASH_SIZE) -> ImageFacts:
    """Hash, probe and perceptually hash one file; never raises for a bad file (the reason goes to ``error``)."""
    from pneumoscan.data.io import probe_image, read_image

    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return ImageFacts(path, error=f"{path}: {err.strerror or err}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        info = probe_image(data, name=path)
        image = read_image(data, name=path)
    except ImageReadError as err:
        return ImageFacts(path, digest, len(data), error=str(err))
    return ImageFacts(path, digest, len(data), info.format, info.width, info.height, info.bits_stored,
                      info.photometric, info.channels, phash(image, hash_size))


def phash(image: np.ndarray, hash_size: int = HASH_SIZE) -> str:
    """pHash (``hash_size**2`` bits) of a float [0, 1] grey image as hex (``imagehash.phash`` of its 8-bit form)."""
    imagehash = require("imagehash", "audit")
    from PIL import Image

    grey = Image.fromarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))
    bits = np.asarray(imagehash.phash(grey, hash_size=hash_size).hash, dtype=bool).reshape(-1)
    return np.packbits(bits).tobytes().hex()


def inspect_images(paths: Sequence[str], workers: int = 2, hash_size: int = HASH_SIZE) -> list[ImageFacts]:
    """:func:`inspect_image` over ``paths``, in a process pool when ``workers > 1`` (decoding is CPU-bound)."""
    require("imagehash", "audit")
    job = functools.partial(inspect_image, hash_size=hash_size)
    if workers <= 1 or len(paths) < 2 * _CHUNK:
        return [job(p) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(job, paths, chunksize=_CHUNK))


# --------------------------------------------------------------------------------------------------- near duplicates

def _as_bytes(hashes: Sequence[str]) -> np.ndarray:
    """Hex hashes -> uint8 array (n, n_bytes); all hashes must have the same length."""
    if not hashes:
        return np.zeros((0, 1), dtype=np.uint8)
    rows = [np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hashes]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("hashes of different lengths cannot be compared")
    return np.stack(rows)


def _as_words(hashes: np.ndarray) -> np.ndarray:
    """uint8 (n, n_bytes) -> uint64 (n, n_bytes / 8) when the length allows: 8x fewer XOR/popcount operations."""
    if hashes.shape[1] % 8 or not hasattr(np, "bitwise_count"):
        return hashes
    return np.ascontiguousarray(hashes).view(np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint8 element (numpy >= 2 has bitwise_count; a lookup table otherwise)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POPCOUNT_TABLE[x]


_POPCOUNT_TABLE = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _pairs_all(hashes: np.ndarray, max_distance: int, block: int = 256) -> set[tuple[int, int, int]]:
    """Every pair (i < j) within ``max_distance``: blocked all-pairs XOR + popcount (exact; fine up to ~20k hashes)."""
    out: set[tuple[int, int, int]] = set()
    hashes = _as_words(hashes)
    for start in range(0, len(hashes), block):
        dist = _popcount(hashes[start:start + block, None, :] ^ hashes[None, :, :]).sum(axis=-1, dtype=np.int32)
        rows, cols = np.nonzero(dist <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if c > start + r:
                out.add((start + r, c, int(dist[r, c])))
    return out


def _pairs_bucketed(hashes: np.ndarray, max_distance: int) -> set[tuple[int, int, int]]:
    """Same result as :func:`_pairs_all` via the pigeonhole trick, for large sets.

    Cut the bits into ``max_distance + 1`` chunks: two hashes within ``max_distance`` bits agree exactly on at least
    one chunk, so only hashes sharing a chunk value (a bucket) are compared.
    """
    bits = np.unpackbits(hashes, axis=1)
    bounds = np.linspace(0, bits.shape[1], min(max_distance + 1, bits.shape[1]) + 1).astype(int)
    out: set[tuple[int, int, int]] = set()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        _, bucket = np.unique(np.packbits(bits[:, lo:hi], axis=1), axis=0, return_inverse=True)
        order = np.argsort(bucket.reshape(-1), kind="stable")
        edges = np.flatnonzero(np.diff(bucket.reshape(-1)[order])) + 1
        for members in np.split(order, edges):
            if len(members) > 1:
                out.update((int(min(members[a], members[b])), int(max(members[a], members[b])), d)
                           for a, b, d in _pairs_all(hashes[members], max_distance))
    return out


def near_duplicate_pairs(hashes: Sequence[str], max_distance: int) -> list[tuple[int, int, int]]:
    """All index pairs ``(i, j, distance)``, i < j, whose hex hashes differ in at most ``max_distance`` bits.

    Raises:
        ConfigError: a negative distance.
    """
    if max_distance < 0:
        raise ConfigError(f"near-duplicate distance must be >= 0, got {max_distance}")
    arr = _as_bytes(hashes)
    pairs = _pairs_all(arr, max_distance) if len(arr) <= ALL_PAIRS_LIMIT else _pairs_bucketed(arr, max_distance)
    return sorted(pairs)


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving; groups near-duplicate pairs into clusters."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)

    def groups(self, members: Iterable[int]) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in members:
            out[self.find(i)].append(i)
        return sorted((sorted(g) for g in out.values() if len(g) > 1), key=lambda g: (-len(g), g))


# ------------------------------------------------------------------------------------------------------- the audit

def audit_records(records: Sequence[Record], *, near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
                  workers: int = 2, max_images: int | None = None, seed: int = 0, hash_size: int = HASH_SIZE
                  ) -> AuditDict:
    """Audit a data set; returns a JSON-serialisable dict (render it with :func:`format_markdown`).

    Args:
        records: the images (from one or several ``--data`` specs).
        near_duplicate_distance: pHash Hamming distance up to which two images are near duplicates (of
            ``hash_size**2`` bits; default 20 of 256).
        workers: processes for decoding and hashing (1 = in this process).
        max_images: audit the image content of a random sample of this many files (class balance and patient
            overlap still use every record); None = all.
        seed: seed of that sample.
        hash_size: pHash side (``hash_size**2`` bits); change it together with ``near_duplicate_distance``.

    Raises:
        MissingDependencyError: ``imagehash`` is not installed.
        ConfigError: invalid distance.
    """
    if not 0 <= near_duplicate_distance < hash_size**2:
        raise ConfigError(f"near-duplicate distance must be in 0..{hash_size**2 - 1}, got {near_duplicate_distance}")
    started = time.perf_counter()
    paths = sorted({r.path for r in records})
    if max_images is not None and max_images < len(paths):
        paths = sorted(random.Random(seed).sample(paths, max_images))
    facts = inspect_images(paths, workers=workers, hash_size=hash_size)
    by_path = _records_by_path(records)
    readable = [f for f in facts if f.error is None]
    result: AuditDict = {
        "n_records": len(records),
        "n_files": len({r.path for r in records}),
        "n_audited": len(facts),
        "sampled": max_images is not None and max_images < len({r.path for r in records}),
        "sources": sorted({r.source for r in records}),
        "class_balance": class_balance(records),
        "duplicate_entries": _duplicate_entries(records),
        "exact_duplicates": _exact_duplicates(readable, by_path),
        "near_duplicates": _near_duplicates(readable, by_path, near_duplicate_distance, hash_size),
        "patients": patient_overlap(records),
        "unreadable": [{"path": f.path, "reason": f.error} for f in facts if f.error is not None],
        "image_stats": image_stats(readable),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _records_by_path(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        out[r.path].append(r)
    return out


def class_balance(records: Sequence[Record]) -> list[AuditDict]:
    """Counts of NORMAL / PNEUMONIA / unknown per (source, split), with the PNEUMONIA fraction of labelled images."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in records:
        key = "unknown" if r.label is None else ("pneumonia" if r.label == 1 else "normal")
        counts[(r.source, r.split or "none")][key] += 1
    rows = []
    for (source, split), c in sorted(counts.items(), key=lambda kv: (kv[0][0], _split_order(kv[0][1]))):
        labelled = c["normal"] + c["pneumonia"]
        rows.append({"source": source, "split": split, "normal": c["normal"], "pneumonia": c["pneumonia"],
                     "unknown": c["unknown"], "total": sum(c.values()),
                     "pneumonia_fraction": round(c["pneumonia"] / labelled, 4) if labelled else None})
    return rows


def _split_order(split: str) -> int:
    return {"train": 0, "val": 1, "test": 2}.get(split, 3)


def _describe(paths: Sequence[str], by_path: dict[str, list[Record]]) -> AuditDict:
    recs = [r for p in paths for r in by_path.get(p, [])]
    splits = sorted({r.split or "none" for r in recs}, key=_split_order)
    labels = sorted({"unknown" if r.label is None else str(r.label) for r in recs})
    sources = sorted({r.source for r in recs})
    return {"files": list(paths), "splits": splits, "labels": labels, "sources": sources,
            "cross_split": len(splits) > 1, "cross_label": len(labels) > 1, "cross_source": len(sources) > 1}


def _exact_duplicates(facts: Sequence[ImageFacts], by_path: dict[str, list[Record]]) -> AuditDict:
    by_hash: dict[str, list[str]] = defaultdict(list)
    for f in facts:
        by_hash[f.sha256 or ""].append(f.path)
    groups = sorted((sorted(p) for p in by_hash.values() if len(p) > 1), key=lambda g: (-len(g), g))
    described = [_describe(g, by_path) for g in groups]
    return {
        "n_groups": len(groups),
        "n_files": sum(len(g) for g in groups),
        "n_cross_split": sum(d["cross_split"] for d in described),
        "n_cross_label": sum(d["cross_label"] for d in described),
        "n_cross_source": sum(d["cross_source"] for d in described),
        "groups": described,
    }


def _near_duplicates(facts: Sequence[ImageFacts], by_path: dict[str, list[Record]], distance: int,
                     hash_size: int) -> AuditDict:
    hashed = [f for f in facts if f.phash is not None]
    pairs = near_duplicate_pairs([f.phash or "" for f in hashed], distance)
    uf = UnionFind(len(hashed))
    for i, j, _ in pairs:
        uf.union(i, j)
    groups = [_describe([hashed[i].path for i in g], by_path)
              for g in uf.groups({k for i, j, _ in pairs for k in (i, j)})]
    rows = []
    for i, j, d in pairs:
        row = _describe([hashed[i].path, hashed[j].path], by_path)
        row.update(distance=d, identical=hashed[i].sha256 == hashed[j].sha256)
        rows.append(row)
    rows.sort(key=lambda r: (r["identical"], r["distance"], r["files"]))
    similar = [r for r in rows if not r["identical"]]
    return {
        "hash": f"imagehash.phash(hash_size={hash_size}): {hash_size**2} bits of the decoded 8-bit grey image",
        "max_distance": distance,
        "distance_histogram": {str(k): v for k, v in sorted(Counter(r["distance"] for r in rows).items())},
        "n_pairs": len(rows),
        "n_identical_pairs": len(rows) - len(similar),
        "n_similar_pairs": len(similar),
        "n_cross_split_pairs": sum(r["cross_split"] for r in rows),
        "n_cross_label_pairs": sum(r["cross_label"] for r in rows),
        "n_cross_source_pairs": sum(r["cross_source"] for r in rows),
        "n_groups": len(groups),
        "n_files": sum(len(g["files"]) for g in groups),
        "pairs": rows,
        "groups": groups,
    }


def _duplicate_entries(records: Sequence[Record]) -> list[str]:
    """Paths listed more than once (e.g. the same folder given twice)."""
    counts = Counter(r.path for r in records)
    return sorted(p for p, n in counts.items() if n > 1)


def patient_overlap(records: Sequence[Record]) -> AuditDict:
    """Patients (known ids only) whose images sit in more than one split, counted per pair of splits."""
    splits: dict[tuple[str, str], set[str]] = defaultdict(set)
    subtypes: dict[tuple[str, str], set[str]] = defaultdict(set)
    unknown: Counter[str] = Counter()
    for r in records:
        if r.patient_id:
            splits[(r.source, r.patient_id)].add(r.split or "none")
            subtypes[(r.source, r.patient_id)].add(f"{r.split or 'none'}:{r.subtype or '-'}")
        else:
            unknown[r.source] += 1
    multi = {k: sorted(v, key=_split_order) for k, v in splits.items() if len(v) > 1}
    by_pair: Counter[str] = Counter()
    for v in multi.values():
        by_pair["+".join(v)] += 1
    return {
        "n_patients": len(splits),
        "n_multi_split": len(multi),
        "by_splits": dict(sorted(by_pair.items())),
        "patients": [{"source": s, "patient_id": p, "splits": v, "subtypes": sorted(subtypes[(s, p)])}
                     for (s, p), v in sorted(multi.items())],
        "images_without_patient_id": dict(sorted(unknown.items())),
    }


def image_stats(facts: Sequence[ImageFacts]) -> AuditDict:
    """Distributions of format, size, bit depth, photometric interpretation and channels of readable images."""
    if not facts:
        return {}
    widths = np.array([f.width for f in facts])
    heights = np.array([f.height for f in facts])
    sizes = Counter(f"{f.width}x{f.height}" for f in facts)
    return {
        "formats": dict(Counter(str(f.format) for f in facts).most_common()),
        "bits_stored": dict(Counter(str(f.bits_stored) for f in facts).most_common()),
        "photometric": dict(Counter(str(f.photometric) for f in facts).most_common()),
        "channels": dict(Counter(str(f.channels) for f in facts).most_common()),
        "width": _spread(widths),
        "height": _spread(heights),
        "n_distinct_sizes": len(sizes),
        "common_sizes": dict(sizes.most_common(5)),
        "bytes": _spread(np.array([f.n_bytes for f in facts])),
    }


def _spread(values: np.ndarray) -> dict[str, int]:
    return {"min": int(values.min()), "median": int(np.median(values)), "max": int(values.max())}


# ------------------------------------------------------------------------------------------------ quick leak check

def quick_leak_check(train_records: Sequence[Record], test_records: Sequence[Record]) -> list[str]:
    """Cheap leak check between training data (train and val) and test data; returns one line per problem found.

    Looks for patients (``source:patient_id``, known ids only) on both sides and for byte-identical files. Only
    files whose size also occurs on the other side are hashed, so this costs a ``stat`` per file plus a read of
    the few candidates (no decoding). An empty list means no leak of these two kinds was found; near duplicates
    need the full :func:`audit_records`.
    """
    messages = []
    train_patients = {f"{r.source}:{r.patient_id}" for r in train_records if r.patient_id}
    shared = sorted(train_patients & {f"{r.source}:{r.patient_id}" for r in test_records if r.patient_id})
    if shared:
        messages.append(f"{len(shared)} patient(s) in both training and test data: {_examples(shared)}")
    same_path = sorted({r.path for r in train_records} & {r.path for r in test_records})
    if same_path:
        messages.append(f"{len(same_path)} file(s) listed in both training and test data: {_examples(same_path)}")
    identical = _identical_files([r.path for r in train_records], [r.path for r in test_records], set(same_path))
    if identical:
        messages.append(f"{len(identical)} test file(s) byte-identical to a training file: "
                        f"{_examples([f'{a} == {b}' for a, b in identical])}")
    return messages


def _examples(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _sizes(paths: Iterable[str]) -> dict[str, int]:
    out = {}
    for p in set(paths):
        try:
            out[p] = os.stat(p).st_size
        except OSError:
            continue
    return out


def _identical_files(train: Sequence[str], test: Sequence[str], skip: set[str]) -> list[tuple[str, str]]:
    train_sizes, test_sizes = _sizes(p for p in train if p not in skip), _sizes(p for p in test if p not in skip)
    common = set(train_sizes.values()) & set(test_sizes.values())
    train_hash: dict[str, str] = {}
    for p, size in sorted(train_sizes.items()):
        if size in common and (digest := _sha256(p)):
            train_hash.setdefault(digest, p)
    out = []
    for p, size in sorted(test_sizes.items()):
        if size in common and (digest := _sha256(p)) and digest in train_hash:
            out.append((p, train_hash[digest]))
    return out


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------- the report

def format_markdown(result: AuditDict, max_listed: int = _MAX_LISTED) -> str:
    """Render :func:`audit_records` output as a Markdown report (paths shortened to their common folder)."""
    base = _common_base(result)
    lines = list(_header(result, base))
    lines += _balance_section(result)
    lines += _duplicates_section(result, base, max_listed)
    lines += _patients_section(result, min(max_listed, 20))
    lines += _unreadable_section(result, base, max_listed)
    lines += _stats_section(result)
    return "\n".join(lines) + "\n"


def _common_base(result: AuditDict) -> str:
    paths = [f for g in result["exact_duplicates"]["groups"] for f in g["files"]]
    paths += [f for g in result["near_duplicates"]["groups"] for f in g["files"]]
    paths += [u["path"] for u in result["unreadable"]]
    if not paths:
        return ""
    base = os.path.commonpath(paths)
    return base if not os.path.isfile(base) else os.path.dirname(base)


def _rel(path: str, base: str) -> str:
    return os.path.relpath(path, base) if base else path


def _header(result: AuditDict, base: str) -> Iterator[str]:
    yield "# Data audit"
    yield ""
    yield (f"{result['n_records']} records, {result['n_files']} distinct files, {result['n_audited']} audited"
           f"{' (random sample)' if result['sampled'] else ''}; sources: {', '.join(result['sources'])}; "
           f"{result['seconds']} s.")
    if base:
        yield f"Paths below are relative to `{base}`."
    yield ""


def _balance_section(result: AuditDict) -> Iterator[str]:
    yield "## Class balance"
    yield ""
    yield "| source | split | NORMAL | PNEUMONIA | unknown | total | PNEUMONIA share |"
    yield "|---|---|---:|---:|---:|---:|---:|"
    for row in result["class_balance"]:
        frac = "-" if row["pneumonia_fraction"] is None else f"{row['pneumonia_fraction']:.1%}"
        yield (f"| {row['source']} | {row['split']} | {row['normal']} | {row['pneumonia']} | {row['unknown']} | "
               f"{row['total']} | {frac} |")
    yield ""


def _group_line(group: AuditDict, base: str) -> str:
    flags = [k.replace("cross_", "across ") + "s" for k in ("cross_split", "cross_label", "cross_source")
             if group[k]]
    where = f"splits {'/'.join(group['splits'])}, labels {'/'.join(group['labels'])}"
    files = ", ".join(f"`{_rel(f, base)}`" for f in group["files"])
    dist = f"distance {group['distance']}: " if "distance" in group else ""
    return f"- {dist}{files} ({where}){' **' + ', '.join(flags) + '**' if flags else ''}"


def _duplicates_section(result: AuditDict, base: str, max_listed: int) -> Iterator[str]:
    exact, near = result["exact_duplicates"], result["near_duplicates"]
    yield "## Exact duplicates (identical bytes, SHA-256)"
    yield ""
    yield (f"{exact['n_groups']} groups, {exact['n_files']} files; across splits: {exact['n_cross_split']}, "
           f"across labels: {exact['n_cross_label']}, across sources: {exact['n_cross_source']}.")
    yield ""
    yield from _listed(exact["groups"], base, max_listed)
    yield f"## Near duplicates ({near['hash']}; Hamming distance <= {near['max_distance']})"
    yield ""
    yield (f"{near['n_pairs']} pairs ({near['n_identical_pairs']} byte-identical, {near['n_similar_pairs']} only "
           f"perceptually similar) in {near['n_groups']} groups of {near['n_files']} files; pairs across splits: "
           f"{near['n_cross_split_pairs']}, across labels: {near['n_cross_label_pairs']}, across sources: "
           f"{near['n_cross_source_pairs']}. Pairs by distance: {near['distance_histogram'] or '-'}.")
    yield ""
    yield from _listed([p for p in near["pairs"] if not p["identical"]], base, max_listed)


def _listed(groups: Sequence[AuditDict], base: str, max_listed: int) -> Iterator[str]:
    ordered = sorted(groups, key=lambda g: (not g["cross_split"], not g["cross_label"]))
    for g in ordered[:max_listed]:
        yield _group_line(g, base)
    if len(groups) > max_listed:
        yield f"- ... {len(groups) - max_listed} more (see audit.json)"
    if groups:
        yield ""


def _patients_section(result: AuditDict, max_listed: int) -> Iterator[str]:
    pat = result["patients"]
    yield "## Patients in more than one split"
    yield ""
    yield (f"{pat['n_multi_split']} of {pat['n_patients']} patients with a known id; by splits: "
           f"{pat['by_splits'] or '-'}.")
    if pat["images_without_patient_id"]:
        yield (f"Images without a patient id (each counted as its own patient, so a leak cannot be seen): "
               f"{pat['images_without_patient_id']}.")
    shown = pat["patients"][:max_listed]
    if shown:
        yield ""
        more = len(pat["patients"]) - len(shown)
        yield ", ".join(f"{p['source']}:{p['patient_id']} ({', '.join(p['subtypes'])})" for p in shown) + \
            (f", ... {more} more (see audit.json)" if more else "")
    yield ""


def _unreadable_section(result: AuditDict, base: str, max_listed: int) -> Iterator[str]:
    bad = result["unreadable"]
    yield f"## Unreadable files: {len(bad)}"
    yield ""
    for u in bad[:max_listed]:
        yield f"- `{_rel(u['path'], base)}`: {u['reason']}"
    if bad:
        yield ""


def _stats_section(result: AuditDict) -> Iterator[str]:
    stats = result["image_stats"]
    yield "## Image properties (readable files)"
    yield ""
    if not stats:
        yield "No readable image."
        return
    for key in ("formats", "bits_stored", "photometric", "channels", "common_sizes"):
        yield f"- {key.replace('_', ' ')}: {stats[key]}"
    yield (f"- width {stats['width']}, height {stats['height']}, {stats['n_distinct_sizes']} distinct sizes"
           f"; file bytes {stats['bytes']}")
