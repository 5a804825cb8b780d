"""Atomic file writes: the one implementation every file the project writes goes through
(checkpoints, weights files, the feature cache, the model store's JSON, the image cache).

A temp file in the same directory, fsync, ``os.replace`` onto the target, fsync of the directory:
a reader sees the old file or the whole new one, never a torn write, even after a crash. On any
failure (a full disk included) the temp file is removed and the error raised; a temp file left by
a killed process is named ``.<target name>.<random>.tmp`` and ``remove_stale_temps`` deletes it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (skipped where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms or filesystems without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(binary file handle)`` atomically (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other service users
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``text`` as UTF-8, atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of atomic_write's temp files."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temps(
    directory: str | Path, older_than_s: float, is_temp: Callable[[str], bool] = is_temp_name
) -> int:
    """Delete atomic_write's temp files (names for which ``is_temp``) in ``directory`` last
    changed over ``older_than_s`` seconds ago (left by a killed process; a write in flight is
    younger). Returns how many."""
    removed, cutoff = 0, time.time() - older_than_s
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not is_temp(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:  # gone meanwhile (its write finished, or another process pruned it)
            continue
    return removed
