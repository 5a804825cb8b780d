"""Fetching task images: parallel downloads, a disk cache, and a per-task reason for each failure.

One bad image never fails a batch: it is skipped and its reason counted in the job summary.

The cache holds two kinds of entry in one directory under one byte bound: an image's downloaded
bytes (keyed by its reference) and, for scoring, its model-ready array (the uint8 pixels of
``model.data.model_ready_array``, keyed by the reference and everything that changes them:
backend.image_arrays), so a later round reads each pool image's array instead of decoding and
resizing it again.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from PIL import Image

from backend.image_arrays import array_cache_key, decode_array, encode_array
from backend.image_download import ImageFetchError
from backend.ls_auth import LabelStudioError
from model.atomic import atomic_write_bytes, remove_stale_temps
from model.data import ImageError, load_image_bytes, model_ready_array, resize_for_model

log = logging.getLogger(__name__)
FETCH_THREADS = 8  # downloads are I/O bound; 8 parallel requests keep Label Studio responsive


@dataclass
class FetchReport:
    """Which tasks could not be used and why (reason -> count, plus a few examples), and which
    of them failed transiently (another attempt later may succeed: see ImageFetchError)."""

    failed: dict[int, str] = field(default_factory=dict)
    transient: set[int] = field(default_factory=set)

    def add(self, task_id: int, reason: str, transient: bool = False) -> None:
        self.failed[int(task_id)] = reason
        if transient:
            self.transient.add(int(task_id))
        else:
            self.transient.discard(int(task_id))

    def summary(self, examples: int = 5) -> dict:
        counts = Counter(_reason_kind(r) for r in self.failed.values())
        sample = dict(list(self.failed.items())[:examples])
        return {
            "skipped_tasks": len(self.failed),
            "transient_tasks": len(self.transient),
            "reasons": dict(counts),
            "examples": {str(k): v for k, v in sample.items()},
        }


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0][:60]


class ImageCache:
    """Downloaded image files (and model-ready arrays, see ``array_cache_key``) on disk, keyed by
    a string, at most ``max_bytes`` in all (0: no bound).

    Only bytes that decoded as an image are stored (the caller decodes first), so a truncated or
    non-image download is fetched again next round rather than skipped forever. When the files
    pass the bound, the least recently used are deleted down to PRUNE_TO of it (a hit refreshes a
    file's mtime). Several processes may share the directory: each counts what it wrote since its
    last scan, and each prune rescans, so the bound holds within what the others wrote meanwhile.

    Writes go through model.atomic (temp file, fsync, rename; the temp file removed on failure).
    A write refused for want of space (a full disk or quota) evicts the least recently used
    files down to PRUNE_TO of what the cache holds and tries once more: a full disk shrinks the
    cache instead of leaving it full forever. A write that still fails is logged and skipped (the
    image is used all the same, only not kept). Temp files left by killed processes are deleted
    at the first write and at every prune once older than STALE_TEMP_S.
    """

    PRUNE_TO = 0.9  # prune below the bound, so a full cache is not rescanned on every write
    STALE_TEMP_S = 3600.0  # a temp file this old belongs to no write in flight

    def __init__(self, directory: Path, max_bytes: int = 0):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes on disk as last counted plus our writes since
        self._temps_checked = False

    def path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.directory / digest[:2] / digest

    def get(self, url: str) -> bytes | None:
        path = self.path(url)
        try:
            data = path.read_bytes()
            os.utime(path)  # recently used: evicted last
        except OSError:  # absent, or evicted by another process meanwhile
            return None
        return data

    def discard(self, url: str) -> None:
        self.path(url).unlink(missing_ok=True)

    def put(self, url: str, data: bytes) -> bool:
        """Keep ``data`` under ``url``; False when it could not be written (logged)."""
        if not self._temps_checked:
            self._temps_checked = True
            remove_stale_temps_under(self.directory, self.STALE_TEMP_S)
        path = self.path(url)
        try:
            try:
                atomic_write_bytes(path, data)
            except OSError as exc:
                if exc.errno not in NO_SPACE_ERRNOS:
                    raise
                freed = self.evict_for_space()
                log.warning("image cache: no space left (%s); evicted %d bytes", exc, freed)
                atomic_write_bytes(path, data)
        except OSError as exc:
            log.warning("image cache: could not keep %s: %s", url[:120], exc)
            return False
        if not self.max_bytes:
            return True
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, _, size in cache_files(self.directory))
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._total = prune(self.directory, int(self.max_bytes * self.PRUNE_TO), self.STALE_TEMP_S)
        return True

    def evict_for_space(self) -> int:
        """Delete the least recently used files down to PRUNE_TO of what the cache holds (and
        of the bound, when it holds more); returns the bytes freed."""
        with self._lock:
            held = sum(size for _, _, size in cache_files(self.directory))
            keep = int(min(held, self.max_bytes or held) * self.PRUNE_TO)
            self._total = prune(self.directory, keep, self.STALE_TEMP_S)
            return held - self._total


# A write refused for want of space: the disk is full, or the user's quota is spent.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def cache_files(directory: Path) -> list[tuple[float, Path, int]]:
    """(mtime, path, size) of every cached file (temporary files of writes in flight excluded)."""
    out = []
    for sub in directory.iterdir() if directory.is_dir() else ():
        if not sub.is_dir():
            continue
        for entry in os.scandir(sub):
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            out.append((st.st_mtime, Path(entry.path), st.st_size))
    return out


def remove_stale_temps_under(directory: Path, older_than_s: float) -> int:
    """Delete the cache's temp files older than ``older_than_s`` seconds (writes that a killed
    process never finished); returns how many. Cached files are never dot files, so every dot
    file is a temp file (older versions named theirs ``.<digest>.<hex>``, without ``.tmp``)."""
    if not directory.is_dir():
        return 0
    return sum(
        remove_stale_temps(sub, older_than_s, lambda name: name.startswith("."))
        for sub in directory.iterdir()
        if sub.is_dir()
    )


def prune(directory: Path, keep_bytes: int, stale_temp_s: float | None = None) -> int:
    """Delete the least recently used files until at most ``keep_bytes`` remain; the bytes left.
    With ``stale_temp_s``, temp files older than that many seconds go too."""
    if stale_temp_s is not None:
        remove_stale_temps_under(directory, stale_temp_s)
    files = sorted(cache_files(directory))
    total = sum(size for _, _, size in files)
    for _, path, size in files:
        if total <= keep_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
    return total


# --------------------------------------------------------------------------- fetcher

Item = TypeVar("Item")
Cached = TypeVar("Cached")


class ImageBytesSource(Protocol):
    """Where image bytes come from: backend.image_download.ImageDownloader (tests: stand-ins)."""

    def fetch_image_bytes(
        self, raw_url: str, *, task_id: int | None, max_bytes: int, timeout_s: float
    ) -> bytes: ...


class ImageFetcher:
    """A task's image as a PIL image (``fetch_image``: training, cold start) or as its model-ready
    array (``fetch_array``: scoring), through the cache in ``cache_dir`` when one is given.
    ``cache_arrays=False`` makes arrays afresh every time (to compare or measure)."""

    def __init__(
        self,
        source: ImageBytesSource,
        cache_dir: Path | None,
        *,
        max_bytes: int,
        max_pixels: int,
        timeout_s: float,
        resize_to: int | None = None,
        threads: int = FETCH_THREADS,
        cache_max_bytes: int = 0,
        cache_arrays: bool = True,
    ):
        self.source = source
        self.cache = ImageCache(cache_dir, cache_max_bytes) if cache_dir else None
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.resize_to = resize_to  # the model's input size: keeps a big labeled set in memory
        self.threads = threads
        self.cache_arrays = cache_arrays and self.cache is not None

    def resized_to(self, size: int) -> ImageFetcher:
        """This fetcher holding images at ``size`` px: the same source, limits and cache object
        (one scan of the cache directory however many sizes a process serves)."""
        other = copy.copy(self)
        other.resize_to = size
        return other

    def fetch_image(self, url: str, task_id: int | None) -> Image.Image:
        """Raises ImageFetchError or ImageError with a per-task reason."""
        image = self._decoded(url, task_id)
        return resize_for_model(image, self.resize_to) if self.resize_to else image

    def fetch_array(self, url: str, task_id: int | None, image_size: int, channels: int) -> np.ndarray:
        """The image's ``model_ready_array`` for a model of ``image_size`` and ``channels``: read
        from the cache when an earlier round made it, else decoded, resized and kept. Raises
        like ``fetch_image``."""
        key = array_cache_key(url, image_size, channels, self.max_pixels)
        if self.cache_arrays:
            array = self._cached_array(key, url, (image_size, image_size, channels))
            if array is not None:
                return array
        array = model_ready_array(self._decoded(url, task_id), image_size, channels)
        if self.cache_arrays and self.cache is not None:
            self.cache.put(key, encode_array(array))  # a failed write is logged and skipped
        return array

    def _decoded(self, url: str, task_id: int | None) -> Image.Image:
        image = self._cached_image(url)
        if image is None:
            data = self.source.fetch_image_bytes(
                url, task_id=task_id, max_bytes=self.max_bytes, timeout_s=self.timeout_s
            )
            image = load_image_bytes(data, max_pixels=self.max_pixels)  # raises: not cached
            if self.cache is not None:
                self.cache.put(url, data)  # a full disk: used all the same, only not kept
        return image

    def _cached(self, key: str, decode: Callable[[bytes], Cached], what: str) -> Cached | None:
        """The cache entry ``key`` decoded, or None: absent, or unreadable (written before
        downloads were checked, damaged on disk, or by other code), in which case it is deleted
        and the caller makes it again."""
        if self.cache is None:
            return None
        data = self.cache.get(key)
        if data is None:
            return None
        try:
            return decode(data)
        except ValueError as exc:  # ImageError is a ValueError too
            log.warning("image cache: unreadable %s (%s); made again", what, exc)
            self.cache.discard(key)
            return None

    def _cached_array(self, key: str, url: str, shape: tuple[int, ...]) -> np.ndarray | None:
        return self._cached(key, lambda data: decode_array(data, shape), f"model-ready array of {url[:120]}")

    def _cached_image(self, url: str) -> Image.Image | None:
        return self._cached(
            url, lambda data: load_image_bytes(data, max_pixels=self.max_pixels), f"image {url[:120]}"
        )

    def fetch_many(self, items: list[tuple[int, str]], report: FetchReport) -> list[tuple[int, Image.Image]]:
        """(task id, url) pairs -> (task id, image) for those that worked, in input order."""
        return self._map(items, report, self.fetch_image)

    def fetch_arrays(
        self, items: list[tuple[int, str]], report: FetchReport, *, image_size: int, channels: int
    ) -> list[tuple[int, np.ndarray]]:
        """(task id, url) pairs -> (task id, model-ready array) for those that worked, in input
        order: what scoring reads, each image decoded and resized once across rounds."""
        return self._map(
            items, report, lambda url, task_id: self.fetch_array(url, task_id, image_size, channels)
        )

    def _map(
        self, items: list[tuple[int, str]], report: FetchReport, fetch: Callable[[str, int], Item]
    ) -> list[tuple[int, Item]]:
        """``fetch(url, task_id)`` of every item on the fetch threads (downloads wait on the
        network, and PIL releases the GIL while it decodes and resizes); failures go to
        ``report`` with their reason."""

        def one(item):
            task_id, url = item
            try:
                return task_id, fetch(url, task_id), None, False
            except (ImageFetchError, ImageError, ValueError, OSError, LabelStudioError) as exc:
                # LabelStudioError: the token refresh failed; this task is skipped, not the batch
                transient = isinstance(exc, LabelStudioError) or getattr(exc, "transient", False)
                return task_id, None, f"{type(exc).__name__}: {exc}", transient

        out = []
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for task_id, value, error, transient in pool.map(one, items):
                if error is not None:
                    report.add(task_id, error, transient)
                else:
                    out.append((task_id, value))
        return out
