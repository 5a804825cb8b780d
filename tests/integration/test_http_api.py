"""The HTTP backend over real HTTP, with a real Redis and a real RQ worker."""

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from rq import Queue

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import REPO_ROOT, free_port
from tests.unit.backend.test_labeling_config import DIGITS

pytestmark = pytest.mark.redis


def make_settings(redis_url, tmp_path, **extra):
    env = {
        "REDIS_URL": redis_url,
        "MODEL_DIR": str(tmp_path / "models"),
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "LABEL_STUDIO_API_KEY": "legacy-token-for-tests",
        "LABEL_STUDIO_RETRIES": "0",
        "RETRAIN_AFTER_ANNOTATIONS": "3",
        "QUEUE_NAME": f"test-{os.getpid()}",
    }
    env.update(extra)
    return Settings.from_env(env), env


@pytest.fixture
def backend(redis_server, redis_conn, tmp_path, serve_wsgi):
    settings, env = make_settings(redis_server, tmp_path)
    server = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    server.settings, server.env = settings, env
    return server


def post(server, path, body, **kw):
    return requests.post(
        server.url + path,
        data=json.dumps(body) if not isinstance(body, (bytes, str)) else body,
        headers={"Content-Type": "application/json"},
        timeout=10,
        **kw,
    )


def test_health_answers_up(backend):
    r = requests.get(backend.url + "/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "UP"
    assert r.json()["model_class"] == "ActiveLearningModel"


def test_setup_accepts_image_classification_and_refuses_other_configs(backend):
    r = post(backend, "/setup", {"project": "3.1700000000", "schema": DIGITS})
    assert r.status_code == 200 and r.json() == {"model_version": "untrained"}
    r = post(
        backend, "/setup", {"project": "3.1700000000", "schema": '<View><Text name="t" value="$t"/></View>'}
    )
    assert r.status_code == 400 and "unsupported labeling config" in r.json()["error"]


def test_predict_before_training_answers_honestly_one_per_task(backend):
    tasks = [{"id": i, "data": {"image": f"/data/upload/1/{i}.png"}} for i in range(5)]
    r = post(backend, "/predict", {"tasks": tasks, "project": "3.1", "label_config": DIGITS})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 5
    assert all(p["model_version"] == "untrained" and p["result"] == [] for p in results)


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook"])
@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"str"', b"null"])
def test_malformed_bodies_get_400_not_500(backend, path, body):
    r = post(backend, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["status"] == "error"


def test_oversized_body_gets_413(redis_server, redis_conn, tmp_path, serve_wsgi):
    settings, _ = make_settings(redis_server, tmp_path, MAX_REQUEST_BYTES="1000")
    server = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    r = post(server, "/webhook", {"action": "X", "pad": "x" * 5000})
    assert r.status_code == 413 and "MAX_REQUEST_BYTES" in r.json()["error"]


def test_start_training_enqueues_one_job_fast_and_spam_coalesces(backend, redis_conn):
    queue = Queue(backend.settings.queue_name, connection=redis_conn)
    event = {"action": "START_TRAINING", "project": {"id": 11, "label_config": DIGITS}}
    t0 = time.monotonic()
    r = post(backend, "/webhook", event)
    first_latency = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert first_latency < 1.0, "Label Studio gives webhooks 1 s"
    for _ in range(30):
        assert post(backend, "/webhook", event).json()["status"] == "already_queued"
    assert queue.count == 1
    assert queue.jobs[0].args == (11, "Start Training pressed", False)  # False: not automatic


def test_annotation_events_trigger_a_retrain_at_the_threshold(backend, redis_conn):
    queue = Queue(backend.settings.queue_name, connection=redis_conn)
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 12}, "annotation": {"id": 1}}
    assert post(backend, "/webhook", event).json() == {
        "status": "counted",
        "pending_changes": 1,
        "retrain_after": 3,
    }
    post(backend, "/webhook", event)
    assert queue.count == 0
    r = post(
        backend,
        "/webhook",
        {"action": "ANNOTATIONS_DELETED", "project": {"id": 12}, "annotations": [{"id": 1}]},
    )
    assert r.json()["status"] == "queued" and queue.count == 1


