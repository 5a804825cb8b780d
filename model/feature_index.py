"""The feature cache's index (``model.feature_cache``): which shard and row holds each item key,
kept as an append-only log of JSON lines, so a write costs what it adds, not the whole index.

``index.jsonl``, line 1 the header, then one record per line::

    {"format": ..., "format_version": 2, "backbone_key": ..., "tap_widths": [...], "embedding_dim": D}
    {"shard": "<32 hex>.npy", "keys": ["<key>" or null, ...]}   a shard's rows, in row order
    {"drop": ["<key>", ...]}                                     keys forgotten (deleted tasks)

A key's last record wins. Writers append under the cache's lock; a compaction rewrites the log
whole (temp file, rename: a new inode), which readers notice and then read from the start. A
reader otherwise reads only the bytes appended since its last read. A line cut short by a killed
writer is skipped (logged) and the next writer starts on a fresh line. An index written by the
former layout (one ``index.json`` rewritten whole) is read as it is and turned into a log by the
next writer.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from model.atomic import atomic_write

log = logging.getLogger(__name__)
FORMAT = "ls-al-feature-cache"
FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1  # index.json, rewritten whole on every write
SHARD_PATTERN = re.compile(r"[0-9a-f]{32}\.npy")


@dataclass
class IndexState:
    """What a log says, as far as it was read."""

    tap_widths: list[int] = field(default_factory=list)
    embedding_dim: int = 0
    shards: dict[str, int] = field(default_factory=dict)  # shard name -> rows
    items: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (shard, row)
    identity: tuple[int, int] | None = None  # (device, inode) of the log read
    offset: int = 0  # bytes of it applied
    valid: bool = False  # a header was read: a writer may append (else it starts a new log)
    legacy: bool = False  # read from a former index.json: a writer rewrites it as a log

    def stored_rows(self) -> int:
        return sum(self.shards.values())

    def shard_keys(self) -> dict[str, list[str | None]]:
        """Every shard's live key per row (None: a row no key points to any more)."""
        out: dict[str, list[str | None]] = {name: [None] * rows for name, rows in self.shards.items()}
        for key, (name, row) in self.items.items():
            out[name][row] = key
        return out

    def apply(self, record: dict) -> None:
        """One record of the log (ValueError for one that is not a record)."""
        if "drop" in record:
            keys = record["drop"]
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError("bad drop record")
            for key in keys:
                self.items.pop(key, None)
            return
        name, keys = record.get("shard"), record.get("keys")
        if not isinstance(name, str) or not SHARD_PATTERN.fullmatch(name) or not isinstance(keys, list):
            raise ValueError("bad shard record")
        if not all(k is None or isinstance(k, str) for k in keys):
            raise ValueError("bad key in a shard record")
        self.shards[name] = len(keys)
        for row, key in enumerate(keys):
            if key is not None:
                self.items[key] = (name, row)


def header(backbone_key: str, tap_widths: list[int], embedding_dim: int) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone_key": backbone_key,
        "tap_widths": list(tap_widths),
        "embedding_dim": int(embedding_dim),
    }


def _read_header(line: bytes, backbone_key: str, state: IndexState) -> None:
    head = json.loads(line)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ValueError("not a feature cache index")
    if head.get("format_version") != FORMAT_VERSION or head.get("backbone_key") != backbone_key:
        raise ValueError(f"version {head.get('format_version')!r} / key {head.get('backbone_key')!r}")
    widths, dim = head["tap_widths"], head["embedding_dim"]
    if not all(isinstance(w, int) and w > 0 for w in widths) or not isinstance(dim, int) or dim < 0:
        raise ValueError("bad row widths")
    state.tap_widths, state.embedding_dim, state.valid = list(widths), dim, True


def refresh(state: IndexState, path: Path, backbone_key: str) -> IndexState:
    """``state`` brought up to date with the log at ``path``: only the bytes appended since it
    was read, or the whole log when it was replaced (a compaction) or is new; an empty state when
    there is none or its header is unreadable (logged)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return IndexState()
    identity = (stat.st_dev, stat.st_ino)
    if identity != state.identity or stat.st_size < state.offset or state.legacy:
        state = IndexState(identity=identity)
    if stat.st_size == state.offset:
        return state
    with open(path, "rb") as handle:
        handle.seek(state.offset)
        data = handle.read(stat.st_size - state.offset)
    complete = data.rfind(b"\n") + 1  # a line still being written is read next time
    for line in data[:complete].splitlines():
        try:
            if not state.valid:
                _read_header(line, backbone_key, state)
            elif line.strip():
                state.apply(json.loads(line))
        except (ValueError, TypeError, KeyError) as error:
            if not state.valid:
                log.warning("feature cache index %s is unreadable (%s); treating it as empty", path, error)
                return IndexState(identity=identity, offset=stat.st_size)
            log.warning("feature cache index %s: a damaged line skipped (%s)", path, error)
    state.offset += complete
    return state


def append(path: Path, record: dict) -> None:
    """Add one record at the end of the log (the caller holds the cache's lock), on a line of its
    own even after a line a killed writer left unfinished."""
    line = json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"
    with open(path, "a+b") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def rewrite(path: Path, backbone_key: str, state: IndexState) -> None:
    """Replace the log with one that says what ``state`` says (header, one record per shard)."""

    def write(handle):
        handle.write(json.dumps(header(backbone_key, state.tap_widths, state.embedding_dim)).encode() + b"\n")
        for name, keys in state.shard_keys().items():
            handle.write(json.dumps({"shard": name, "keys": keys}, separators=(",", ":")).encode() + b"\n")

    atomic_write(path, write)


def read_legacy(path: Path, backbone_key: str) -> IndexState:
    """The state a former ``index.json`` describes (empty when it is unreadable, logged)."""
    state = IndexState(legacy=True)
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT or index.get("format_version") != LEGACY_FORMAT_VERSION:
            raise ValueError(f"format {index.get('format')!r} {index.get('format_version')!r}")
        if index.get("backbone_key") != backbone_key:
            raise ValueError(f"key {index.get('backbone_key')!r}")
        _read_header(json.dumps({**index, "format_version": FORMAT_VERSION}).encode(), backbone_key, state)
        names = [shard["name"] for shard in index["shards"]]
        for shard in index["shards"]:
            state.apply({"shard": shard["name"], "keys": [None] * int(shard["rows"])})
        for key, (shard_id, row) in index["items"].items():
            if not 0 <= row < state.shards[names[shard_id]]:
                raise ValueError(f"bad item position {[shard_id, row]!r}")
            state.items[key] = (names[shard_id], int(row))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        log.warning("feature cache index %s is unreadable (%s); treating it as empty", path, error)
        return IndexState(legacy=True)
    return state
