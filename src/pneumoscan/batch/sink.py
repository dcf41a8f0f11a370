"""The scored archive on disk: a folder of Parquet shards, committed atomically, that is its own record of progress.

Layout of ``OUT.parquet/`` (a folder, as Spark, Ray and pandas write and read "a Parquet data set")::

    _run.json                 model, version, backend, input, created; checked on resume
    part-000000-<id>.parquet  rows, committed one shard at a time
    part-000001-<id>.parquet
    .part-….tmp               a shard being written (ignored and removed on the next start)

Why this is exactly-once: a shard becomes visible only through ``os.replace`` of a fully written and fsynced
temporary file, so a killed run leaves either the whole shard or none of it. On restart the done set is read back
from the committed shards themselves (their ``path`` column) — not from a separate list that a crash between two
writes could leave disagreeing with them — and only the rest is scored. Within one run each input path is handed to
the pipeline once and a row is written only for a path not already done, so no path is ever written twice.

``pyarrow.parquet.read_table("OUT.parquet")`` and ``pandas.read_parquet("OUT.parquet")`` read the whole folder;
the model's description (threshold rule, operating points, temperature) is also stored in every shard's schema
metadata under ``pneumoscan``, so the archive alone is enough to evaluate it (``pneumoscan evaluate --predictions``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pneumoscan.core.atomic import atomic_path, atomic_write_bytes
from pneumoscan.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

RUN_FILE = "_run.json"
SHARD_GLOB = "part-*.parquet"
SCHEMA_METADATA_KEY = b"pneumoscan"

#: Output columns, in order, before the passthrough columns: (name, pyarrow type name).
CORE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "string"),
    ("probability", "float64"),
    ("label", "string"),
    ("threshold", "float64"),
    ("population", "string"),
    ("status", "string"),
    ("reason", "string"),
    ("model", "string"),
    ("model_version", "string"),
    ("backend", "string"),
    ("error", "string"),
    ("true_label", "int64"),
    ("group", "string"),
)
CORE_NAMES = tuple(name for name, _ in CORE_COLUMNS)


def passthrough_name(column: str) -> str:
    """Output name of a manifest column: as is, or ``input_<name>`` when it would hide one of ours."""
    return f"input_{column}" if column in CORE_NAMES else column


def arrow_schema(extra_columns: Sequence[str], model_meta: Mapping[str, Any]) -> Any:
    """The shards' schema: :data:`CORE_COLUMNS`, then the passthrough columns as strings; model info as metadata."""
    import pyarrow as pa

    fields = [pa.field(name, getattr(pa, kind)()) for name, kind in CORE_COLUMNS]
    fields += [pa.field(passthrough_name(c), pa.string()) for c in extra_columns]
    return pa.schema(fields, metadata={SCHEMA_METADATA_KEY: json.dumps(dict(model_meta), sort_keys=True)})


class ShardSink:
    """Writes rows to ``OUT.parquet/`` shard by shard and knows which paths are already there.

    Args:
        root: the output folder (``OUT.parquet``); created if needed.
        run: what this run is (model name, version, backend, input); a folder written by another model version is
            refused, because mixing two models' scores in one archive would make its evaluation meaningless.
        schema: from :func:`arrow_schema`.
    """

    def __init__(self, root: str | Path, run: Mapping[str, Any], schema: Any) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root}: exists and is a file; --output names a folder of Parquet shards")
        self.root.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._lock = _lock(self.root / ".lock")
        for stale in self.root.glob(".part-*.tmp"):  # an interrupted shard: its rows are not done
            stale.unlink(missing_ok=True)
        self._check_run(dict(run))
        self.shards = sorted(self.root.glob(SHARD_GLOB))
        self.done = read_done_paths(self.shards)
        self._next = len(self.shards)

    def _check_run(self, run: dict[str, Any]) -> None:
        meta = self.root / RUN_FILE
        if meta.is_file():
            try:
                old = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise DataError(f"{meta}: unreadable ({err}); remove the folder to start over") from err
            if old.get("model_version") != run.get("model_version"):
                raise ConfigError(f"{self.root} holds scores of model {old.get('model_version')}, not "
                                  f"{run.get('model_version')}: use another --output (one archive, one model)")
            return
        atomic_write_bytes(meta, json.dumps({**run, "created": datetime.now(UTC).isoformat(timespec="seconds")},
                                            indent=2, sort_keys=True).encode("utf-8"))

    def close(self) -> None:
        """Release the archive's writer lock (also released when the process ends, however it ends)."""
        self._lock.close()

    def write(self, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Commit ``rows`` (dicts keyed by column name) as one new shard; rows whose path is done are dropped."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        fresh = [r for r in rows if r["path"] not in self.done]
        if len(fresh) < len(rows):
            logger.warning("%d rows already in %s were not written again", len(rows) - len(fresh), self.root)
        if not fresh:
            return None
        table = pa.Table.from_pylist([{name: r.get(name) for name in self.schema.names} for r in fresh],
                                     schema=self.schema)
        name = f"part-{self._next:06d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(self.root / name) as tmp, tmp.open("wb") as fh:
            pq.write_table(table, fh, compression="zstd")
        self._next += 1
        self.shards.append(self.root / name)
        self.done.update(r["path"] for r in fresh)
        return self.root / name


def read_done_paths(shards: Sequence[Path]) -> set[str]:
    """The ``path`` column of every committed shard."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    for shard in shards:
        try:
            done.update(pq.read_table(shard, columns=["path"]).column("path").to_pylist())
        except Exception as err:  # a committed shard is complete by construction; anything else was put there
            raise DataError(f"{shard}: unreadable Parquet shard ({err}); move it away and rerun") from err
    return done


def read_archive(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The scored archive (a shard folder or one Parquet file) as a pyarrow Table, and the model's metadata.

    Raises:
        DataError: no such archive, no shards, or not readable as Parquet.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(path.glob(SHARD_GLOB)) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise DataError(f"{path}: no scored archive here (expected a folder of {SHARD_GLOB} or a .parquet file)")
    try:
        tables = [pq.read_table(f) for f in files]
        table = pa.concat_tables(tables, promote_options="permissive")
    except Exception as err:  # ArrowInvalid, OSError, ...
        raise DataError(f"{path}: not a readable Parquet archive ({err})") from err
    raw = (tables[0].schema.metadata or {}).get(SCHEMA_METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    return table, meta


def _lock(path: Path) -> Any:
    """Hold an exclusive lock on ``path`` for the life of the returned file: one writer per archive."""
    import fcntl

    fh = path.open("a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        fh.close()
        raise ConfigError(f"{path.parent}: another pneumoscan batch run is writing here") from err
    return fh

