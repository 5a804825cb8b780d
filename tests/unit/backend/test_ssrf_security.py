"""SSRF: task image URLs and redirects never reach a host that is neither Label Studio nor allowed.

A canary HTTP server on 127.0.0.2 records every request it gets; Label Studio is a small Flask
stand-in on 127.0.0.1 (the real Label Studio is covered by the e2e tests). Every refused case
must leave the canary untouched; an explicitly allowed canary is fetched, but without the Label
Studio token (which only ever goes to Label Studio's own host) and without its cookies.
"""

from __future__ import annotations

import io

import pytest
from flask import Flask, redirect, request
from PIL import Image

from backend.image_download import ImageDownloader, ImageFetchError
from backend.ls_client import LabelStudioClient

TOKEN = "ssrf-test-legacy-token-0123456789"
PNG = io.BytesIO()
Image.new("RGB", (3, 3), (9, 9, 9)).save(PNG, format="PNG")
PNG = PNG.getvalue()


def ls_standin(presign_target: dict) -> Flask:
    app = Flask("ls-standin")
    app.seen = []

    @app.route("/data/upload/1/<name>")
    def upload(name):
        app.seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Token {TOKEN}":
            return "no", 401
        response = app.response_class(PNG, mimetype="image/png")
        response.set_cookie("sessionid", "ls-session-secret")
        return response

    @app.route("/redir")
    def redir():
        # raw Location header, exactly as given (Flask would not rewrite it, but be explicit)
        response = app.response_class("", status=302)
        response.headers["Location"] = request.args["to"]
        response.autocorrect_location_header = False
        return response

    @app.route("/tasks/<int:task_id>/presign/")
    def presign(task_id):
        return redirect(presign_target["url"], 302)

    return app


def canary_app() -> Flask:
    app = Flask("canary")
    app.hits = []

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    def anything(path):
        app.hits.append(
            {
                "path": request.full_path,
                "auth": request.headers.get("Authorization"),
                "cookie": request.headers.get("Cookie"),
            }
        )
        if path == "bounce":
            response = app.response_class("", status=302)
            response.headers["Location"] = request.args["to"]
            response.autocorrect_location_header = False
            return response
        return app.response_class(PNG, mimetype="image/png")

    return app


@pytest.fixture(scope="module")
def running_servers():
    from tests.conftest import ServerThread

    presign_target = {"url": ""}
    ls_app, canary = ls_standin(presign_target), canary_app()
    with ServerThread(ls_app, "127.0.0.1") as ls, ServerThread(canary, "127.0.0.2") as can:
        ls.app, can.app, ls.presign = ls_app, canary, presign_target
        ls.hostport = ls.url.split("//")[1]
        can.hostport = can.url.split("//")[1]
        can.port = int(can.hostport.rsplit(":", 1)[1])
        yield ls, can


@pytest.fixture
def servers(running_servers):
    ls, can = running_servers
    ls.app.seen.clear()
    can.app.hits.clear()
    ls.presign["url"] = ""
    return ls, can


def client_for(ls, allowed=()) -> ImageDownloader:
    return LabelStudioClient(ls.url, TOKEN, timeout_s=3, retries=0).image_downloader(allowed)


def fetch(client, raw):
    return client.fetch_image_bytes(raw, task_id=7, max_bytes=1_000_000, timeout_s=3)


DIRECT = [
    "http://{c}/x.png",
    "https://{c}/x.png",
    "HTTP://{c}/x.png",
    " http://{c}/x.png",
    "http://{ls}@{c}/x.png",
    "http://{ls}\\@{c}/x.png",
    "http://user:{token}@{c}/x.png",
    "http://{c}#@{ls}/x.png",
    "http://{c}?@{ls}/x.png",
    "http://{c}\t/x.png",
    "//{c}/x.png",
    "///{c}/x.png",
    "http:/{c}/x.png",
    "http:{c}/x.png",
    "http://2130706434:{cport}/x.png",
    "http://0x7f000002:{cport}/x.png",
    "http://127.2:{cport}/x.png",
    "http://0177.0.0.2:{cport}/x.png",
    "http://[::ffff:127.0.0.2]:{cport}/x.png",
    "http://0.0.0.0:{cport}/x.png",
    "ftp://{c}/x.png",
    "gopher://{c}/x",
    "file:///etc/passwd",
    "dict://{c}/",
]
REDIRECTS = [
    "http://{c}/x.png",
    "https://{c}/x.png",
    "//{c}/x.png",
    "http://{ls}@{c}/x.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://0.0.0.0:{cport}/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "file:///etc/passwd",
    "gopher://{c}/",
    "http://2130706434:{cport}/",
]


