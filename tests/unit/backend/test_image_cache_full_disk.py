"""The image cache on a really full disk: a small tmpfs mounted for the test (root only; the test
is skipped, with the reason, where mounting is refused).

A write that finds no space must fail cleanly (no temp file left, no exception into the round),
evict so the cache shrinks, and the image must still be used; temp files left by killed
processes are pruned.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from backend.images import FetchReport, ImageCache, ImageFetcher, cache_files

DISK_BYTES = 2 * 1024 * 1024
ENTRY = 100 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: writes past it fail with ENOSPC, as on a full disk."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _temp_files(directory: Path) -> list[str]:
    return [name for _, _, names in os.walk(directory) for name in names if name.startswith(".")]


def _bytes_held(directory: Path) -> int:
    return sum(size for _, _, size in cache_files(directory))


def test_a_full_disk_evicts_and_the_cache_keeps_working(small_disk):
    cache = ImageCache(small_disk / "cache", max_bytes=0)  # no bound of its own: the disk is
    for i in range(3 * DISK_BYTES // ENTRY):  # three times too small
        cache.put(f"image-{i}", os.urandom(ENTRY))
        assert cache.get(f"image-{i}") is not None, i  # kept: older entries made room
        assert not _temp_files(small_disk), i
    newest = 3 * DISK_BYTES // ENTRY - 1
    assert cache.get(f"image-{newest}") is not None  # the newest entries are kept
    assert cache.get("image-0") is None  # the oldest were evicted
    assert _bytes_held(small_disk / "cache") <= DISK_BYTES


def test_a_write_that_cannot_fit_fails_cleanly_and_shrinks_the_cache(small_disk):
    cache = ImageCache(small_disk / "cache", max_bytes=0)
    for i in range(10):
        cache.put(f"image-{i}", os.urandom(ENTRY))
    before = _bytes_held(small_disk / "cache")
    assert cache.put("too-big", os.urandom(2 * DISK_BYTES)) is False  # no space even when empty
    assert not _temp_files(small_disk)
    assert cache.get("too-big") is None
    assert _bytes_held(small_disk / "cache") < before  # eviction ran


class _Source:
    def __init__(self, data: bytes):
        self.data, self.calls = data, 0

    def fetch_image_bytes(self, raw_url, *, task_id, max_bytes, timeout_s):
        self.calls += 1
        return self.data


def test_images_are_scored_when_the_disk_is_full(small_disk):
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(out, format="PNG")
    # the disk is full of something else: nothing can be cached, everything is still used
    ballast = small_disk / "ballast"
    with open(ballast, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    source = _Source(out.getvalue())
    fetcher = ImageFetcher(
        source, small_disk / "cache", max_bytes=1_000_000, max_pixels=1_000_000, timeout_s=5
    )
    report = FetchReport()
    items = [(task_id, f"/data/upload/1/{task_id}.png") for task_id in range(5)]
    arrays = fetcher.fetch_arrays(items, report, image_size=32, channels=3)
    assert report.failed == {} and [task_id for task_id, _ in arrays] == list(range(5))
    assert not _temp_files(small_disk)


def test_stale_temp_files_are_pruned(tmp_path):
    cache = ImageCache(tmp_path, max_bytes=0)
    shard = cache.path("anything").parent
    shard.mkdir(parents=True)
    stale = [shard / ".0123abcd.4567.tmp", shard / ".0123abcd.89ab"]  # both temp name styles
    fresh = shard / ".fedc.tmp"  # a write in flight
    for path in (*stale, fresh):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in stale:
        os.utime(path, (two_hours_ago, two_hours_ago))
    cache.put("an image", b"bytes")
    assert [p.exists() for p in stale] == [False, False] and fresh.exists()


def test_the_model_stores_json_writes_leave_no_temp_file_on_a_full_disk(small_disk):
    from backend import model_store

    target = small_disk / "project" / "current.json"
    model_store.atomic_write_text(target, "{}")
    with pytest.raises(OSError):
        model_store.atomic_write_text(target, "x" * (2 * DISK_BYTES))
    assert target.read_text() == "{}"  # the old file stands
    assert not _temp_files(small_disk)
