"""Atomic writes: content, permissions, durability (fsync of file and folder), clean-up on failure, and the rule that
no other module in ``src/`` renames files into place by hand."""

from __future__ import annotations

import ast
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pneumoscan.core import atomic
from pneumoscan.core.atomic import atomic_path, atomic_write_bytes, atomic_write_text

SRC = Path(__file__).resolve().parents[2] / "src" / "pneumoscan"


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_write_bytes_and_text(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    assert atomic_write_bytes(target, b"\x00\x01abc") == target
    assert target.read_bytes() == b"\x00\x01abc"
    atomic_write_text(str(tmp_path / "b.txt"), "héllo\r\nwörld")  # str paths too; no newline translation
    assert (tmp_path / "b.txt").read_bytes() == "héllo\r\nwörld".encode()
    atomic_write_text(tmp_path / "c.txt", "é", encoding="latin-1")
    assert (tmp_path / "c.txt").read_bytes() == b"\xe9"
    assert _siblings(target) == ["a.bin", "b.txt", "c.txt"]  # no temporary file left behind


def test_overwrites_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _siblings(target) == ["x.json"]


@pytest.mark.parametrize("mask, mode, expected", [
    (0o022, None, 0o644),  # what a plain open() gives
    (0o077, None, 0o600),
    (0o000, 0o600, 0o600),  # an explicit mode ignores the umask
    (0o077, 0o644, 0o644),
])
def test_mode(tmp_path: Path, umask: None, mask: int, mode: int | None, expected: int) -> None:
    os.umask(mask)
    a, b = tmp_path / "a", tmp_path / "b"
    atomic_write_bytes(a, b"x", mode=mode)
    with atomic_path(b, mode=mode) as tmp:
        tmp.write_bytes(b"y")
    assert _mode(a) == expected and _mode(b) == expected


def test_mode_replaces_the_old_files_mode(tmp_path: Path, umask: None) -> None:
    os.umask(0o022)
    target = tmp_path / "t"
    target.write_bytes(b"old")
    target.chmod(0o600)
    atomic_write_bytes(target, b"new")
    assert _mode(target) == 0o644


def test_atomic_path_mode_survives_a_writer_that_recreates_the_file(tmp_path: Path, umask: None) -> None:
    os.umask(0o022)
    target = tmp_path / "t"
    with atomic_path(target, mode=0o600) as tmp:
        tmp.unlink()
        tmp.write_bytes(b"recreated")  # 0o644 from the umask
    assert target.read_bytes() == b"recreated" and _mode(target) == 0o600


def test_atomic_path_replaces_only_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with atomic_path(target, suffix=".onnx") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.onnx.") and tmp.name.endswith(".tmp.onnx")
        assert tmp.is_file() and tmp.stat().st_size == 0  # reserved, empty
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # a check inside the block still sees the old target
    assert target.read_bytes() == b"new" and _siblings(target) == ["model.onnx"]


def test_temp_name_is_hidden_with_the_pid(tmp_path: Path) -> None:
    seen = []
    with atomic_path(tmp_path / "last.pt") as tmp:
        seen.append(tmp.name)
    assert seen == [f".last.pt.{os.getpid()}.tmp"]


def test_writer_raising_midway_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "best.pt"
    target.write_bytes(b"good checkpoint")

    def writer(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(b"half a check")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(target) as tmp:
        writer(tmp)
    assert target.read_bytes() == b"good checkpoint"
    assert _siblings(target) == ["best.pt"]


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "t"):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_failed_fsync_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "queue.dcm"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(target, b"new data")
    with pytest.raises(OSError, match="No space"), atomic_path(target) as tmp:
        tmp.write_bytes(b"new data")
    assert target.read_bytes() == b"old" and _siblings(target) == ["queue.dcm"]


def test_failed_replace_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(OSError):  # a non-empty folder cannot be replaced by a file
        atomic_write_bytes(target, b"x")
    assert _siblings(target) == ["dir"]


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    kinds: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return kinds


def test_file_and_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = _record_fsyncs(monkeypatch)
    atomic_write_bytes(tmp_path / "a", b"x")
    assert kinds == ["file", "dir"]
    kinds.clear()
    with atomic_path(tmp_path / "b") as tmp:
        tmp.write_bytes(b"y")
        assert kinds == []
    assert kinds == ["file", "dir"]


def test_folder_fsync_is_best_effort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "a", b"x")
    assert (tmp_path / "a").read_bytes() == b"x"


def test_a_taken_temp_name_is_not_reused(tmp_path: Path) -> None:
    """Another writer's temp file (another thread, or a dead process whose pid came back) is left alone."""
    target = tmp_path / "t"
    other = tmp_path / f".t.{os.getpid()}.tmp"
    other.write_bytes(b"another writer")
    atomic_write_bytes(target, b"mine")
    assert target.read_bytes() == b"mine" and other.read_bytes() == b"another writer"
    assert _siblings(target) == [other.name, "t"]


def test_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / f".t.{os.getpid()}.tmp").symlink_to(victim)
    atomic_write_bytes(tmp_path / "t", b"data")
    assert victim.read_bytes() == b"precious" and (tmp_path / "t").read_bytes() == b"data"


def test_module_imports_nothing_of_pneumoscan() -> None:
    tree = ast.parse(Path(atomic.__file__).read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("pneumoscan")]


# Calls that move a file into place or make a temp file by hand. The one exception: the MedMNIST loader publishes a
# whole *folder* of PNGs with os.rename (and keeps another process's folder if it won the race): not a file write.
_FORBIDDEN = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move"), ("tempfile", "mkstemp"),
              ("tempfile", "NamedTemporaryFile")}
_ALLOWED = {("core/atomic.py", "os.replace"), ("data/sources/medmnist.py", "os.rename")}


def _calls(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil", "tempfile"):
            for alias in node.names:
                if (node.module, alias.name) in _FORBIDDEN:
                    yield node.lineno, f"{node.module}.{alias.name}"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in _FORBIDDEN):
            yield node.lineno, f"{node.func.value.id}.{node.func.attr}"


def test_no_hand_written_atomic_writes_outside_core() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50 and SRC / "core" / "atomic.py" in files
    found = [f"{p.relative_to(SRC)}:{line}: {call}" for p in files for line, call in _calls(p)
             if (p.relative_to(SRC).as_posix(), call) not in _ALLOWED]
    assert not found, ("write files with pneumoscan.core.atomic (atomic_write_bytes / atomic_write_text / "
                       "atomic_path), not by hand:\n" + "\n".join(found))


def test_the_rule_catches_a_hand_written_replace(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom os import replace\n\ndef f(a, b):\n    os.replace(a, b)\n    'os.replace(x)'\n")
    assert list(_calls(bad)) == [(2, "os.replace"), (5, "os.replace")]
