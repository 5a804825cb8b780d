"""Bad and unusual images served over real HTTP on loopback, fetched through ImageFetcher.

Every bad image is skipped with a per-task reason in FetchReport.summary(); the good ones still
come back, and the convertible formats (CMYK, 16-bit, palette with transparency, animated) load
as RGB. A slow server and a server that drips its body byte by byte are both cut off in time.
"""

from __future__ import annotations

import gzip
import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from backend.images import FetchReport, ImageFetcher
from backend.ls_client import LabelStudioClient

MAX_BYTES = 1_000_000
MAX_PIXELS = 4_000_000
TIMEOUT_S = 1.0
TOKEN = "images-test-legacy-token"


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: lets a test declare any size or sample depth."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def decompression_bomb() -> bytes:
    """A ~100-byte PNG whose header declares 30000 x 30000 pixels (0.9 gigapixel)."""
    # 1 row of the real data is enough: the header alone must get it refused, before decoding
    return raw_png(30000, 30000, 8, 0, b"\x00" + b"\x00" * 64)


def sixteen_bit_rgb(width=5, height=4) -> bytes:
    pixel = struct.pack(">HHH", 65535, 0, 32896)  # full red, no green, half blue
    rows = b"".join(b"\x00" + pixel * width for _ in range(height))
    return raw_png(width, height, 16, 2, rows)


def palette_with_transparency() -> bytes:
    img = Image.new("P", (6, 6), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black, index 1 red
    for x in range(3):
        for y in range(6):
            img.putpixel((x, y), 1)
    return encode(img, "PNG", transparency=0)  # index 0 (right half) transparent


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


GOOD_PNG = encode(Image.new("RGB", (10, 7), (10, 200, 30)), "PNG")
NOISE_PNG = encode(
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG"
)
IMAGES = {
    "good.png": GOOD_PNG,
    "good.jpg": encode(Image.new("RGB", (16, 16), (0, 0, 255)), "JPEG", quality=95),
    "gray.png": encode(Image.new("L", (4, 4), 77), "PNG"),
    "rgba.png": encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"),
    "cmyk.jpg": encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95),
    "gray16.png": encode(Image.fromarray(np.full((4, 6), 32896, dtype=np.uint16)), "PNG"),
    "rgb16.png": sixteen_bit_rgb(),
    "palette.png": palette_with_transparency(),
    "anim.gif": animated_gif(),
    # bad ones
    "text.png": b"this is not an image at all, just text pretending to be a PNG",
    "truncated.png": NOISE_PNG[: len(NOISE_PNG) * 3 // 5],  # header fine, pixels cut
    "header-only.jpg": encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200],
    "bomb.png": decompression_bomb(),
    "huge.png": encode(Image.new("L", (2500, 2000), 0), "PNG"),  # 5 Mpx > cap, ~5 KB file
    "empty.png": b"",
}
BAD_PIXELS = {"bomb.png", "huge.png"}


