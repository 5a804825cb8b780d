"""Scoring reads each pool image's model-ready array from the cache after its first round: the
same outputs bit for bit, no decode, damaged entries made again, and the cache's byte bound kept.

Images are served over real HTTP on loopback by a small Flask app standing in for Label Studio's
/data/upload/ route; the model is a real (untrained) network.
"""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np
import pytest
import torch
from flask import Flask
from PIL import Image

from backend.image_arrays import ARRAY_DIGEST_BYTES, array_cache_key, decode_array, encode_array
from backend.images import FetchReport, ImageFetcher, cache_files
from backend.ls_client import LabelStudioClient
from backend.rounds.score import score_pool
from backend.settings import Settings
from model import scoring
from model.config import ModelConfig
from model.data import ImageError, load_image_bytes, model_ready_array
from model.networks import build_network
from tests.conftest import ServerThread


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def served_images() -> dict[str, bytes]:
    """One of each kind a project holds: photos (JPEG, with an EXIF rotation), PNGs in RGB, RGBA
    and grayscale, a palette GIF, and images smaller and larger than the model's input."""
    rng = np.random.default_rng(7)
    photo = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    return {
        "photo.jpg": encoded(photo, "JPEG", quality=85),
        "rotated.jpg": encoded(photo.crop((0, 0, 256, 180)), "JPEG", exif=exif.tobytes()),
        "rgb.png": encoded(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG"),
        "alpha.png": encoded(
            Image.fromarray(rng.integers(0, 255, (40, 50, 4), dtype=np.uint8), mode="RGBA"), "PNG"
        ),
        "gray.png": encoded(Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), mode="L"), "PNG"),
        "palette.gif": encoded(
            Image.fromarray(rng.integers(0, 255, (33, 47, 3), dtype=np.uint8)).convert("P"), "GIF"
        ),
    }


IMAGES = served_images()
ITEMS = [(task_id, f"/data/upload/1/{name}") for task_id, name in enumerate(IMAGES, start=1)]
SERVER_DOWN: list[bool] = [False]
HITS: list[str] = []


@pytest.fixture(scope="module")
def server():
    app = Flask("image-server")

    @app.route("/data/upload/1/<name>")
    def upload(name):
        HITS.append(name)
        if SERVER_DOWN[0]:
            return "down", 500
        return app.response_class(IMAGES[name], mimetype="application/octet-stream")

    with ServerThread(app) as running:
        yield running


@pytest.fixture
def client(server):
    HITS.clear()
    SERVER_DOWN[0] = False
    yield LabelStudioClient(server.url, "legacy-token", retries=0)
    SERVER_DOWN[0] = False


def make_fetcher(
    client, directory, *, cache_arrays=True, max_pixels=1_000_000, cache_max_bytes=0, resize_to=None
) -> ImageFetcher:
    return ImageFetcher(
        client.image_downloader(),
        directory,
        max_bytes=1_000_000,
        max_pixels=max_pixels,
        timeout_s=5,
        resize_to=resize_to,
        cache_max_bytes=cache_max_bytes,
        cache_arrays=cache_arrays,
    )


CONFIGS = {
    "rgb-32": ModelConfig(image_size=32),
    "gray-16": ModelConfig(image_size=16, channels=1, mean=(0.5,), std=(0.5,)),
}


def scored(model, config, fetcher):
    report = FetchReport()
    ids, outputs = score_pool(
        model, config, fetcher, ITEMS, report, Settings(score_batch_size=4), on_progress=lambda *_: None
    )
    assert report.failed == {}
    return ids, outputs


def assert_identical(first, second):
    (ids_a, a), (ids_b, b) = first, second
    assert ids_a == ids_b
    for name in ("probs", "predicted_loss", "embedding"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_scores_are_bit_identical_with_and_without_the_array_cache(client, tmp_path, config_name):
    config = CONFIGS[config_name]
    torch.manual_seed(0)
    model = build_network(config, num_classes=3)
    cached = make_fetcher(client, tmp_path / "cached", resize_to=config.image_size)
    plain = make_fetcher(client, tmp_path / "plain", cache_arrays=False, resize_to=config.image_size)

    first_round = scored(model, config, cached)  # arrays made and kept
    downloads = len(HITS)
    later_round = scored(model, config, cached)  # arrays read back
    assert len(HITS) == downloads == len(ITEMS)  # the later round fetched nothing
    without = scored(model, config, plain)
    # the path before arrays were cached: PIL images at the model's size, stacked by the scorer
    images = plain.fetch_many(ITEMS, FetchReport())
    before = (
        [tid for tid, _ in images],
        scoring.score(model, [img for _, img in images], config, batch_size=4),
    )

    for other in (later_round, without, before):
        assert_identical(first_round, other)
    assert len(cache_files(tmp_path / "cached")) == 2 * len(ITEMS)  # bytes + arrays
    assert len(cache_files(tmp_path / "plain")) == len(ITEMS)  # bytes only


def test_a_later_round_needs_neither_the_image_bytes_nor_the_server(client, tmp_path):
    fetcher = make_fetcher(client, tmp_path)
    first = fetcher.fetch_arrays(ITEMS, FetchReport(), image_size=32, channels=3)
    for _, url in ITEMS:
        fetcher.cache.discard(url)  # the bytes are gone (evicted) ...
    SERVER_DOWN[0] = True  # ... and cannot be downloaded
    HITS.clear()
    report = FetchReport()
    later = fetcher.fetch_arrays(ITEMS, report, image_size=32, channels=3)
    assert report.failed == {} and HITS == []
    assert [tid for tid, _ in later] == [tid for tid, _ in first]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, later, strict=False))
    # decoding would have needed the bytes: the image path fails where the array path did not
    assert fetcher.fetch_many(ITEMS[:1], report) == [] and set(report.failed) == {ITEMS[0][0]}


