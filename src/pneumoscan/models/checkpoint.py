"""Checkpoints: plain Python types + tensors only, so ``torch.load(weights_only=True)`` reads them safely.

Format (``format_version`` 1)::

    {format_version, model: {name, num_classes, in_chans}, state_dict, optimizer, scheduler, scaler, epoch,
     best_metric, config, class_names, preprocess, threshold, threshold_rule, operating_points, temperature,
     rng, history, version, created}

Files are written atomically (temp file + ``os.replace``): an interrupted save never leaves a truncated checkpoint.
A process killed during the save (``kill -9``, out of memory, power loss) cannot remove its temp file
``.<name>.<pid>.tmp``; :func:`remove_stale_temp_files` does, when the run is resumed. Temp names start with a dot and
end in ``.tmp``, so nothing that looks for ``*.pt`` ever takes one for a checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pneumoscan.core.atomic import atomic_path
from pneumoscan.errors import CheckpointError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "state_dict", "preprocess", "class_names")


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


#: Temp files of an atomic write (core.atomic) in a run folder: ``.last.pt.<pid>.tmp``, ``.metrics.csv.<pid>.tmp``.
TEMP_FILE = re.compile(r"^\.[^/]+?(\.\d+)?\.tmp$")


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temp files that killed saves left in ``run_dir`` (call it when no other process writes there).

    Returns:
        The removed files (logged with their size: a checkpoint's temp file can be as large as the checkpoint).
    """
    removed = []
    for entry in sorted(Path(run_dir).iterdir()):
        if not TEMP_FILE.match(entry.name) or not entry.is_file() or entry.is_symlink():
            continue
        try:
            size = entry.stat().st_size
            entry.unlink()
        except FileNotFoundError:  # pragma: no cover - removed meanwhile (another rank of a distributed resume)
            continue
        logger.info("removed %s (%.1f MB) left by an interrupted save", entry, size / 1e6)
        removed.append(entry)
    return removed


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, not a torch checkpoint, truncated, contains arbitrary pickled objects, or
            lacks required keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load (not a plain-data checkpoint: {_first_line(err)})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(err)})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a pneumoscan checkpoint (top level is {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a pneumoscan checkpoint (missing {', '.join(missing)})")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {state['format_version']} is newer than this pneumoscan supports")
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` (DistributedDataParallel) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def file_digest(path: str | Path, length: int = 10) -> str:
    """Short sha256 of a file, used as the model version."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def build_model_from_checkpoint(state: Mapping[str, Any]) -> torch.nn.Module:
    """Re-create the architecture recorded in the checkpoint and load its weights (eval mode)."""
    from pneumoscan.models import create_model

    info = state["model"]
    model = create_model(info["name"], in_chans=int(info.get("in_chans", 1)),
                         num_classes=int(info.get("num_classes", 1)))
    try:
        model.load_state_dict(clean_state_dict(state["state_dict"]))
    except RuntimeError as err:
        raise CheckpointError(f"weights do not fit architecture '{info['name']}': {str(err).splitlines()[0]}") \
            from err
    return model.eval()
