"""The dashboard behind a reverse proxy, as docs/deployment.md describes it: gunicorn started
for real with ``SCRIPT_NAME`` (a path prefix the proxy passes on unchanged) serves every route
under the prefix and writes the prefix into the page's links; the "make live" action takes the
browser's Origin only when the proxy passed the public Host on. The proxy itself is played by
the requests' own Host and Origin headers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from backend.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.redis
REPO = Path(__file__).resolve().parents[2]
PREFIX = "/active-learning"
AUTH = ("admin", "proxy-s3cret")
VERSION = "al-20260101-000000-abcdef"


@pytest.fixture
def backend_under_prefix(redis_server, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in set(Settings.env_names().values())}
    env.update(
        MODEL_DIR=str(tmp_path / "models"),
        PYTHONPATH=str(REPO),
        REDIS_URL=redis_server,
        BASIC_AUTH_USER=AUTH[0],
        BASIC_AUTH_PASS=AUTH[1],
        SCRIPT_NAME=PREFIX,
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "backend.wsgi:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--config",
            "python:backend.gunicorn_conf",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}{PREFIX}/health", timeout=5).status_code == 200:
                break
        except (requests.ConnectionError, requests.Timeout):
            pass
        assert process.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
        time.sleep(0.3)
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def test_every_route_and_link_carries_the_prefix(backend_under_prefix):
    url = backend_under_prefix
    page = requests.get(f"{url}{PREFIX}/dashboard", auth=AUTH, timeout=10)
    assert page.status_code == 200
    assert f'data-progress-url="{PREFIX}/dashboard/progress.json"' in page.text
    assert requests.get(f"{url}{PREFIX}/dashboard/progress.json", auth=AUTH, timeout=10).status_code == 200
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    root = requests.get(
        f"{url}{PREFIX}/",
        auth=AUTH,
        allow_redirects=False,
        timeout=10,
        headers={**browser, "Host": "labels.example.org"},
    )
    location = urlsplit(root.headers["Location"])
    assert root.status_code == 302 and location.path == f"{PREFIX}/dashboard"
    assert location.netloc in ("", "labels.example.org")  # the Host the proxy passed on
    assert requests.get(f"{url}{PREFIX}/", auth=AUTH, timeout=10).json()["status"] == "UP"
    # with SCRIPT_NAME set, gunicorn answers only paths under the prefix: health checks included
    assert requests.get(f"{url}/health", timeout=10).status_code >= 400


def test_the_action_needs_the_public_host_passed_on(backend_under_prefix):
    action = f"{backend_under_prefix}{PREFIX}/dashboard/projects/1/versions/{VERSION}/make-live"
    public = {"Origin": "https://labels.example.org", "X-Requested-With": "dashboard"}
    # proxy_set_header Host $host: the browser's origin is this host, the action is reached
    # (and refused for its own reason: no such version's files)
    passed_on = requests.post(action, auth=AUTH, timeout=10, headers={**public, "Host": "labels.example.org"})
    assert passed_on.status_code == 409 and "pruned" in passed_on.json()["error"]
    # the proxy's default (the upstream's address as Host): refused as cross-site
    rewritten = requests.post(action, auth=AUTH, timeout=10, headers=public)
    assert rewritten.status_code == 403 and "cross-site" in rewritten.json()["error"]
