"""Per-project on-disk cache of pooled backbone features (``model.pooled.PooledFeatures`` rows).

The backbone of frozen-mode training never changes, so each image's pooled taps and embedding are
computed once and kept here, keyed by an item key (e.g. ``item_key(task_id, image_url)``).

Layout under ``root`` (one root per project)::

    <backbone_key>/index.json        which shard and row holds each item key, the row widths
    <backbone_key>/shards/<id>.npy   float32 (rows, sum(tap widths) + D): one shard per put_many
    <backbone_key>/.lock             serialises writers (flock); readers take no lock

* ``backbone_key(model_config, weights_fingerprint)`` hashes everything that changes the features
  (backbone name, weights identity, image size, channels, input normalisation, taps). A new key
  is a new directory, so a changed backbone never reads stale rows; ``prune_other_keys()`` deletes
  the other keys' directories.
* Shards are append-only and written to a temp file then ``os.replace``d; the index is rewritten
  atomically the same way, so a reader sees the old or the new index, never a partial one.
  Shards are read with ``np.load(mmap_mode="r", allow_pickle=False)``: nothing is unpickled.
* A missing, truncated or corrupt shard or index is a miss (logged), never an error: the rows are
  computed again and put back.
* Size: one item costs ``(sum of tap widths + embedding dim) * 4`` bytes plus ~60 bytes of index,
  e.g. resnet18 (taps 64+128+256+512, D 512): 5.9 KB, 10,000 images 59 MB; resnet50 (taps
  256+512+1024+2048, D 2048): 23.6 KB, 10,000 images 236 MB; small_cnn width 16 (16+32+64, D 64):
  704 B. Re-putting a key orphans its old row; when more than MAX_SHARDS shards exist or more
  than half of the stored rows are orphaned, the live rows are compacted into one shard, so the
  disk use stays within about twice the live rows and the file count within MAX_SHARDS + 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from model.atomic import atomic_write
from model.config import ModelConfig
from model.pooled import PooledFeatures

try:  # POSIX; elsewhere writers are not serialised (a lost index update is only a later miss)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT = "ls-al-feature-cache"
FORMAT_VERSION = 1
# Bump when what is stored per row changes meaning (pooling, dtype): old directories then miss.
FEATURES_VERSION = 1
INDEX_NAME = "index.json"
SHARDS_DIR = "shards"
LOCK_NAME = ".lock"
MAX_SHARDS = 64
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHARD_PATTERN = re.compile(r"[0-9a-f]{32}\.npy")


def backbone_key(model_config: ModelConfig, weights_fingerprint: str, taps: Sequence[str] | None = None) -> str:
    """Short directory name for the features of this backbone: ``<backbone>-<16 hex>``.

    Hashes the backbone name and architecture settings, ``weights_fingerprint`` (the identity of
    the weights: ``backbone_fingerprint(model)``, a checkpoint's SHA-256, a torchvision weights
    name + version...), image_size, channels, input normalisation (input_norm, mean, std) and the
    taps (``taps`` = the built model's ``model.taps``, else the config's). Head, dropout and LPM
    settings do not change the features and are not part of it.
    """
    identity = {
        "features_version": FEATURES_VERSION,
        "backbone": model_config.backbone,
        "small_cnn_width": model_config.small_cnn_width if model_config.backbone == "small_cnn" else None,
        "weights": getattr(model_config, "weights", None),
        "weights_fingerprint": str(weights_fingerprint),
        "image_size": model_config.image_size,
        "channels": model_config.channels,
        "input_norm": getattr(model_config, "input_norm", "dataset"),
        "mean": list(model_config.mean),
        "std": list(model_config.std),
        "taps": list(taps) if taps is not None else (list(model_config.taps) if model_config.taps else None),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", model_config.backbone).strip("._")[:40] or "backbone"
    return f"{name}-{digest}"


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex) of the backbone's parameters and buffers: names, dtypes, shapes, bytes.

    ``model`` is a LossLearningNet (its ``features``) or the feature extractor itself. Any change
    to the backbone's weights (fine-tuning, another pretrained file) changes it.
    """
    features = getattr(model, "features", model)
    digest = hashlib.sha256()
    for name, tensor in sorted(features.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def item_key(task_id: int | str, image_url: str) -> str:
    """``"<task_id>:<16 hex of sha256(image_url)>"``: a changed image URL is a new item."""
    return f"{task_id}:{hashlib.sha256(image_url.encode()).hexdigest()[:16]}"


class FeatureCache:
    """Pooled-feature rows of one backbone (``backbone_key``) under a per-project ``root``."""

    def __init__(self, root: str | Path, backbone_key: str) -> None:
        if not KEY_PATTERN.fullmatch(backbone_key):
            raise ValueError(f"backbone_key {backbone_key!r} is not a safe directory name")
        self.root = Path(root)
        self.key = backbone_key
        self.directory = self.root / backbone_key
        self._index: dict | None = None
        self._index_stamp: tuple | None = None
        self._shards: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._load_index()["items"])

    def __contains__(self, key: str) -> bool:
        return key in self._load_index()["items"]

    def size_bytes(self) -> int:
        """Bytes of the shard files on disk."""
        shards = self.directory / SHARDS_DIR
        return sum(p.stat().st_size for p in shards.glob("*.npy")) if shards.is_dir() else 0

    def get_many(self, keys: Sequence[str]) -> tuple[PooledFeatures | None, list[str]]:
        """(rows of the keys found, in the order of ``keys``, or None when none is found;
        the keys not found, each once, in first-seen order)."""
        found, missing, unreadable = self._lookup(keys, self._load_index())
        if unreadable and self._index_changed():
            # A writer compacted (and removed shards) since the index was read: read the new one.
            found, missing, _ = self._lookup(keys, self._load_index())
        return found, missing

    def _lookup(self, keys: Sequence[str], index: dict) -> tuple[PooledFeatures | None, list[str], bool]:
        items, shards = index["items"], index["shards"]
        positions: list[tuple[str, int] | None] = []
        for key in keys:
            entry = items.get(key)
            positions.append((shards[entry[0]]["name"], int(entry[1])) if entry is not None else None)
        readable = {name: self._open_shard(name, index) for name in {p[0] for p in positions if p}}
        missing: dict[str, None] = {}
        hits: list[tuple[str, int]] = []
        for key, position in zip(keys, positions):
            if position is None or readable[position[0]] is None:
                missing[key] = None
            else:
                hits.append(position)
        unreadable = any(array is None for array in readable.values())
        if not hits:
            return None, list(missing), unreadable
        by_shard: dict[str, list[int]] = {}
        for name, row in hits:
            by_shard.setdefault(name, []).append(row)
        # every hit is a row of a shard that opened (the others went to ``missing``)
        opened = {name: array for name, array in readable.items() if array is not None}
        gathered = {name: opened[name][np.asarray(rows, dtype=np.int64)] for name, rows in by_shard.items()}
        cursor = dict.fromkeys(by_shard, 0)
        matrix = np.empty((len(hits), sum(index["tap_widths"]) + index["embedding_dim"]), dtype=np.float32)
        for i, (name, _) in enumerate(hits):
            matrix[i] = gathered[name][cursor[name]]
            cursor[name] += 1
        features = PooledFeatures.from_matrix(matrix, index["tap_widths"], index["embedding_dim"])
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
        with self._write_lock():
            index = self._read_index_file()
            if index["items"] and (
                index["tap_widths"] != features.tap_widths or index["embedding_dim"] != features.embedding_dim
            ):
                raise ValueError(
                    f"features of widths {features.tap_widths}+{features.embedding_dim} do not match the "
                    f"cache's {index['tap_widths']}+{index['embedding_dim']} for key {self.key}"
                )
            index["tap_widths"], index["embedding_dim"] = features.tap_widths, features.embedding_dim
            name = self._write_shard(features.to_matrix())
            index = _with_shard(index, name, keys)
            if _needs_compaction(index):
                index = self._compact(index)
            self._write_index(index)
            self._remove_unreferenced(index)

    def prune_other_keys(self) -> list[str]:
        """Delete the cache directories of every other backbone key under ``root``; their names."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for child in self.root.iterdir():
            is_cache = (child / INDEX_NAME).exists() or (child / SHARDS_DIR).is_dir()
            if child.name != self.key and child.is_dir() and KEY_PATTERN.fullmatch(child.name) and is_cache:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
        return removed

    # ------------------------------------------------------------------ internals

    def _empty_index(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "backbone_key": self.key,
            "tap_widths": [],
            "embedding_dim": 0,
            "shards": [],
            "items": {},
        }

    def _stamp(self) -> tuple | None:
        try:
            stat = (self.directory / INDEX_NAME).stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _index_changed(self) -> bool:
        return self._stamp() != self._index_stamp

    def _load_index(self) -> dict:
        stamp = self._stamp()
        if self._index is None or stamp != self._index_stamp:
            self._index = self._read_index_file()
            self._index_stamp = stamp
        return self._index

    def _read_index_file(self) -> dict:
        path = self.directory / INDEX_NAME
        if not path.exists():
            return self._empty_index()
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            _check_index(index, self.key)
        except (OSError, ValueError, TypeError, KeyError, IndexError) as error:
            log.warning("feature cache index %s is unreadable (%s); treating it as empty", path, error)
            return self._empty_index()
        return index

    def _open_shard(self, name: str, index: dict) -> np.ndarray | None:
        if name in self._shards:
            return self._shards[name]
        path = self.directory / SHARDS_DIR / name
        expected_rows = next(s["rows"] for s in index["shards"] if s["name"] == name)
        width = sum(index["tap_widths"]) + index["embedding_dim"]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.dtype != np.float32 or array.shape != (expected_rows, width):
                raise ValueError(f"shape {array.shape} {array.dtype}, expected ({expected_rows}, {width}) float32")
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
        directory = self.directory / SHARDS_DIR

        def write(handle):
            np.save(handle, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)

        atomic_write(directory / name, write)
        return name

    def _write_index(self, index: dict) -> None:
        def write(handle):
            handle.write(json.dumps(index, separators=(",", ":")).encode("utf-8"))

        atomic_write(self.directory / INDEX_NAME, write)
        self._index, self._index_stamp = index, self._stamp()

    def _compact(self, index: dict) -> dict:
        """Rewrite the live rows into one shard (keys whose shard is unreadable are dropped)."""
        keys = list(index["items"])
        found, missing, _ = self._lookup(keys, index)
        fresh = self._empty_index()
        fresh["tap_widths"], fresh["embedding_dim"] = index["tap_widths"], index["embedding_dim"]
        if found is None:
            return fresh
        lost = set(missing)
        live = [key for key in keys if key not in lost]
        return _with_shard(fresh, self._write_shard(found.to_matrix()), live)

    def _remove_unreferenced(self, index: dict) -> None:
        referenced = {shard["name"] for shard in index["shards"]}
        for path in (self.directory / SHARDS_DIR).iterdir():
            stale_temp = path.name.startswith(".") and path.name.endswith(".tmp")
            if stale_temp or (_SHARD_PATTERN.fullmatch(path.name) and path.name not in referenced):
                self._shards.pop(path.name, None)
                path.unlink(missing_ok=True)


def _with_shard(index: dict, name: str, keys: list[str]) -> dict:
    index["shards"].append({"name": name, "rows": len(keys)})
    shard_id = len(index["shards"]) - 1
    for row, key in enumerate(keys):
        index["items"][key] = [shard_id, row]
    # Shards no key points to any more are dropped from the index (their files are then removed).
    used = sorted({entry[0] for entry in index["items"].values()})
    if len(used) != len(index["shards"]):
        renumber = {old: new for new, old in enumerate(used)}
        index["shards"] = [index["shards"][old] for old in used]
        index["items"] = {key: [renumber[s], r] for key, (s, r) in index["items"].items()}
    return index


def _needs_compaction(index: dict) -> bool:
    stored = sum(shard["rows"] for shard in index["shards"])
    return len(index["shards"]) > MAX_SHARDS or stored > 2 * max(len(index["items"]), 1)


def _check_index(index: dict, key: str) -> None:
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError("not a feature cache index")
    if index.get("format_version") != FORMAT_VERSION or index.get("backbone_key") != key:
        raise ValueError(f"version {index.get('format_version')!r} / key {index.get('backbone_key')!r}")
    widths, dim = index["tap_widths"], index["embedding_dim"]
    if not all(isinstance(w, int) and w > 0 for w in widths) or not isinstance(dim, int) or dim < 0:
        raise ValueError("bad row widths")
    shards = index["shards"]
    for shard in shards:
        if not _SHARD_PATTERN.fullmatch(shard["name"]) or not isinstance(shard["rows"], int):
            raise ValueError(f"bad shard entry {shard!r}")
    for entry in index["items"].values():
        shard_id, row = entry
        if not 0 <= shard_id < len(shards) or not 0 <= row < shards[shard_id]["rows"]:
            raise ValueError(f"bad item position {entry!r}")