def test_unknown_actions_and_projects_are_acknowledged_and_ignored(backend, redis_conn):
    for event in (
        {"action": "BRAND_NEW_EVENT", "project": {"id": 1}},
        {"action": "PROJECT_UPDATED", "project": {"id": 1}},
        {"action": "ANNOTATION_CREATED"},
        {
            "action": "START_TRAINING",
            "project": {"id": 2, "label_config": '<View><Text name="t" value="$t"/></View>'},
        },
    ):
        r = post(backend, "/webhook", event)
        assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert Queue(backend.settings.queue_name, connection=redis_conn).count == 0


def test_redis_down_gives_a_fast_clear_503(tmp_path, serve_wsgi):
    settings, _ = make_settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    server = serve_wsgi(create_app(settings))
    t0 = time.monotonic()
    r = post(server, "/webhook", {"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 503 and "queue unavailable" in r.json()["error"]
    assert time.monotonic() - t0 < 1.0
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_basic_auth_guards_everything_but_health(redis_server, redis_conn, tmp_path, serve_wsgi):
    settings, _ = make_settings(redis_server, tmp_path, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret")
    server = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    body = {"project": "1.1", "schema": DIGITS}
    assert post(server, "/setup", body).status_code == 401
    assert post(server, "/setup", body, auth=("ls", "wrong")).status_code == 401
    assert post(server, "/setup", body, auth=("other", "s3cret")).status_code == 401
    assert post(server, "/setup", body, auth=("ls", "s3cret")).status_code == 200
    assert requests.get(server.url + "/status", timeout=5).status_code == 401


def test_status_shows_queue_and_projects_without_secrets(backend):
    post(backend, "/webhook", {"action": "START_TRAINING", "project": {"id": 21}})
    r = requests.get(backend.url + "/status", timeout=5)
    body = r.json()
    assert r.status_code == 200 and body["queue"]["queued_jobs"] == 1
    assert body["projects"]["21"]["queued_job_id"].startswith("train-p21-")
    assert "legacy-token-for-tests" not in r.text


def test_worker_runs_the_job_and_records_a_clear_failure_when_label_studio_is_down(backend, redis_conn):
    post(backend, "/webhook", {"action": "START_TRAINING", "project": {"id": 31}})
    env = {**os.environ, **backend.env, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-m", "backend.worker", "--burst"],
        env=env,
        check=True,
        timeout=120,
        cwd=REPO_ROOT,
        capture_output=True,
    )
    status = requests.get(backend.url + "/status", timeout=5).json()["projects"]["31"]
    assert status["state"] == "failed"
    assert "unreachable" in status["error"] and status["running_job_id"] is None
    assert "legacy-token-for-tests" not in json.dumps(status)


def test_project_updated_with_a_changed_labeling_config_retrains_once(backend, redis_conn):
    from backend.model_store import ModelStore, new_cold_start_version
    from backend.task_types import task_type_for

    store = ModelStore(backend.settings.model_dir)
    schema = task_type_for(DIGITS)
    version = new_cold_start_version()
    store.predictions_path(41, version).parent.mkdir(parents=True)
    store.predictions_path(41, version).write_text("{}")
    store.publish(41, version, info={"schema": schema.to_dict(), "schema_hash": schema.hash})
    queue = Queue(backend.settings.queue_name, connection=redis_conn)
    # the backend's own model_version PATCH: same config, nothing to do (no loop)
    same = {
        "action": "PROJECT_UPDATED",
        "project": {"id": 41, "label_config": DIGITS, "model_version": version},
    }
    assert post(backend, "/webhook", same).json()["status"] == "ignored"
    renamed = {
        "action": "PROJECT_UPDATED",
        "project": {"id": 41, "label_config": DIGITS.replace('alias="two"', 'alias="deux"')},
    }
    started = time.monotonic()
    answer = post(backend, "/webhook", renamed).json()
    assert time.monotonic() - started < 1.0, "Label Studio gives webhooks 1 s"
    assert answer["status"] == "queued"
    assert answer["labeling_config_change"]["labels_added"] == ["deux"]
    assert queue.count == 1
    redis_conn.delete("al:project:41:queued")  # that round ran (and failed): not requested again
    assert post(backend, "/webhook", renamed).json()["status"] == "ignored"
    assert queue.count == 1
