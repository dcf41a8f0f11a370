"""The DICOMweb poller: QIDO-RS to find chest radiographs, WADO-RS to fetch them, STOW-RS to store the results.

Where a PACS offers DICOMweb (Orthanc with its DICOMweb plugin, dcm4chee, Google Healthcare, ...) pneumoscan needs
no inbound DICOM port: it asks for CR/DX series, scores each instance it has not scored yet, and stores the SR (and
the Grad-CAM Secondary Capture) back into the same study.

Idempotence: a small SQLite file remembers every SOP Instance UID whose results the PACS has accepted, so a second
poll scores nothing twice; an instance is remembered only *after* STOW-RS succeeded (a crash in between means one
more STOW of the same deterministic UIDs, which the PACS treats as the same instance). A fetch or store failure is
logged and retried at the next poll. An instance the model cannot read gets an SR saying so, like at the node.
"""

from __future__ import annotations

import io
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pneumoscan.dicomnode.conformance import ACCEPTED_SOP_CLASSES, CHEST_MODALITIES
from pneumoscan.dicomnode.queue import atomic_write_bytes
from pneumoscan.dicomnode.report import build_heatmap_sc, build_sr
from pneumoscan.dicomnode.scoring import Outcome, Scorer
from pneumoscan.errors import ConfigError, PneumoError, require

logger = logging.getLogger(__name__)

# DICOM JSON tags (PS3.18 F.2) read from QIDO-RS answers.
_STUDY_UID, _SERIES_UID, _SOP_UID, _SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"


@dataclass(frozen=True)
class InstanceRef:
    """Where one instance lives on the DICOMweb server."""

    study: str
    series: str
    sop_instance_uid: str
    sop_class_uid: str


class ScoredMemory:
    """The SQLite record of instances whose results the server accepted.

    Args:
        path: the SQLite file (created with its parent folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS scored (sop_instance_uid TEXT PRIMARY KEY, "
                               "study_uid TEXT, series_uid TEXT, status TEXT, result_uids TEXT, scored_at REAL)")
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{self.path}: not a usable pneumoscan state database ({err})") from err

    def seen(self, sop_instance_uid: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM scored WHERE sop_instance_uid = ?",
                                      (sop_instance_uid,)).fetchone() is not None

    def remember(self, ref: InstanceRef, status: str, result_uids: list[str]) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO scored VALUES (?, ?, ?, ?, ?, ?)",
                               (ref.sop_instance_uid, ref.study, ref.series, status, " ".join(result_uids),
                                time.time()))

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM scored").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _value(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def connect(url: str) -> Any:
    """A dicomweb-client for ``url`` (the service root, e.g. ``http://pacs:8042/dicom-web``)."""
    web = require("dicomweb_client.api", "dicom-node")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url '{url}': expected the http(s) root of a DICOMweb service")
    client = web.DICOMwebClient(url=url.rstrip("/"))  # type: ignore[attr-defined]
    # Few, quick retries: a poll that fails is simply retried at the next poll.
    client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=200)
    return client


def find_instances(client: Any, *, study: str | None = None, since: date | None = None) -> list[InstanceRef]:
    """QIDO-RS: every CR/DX instance of ``study``, or of the studies from ``since`` on, or of all studies."""
    if study:
        studies = [study]
    else:
        filters = {"StudyDate": f"{since:%Y%m%d}-"} if since else {}
        studies = [_value(s, _STUDY_UID) for s in client.search_for_studies(search_filters=filters,
                                                                            get_remaining=True)]
    refs: list[InstanceRef] = []
    for study_uid in filter(None, studies):
        for modality in CHEST_MODALITIES:
            for series in client.search_for_series(study_instance_uid=study_uid,
                                                   search_filters={"Modality": modality}, get_remaining=True):
                series_uid = _value(series, _SERIES_UID)
                for inst in client.search_for_instances(study_instance_uid=study_uid,
                                                        series_instance_uid=series_uid, get_remaining=True):
                    ref = InstanceRef(study_uid, series_uid, _value(inst, _SOP_UID), _value(inst, _SOP_CLASS))
                    if ref.sop_class_uid in ACCEPTED_SOP_CLASSES or not ref.sop_class_uid:
                        refs.append(ref)
    return list(dict.fromkeys(refs))