def fill(template: str, ls, can) -> str:
    return template.format(c=can.hostport, ls=ls.hostport, cport=can.port, token=TOKEN)


def test_the_token_goes_to_label_studio_uploads(servers):
    ls, can = servers
    assert fetch(client_for(ls), "/data/upload/1/a.png") == PNG
    assert ls.app.seen == [f"Token {TOKEN}"] and can.app.hits == []


@pytest.mark.parametrize("template", DIRECT)
def test_task_urls_pointing_elsewhere_are_refused_without_a_request(servers, template):
    ls, can = servers
    with pytest.raises(ImageFetchError):
        fetch(client_for(ls), fill(template, ls, can))
    assert can.app.hits == []


@pytest.mark.parametrize("template", REDIRECTS)
def test_label_studio_redirects_elsewhere_are_refused(servers, template):
    ls, can = servers
    from urllib.parse import quote

    raw = f"/redir?to={quote(fill(template, ls, can), safe='')}"
    with pytest.raises(ImageFetchError, match="redirect refused|link-local|scheme"):
        fetch(client_for(ls), raw)
    assert can.app.hits == []


def test_redirect_loops_stop(servers):
    ls, can = servers
    from urllib.parse import quote

    url = "/data/upload/1/a.png"
    for _ in range(6):
        url = f"/redir?to={quote(url, safe='')}"
    with pytest.raises(ImageFetchError, match="redirects"):
        fetch(client_for(ls), url)


@pytest.mark.parametrize(
    "target", ["http://{c}/x.png", "https://169.254.169.254/x", "file:///etc/passwd", "https://[fe80::1]/x"]
)
def test_presigned_cloud_redirects_only_go_to_public_https_without_the_token(servers, target):
    ls, can = servers
    ls.presign["url"] = fill(target, ls, can)
    with pytest.raises(ImageFetchError):
        fetch(client_for(ls), "s3://bucket/key.png")
    assert can.app.hits == []


def test_an_allowed_host_is_fetched_but_never_gets_the_token_or_cookies(servers):
    ls, can = servers
    client = client_for(ls, allowed=(f"127.0.0.2:{can.port}",))
    fetch(client, "/data/upload/1/a.png")  # Label Studio sets a session cookie
    assert fetch(client, f"http://{can.hostport}/direct.png") == PNG
    from urllib.parse import quote

    assert fetch(client, f"/redir?to={quote(can.url + '/via-ls.png', safe='')}") == PNG
    assert [hit["path"] for hit in can.app.hits] == ["/direct.png?", "/via-ls.png?"]
    assert all(hit["auth"] is None and hit["cookie"] is None for hit in can.app.hits)
    # the allowed host cannot bounce the fetch on to a metadata address or another host
    for target in (
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.3:9/x.png",
        "file:///etc/passwd",
    ):
        with pytest.raises(ImageFetchError, match="redirect refused"):
            fetch(client, f"{can.url}/bounce?to={quote(target, safe='')}")
    # another port of the same allowed address is not allowed
    with pytest.raises(ImageFetchError):
        fetch(client, f"http://127.0.0.2:{can.port + 1}/x.png")


def test_allow_listing_a_host_never_allows_link_local(servers):
    ls, _ = servers
    client = client_for(ls, allowed=("169.254.169.254", "169.254.169.254:80", "[fe80::1]:80"))
    for raw in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x"):
        with pytest.raises(ImageFetchError, match="link-local"):
            fetch(client, raw)