class ImageServer(BaseHTTPRequestHandler):
    """Stands in for Label Studio's /data/upload/... file serving."""

    protocol_version = "HTTP/1.1"
    auth_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.auth_seen.append(self.headers.get("Authorization"))
        name = self.path.rsplit("/", 1)[-1]
        try:
            if name == "slow.png":  # answers after the timeout
                time.sleep(TIMEOUT_S * 3)
                return self._send(200, GOOD_PNG)
            if name == "drip.png":  # headers at once, then 1 byte / 0.1 s
                body = IMAGES["good.jpg"]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                deadline = time.monotonic() + TIMEOUT_S * 8  # then give up (test hygiene)
                for byte in body:
                    if time.monotonic() > deadline:
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
                self.close_connection = True
                return None
            if name == "too-large.bin":  # honest Content-Length above the cap
                return self._send(200, b"\x00" * (MAX_BYTES + 10))
            if name == "endless.bin":  # no Content-Length, more than the cap
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b"\x00" * 64 * 1024)
                return None
            if name in ("chunked-gzip.png", "gzip-bomb.bin"):  # decoded size is what counts
                body = gzip.compress(
                    NOISE_PNG if name == "chunked-gzip.png" else b"\x00" * (MAX_BYTES * 30), 9
                )
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 4096):
                    part = body[i : i + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return None
            if name == "error.png":
                return self._send(500, b"boom")
            if name not in IMAGES:
                return self._send(404, b"not found")
            return self._send(200, IMAGES[name])
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _send(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class RoomyThreadingHTTPServer(ThreadingHTTPServer):
    # The fetcher opens FETCH_THREADS connections at once. With the default listen backlog of 5 a
    # burst can overflow it; the kernel drops the SYN and the client's retry comes after 1 s, which
    # is TIMEOUT_S: a good image would fail with ConnectTimeout on a busy machine.
    request_queue_size = 128


@pytest.fixture(scope="module")
def image_server():
    server = RoomyThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def fetcher_for(url: str) -> ImageFetcher:
    client = LabelStudioClient(url, TOKEN, timeout_s=5, retries=0)
    return ImageFetcher(
        client.image_downloader(), None, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, timeout_s=TIMEOUT_S
    )


def test_bad_images_are_skipped_with_a_reason_and_good_ones_come_back(image_server):
    bad = {
        "missing.png": "HTTP 404",
        "error.png": "HTTP 500",
        "slow.png": "Timeout",
        "drip.png": "longer than",
        "text.png": "not a recognised image",
        "truncated.png": "truncated",
        "header-only.jpg": "truncated",
        "bomb.png": "too large",
        "huge.png": "too large",
        "empty.png": "empty",
        "too-large.bin": "IMAGE_MAX_BYTES",
        "endless.bin": "IMAGE_MAX_BYTES",
        "gzip-bomb.bin": "IMAGE_MAX_BYTES",
    }
    good = [
        "good.png",
        "good.jpg",
        "gray.png",
        "rgba.png",
        "cmyk.jpg",
        "gray16.png",
        "rgb16.png",
        "palette.png",
        "anim.gif",
        "chunked-gzip.png",
    ]
    names = [n for pair in zip(good, list(bad)[: len(good)], strict=False) for n in pair] + list(bad)[
        len(good) :
    ]
    items = [(i + 1, f"/data/upload/1/{name}") for i, name in enumerate(names)]
    task_of = {name: i + 1 for i, name in enumerate(names)}
    report = FetchReport()
    started = time.monotonic()
    images = fetcher_for(image_server).fetch_many(items, report)
    elapsed = time.monotonic() - started

    assert [tid for tid, _ in images] == [task_of[n] for n in good]  # input order kept
    assert all(img.mode == "RGB" for _, img in images)
    summary = report.summary(examples=len(names))
    assert summary["skipped_tasks"] == len(bad)
    for name, expected in bad.items():
        reason = summary["examples"][str(task_of[name])]
        assert expected.lower() in reason.lower(), (name, reason)
    assert sum(summary["reasons"].values()) == len(bad)
    # the slow and the dripping server are cut off near the timeout, in parallel
    assert elapsed < TIMEOUT_S * 4, elapsed


def pixels(image_server, name: str) -> Image.Image:
    report = FetchReport()
    out = fetcher_for(image_server).fetch_many([(1, f"/data/upload/1/{name}")], report)
    assert not report.failed, report.failed
    ((_, img),) = out
    assert img.mode == "RGB"
    return img


def close(actual, expected, tolerance=6):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def test_convertible_formats_load_as_rgb_with_the_right_colours(image_server):
    assert close(pixels(image_server, "cmyk.jpg").getpixel((4, 4)), (255, 0, 0))
    assert pixels(image_server, "gray16.png").getpixel((0, 0)) == (128, 128, 128)  # not clipped
    assert close(pixels(image_server, "rgb16.png").getpixel((0, 0)), (255, 0, 128), 1)
    palette = pixels(image_server, "palette.png")
    assert palette.getpixel((0, 0)) == (255, 0, 0)
    assert palette.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white, like LS
    assert pixels(image_server, "rgba.png").getpixel((0, 0)) == (255, 255, 255)
    anim = pixels(image_server, "anim.gif")
    assert close(anim.getpixel((0, 0)), (250, 0, 0)) and anim.size == (8, 8)  # first frame
    assert pixels(image_server, "gray.png").getpixel((1, 1)) == (77, 77, 77)


def test_the_decompression_bomb_is_refused_from_its_header_alone(image_server):
    from model.data import ImageError, load_image_bytes

    bomb = IMAGES["bomb.png"]
    assert len(bomb) < 200
    started = time.monotonic()
    with pytest.raises(ImageError, match="too large"):
        load_image_bytes(bomb, max_pixels=10**12)  # PIL's own bomb guard still applies
    with pytest.raises(ImageError, match="too large"):
        load_image_bytes(IMAGES["huge.png"], max_pixels=MAX_PIXELS)
    assert time.monotonic() - started < 1.0  # nothing was decoded
