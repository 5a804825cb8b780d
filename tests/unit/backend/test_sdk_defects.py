"""The label-studio-sdk defects that keep backend/ls_client.py's calls hand-written, each pinned
against a local server over real HTTP. When a release fixes one, its test fails: then move the
calls it names (comments in backend/ls_client.py) over to the SDK and delete the test."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
from flask import Flask, jsonify, request

label_studio_sdk = pytest.importorskip("label_studio_sdk")
from label_studio_sdk.client import LabelStudio  # noqa: E402
from label_studio_sdk.core import http_client  # noqa: E402
from label_studio_sdk.core.api_error import ApiError  # noqa: E402


def jwt(token_type: str, lifetime_s: float) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'token_type': token_type, 'exp': time.time() + lifetime_s})}.sig"


PAT = jwt("refresh", 86400)


def stand_in(plan: dict[str, list]) -> tuple[Flask, list[tuple[str, str]]]:
    """Label Studio's token refresh, and for every other path the answers ``plan`` lists in turn
    (an int: that status; "slow": 200 after 1.5 s), then 200."""
    app = Flask(__name__)
    seen: list[tuple[str, str]] = []

    @app.route("/<path:path>", methods=["GET", "POST", "PATCH", "DELETE"])
    def anything(path):
        seen.append((request.method, request.path))
        if request.path.endswith("/api/token/refresh/"):
            return jsonify(access=jwt("access", 300))
        answer = (plan.get(request.path) or [200]).pop(0)
        if answer == "slow":
            time.sleep(1.5)
            answer = 200
        return jsonify(id=1, created=1, email="a@example.com"), answer

    return app, seen


def test_sdk_resend_a_post_answered_5xx_is_sent_again(serve_wsgi):
    app, seen = stand_in({"/api/projects/1/import/predictions": [500, 500]})
    client = LabelStudio(base_url=serve_wsgi(app).url, api_key=PAT, max_retries=1)
    with pytest.raises(ApiError):
        client.projects.import_predictions(id=1, request=[{"task": 1, "result": []}])
    posts = [s for s in seen if s[1] == "/api/projects/1/import/predictions"]
    assert len(posts) == 2, "the SDK no longer re-sends a POST after a 5xx: see backend/ls_client.py"


def test_sdk_no_401_an_expired_access_token_is_not_refreshed(serve_wsgi):
    app, seen = stand_in({"/api/projects/1/": [401]})
    client = LabelStudio(base_url=serve_wsgi(app).url, api_key=PAT)
    with pytest.raises(ApiError) as error:
        client.projects.get(id=1)
    assert error.value.status_code == 401
    assert seen.count(("GET", "/api/projects/1/")) == 1, "the SDK now retries after a 401"


def test_sdk_subpath_the_token_refresh_drops_the_base_urls_path(serve_wsgi):
    app, seen = stand_in({})
    client = LabelStudio(base_url=serve_wsgi(app).url + "/ls", api_key=PAT)
    client.projects.get(id=1)
    assert ("POST", "/api/token/refresh/") in seen, "the SDK now refreshes under the base path"
    assert ("GET", "/ls/api/projects/1/") in seen


def test_sdk_read_timeout_a_get_that_timed_out_is_not_retried(serve_wsgi):
    app, seen = stand_in({"/api/projects/1/": ["slow"]})
    client = LabelStudio(base_url=serve_wsgi(app).url, api_key=PAT, timeout=0.5)
    with pytest.raises(httpx.ReadTimeout):
        client.projects.get(id=1)
    assert seen.count(("GET", "/api/projects/1/")) == 1, "the SDK now retries a read timeout"


def test_sdk_fixed_waits_and_sdk_missing():
    # Retry-After and backoff are module constants, not settings of a client
    assert (http_client.MAX_RETRY_DELAY_SECONDS, http_client.INITIAL_RETRY_DELAY_SECONDS) == (60.0, 1.0)
    # no call deletes a model version's predictions (only the legacy 1.x client had one)
    package = Path(label_studio_sdk.__file__).parent
    calls = [
        p
        for p in package.rglob("*.py")
        if "_legacy" not in p.parts and "model-versions" in p.read_text(errors="replace")
    ]
    assert calls == [], f"the SDK now has a model-versions call: {calls}"
