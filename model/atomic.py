"""Atomic file writes: the one implementation checkpoints, weights files and the feature cache use.

A temp file in the same directory, fsync, ``os.replace`` onto the target, fsync of the directory:
a reader sees the old file or the whole new one, never a torn write, even after a crash.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


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
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
