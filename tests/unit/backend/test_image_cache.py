"""The image cache keeps only images that decode, and stays within IMAGE_CACHE_MAX_BYTES.

Images are served over real HTTP on loopback by a small Flask app standing in for Label Studio's
/data/upload/ route (which serves files as-is).
"""

from __future__ import annotations

import io
import os
import time

import pytest
from flask import Flask
from PIL import Image

from backend.images import FetchReport, ImageCache, ImageFetcher, cache_files
from backend.ls_client import LabelStudioClient
from model.data import ImageError
from tests.conftest import ServerThread


def png(size=16, shade=90) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (shade, 20, 200)).save(out, format="PNG")
    return out.getvalue()


GOOD = png()
ANSWERS: dict[str, list[bytes]] = {}  # name -> bodies to serve, one per request (last repeats)
HITS: dict[str, int] = {}


@pytest.fixture(scope="module")
def server():
    app = Flask("image-server")

    @app.route("/data/upload/1/<name>")
    def upload(name):
        HITS[name] = HITS.get(name, 0) + 1
        bodies = ANSWERS[name]
        body = bodies.pop(0) if len(bodies) > 1 else bodies[0]
        return app.response_class(body, mimetype="image/png")

    with ServerThread(app) as running:
        yield running


@pytest.fixture
def fetcher(server, tmp_path):
    ANSWERS.clear()
    HITS.clear()
    client = LabelStudioClient(server.url, "legacy-token", retries=0)
    return ImageFetcher(
        client.image_downloader(), tmp_path / "cache", max_bytes=1_000_000, max_pixels=1_000_000, timeout_s=5
    )


def test_a_truncated_download_is_not_cached_and_is_fetched_again(fetcher):
    ANSWERS["a.png"] = [GOOD[: len(GOOD) // 2], GOOD]
    url = "/data/upload/1/a.png"
    with pytest.raises(ImageError):
        fetcher.fetch_image(url, 1)
    assert cache_files(fetcher.cache.directory) == []
    assert fetcher.fetch_image(url, 1).size == (16, 16)  # the next round gets it
    assert fetcher.fetch_image(url, 1).size == (16, 16)  # ... and then from the cache
    assert HITS["a.png"] == 2
    assert fetcher.cache.path(url).read_bytes() == GOOD


def test_a_non_image_answer_is_not_cached(fetcher):
    ANSWERS["b.png"] = [b"<html>login required</html>"]
    report = FetchReport()
    assert fetcher.fetch_many([(7, "/data/upload/1/b.png")], report) == []
    assert 7 in report.failed and "ImageError" in report.failed[7]
    assert cache_files(fetcher.cache.directory) == []


def test_a_damaged_cache_file_is_discarded_and_fetched_again(fetcher):
    ANSWERS["c.png"] = [GOOD]
    url = "/data/upload/1/c.png"
    path = fetcher.cache.path(url)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated by an older version")
    assert fetcher.fetch_image(url, 1).size == (16, 16)
    assert HITS["c.png"] == 1 and path.read_bytes() == GOOD


def test_the_cache_stays_within_its_bound_evicting_the_least_recently_used(tmp_path):
    cache = ImageCache(tmp_path, max_bytes=3500)
    for name in "abc":
        cache.put(name, b"x" * 1000)
    old = time.time() - 100
    for name, age in (("a", 4), ("b", 3), ("c", 2)):  # a, then b, least recently used
        os.utime(cache.path(name), (old - age, old - age))
    assert cache.get("a") == b"x" * 1000  # a hit refreshes "a"
    cache.put("d", b"y" * 1000)  # 4000 > 3500: prune to 3150
    assert cache.get("b") is None  # the least recently used went
    assert all(cache.get(name) is not None for name in "acd")
    assert sum(size for _, _, size in cache_files(tmp_path)) <= 3500


def test_no_bound_keeps_everything(tmp_path):
    cache = ImageCache(tmp_path, max_bytes=0)
    for i in range(5):
        cache.put(str(i), b"z" * 1000)
    assert len(cache_files(tmp_path)) == 5
