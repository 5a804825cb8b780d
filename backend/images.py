"""Fetching task images: parallel downloads, a disk cache, and a per-task reason for each failure.

One bad image never fails a batch: it is skipped and its reason counted in the job summary.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from backend.ls_client import ImageFetchError, LabelStudioClient, LabelStudioError
from model.data import ImageError, load_image_bytes, resize_for_model

log = logging.getLogger(__name__)
FETCH_THREADS = 8   # downloads are I/O bound; 8 parallel requests keep Label Studio responsive


@dataclass
class FetchReport:
    """Which tasks could not be used and why (reason -> count, plus a few examples)."""
    failed: dict[int, str] = field(default_factory=dict)

    def add(self, task_id: int, reason: str) -> None:
        self.failed[int(task_id)] = reason

    def summary(self, examples: int = 5) -> dict:
        counts = Counter(_reason_kind(r) for r in self.failed.values())
        sample = dict(list(self.failed.items())[:examples])
        return {"skipped_tasks": len(self.failed), "reasons": dict(counts),
                "examples": {str(k): v for k, v in sample.items()}}


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0][:60]


class ImageCache:
    """Downloaded image files on disk, keyed by URL, at most ``max_bytes`` in all (0: no bound).

    Only bytes that decoded as an image are stored (the caller decodes first), so a truncated or
    non-image download is fetched again next round rather than skipped forever. When the files
    pass the bound, the least recently used are deleted down to PRUNE_TO of it (a hit refreshes a
    file's mtime). Several processes may share the directory: each counts what it wrote since its
    last scan, and each prune rescans, so the bound holds within what the others wrote meanwhile.
    """
    PRUNE_TO = 0.9   # prune below the bound, so a full cache is not rescanned on every write

    def __init__(self, directory: Path, max_bytes: int = 0):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None    # bytes on disk as last counted plus our writes since

    def path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.directory / digest[:2] / digest

    def get(self, url: str) -> bytes | None:
        path = self.path(url)
        try:
            data = path.read_bytes()
            os.utime(path)            # recently used: evicted last
        except OSError:               # absent, or evicted by another process meanwhile
            return None
        return data

    def discard(self, url: str) -> None:
        self.path(url).unlink(missing_ok=True)

    def put(self, url: str, data: bytes) -> None:
        path = self.path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        if not self.max_bytes:
            return
        with self._lock:
            if self._total is None:
                self._total = sum(size for _, _, size in cache_files(self.directory))
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._total = prune(self.directory, int(self.max_bytes * self.PRUNE_TO))


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


def prune(directory: Path, keep_bytes: int) -> int:
    """Delete the least recently used files until at most ``keep_bytes`` remain; the bytes left."""
    files = sorted(cache_files(directory))
    total = sum(size for _, _, size in files)
    for _, path, size in files:
        if total <= keep_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
    return total


class ImageFetcher:
    def __init__(self, client: LabelStudioClient, cache_dir: Path | None, *, max_bytes: int,
                 max_pixels: int, timeout_s: float, resize_to: int | None = None,
                 threads: int = FETCH_THREADS, cache_max_bytes: int = 0):
        self.client = client
        self.cache = ImageCache(cache_dir, cache_max_bytes) if cache_dir else None
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.resize_to = resize_to      # the model's input size: keeps a big labeled set in memory
        self.threads = threads

    def fetch_image(self, url: str, task_id: int | None) -> Image.Image:
        """Raises ImageFetchError or ImageError with a per-task reason."""
        image = self._cached_image(url)
        if image is None:
            data = self.client.fetch_image_bytes(url, task_id=task_id, max_bytes=self.max_bytes,
                                                 timeout_s=self.timeout_s)
            image = load_image_bytes(data, max_pixels=self.max_pixels)   # raises: not cached
            if self.cache is not None:
                self.cache.put(url, data)
        return resize_for_model(image, self.resize_to) if self.resize_to else image

    def _cached_image(self, url: str) -> Image.Image | None:
        if self.cache is None:
            return None
        data = self.cache.get(url)
        if data is None:
            return None
        try:
            return load_image_bytes(data, max_pixels=self.max_pixels)
        except ImageError:
            # written before downloads were checked, or damaged on disk: fetch it again
            self.cache.discard(url)
            return None

    def fetch_many(self, items: list[tuple[int, str]], report: FetchReport
                   ) -> list[tuple[int, Image.Image]]:
        """(task id, url) pairs -> (task id, image) for those that worked, in input order."""
        def one(item):
            task_id, url = item
            try:
                return task_id, self.fetch_image(url, task_id), None
            except (ImageFetchError, ImageError, ValueError, OSError, LabelStudioError) as exc:
                # LabelStudioError: the token refresh failed; this task is skipped, not the batch
                return task_id, None, f"{type(exc).__name__}: {exc}"

        out = []
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for task_id, image, error in pool.map(one, items):
                if error is not None:
                    report.add(task_id, error)
                else:
                    out.append((task_id, image))
        return out
