"""The harness scripts/lib/lslocal against a REAL Label Studio 1.23.2 on a loopback port (about 15 s once the LS venv
and its database template exist; the first run migrates a template database for about a minute).

The LS venv comes from $LS_VENV_DIR (scripts/test.sh sets it), else the shared cache; it is installed
if missing (2-3 minutes).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
import requests

from scripts import demo_data
from scripts.lib import lslocal
from tests.conftest import JsonReplyHandler

pytestmark = pytest.mark.labelstudio

DIGITS_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <Choices name="digit" toName="image" choice="single" showInLine="true">
    <Choice value="0"/><Choice value="1"/><Choice value="2"/><Choice value="3"/><Choice value="4"/>
    <Choice value="5"/><Choice value="6"/><Choice value="7"/><Choice value="8"/><Choice value="9"/>
  </Choices>
</View>
"""
ADMIN_EMAIL = "admin@example.com"
# Starts with "-" on purpose: LS's own argument parser would choke on it; lslocal passes it by env.
ADMIN_PASSWORD = "-" + secrets.token_urlsafe(12)
LEGACY_TOKEN = secrets.token_hex(20)
DIGIT_COUNT = 20


def free_loopback_port() -> int:
    return lslocal.free_port("127.0.0.1")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    venv = lslocal.ensure_ls_venv()
    server = lslocal.start_label_studio(
        venv,
        tmp_path_factory.mktemp("label-studio"),
        free_loopback_port(),
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        user_token=LEGACY_TOKEN,
    )
    yield server
    server.stop()
    assert not server.is_running()


