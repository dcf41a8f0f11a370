"""The durable work queue: a received instance is on disk and in SQLite before the sender hears "success".

Why this shape:

- The C-STORE handler only writes the file (atomically: temporary file, fsync, rename) and inserts one row, then
  answers; scoring happens in a worker thread. A burst of studies therefore never holds an association open for the
  duration of a model run.
- Every row is keyed by the source SOP Instance UID (PRIMARY KEY), so an instance sent twice is scored once.
- The results a row produces (the SR and the Secondary Capture) get UIDs derived deterministically from the source
  UID and the model version (:func:`result_uid`). If the process is killed after writing a result but before
  recording it, the rerun writes the *same* UIDs, so neither the output folder nor the PACS ever holds two results
  for one instance: results are exactly-once even though delivery to the PACS is at-least-once.
- On start-up, files in ``incoming/`` without a row (killed between the rename and the insert; the sender never got
  a success and will normally resend) are enqueued, so nothing that reached the disk is dropped.

States: ``pending`` (received, not scored) → ``scored`` (results written to the output folder, waiting to be
forwarded) → ``done``. SQLite runs in WAL mode with ``synchronous=FULL`` so that a committed row survives a kill -9.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pneumoscan.core import atomic
from pneumoscan.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    status TEXT,
    result_paths TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    forward_attempts INTEGER NOT NULL DEFAULT 0,
    next_forward REAL NOT NULL DEFAULT 0,
    error TEXT,
    received_at REAL NOT NULL,
    scored_at REAL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS instances_state ON instances (state, received_at);
"""
STATES = ("pending", "scored", "done")


@dataclass(frozen=True)
class QueueItem:
    """One queued instance."""

    sop_instance_uid: str
    sop_class_uid: str
    path: Path
    source: str
    state: str
    status: str | None
    result_paths: tuple[Path, ...]
    attempts: int
    forward_attempts: int


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent or complete, even after a kill -9 or power loss
    (:func:`pneumoscan.core.atomic.atomic_write_bytes`), readable by the owner only (patient data), creating the
    folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.atomic_write_bytes(path, data, mode=0o600)


class WorkQueue:
    """SQLite-backed queue of received instances, safe to use from the SCP's association threads and the worker.

    Args:
        db_path: the SQLite file (created with its parent folder).
    """

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{self.db_path}: not a usable pneumoscan queue database ({err})") from err

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def add(self, sop_instance_uid: str, sop_class_uid: str, path: Path, source: str = "") -> bool:
        """Enqueue an instance whose file is already on disk. Returns False when the UID was already known (the
        instance is then not scored again)."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO instances (sop_instance_uid, sop_class_uid, path, source, received_at) "
                "VALUES (?, ?, ?, ?, ?)", (sop_instance_uid, sop_class_uid, str(path), source, time.time()))
            return cur.rowcount == 1

    def state_of(self, sop_instance_uid: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT state FROM instances WHERE sop_instance_uid = ?",
                                     (sop_instance_uid,)).fetchone()
        return None if row is None else str(row[0])

    def pending(self, limit: int) -> list[QueueItem]:
        """Up to ``limit`` unscored instances, oldest first."""
        return self._select("WHERE state = 'pending' ORDER BY received_at LIMIT ?", (limit,))

    def to_forward(self, limit: int, now: float | None = None) -> list[QueueItem]:
        """Scored instances whose results are due to be (re)sent to the PACS."""
        now = time.time() if now is None else now
        return self._select("WHERE state = 'scored' AND next_forward <= ? ORDER BY scored_at LIMIT ?", (now, limit))

    def item(self, sop_instance_uid: str) -> QueueItem | None:
        items = self._select("WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return items[0] if items else None

    def all_items(self) -> list[QueueItem]:
        return self._select("ORDER BY received_at", ())

    def _select(self, where: str, params: tuple[object, ...]) -> list[QueueItem]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT sop_instance_uid, sop_class_uid, path, source, state, status, result_paths, attempts, "
                f"forward_attempts FROM instances {where}", params).fetchall()
        return [QueueItem(r[0], r[1], Path(r[2]), r[3], r[4], r[5],
                          tuple(Path(p) for p in r[6].split("\n") if p), int(r[7]), int(r[8])) for r in rows]

    def claim(self, sop_instance_uid: str) -> None:
        """Count one scoring attempt before it starts, so that an instance that kills the process every time it is
        scored is recognised at restart (see ``node.MAX_ATTEMPTS``) instead of crashing the node forever."""
        with self._tx() as conn:
            conn.execute("UPDATE instances SET attempts = attempts + 1 WHERE sop_instance_uid = ?",
                         (sop_instance_uid,))

    def mark_scored(self, sop_instance_uid: str, status: str, result_paths: list[Path], *, forward: bool,
                    error: str | None = None) -> None:
        """Record the results of one instance: ``scored`` when they still have to be forwarded, else ``done``."""
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "UPDATE instances SET state = ?, status = ?, result_paths = ?, error = ?, scored_at = ?, "
                "done_at = ? WHERE sop_instance_uid = ?",
                ("scored" if forward else "done", status, "\n".join(str(p) for p in result_paths), error, now,
                 None if forward else now, sop_instance_uid))

    def mark_forwarded(self, sop_instance_uid: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE instances SET state = 'done', done_at = ? WHERE sop_instance_uid = ?",
                         (time.time(), sop_instance_uid))

    def forward_failed(self, sop_instance_uid: str, error: str, max_delay: float = 60.0) -> float:
        """Schedule a retry with exponential back-off; returns the delay in seconds."""
        item = self.item(sop_instance_uid)
        attempts = item.forward_attempts + 1 if item else 1
        delay = min(max_delay, 2.0 ** min(attempts, 10))
        with self._tx() as conn:
            conn.execute("UPDATE instances SET forward_attempts = ?, next_forward = ?, error = ? "
                         "WHERE sop_instance_uid = ?", (attempts, time.time() + delay, error, sop_instance_uid))
        return delay

    def counts(self) -> dict[str, int]:
        """Number of instances in each state (every state present, zero when empty)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM instances GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({str(s): int(n) for s, n in rows})
        return out

    def known_paths(self) -> set[str]:
        with self._lock:
            return {str(r[0]) for r in self._conn.execute("SELECT path FROM instances").fetchall()}
