"""Label Studio's SSRF protection as docker/docker-compose.yml configures it, on a real Label Studio
1.23.2: protection on, the default ban list replaced by a copy that leaves out one address, the
backend's (scripts/ls_banned_subnets.py).

Here the backend's address is 127.0.0.2 (a loopback address, so no traffic leaves the machine) and
the address that must stay refused is 127.0.0.1. The compose file lets 172.30.57.10 through the
same way; tests/unit/test_docker_files.py checks that list statically (link-local included).
"""

from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer

import pytest

from scripts.lib import lslocal
from scripts.ls_banned_subnets import banned_except
from tests.conftest import JsonReplyHandler, free_port

pytestmark = [pytest.mark.labelstudio]

EMAIL, PASSWORD = "admin@example.com", "ssrf-Passw0rd"
BACKEND_ADDRESS = "127.0.0.2"
CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
    '<Choice value="a"/><Choice value="b"/></Choices></View>'
)


class _Recorder(JsonReplyHandler):
    """An ML backend's protocol with fixed answers, and a tasks file; records every request."""

    def do_GET(self):
        self.server.calls.append(("GET", self.path, None))
        if self.path.startswith("/tasks.json"):
            self._reply([{"image": "/data/upload/1/none.png"}])
        else:
            self._reply({"status": "UP", "model_class": "Stub"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.calls.append(("POST", self.path, body))
        self._reply({"model_version": "stub"} if self.path == "/setup" else {"status": "ok"})


def _serve(host: str):
    server = ThreadingHTTPServer((host, 0), _Recorder)
    server.calls = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def guarded_label_studio(tmp_path_factory):
    env = {
        "SSRF_PROTECTION_ENABLED": "true",
        "ML_BLOCK_LOCAL_IP": "true",
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(banned_except(BACKEND_ADDRESS)),
    }
    server = lslocal.start_label_studio(
        lslocal.ensure_ls_venv(),
        tmp_path_factory.mktemp("label-studio-ssrf"),
        free_port(),
        EMAIL,
        PASSWORD,
        extra_env=env,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(guarded_label_studio):
    pat = lslocal.create_personal_access_token(guarded_label_studio.url, EMAIL, PASSWORD)
    return lslocal.LabelStudioAdmin(guarded_label_studio.url, pat)


@pytest.fixture
def servers():
    started = [_serve(BACKEND_ADDRESS), _serve("127.0.0.1")]
    yield started
    for server in started:
        server.shutdown()


def _url_import(admin, project_id: int, url: str):
    return admin.request(
        "POST", f"/api/projects/{project_id}/import", data={"url": url}, expected=tuple(range(200, 600))
    )


def test_the_backend_connects_and_gets_webhooks_with_protection_on(admin, servers):
    backend, _ = servers
    url = f"http://{BACKEND_ADDRESS}:{backend.server_port}"
    project = admin.create_project("SSRF allowed backend", CONFIG)
    ml = admin.add_ml_backend(project["id"], url, "stub")
    assert admin.get_ml_backend(ml["id"])["state"] == "CO"
    admin.start_training(ml["id"])
    assert any(
        path == "/webhook" and body.get("action") == "START_TRAINING" for _, path, body in backend.calls
    )


def test_a_url_import_of_another_loopback_address_is_refused(admin, servers):
    backend, other = servers
    project = admin.create_project("SSRF refused import", CONFIG)
    refused = _url_import(admin, project["id"], f"http://127.0.0.1:{other.server_port}/tasks.json")
    assert refused.status_code >= 400, refused.text
    assert "reserved network address" in refused.text
    assert other.calls == []  # nothing reached it
    # the same import from the one address let through works: the list is what refuses
    allowed = _url_import(admin, project["id"], f"http://{BACKEND_ADDRESS}:{backend.server_port}/tasks.json")
    assert allowed.status_code < 300, allowed.text
    assert any(path.startswith("/tasks.json") for _, path, _ in backend.calls)