def test_each_model_input_shape_has_its_own_array(client, tmp_path):
    fetcher = make_fetcher(client, tmp_path)
    task_id, url = ITEMS[0]
    decoded = load_image_bytes(IMAGES["photo.jpg"], max_pixels=1_000_000)
    for size, channels in ((32, 3), (16, 1), (32, 1), (32, 3)):
        array = fetcher.fetch_array(url, task_id, size, channels)
        assert np.array_equal(array, model_ready_array(decoded, size, channels))
    assert len(cache_files(tmp_path)) == 1 + 3  # the bytes, three arrays
    assert HITS == ["photo.jpg"]


def test_the_key_holds_everything_that_changes_the_array(monkeypatch):
    base = array_cache_key("/data/upload/1/a.png", 32, 3, 1000)
    others = {
        array_cache_key("/data/upload/1/b.png", 32, 3, 1000),
        array_cache_key("/data/upload/1/a.png", 64, 3, 1000),
        array_cache_key("/data/upload/1/a.png", 32, 1, 1000),
        array_cache_key("/data/upload/1/a.png", 32, 3, 999),
    }
    monkeypatch.setattr("backend.image_arrays.MODEL_ARRAY_VERSION", 999)  # a new preprocessing
    others.add(array_cache_key("/data/upload/1/a.png", 32, 3, 1000))
    assert base not in others and len(others) == 5


def with_digest(payload: bytes) -> bytes:
    """Any payload with a valid digest: what decode_array must still refuse when it is not ours."""
    return payload + hashlib.blake2b(payload, digest_size=ARRAY_DIGEST_BYTES).digest()


def pickled(_: bytes) -> bytes:
    out = io.BytesIO()
    np.save(out, np.array([{"not": "pixels"}], dtype=object), allow_pickle=True)
    return with_digest(out.getvalue())


DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "a flipped pixel": lambda data: data[:200] + bytes([data[200] ^ 1]) + data[201:],
    "another shape": lambda data: encode_array(np.zeros((8, 8, 3), np.uint8)),
    "another dtype": lambda data: encode_array(np.zeros((32, 32, 3), np.float32)),
    "a pickle": pickled,
    "not an array": lambda data: with_digest(b"GIF89a" + bytes(3000)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_array_is_a_logged_miss_and_made_again(client, tmp_path, caplog, damage):
    fetcher = make_fetcher(client, tmp_path)
    task_id, url = ITEMS[2]
    good = fetcher.fetch_array(url, task_id, 32, 3)
    path = fetcher.cache.path(array_cache_key(url, 32, 3, fetcher.max_pixels))
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="backend.images"):
        report = FetchReport()
        again = fetcher.fetch_arrays([(task_id, url)], report, image_size=32, channels=3)
    assert report.failed == {}
    assert np.array_equal(again[0][1], good)
    assert "unreadable model-ready array" in caplog.text
    assert np.array_equal(decode_array(path.read_bytes(), (32, 32, 3)), good)  # rewritten


def test_an_array_with_another_npy_header_layout_is_still_read():
    """Arrays are read by matching the header this process writes; a valid .npy file written
    another way (another numpy, format 2.0) goes through numpy's own reader instead."""
    array = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    np.lib.format.write_array(out, array, version=(2, 0), allow_pickle=False)
    assert not encode_array(array).startswith(out.getvalue()[:16])  # another header indeed
    saved = io.BytesIO()
    np.save(saved, array, allow_pickle=False)
    assert encode_array(array) == with_digest(saved.getvalue())  # what np.save writes
    for data in (with_digest(out.getvalue()), encode_array(array)):
        read = decode_array(data, (32, 32, 3))
        assert np.array_equal(read, array) and not read.flags.writeable


def test_a_lowered_pixel_limit_is_not_bypassed_by_a_kept_array(client, tmp_path):
    task_id, url = ITEMS[0]  # 256 x 256 pixels
    make_fetcher(client, tmp_path).fetch_array(url, task_id, 32, 3)
    strict = make_fetcher(client, tmp_path, max_pixels=1000)
    with pytest.raises(ImageError, match="too large"):
        strict.fetch_array(url, task_id, 32, 3)


def test_arrays_and_bytes_stay_within_the_caches_byte_bound(client, tmp_path):
    bound = 40_000
    fetcher = make_fetcher(client, tmp_path, cache_max_bytes=bound)
    for _ in range(2):
        report = FetchReport()
        arrays = fetcher.fetch_arrays(ITEMS, report, image_size=32, channels=3)
        assert report.failed == {} and len(arrays) == len(ITEMS)
        assert sum(size for _, _, size in cache_files(tmp_path)) <= bound
