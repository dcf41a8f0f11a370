"""Atomic file writes: a reader sees the old file or the whole new one, never half of it, even after a kill -9 or a
power loss.

Every writer in pneumoscan goes through here (a test keeps ``os.replace`` out of every other module). The recipe:

1. create a temporary file next to the target (same folder, so same file system): ``.<name>.<pid>.tmp`` (or
   ``.<name>.<pid>-<random>.tmp`` when that name is taken, e.g. by another thread). The dot hides it from globs
   such as ``*.pt``; the checkpoint module's ``remove_stale_temp_files`` and the batch sink recognise these names
   and remove what a killed process left;
2. write it, flush, ``fsync`` it;
3. ``os.replace`` it over the target (atomic on POSIX);
4. ``fsync`` the folder, so that the rename itself survives a power loss (best effort: skipped where folders cannot
   be opened).

On any failure (the writer raises, the disk is full, Ctrl-C) the temporary file is removed and the exception
propagates; the target is untouched.

Permissions: ``mode=None`` gives what a plain ``open(path, "w")`` gives (``0o666`` less the umask); a ``mode`` is set
exactly, whatever the umask (the DICOM node writes patient data ``0o600``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fd, tmp = _create_temp(path, "", mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, *, mode: int | None = None, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)


@contextmanager
def atomic_path(path: str | Path, *, mode: int | None = None, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for writers that need a file name (``torch.save``, ``np.save``,
    ``onnx.save_model``, ...); when the block ends without an exception it is fsynced and moved over ``path``.

    The temporary file exists (empty) when the block starts; the writer may truncate or recreate it. ``suffix`` is
    added to its name for writers that look at the extension. Work done on the file inside the block (e.g. loading
    it to check it) happens before the target is replaced: raise to keep the old target.

    Example::

        with atomic_path(run_dir / "last.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    fd, tmp = _create_temp(path, suffix, mode)
    os.close(fd)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)  # a writer that recreated the file got the umask's permissions
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _create_temp(path: Path, suffix: str, mode: int | None) -> tuple[int, Path]:
    """Create (exclusively, never following a link) the temporary file for ``path``; returns its fd and path."""
    pid = os.getpid()
    for attempt in range(100):
        tag = str(pid) if attempt == 0 else f"{pid}-{secrets.token_hex(4)}"
        tmp = path.with_name(f".{path.name}.{tag}.tmp{suffix}")
        try:
            fd = os.open(tmp, _FLAGS, 0o666 if mode is None else mode)
        except FileExistsError:
            continue
        if mode is not None:
            try:
                os.fchmod(fd, mode)  # exactly ``mode``: os.open applied the umask
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
        return fd, tmp
    raise FileExistsError(f"{path}: no free temporary file name next to it")  # pragma: no cover - 100 collisions


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so that a rename in it is durable; best effort (some platforms cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # file systems that refuse fsync on a folder
        pass
    finally:
        os.close(fd)