@pytest.fixture(scope="module")
def personal_access_token(label_studio):
    return lslocal.create_personal_access_token(label_studio.url, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def admin(label_studio, personal_access_token):
    return lslocal.LabelStudioAdmin(label_studio.url, personal_access_token)


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    return demo_data.render_digits("digits", tmp_path_factory.mktemp("digits"), DIGIT_COUNT, seed=0)


@pytest.fixture(scope="module")
def digits_project(admin, digit_files):
    project = admin.create_project("Digits (lslocal test)", DIGITS_CONFIG)
    task_ids = admin.import_images(project["id"], [path for path, _ in digit_files])
    return project, dict(zip(task_ids, digit_files, strict=False))


# ---- process --------------------------------------------------------------------------------------


def test_serves_health_on_the_requested_loopback_port(label_studio):
    assert requests.get(f"{label_studio.url}/health", timeout=5).json() == {"status": "UP"}
    log = label_studio.log_path.read_text(errors="replace")
    assert f"Starting development server at http://127.0.0.1:{label_studio.port}/" in log
    assert "is in use" not in log
    assert label_studio.started_in_s < 120


def test_refuses_to_start_on_a_busy_port(label_studio, tmp_path):
    started = time.monotonic()
    with pytest.raises(lslocal.LabelStudioError, match="busy"):
        lslocal.start_label_studio(
            lslocal.ensure_ls_venv(), tmp_path, label_studio.port, ADMIN_EMAIL, "x" * 8
        )
    assert time.monotonic() - started < 5  # caught before LS is even launched


# ---- tokens ---------------------------------------------------------------------------------------


def test_personal_access_token_is_a_jwt_refresh_token(personal_access_token):
    assert lslocal.looks_like_jwt(personal_access_token)
    assert lslocal.jwt_claims(personal_access_token)["token_type"] == "refresh"


def test_personal_access_token_authenticates_through_an_access_token(
    label_studio, admin, personal_access_token
):
    assert admin.uses_personal_access_token
    assert admin.whoami()["email"] == ADMIN_EMAIL
    access = admin.access_token()
    claims = lslocal.jwt_claims(access)
    assert claims["token_type"] == "access"
    assert claims["exp"] - claims["iat"] == 300  # why long jobs must refresh
    bearer_access = requests.get(
        f"{label_studio.url}/api/current-user/whoami",
        headers={"Authorization": f"Bearer {access}"},
        timeout=10,
    )
    assert bearer_access.status_code == 200


def test_personal_access_token_sent_raw_as_bearer_is_refused(label_studio, personal_access_token):
    response = requests.get(
        f"{label_studio.url}/api/current-user/whoami",
        headers={"Authorization": f"Bearer {personal_access_token}"},
        timeout=10,
    )
    assert response.status_code == 401


def test_client_renews_a_rejected_access_token(label_studio, personal_access_token):
    client = lslocal.LabelStudioAdmin(label_studio.url, personal_access_token)
    client.access_token()
    client.api.auth._access = "not.a.token"  # what the server sees once an access token has expired
    assert client.whoami()["email"] == ADMIN_EMAIL


def test_legacy_token_works_only_once_enabled_for_the_organization(label_studio, admin):
    assert lslocal.get_legacy_token(label_studio.url, ADMIN_EMAIL, ADMIN_PASSWORD) == LEGACY_TOKEN
    assert admin.get_legacy_api_token() == LEGACY_TOKEN
    legacy = lslocal.LabelStudioAdmin(label_studio.url, LEGACY_TOKEN)
    assert not legacy.uses_personal_access_token
    with pytest.raises(lslocal.LabelStudioError, match="legacy token authentication has been disabled"):
        legacy.whoami()
    assert admin.set_legacy_api_tokens_enabled(True)["legacy_api_tokens_enabled"] is True
    try:
        assert legacy.whoami()["email"] == ADMIN_EMAIL
        assert legacy.request("GET", "/api/projects/").status_code == 200
    finally:
        admin.set_legacy_api_tokens_enabled(False)
    with pytest.raises(lslocal.LabelStudioError, match="401"):
        legacy.whoami()


def test_wrong_password_gives_a_clear_error(label_studio):
    with pytest.raises(lslocal.LabelStudioError, match="login .* failed"):
        lslocal.create_personal_access_token(label_studio.url, ADMIN_EMAIL, "wrong-password")


# ---- projects, tasks, annotations -----------------------------------------------------------------


def test_rendered_digits_are_labelled_pngs(digit_files):
    assert len(digit_files) == DIGIT_COUNT
    assert len({path for path, _ in digit_files}) == DIGIT_COUNT
    for path, label in digit_files:
        assert path.read_bytes().startswith(b"\x89PNG")
        assert label in demo_data.LABEL_NAMES


def test_imported_images_become_upload_tasks(admin, digits_project):
    project, files_by_task = digits_project
    assert len(files_by_task) == DIGIT_COUNT
    tasks = admin.list_tasks(project["id"], page_size=7)  # several pages
    assert sorted(task["id"] for task in tasks) == sorted(files_by_task)
    for task in tasks:
        path, _ = files_by_task[task["id"]]
        image = task["data"]["image"]
        assert image.startswith(f"/data/upload/{project['id']}/")
        assert image.endswith("-" + path.name)  # LS stores uploads as <8 hex>-<original name>


def test_uploaded_image_downloads_with_the_access_token(label_studio, admin, digits_project):
    project, files_by_task = digits_project
    task_id, (path, _) = next(iter(files_by_task.items()))
    image_url = admin.get_task(task_id)["data"]["image"]
    assert requests.get(f"{label_studio.url}{image_url}", timeout=10).status_code in (401, 403)
    response = requests.get(
        f"{label_studio.url}{image_url}",
        headers={"Authorization": f"Bearer {admin.access_token()}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.content == path.read_bytes()
    assert admin.download(image_url) == path.read_bytes()
    with pytest.raises(ValueError, match="refusing to send"):
        admin.download("http://example.invalid/data/upload/1/x.png")  # never leaves this machine


def test_choice_annotation_is_stored(admin, digits_project):
    project, files_by_task = digits_project
    task_id, (_, label) = next(iter(files_by_task.items()))
    result = lslocal.choice_annotation("digit", "image", label)
    created = admin.create_annotation(task_id, result)
    assert created["result"][0]["value"] == {"choices": [label]}
    assert [a["id"] for a in admin.list_annotations(task_id)] == [created["id"]]
    assert admin.get_task(task_id)["total_annotations"] == 1
    assert admin.get_project(project["id"])["num_tasks_with_annotations"] == 1


def test_project_title_needs_three_characters(admin):
    with pytest.raises(ValueError, match="3 characters"):
        admin.create_project("ab", DIGITS_CONFIG)


# ---- ML backend wiring (stub backend on loopback) ---------------------------------------------------


class StubBackend(JsonReplyHandler):
    """Answers the ML backend protocol with fixed replies and records what LS sent."""

    calls: list = []
    setup_fails = False

    def do_GET(self):
        self.calls.append(("GET", self.path, None))
        self._reply({"status": "UP", "model_class": "Stub"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.calls.append(("POST", self.path, body))
        if self.path == "/setup" and self.setup_fails:
            self._reply({"error": "no model"}, status=500)
        elif self.path == "/setup":
            self._reply({"model_version": "stub-v0"})
        elif self.path == "/predict":
            self._reply(
                {
                    "results": [
                        {"result": [], "score": 0.5, "model_version": "stub-v0"}
                        for _ in body.get("tasks", [])
                    ]
                }
            )
        else:
            self._reply({"status": "ok"})


@pytest.fixture
def stub_backend():
    StubBackend.calls = []
    StubBackend.setup_fails = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", StubBackend.calls
    server.shutdown()
    thread.join(timeout=10)


def test_ml_backend_on_loopback_connects_and_receives_start_training(admin, digits_project, stub_backend):
    project, _ = digits_project
    url, calls = stub_backend
    ml = admin.add_ml_backend(project["id"], url, "stub-backend")  # needs ML_BLOCK_LOCAL_IP=false
    assert [path for method, path, _ in calls][:2] == ["/health", "/setup"]
    assert [m["id"] for m in admin.list_ml_backends(project["id"])] == [ml["id"]]
    assert admin.get_project(project["id"])["model_version"] == "stub-backend"  # LS uses the title

    admin.start_training(ml["id"])
    webhooks = [body for method, path, body in calls if path == "/webhook"]
    assert any(body.get("action") == "START_TRAINING" for body in webhooks)


def test_the_ml_backend_state_tells_a_connected_backend_from_a_failing_one(admin, stub_backend):
    """What the end-to-end test's "connected" check reads: Label Studio re-checks /health and
    /setup on GET /api/ml/<id>, and reports "CO" only while both succeed."""
    project = admin.create_project("ML state (lslocal test)", DIGITS_CONFIG)  # no tasks
    url, _ = stub_backend
    ml = admin.add_ml_backend(project["id"], url, "stub-backend")
    assert admin.get_ml_backend(ml["id"])["state"] == "CO"
    StubBackend.setup_fails = True
    failing = admin.get_ml_backend(ml["id"])
    assert failing["state"] == "ER", failing
    assert failing["id"] == ml["id"]  # what the old check accepted as "connected"


def test_sampling_next_task_views_and_predictions(admin, digits_project):
    project, files_by_task = digits_project
    assert admin.set_sampling(project["id"], "Uncertainty sampling")["sampling"] == "Uncertainty sampling"
    with pytest.raises(ValueError):
        admin.set_sampling(project["id"], "uncertainty")
    task = admin.next_task(project["id"])
    assert task is not None and task["id"] in files_by_task
    assert isinstance(admin.list_views(project["id"]), list)
    assert isinstance(admin.list_predictions(project_id=project["id"]), list)
    assert isinstance(admin.list_predictions(task_id=task["id"]), list)


# ---- last: revokes the module's personal access token ------------------------------------------


def test_a_new_personal_access_token_revokes_the_previous_one(label_studio, admin):
    # Last in the file: it revokes the module's PAT too (LS allows one live PAT per user; the helper
    # revokes the old one to create another).
    first = lslocal.create_personal_access_token(label_studio.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    first_access = lslocal.LabelStudioAdmin(label_studio.url, first).access_token()
    second = lslocal.create_personal_access_token(label_studio.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert first != second
    # Revoking a PAT does not end the access tokens already issued from it (they live out their 300 s).
    still_valid = requests.get(
        f"{label_studio.url}/api/current-user/whoami",
        headers={"Authorization": f"Bearer {first_access}"},
        timeout=10,
    )
    assert still_valid.status_code == 200
    with pytest.raises(lslocal.LabelStudioError, match="refused the personal access token"):
        lslocal.LabelStudioAdmin(label_studio.url, first).whoami()
    assert lslocal.LabelStudioAdmin(label_studio.url, second).whoami()["email"] == ADMIN_EMAIL
