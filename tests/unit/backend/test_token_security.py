"""Label Studio tokens: both kinds, refresh on expiry, retries, and the token never leaking.

The server here is a small Flask STAND-IN for Label Studio 1.23 that imitates its token rules
(legacy ``Token`` header; a personal access token is a JWT refresh token exchanged at
/api/token/refresh/ for a short-lived access token sent as ``Bearer``; the PAT itself as Bearer
gets 401). The real Label Studio is exercised by the e2e tests.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import threading
import time

import pytest
from flask import Flask, jsonify, request
from PIL import Image

from backend.images import FetchReport, ImageFetcher
from backend.ls_client import LabelStudioClient, LabelStudioError
from tests.conftest import ServerThread, free_port

LEGACY = "0123456789abcdef0123456789abcdef01234567"
PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJlLXN0YW5kLWlu"
PNG = io.BytesIO()
Image.new("RGB", (4, 4), (1, 2, 3)).save(PNG, format="PNG")
PNG = PNG.getvalue()


class StandIn:
    """Label Studio stand-in state; reset before every test."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.refresh_bodies: list = []
        self.valid_access: set[str] = set()
        self.counter = itertools.count(1)
        self.auth_seen: list = []
        self.hits: dict[str, int] = {}
        self.fail_plan: dict[str, list[int]] = {}  # path -> statuses to answer first
        self.refresh_fail: list[int] = []
        self.pat_revoked = False

    def authorised(self, header: str | None) -> bool:
        if header == f"Token {LEGACY}":
            return True
        if header and header.startswith("Bearer "):
            return header[7:] in self.valid_access  # the PAT itself as Bearer: 401
        return False

    def expire_access_tokens(self):
        with self.lock:
            self.valid_access.clear()


def make_app(state: StandIn) -> Flask:
    app = Flask("label-studio-standin")

    @app.route("/api/token/refresh/", methods=["POST"])
    def refresh():
        body = request.get_json(silent=True) or {}
        with state.lock:
            state.refresh_bodies.append(body)
            if state.refresh_fail:
                return jsonify({"detail": "unavailable"}), state.refresh_fail.pop(0)
            if body.get("refresh") != PAT or state.pat_revoked:
                return jsonify({"detail": "Token is invalid or expired"}), 401
            access = f"access-{next(state.counter)}"
            state.valid_access.add(access)
        return jsonify({"access": access})

    @app.before_request
    def check():
        if request.path == "/api/token/refresh/":
            return None
        header = request.headers.get("Authorization")
        with state.lock:
            state.auth_seen.append(header)
            state.hits[request.path] = state.hits.get(request.path, 0) + 1
            plan = state.fail_plan.get(request.path)
            if plan:
                # a failing Label Studio that echoes the request, token included, in its error
                return jsonify({"error": "server error", "echo": dict(request.headers)}), plan.pop(0)
        if not state.authorised(header):
            return jsonify({"detail": "Authentication credentials were not provided."}), 401
        return None

    @app.route("/api/current-user/whoami")
    def whoami():
        return jsonify({"id": 1, "email": "admin@example.com", "x_test": request.headers.get("X-Test")})

    @app.route("/api/projects/<int:project_id>/")
    def project(project_id):
        return jsonify({"id": project_id, "title": "stand-in"})

    @app.route("/data/upload/1/<name>")
    def upload(name):
        return app.response_class(PNG, mimetype="image/png")

    return app


@pytest.fixture(scope="module")
def standin():
    state = StandIn()
    with ServerThread(make_app(state)) as server:
        server.state = state
        yield server


@pytest.fixture
def ls(standin):
    standin.state.reset()
    return standin


def client(server, token, **kw):
    kw.setdefault("retries", 3)
    kw.setdefault("backoff_s", 0.02)
    return LabelStudioClient(server.url, token, timeout_s=5, **kw)


def test_legacy_token_is_sent_as_token_header_and_never_exchanged(ls):
    c = client(ls, LEGACY)
    assert c.token_kind == "legacy token"
    assert c.whoami()["id"] == 1 and c.get_project(3)["id"] == 3
    assert ls.state.auth_seen == [f"Token {LEGACY}"] * 2
    assert ls.state.refresh_bodies == []


def test_personal_access_token_is_exchanged_once_then_sent_as_bearer_access(ls):
    c = client(ls, PAT)
    assert c.token_kind == "personal access token"
    for project_id in (1, 2, 3):
        assert c.get_project(project_id)["id"] == project_id
    assert ls.state.refresh_bodies == [{"refresh": PAT}]
    assert ls.state.auth_seen == ["Bearer access-1"] * 3
    assert not any(PAT in (h or "") for h in ls.state.auth_seen)  # the PAT is never a header


def test_an_expired_access_token_mid_job_is_refreshed_exactly_once(ls):
    c = client(ls, PAT)
    c.get_project(1)
    ls.state.expire_access_tokens()  # LS access tokens live 300 s
    assert c.get_project(2)["id"] == 2
    assert len(ls.state.refresh_bodies) == 2  # the first exchange + one refresh
    assert ls.state.auth_seen == ["Bearer access-1", "Bearer access-1", "Bearer access-2"]


def test_parallel_image_downloads_after_expiry_share_one_refresh(ls):
    c = client(ls, PAT)
    c.whoami()
    ls.state.expire_access_tokens()
    fetcher = ImageFetcher(
        c.image_downloader(), None, max_bytes=10_000, max_pixels=10_000, timeout_s=5, threads=8
    )
    report = FetchReport()
    images = fetcher.fetch_many([(i, f"/data/upload/1/{i}.png") for i in range(24)], report)
    assert report.failed == {} and len(images) == 24
    assert len(ls.state.refresh_bodies) == 2  # one exchange + ONE refresh, not 8
    assert "Bearer access-2" in ls.state.auth_seen and "Bearer access-3" not in ls.state.auth_seen


