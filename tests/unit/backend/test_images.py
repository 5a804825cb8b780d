import base64
import io

from PIL import Image

from backend.images import FetchReport, ImageFetcher
from backend.ls_client import LabelStudioClient


def data_uri(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def fetcher(resize_to=None):
    client = LabelStudioClient("http://127.0.0.1:9", "t", retries=0)
    return ImageFetcher(
        client.image_downloader(),
        None,
        max_bytes=10_000_000,
        max_pixels=10_000_000,
        timeout_s=1,
        resize_to=resize_to,
    )


def test_images_are_held_at_the_models_input_size():
    big = Image.new("L", (1200, 900), 128)
    image = fetcher(resize_to=32).fetch_image(data_uri(big), task_id=1)
    assert image.size == (32, 32) and image.mode == "RGB"
    assert fetcher().fetch_image(data_uri(big), task_id=1).size == (1200, 900)


def test_one_bad_image_does_not_fail_the_batch():
    report = FetchReport()
    good = data_uri(Image.new("RGB", (8, 8)))
    out = fetcher(8).fetch_many(
        [(1, good), (2, "data:image/png;base64,AAAA"), (3, "http://127.0.0.2:1/x.png"), (4, good)], report
    )
    assert [task_id for task_id, _ in out] == [1, 4]
    assert set(report.failed) == {2, 3}
    assert report.summary()["skipped_tasks"] == 2
