"""Score a whole archive: ``pneumoscan batch`` on Ray Data, resumable and exactly-once (the ``batch`` extra).

- :mod:`pneumoscan.batch.inputs`: manifest (CSV/Parquet) or folder tree -> the images to score.
- :mod:`pneumoscan.batch.pipeline`: Ray Data pipeline (decode tasks -> model actors) and the driver loop.
- :mod:`pneumoscan.batch.sink`: the Parquet shard folder, its atomic commits and what is already done.

Importing this package imports neither Ray nor pyarrow; they are needed only when a run starts, and a missing one
raises :class:`~pneumoscan.errors.MissingDependencyError` with ``pip install "pneumoscan[batch]"``.
"""

from __future__ import annotations

from pneumoscan.errors import require

#: Modules the ``batch`` extra provides.
BATCH_MODULES = ("ray", "ray.data", "pyarrow", "pyarrow.parquet")


def require_batch_deps() -> None:
    """Import Ray Data and pyarrow, or raise ``MissingDependencyError`` naming the ``batch`` extra."""
    for module in BATCH_MODULES:
        require(module, "batch")
