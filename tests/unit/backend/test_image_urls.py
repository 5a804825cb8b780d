import base64
from pathlib import Path

import pytest

from backend.image_urls import ImageURLRefused, check_fetch_allowed, decode_data_uri, resolve_image_source

LS = "http://127.0.0.1:8080"


def resolve(raw, **kw):
    kw.setdefault("task_id", 5)
    return resolve_image_source(raw, label_studio_url=LS, **kw)


def test_uploads_resolve_against_label_studio_with_auth():
    src = resolve("/data/upload/3/ab12cd34-x.png")
    assert src.url == "http://127.0.0.1:8080/data/upload/3/ab12cd34-x.png" and src.send_auth
    assert src.kind == "label_studio"


def test_absolute_url_on_label_studio_host_gets_auth_but_allowed_hosts_do_not():
    assert resolve("http://127.0.0.1:8080/data/upload/1/a.png").send_auth
    src = resolve("https://images.example.org/a.png", allowed_hosts=("images.example.org",))
    assert src.kind == "allowed_host" and not src.send_auth


@pytest.mark.parametrize(
    "raw",
    [
        "http://127.0.0.2:9999/x.png",  # another host, not allowed
        "http://127.0.0.1:8081/x.png",  # same host, other port
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "gopher://127.0.0.1:8080/",
        "relative/path.png",
    ],
)
def test_everything_else_is_refused(raw):
    with pytest.raises(ImageURLRefused):
        resolve(raw)


def test_link_local_is_refused_even_when_allow_listed():
    with pytest.raises(ImageURLRefused, match="link-local"):
        check_fetch_allowed("http://169.254.169.254/", LS, ("169.254.169.254",))


def test_cloud_uris_go_through_label_studio_presign():
    src = resolve("s3://bucket/key.png", task_id=42)
    assert src.kind == "presign" and src.send_auth
    assert src.url.startswith("http://127.0.0.1:8080/tasks/42/presign/?fileuri=")
    encoded = src.url.split("fileuri=")[1]
    assert base64.urlsafe_b64decode(encoded).decode() == "s3://bucket/key.png"


def test_local_files_read_from_disk_only_inside_the_root(tmp_path: Path):
    (tmp_path / "imgs").mkdir()
    src = resolve("/data/local-files/?d=imgs/a.png", local_files_root=tmp_path)
    assert src.kind == "local_file" and Path(src.url) == (tmp_path / "imgs" / "a.png").resolve()
    with pytest.raises(ImageURLRefused, match="escapes"):
        resolve("/data/local-files/?d=../../etc/passwd", local_files_root=tmp_path)
    # without a shared root it is fetched from Label Studio over HTTP
    assert resolve("/data/local-files/?d=imgs/a.png").kind == "label_studio"


def test_data_uris_decode_and_respect_the_size_cap():
    raw = b"\x89PNG fake"
    uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    assert resolve(uri).kind == "data_uri"
    assert decode_data_uri(uri, 1000) == raw
    with pytest.raises(ValueError, match="IMAGE_MAX_BYTES"):
        decode_data_uri("data:image/png;base64," + "A" * 4000, 100)