def _encode(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass
class PollStats:
    """What one poll did."""

    found: int = 0
    skipped: int = 0
    scored: int = 0
    failed: int = 0


def poll_once(client: Any, scorer: Scorer, memory: ScoredMemory, *, study: str | None = None,
              since: date | None = None, output: Path | None = None) -> PollStats:
    """One QIDO → WADO → score → STOW round over the instances not yet in ``memory``."""
    stats = PollStats()
    refs = find_instances(client, study=study, since=since)
    stats.found = len(refs)
    for ref in refs:
        if memory.seen(ref.sop_instance_uid):
            stats.skipped += 1
            continue
        try:
            status = _score_one(client, scorer, memory, ref, output)
        except PneumoError as err:
            stats.failed += 1
            logger.warning("%s: %s; retried at the next poll", ref.sop_instance_uid, err)
            continue
        except Exception as err:  # broad on purpose: HTTP/transport errors of any kind; retried next poll
            stats.failed += 1
            logger.warning("%s: DICOMweb request failed (%s); retried at the next poll", ref.sop_instance_uid,
                           type(err).__name__)
            continue
        stats.scored += 1
        logger.info("%s: %s, results stored", ref.sop_instance_uid, status)
    return stats


def _score_one(client: Any, scorer: Scorer, memory: ScoredMemory, ref: InstanceRef, output: Path | None) -> str:
    ds = client.retrieve_instance(ref.study, ref.series, ref.sop_instance_uid)
    data = _encode(ds)
    header = ds.copy()
    if "PixelData" in header:
        del header.PixelData
    outcome: Outcome = scorer.score([(ref.sop_instance_uid, data, header)])[0]
    results = [build_sr(outcome, header)]
    if scorer.heatmap and outcome.status == "ok":
        try:
            results.append(build_heatmap_sc(outcome, header, scorer.overlay(data, ref.sop_instance_uid)))
        except (PneumoError, ValueError) as err:
            logger.warning("%s: no heatmap (%s)", ref.sop_instance_uid, type(err).__name__)
    client.store_instances(datasets=results, study_instance_uid=ref.study)
    if output is not None:
        for ds_out, suffix in zip(results, (".sr.dcm", ".heatmap.dcm"), strict=False):
            atomic_write_bytes(output / f"{ref.sop_instance_uid}{suffix}", _encode(ds_out))
    memory.remember(ref, outcome.status, [str(r.SOPInstanceUID) for r in results])
    return outcome.status


def poll(client: Any, scorer: Scorer, memory: ScoredMemory, *, interval: float | None, study: str | None = None,
         since: date | None = None, output: Path | None = None, max_polls: int | None = None,
         should_stop: Callable[[], bool] = lambda: False) -> PollStats:
    """Poll once (``interval`` None) or every ``interval`` seconds until ``should_stop`` or ``max_polls``.

    A failed QIDO query (server down) is logged and retried at the next interval instead of ending the loop.
    Returns the totals over all polls.
    """
    total = PollStats()
    polls = 0
    while True:
        try:
            stats = poll_once(client, scorer, memory, study=study, since=since, output=output)
        except Exception as err:  # broad on purpose: the server may be down; keep polling
            if interval is None:
                raise PneumoError(f"DICOMweb query failed ({type(err).__name__}: {err})") from err
            logger.warning("DICOMweb query failed (%s); next poll in %.0f s", type(err).__name__, interval)
            stats = PollStats()
        for key in ("found", "skipped", "scored", "failed"):
            setattr(total, key, getattr(total, key) + getattr(stats, key))
        logger.info("poll: %d found, %d already scored, %d scored now, %d failed", stats.found, stats.skipped,
                    stats.scored, stats.failed)
        polls += 1
        if interval is None or (max_polls is not None and polls >= max_polls):
            return total
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline:
            if should_stop():
                return total
            time.sleep(min(0.5, interval))
