"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or the new one, never half.

Every writer goes through `atomic_open`: the data go to a temporary file in the destination's folder
(same file system, so the final rename is atomic), are flushed and fsynced, and the temporary file is
renamed over the destination with `os.replace`; the folder is then fsynced so the rename survives a
power cut. If writing raises, the temporary file is removed and the destination is left untouched.

Temporary names are ``.<name>.<pid>.<random>.tmp`` (hidden, unique per writer; cleaners may glob
``.*.tmp``). They are created with the process umask (like ``open``), not mkstemp's 0600.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "fsync_dir",
           "temp_path_for"]


def temp_path_for(path: PathLike) -> Path:
    """A fresh hidden temporary path next to ``path`` (same folder, same suffix at the end: ``.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(path: PathLike) -> None:
    """fsync a folder (makes renames inside it durable); silently a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces ``path`` atomically.

    Args:
        path: destination file; its folder must exist.
        mode: "wb" (binary) or "w" (text); the other ``open`` arguments (encoding, newline) pass through.

    Yields:
        The open temporary file. On an exception inside the block the temporary file is deleted,
        ``path`` keeps its old content (or stays absent) and the exception propagates.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        # "x": never follow or reuse an existing file of that name.
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding``."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = True) -> None:
    """Write ``obj`` as JSON (UTF-8, trailing newline) atomically; raises before touching ``path`` when
    ``obj`` is not JSON-serialisable."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys)  # serialise first: a TypeError writes nothing
    atomic_write_text(path, text + "\n")