def test_a_revoked_personal_access_token_fails_clearly_without_looping(ls):
    c = client(ls, PAT)
    c.whoami()
    ls.state.expire_access_tokens()
    ls.state.pat_revoked = True
    with pytest.raises(LabelStudioError, match="refused the personal access token.*API_KEY"):
        c.whoami()
    assert len(ls.state.refresh_bodies) == 2


def test_5xx_is_retried_with_bounded_backoff_then_raises_a_clear_error(ls):
    c = client(ls, LEGACY, retries=3, backoff_s=0.05)
    ls.state.fail_plan["/api/projects/5/"] = [503, 500, 502, 504, 503]
    started = time.monotonic()
    with pytest.raises(LabelStudioError) as error:
        c.get_project(5)
    elapsed = time.monotonic() - started
    assert ls.state.hits["/api/projects/5/"] == 4  # 1 + 3 retries, then it gives up
    assert "GET /api/projects/5/: HTTP 504 after 4 attempt(s)" in str(error.value)
    assert error.value.status == 504
    assert 0.1 + 0.2 <= elapsed < 3.0  # urllib3: first retry at once, then 0.05 * (2 + 4)


def test_a_transient_5xx_is_retried_and_the_caller_headers_survive_the_retry(ls):
    c = client(ls, PAT)
    ls.state.fail_plan["/api/current-user/whoami"] = [503, 429]
    assert c.get_json("/api/current-user/whoami", headers={"X-Test": "kept"})["x_test"] == "kept"
    assert ls.state.hits["/api/current-user/whoami"] == 3


def test_a_transient_failure_of_the_token_endpoint_is_retried(ls):
    c = client(ls, PAT)
    ls.state.refresh_fail = [503, 502]
    assert c.get_project(4)["id"] == 4
    assert len(ls.state.refresh_bodies) == 3


def test_connection_errors_are_retried_then_raise(ls):
    c = LabelStudioClient(f"http://127.0.0.1:{free_port()}", LEGACY, timeout_s=1, retries=2, backoff_s=0.02)
    with pytest.raises(LabelStudioError, match=r"unreachable after 3 attempt\(s\) \(ConnectionError\)"):
        c.whoami()


def test_backoff_is_capped(monkeypatch):
    slept = []
    monkeypatch.setattr("backend.ls_client.time.sleep", slept.append)
    c = LabelStudioClient("http://127.0.0.1:1", LEGACY, backoff_s=0.5)
    for attempt in (0, 1, 2, 3, 10, 60):
        c.wait_before_retry(attempt)
    assert slept == [0.5, 1.0, 2.0, 4.0, 10.0, 10.0]


# --- the token never leaks ---------------------------------------------------------------------
def leaks(text: str, secrets=(LEGACY, PAT, "access-1", "access-2")) -> list[str]:
    return [s for s in secrets if s in text]


@pytest.mark.parametrize("token", [LEGACY, PAT])
def test_the_token_is_not_in_logs_or_error_messages(ls, caplog, token):
    logging.getLogger("urllib3").setLevel(logging.DEBUG)  # urllib3 logs URLs at DEBUG
    caplog.set_level(logging.DEBUG)
    c = client(ls, token, retries=1)
    report = FetchReport()
    fetcher = ImageFetcher(c.image_downloader(), None, max_bytes=10_000, max_pixels=10_000, timeout_s=5)
    assert len(fetcher.fetch_many([(1, "/data/upload/1/a.png"), (2, "/data/upload/1/b.png")], report)) == 2
    ls.state.fail_plan["/api/projects/9/"] = [500, 500]  # the error body echoes the header
    with pytest.raises(LabelStudioError) as error:
        c.get_project(9)
    assert "echo" in str(error.value) and "***" in str(error.value)
    assert leaks(str(error.value)) == [] and leaks(repr(error.value)) == []
    assert leaks(caplog.text) == [], leaks(caplog.text)
    assert "GET /data/upload/1/a.png" in caplog.text or "/data/upload/1/a.png" in caplog.text


@pytest.mark.redis
def test_the_token_is_not_in_status_or_health_after_a_failed_job(
    ls, redis_server, redis_conn, tmp_path, monkeypatch, caplog, serve_wsgi
):
    import requests

    from backend import jobs
    from backend.app import create_app
    from backend.settings import Settings

    caplog.set_level(logging.DEBUG)
    env = {
        "REDIS_URL": redis_server,
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": PAT,
        "LABEL_STUDIO_RETRIES": "0",
        "MODEL_DIR": str(tmp_path / "models"),
        "QUEUE_NAME": "token-test",
        "RECONCILE_INTERVAL_S": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ls.state.fail_plan["/api/projects/41/"] = [500]
    server = serve_wsgi(create_app(Settings.from_env(env), redis_conn=redis_conn))
    assert (
        requests.post(
            server.url + "/webhook", json={"action": "START_TRAINING", "project": {"id": 41}}
        ).status_code
        == 200
    )
    with pytest.raises(LabelStudioError):
        jobs.run_training_job(41, "token leak test")  # what the worker runs, in-process
    status = requests.get(server.url + "/status", timeout=5)
    health = requests.get(server.url + "/health", timeout=5)
    error = status.json()["projects"]["41"]["error"]
    assert "HTTP 500" in error and "***" in error  # the echoed header, masked
    assert leaks(status.text) == [] and leaks(health.text) == []
    assert leaks(caplog.text) == [] and leaks(json.dumps(Settings.from_env(env).describe())) == []
