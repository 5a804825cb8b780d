"""Per-project on-disk cache of pooled backbone features (``model.pooled.PooledFeatures`` rows).

The backbone of frozen-mode training never changes, so each image's pooled taps and embedding are
computed once and kept here, keyed by an item key (e.g. ``item_key(task_id, image_url)``).

Layout under ``root`` (one root per project)::

    <backbone_key>/index.jsonl       which shard and row holds each item key, the row widths: an
                                     append-only log (``model.feature_index``)
    <backbone_key>/shards/<id>.npy   float32 (rows, sum(tap widths) + D): one shard per put_many
    <backbone_key>/.lock             serialises appends to the log (flock); readers take no lock

* ``backbone_key(model_config, weights_fingerprint)`` (``model.feature_keys``) hashes everything
  that changes the features (backbone name, weights identity, image size, channels, input
  normalisation, taps). A new key is a new directory, so a changed backbone never reads stale
  rows; ``prune_other_keys()`` deletes the other keys' directories.
* A put writes its shard (temp file, then ``os.replace``) outside the lock, then appends one line
  to the index under it: a write costs what it adds, and writers (the feature shard workers) wait
  for each other only for that line. A reader reads only what was appended since it last read.
  ``missing`` answers from the index alone, so a round reads each cached row once (``get_many``).
  ``retain`` forgets the keys of tasks no longer in the project (one ``drop`` line).
  Shards are read with ``np.load(mmap_mode="r", allow_pickle=False)``: nothing is unpickled.
* A missing, truncated or corrupt shard or index is a miss (logged), never an error: the rows are
  computed again and put back.
* Size: one item costs ``(sum of tap widths + embedding dim) * 4`` bytes plus ~60 bytes of index,
  e.g. resnet18 (taps 64+128+256+512, D 512): 5.9 KB, 10,000 images 59 MB; resnet50 (taps
  256+512+1024+2048, D 2048): 23.6 KB, 10,000 images 236 MB; small_cnn width 16 (16+32+64, D 64):
  704 B. Re-putting or dropping a key orphans its old row; when more than half of the stored rows
  are orphaned, the live rows are compacted into one shard, and when more than MAX_SHARDS shards
  exist, the smaller half of them are merged into one (each row is rewritten a few times at most,
  never once per put), so the disk use stays within about twice the live rows and the file count
  within MAX_SHARDS + 1. A compaction rewrites the index whole; shard files no line names are
  deleted once STALE_SHARD_S old (a put in flight names its shard within that time).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from model import feature_index
from model.atomic import atomic_write
from model.feature_index import SHARD_PATTERN, IndexState
from model.pooled import PooledFeatures

try:  # POSIX; elsewhere writers are not serialised (a lost index update is only a later miss)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

INDEX_NAME = "index.jsonl"
LEGACY_INDEX_NAME = "index.json"  # the former index, rewritten whole per put: read, then replaced
SHARDS_DIR = "shards"
LOCK_NAME = ".lock"
MAX_SHARDS = 64
STALE_SHARD_S = 600.0  # a shard file no index line names, this old, belongs to no put in flight
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class FeatureCache:
    """Pooled-feature rows of one backbone (``backbone_key``) under a per-project ``root``."""

    def __init__(self, root: str | Path, backbone_key: str) -> None:
        if not KEY_PATTERN.fullmatch(backbone_key):
            raise ValueError(f"backbone_key {backbone_key!r} is not a safe directory name")
        self.root = Path(root)
        self.key = backbone_key
        self.directory = self.root / backbone_key
        self._index = IndexState()
        self._legacy: tuple[tuple | None, IndexState] | None = None
        self._shards: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._load_index().items)

    def __contains__(self, key: str) -> bool:
        return key in self._load_index().items

    def size_bytes(self) -> int:
        """Bytes of the shard files on disk."""
        shards = self.directory / SHARDS_DIR
        return sum(p.stat().st_size for p in shards.glob("*.npy")) if shards.is_dir() else 0

    def stored_rows(self) -> int:  # rows the shards hold, live or orphaned (their disk cost)
        return self._load_index().stored_rows()

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys without a readable row, each once, in first-seen order, from the index and the
        shards' headers alone: no row is read (``get_many`` reads them)."""
        index = self._load_index()
        items = index.items
        names = {items[key][0] for key in keys if key in items}
        opened = {name: self._open_shard(name, index) is not None for name in names}
        if not all(opened.values()) and self._index_changed():
            return self.missing(keys)  # a compaction replaced shards meanwhile: read it again
        return list(dict.fromkeys(key for key in keys if key not in items or not opened[items[key][0]]))

    def get_many(self, keys: Sequence[str]) -> tuple[PooledFeatures | None, list[str]]:
        """(rows of the keys found, in the order of ``keys``, or None when none is found;
        the keys not found, each once, in first-seen order)."""
        found, missing, unreadable = self._lookup(keys, self._load_index())
        if unreadable and self._index_changed():
            # A writer compacted (and removed shards) since the index was read: read the new one.
            found, missing, _ = self._lookup(keys, self._load_index())
        return found, missing

    def _lookup(
        self, keys: Sequence[str], index: IndexState
    ) -> tuple[PooledFeatures | None, list[str], bool]:
        items = index.items
        opened = {name: self._open_shard(name, index) for name in {items[k][0] for k in keys if k in items}}
        missing: dict[str, None] = {}
        by_shard: dict[str, tuple[list[int], list[int]]] = {}  # shard -> (output rows, its rows)
        hits = 0
        for key in keys:
            position = items.get(key)
            if position is None or opened[position[0]] is None:
                missing[key] = None
                continue
            out_rows, shard_rows = by_shard.setdefault(position[0], ([], []))
            out_rows.append(hits)
            shard_rows.append(position[1])
            hits += 1
        unreadable = any(array is None for array in opened.values())
        if not hits:
            return None, list(missing), unreadable
        matrix = np.empty((hits, sum(index.tap_widths) + index.embedding_dim), dtype=np.float32)
        for name, (out_rows, shard_rows) in by_shard.items():
            shard = opened[name]
            assert shard is not None  # a hit's shard opened (the others' keys went to missing)
            matrix[np.asarray(out_rows)] = shard[np.asarray(shard_rows, dtype=np.int64)]
        features = PooledFeatures.from_matrix(matrix, index.tap_widths, index.embedding_dim)
        return features, list(missing), unreadable

    def get_or_compute(
        self, keys: Sequence[str], compute: Callable[[list[str]], PooledFeatures]
    ) -> PooledFeatures:
        """Rows for every key, in ``keys`` order: cached ones are read, the others computed by
        ``compute(missing_keys)`` (returning their rows in that order) and put."""
        found, missing = self.get_many(keys)
        if not missing:
            if found is None:
                raise ValueError("get_or_compute needs at least one key")
            return found
        computed = compute(list(missing))
        if len(computed) != len(missing):
            raise ValueError(f"compute returned {len(computed)} rows for {len(missing)} keys")
        self.put_many(missing, computed)
        offset = len(found) if found is not None else 0
        computed_row = {key: offset + i for i, key in enumerate(missing)}
        order, next_found = [], 0
        for key in keys:
            if key in computed_row:
                order.append(computed_row[key])
            else:
                order.append(next_found)
                next_found += 1
        both = computed if found is None else PooledFeatures.concatenate([found, computed])
        return both.subset(np.asarray(order, dtype=np.int64))

    # ------------------------------------------------------------------ writing

    def put_many(self, keys: Sequence[str], features: PooledFeatures) -> None:
        """Store ``features`` rows under ``keys`` (one new shard; an existing key is replaced)."""
        keys = list(keys)
        if len(keys) != len(features):
            raise ValueError(f"{len(keys)} keys but {len(features)} feature rows")
        if not all(isinstance(key, str) for key in keys):
            raise ValueError("item keys must be strings")
        if not keys:
            return
        (self.directory / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        name = self._write_shard(features.to_matrix())  # outside the lock: writers overlap here
        try:
            with self._write_lock():
                index = self._writable_index(features.tap_widths, features.embedding_dim)
                self._append(index, {"shard": name, "keys": keys})
        except BaseException:
            (self.directory / SHARDS_DIR / name).unlink(missing_ok=True)
            raise

    def retain(self, keys: Sequence[str]) -> int:
        """Forget every key not in ``keys`` (tasks deleted from the project, images replaced):
        one drop line; their rows go at the next compaction. Returns how many were dropped."""
        wanted = set(keys)
        if not [key for key in self._load_index().items if key not in wanted]:
            return 0
        with self._write_lock():
            index = self._writable_index(None, None)
            doomed = [key for key in index.items if key not in wanted]
            if doomed:
                self._append(index, {"drop": doomed})
        return len(doomed)

    def prune_other_keys(self) -> list[str]:
        """Delete the cache directories of every other backbone key under ``root``; their names."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for child in self.root.iterdir():
            is_cache = any((child / name).exists() for name in (INDEX_NAME, LEGACY_INDEX_NAME))
            is_cache = is_cache or (child / SHARDS_DIR).is_dir()
            if child.name != self.key and child.is_dir() and KEY_PATTERN.fullmatch(child.name) and is_cache:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
        return removed

    # ------------------------------------------------------------------ internals

    def _index_changed(self) -> bool:
        before = (self._index.identity, self._index.offset, self._index.legacy)
        after = self._load_index()
        return (after.identity, after.offset, after.legacy) != before

    def _load_index(self) -> IndexState:
        """The index as on disk now: the log's new lines, or the former index.json's content."""
        path = self.directory / INDEX_NAME
        if not path.exists() and (self.directory / LEGACY_INDEX_NAME).exists():
            self._index = self._legacy_index()
        else:
            self._index = feature_index.refresh(self._index, path, self.key)
        return self._index

    def _legacy_index(self) -> IndexState:
        path = self.directory / LEGACY_INDEX_NAME
        try:
            stat = path.stat()
            stamp: tuple | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if self._legacy is None or self._legacy[0] != stamp:
            self._legacy = (stamp, feature_index.read_legacy(path, self.key))
        return self._legacy[1]

    def _writable_index(self, tap_widths: list[int] | None, embedding_dim: int | None) -> IndexState:
        """The index, under the write lock, as a log lines can be appended to: a new log when
        there is none, it is unreadable or former, or it is empty and of other widths. Raises
        ValueError when the rows of ``tap_widths`` + ``embedding_dim`` do not fit its rows."""
        index = self._load_index()
        widths = index.tap_widths, index.embedding_dim
        if tap_widths is not None and index.items and widths != (list(tap_widths), embedding_dim):
            raise ValueError(
                f"features of widths {tap_widths}+{embedding_dim} do not match the "
                f"cache's {index.tap_widths}+{index.embedding_dim} for key {self.key}"
            )
        if (
            index.valid
            and not index.legacy
            and (tap_widths is None or widths == (list(tap_widths), embedding_dim))
        ):
            return index
        if tap_widths is not None and not index.items:
            index.tap_widths, index.embedding_dim = list(tap_widths), int(embedding_dim or 0)
        self._rewrite(index)
        (self.directory / LEGACY_INDEX_NAME).unlink(missing_ok=True)
        return self._load_index()

    def _append(self, index: IndexState, record: dict) -> None:
        """Append ``record`` (the caller holds the lock), then compact when it is time."""
        feature_index.append(self.directory / INDEX_NAME, record)
        index = self._load_index()
        if index.stored_rows() > 2 * max(len(index.items), 1):
            self._compact(index, list(index.shards))
        elif len(index.shards) > MAX_SHARDS:
            smaller_half = sorted(index.shards, key=lambda name: index.shards[name])[
                : len(index.shards) // 2 + 1
            ]
            self._compact(index, smaller_half)

    def _compact(self, index: IndexState, names: list[str]) -> None:
        """Merge the live rows of the shards ``names`` into one (unreadable ones are dropped) and
        rewrite the index; shards left without a live row leave it."""
        merged = set(names)
        keys = [key for key, (name, _) in index.items.items() if name in merged]
        found, missing, _ = self._lookup(keys, index)
        lost = set(missing)
        for key in lost:
            del index.items[key]
        for name in merged:
            del index.shards[name]
        if found is not None:
            index.apply(
                {"shard": self._write_shard(found.to_matrix()), "keys": [k for k in keys if k not in lost]}
            )
        live = {name for name, _ in index.items.values()}
        gone = merged | {name for name in index.shards if name not in live}
        index.shards = {name: rows for name, rows in index.shards.items() if name in live}
        self._rewrite(index, gone)

    def _rewrite(self, index: IndexState, gone: Collection[str] = ()) -> None:
        """Replace the log with ``index``; delete the shards ``gone`` (``_remove_unreferenced``)."""
        feature_index.rewrite(self.directory / INDEX_NAME, self.key, index)
        self._index = feature_index.refresh(IndexState(), self.directory / INDEX_NAME, self.key)
        self._remove_unreferenced(self._index, gone)

    def _open_shard(self, name: str, index: IndexState) -> np.ndarray | None:
        if name in self._shards:
            return self._shards[name]
        path = self.directory / SHARDS_DIR / name
        expected_rows = index.shards[name]
        width = sum(index.tap_widths) + index.embedding_dim
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.dtype != np.float32 or array.shape != (expected_rows, width):
                raise ValueError(
                    f"shape {array.shape} {array.dtype}, expected ({expected_rows}, {width}) float32"
                )
        except (OSError, ValueError, EOFError) as error:
            log.warning("feature cache shard %s is missing or corrupt (%s); its rows are misses", path, error)
            return None
        self._shards[name] = array
        return array

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        (self.directory / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_NAME, "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _write_shard(self, matrix: np.ndarray) -> str:
        name = f"{uuid.uuid4().hex}.npy"

        def write(handle):
            np.save(handle, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)

        atomic_write(self.directory / SHARDS_DIR / name, write)
        return name

    def _remove_unreferenced(self, index: IndexState, gone: Collection[str]) -> None:
        """Delete the shards ``gone``, and files the index does not name (shards, temp files of
        killed writes) once STALE_SHARD_S old: younger ones may be a put's that has not appended
        its line yet."""
        old = time.time() - STALE_SHARD_S
        for path in (self.directory / SHARDS_DIR).iterdir():
            temp = path.name.startswith(".") and path.name.endswith(".tmp")
            unnamed = bool(SHARD_PATTERN.fullmatch(path.name)) and path.name not in index.shards
            with contextlib.suppress(OSError):
                if path.name in gone or ((temp or unnamed) and path.stat().st_mtime < old):
                    self._shards.pop(path.name, None)
                    path.unlink()
