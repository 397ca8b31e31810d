"""avsnet_ros.fileio: atomic writes keep the old file on any failure and leave no temp files behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from avsnet_ros.fileio import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_and_replaces_without_leftovers(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"\x00\x01old")
    assert target.read_bytes() == b"\x00\x01old"
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    atomic_write_text(tmp_path / "t.txt", "Tiefe 3 m \u2248 ok\n")
    assert (tmp_path / "t.txt").read_bytes() == "Tiefe 3 m \u2248 ok\n".encode("utf-8")
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": [1.5, None]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1.5, None], "b": 1}
    with atomic_open(tmp_path / "rows.csv", "w", newline="") as fh:
        fh.write("x,y\r\n1,2\r\n")
    assert (tmp_path / "rows.csv").read_bytes() == b"x,y\r\n1,2\r\n"
    assert _entries(tmp_path) == ["a.bin", "j.json", "rows.csv", "t.txt"]


def test_permissions_follow_the_umask_like_open(tmp_path):
    # Reference: a file created by plain open() in the same folder (mkstemp would give 0600).
    (tmp_path / "plain").write_bytes(b"x")
    atomic_write_bytes(tmp_path / "atomic", b"x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_exception_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "log.csv"
    target.write_text("old content\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(target, "w") as fh:
            fh.write("half of the new ")
            fh.flush()
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old content\n"
    assert _entries(tmp_path) == ["log.csv"]  # the temp file was removed


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "latest.txt"
    target.write_text("e0001\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "e0002\n")
    monkeypatch.undo()
    assert target.read_text() == "e0001\n"
    assert _entries(tmp_path) == ["latest.txt"]


def test_unserialisable_json_touches_nothing(tmp_path):
    target = tmp_path / "best.json"
    target.write_text('{"epoch": 1}\n')
    with pytest.raises(TypeError):
        atomic_write_json(target, {"epoch": object()})
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert _entries(tmp_path) == ["best.json"]


def test_only_whole_file_modes(tmp_path):
    for mode in ("a", "r+", "ab"):
        with pytest.raises(ValueError, match="mode"):
            with atomic_open(tmp_path / "x", mode):
                pass
    assert _entries(tmp_path) == []


def test_sigkill_mid_write_keeps_the_old_file(tmp_path):
    """A writer process killed between two chunks: readers still see the complete old file."""
    target = tmp_path / "state.bin"
    old = b"O" * 4096
    target.write_bytes(old)
    child = (
        "import sys, time\n"
        "from avsnet_ros.fileio import atomic_open\n"
        "with atomic_open(sys.argv[1], 'wb') as fh:\n"
        "    fh.write(b'N' * 1000); fh.flush()\n"
        "    print('half', flush=True)\n"
        "    time.sleep(60)\n"
        "    fh.write(b'N' * 3096)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", child, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "half"
        temps = [p for p in tmp_path.iterdir() if p.name != "state.bin"]
        assert len(temps) == 1 and temps[0].name.startswith(".state.bin.") and temps[0].name.endswith(".tmp")
        assert temps[0].read_bytes() == b"N" * 1000  # the new data really was half written
    finally:
        proc.kill()  # SIGKILL mid-run is the point of the test (Popen.kill skips a process that already ended)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == old
