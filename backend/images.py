"""Fetching task images: parallel downloads, a disk cache, and a per-task reason for each failure.

One bad image never fails a batch: it is skipped and its reason counted in the job summary.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
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


class ImageFetcher:
    def __init__(self, client: LabelStudioClient, cache_dir: Path | None, *, max_bytes: int,
                 max_pixels: int, timeout_s: float, resize_to: int | None = None,
                 threads: int = FETCH_THREADS):
        self.client = client
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        self.resize_to = resize_to      # the model's input size: keeps a big labeled set in memory
        self.threads = threads

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.cache_dir / digest[:2] / digest

    def fetch_bytes(self, url: str, task_id: int | None) -> bytes:
        cached = self._cache_path(url)
        if cached is not None and cached.exists():
            return cached.read_bytes()
        data = self.client.fetch_image_bytes(url, task_id=task_id, max_bytes=self.max_bytes,
                                             timeout_s=self.timeout_s)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{secrets.token_hex(4)}")
            tmp.write_bytes(data)
            os.replace(tmp, cached)
        return data

    def fetch_image(self, url: str, task_id: int | None) -> Image.Image:
        """Raises ImageFetchError or ImageError with a per-task reason."""
        data = self.fetch_bytes(url, task_id)
        image = load_image_bytes(data, max_pixels=self.max_pixels)
        return resize_for_model(image, self.resize_to) if self.resize_to else image

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
