"""Missed webhooks are caught from Label Studio's own count (real Redis; a stand-in LS project API)."""

import pytest
from flask import Flask, jsonify
from rq import Queue

from backend import reconcile, training_state
from backend.ls_client import LabelStudioClient
from backend.settings import Settings

pytestmark = pytest.mark.redis
GONE_SINCE = "label_studio_404_since_ts"  # status field: when Label Studio first answered 404


def test_drift_rules():
    assert reconcile.annotation_drift(12, None) == 12
    assert reconcile.annotation_drift(12, 10) == 2
    assert reconcile.annotation_drift(8, 10) == 2  # deletions count too
    assert reconcile.needs_retrain(10, 10, busy=False)
    assert not reconcile.needs_retrain(10, 10, busy=True)
    assert not reconcile.needs_retrain(99, 0, busy=False)  # automatic retraining disabled


@pytest.fixture
def fake_label_studio(serve_wsgi):
    """Stand-in for Label Studio's project endpoint only (the real one is covered in tests/e2e)."""
    counts = {1: 25, 2: 3}
    app = Flask("fake-ls")

    @app.route("/api/projects/<int:pid>/")
    def project(pid):
        if pid not in counts:
            return jsonify({"detail": "Not found."}), 404
        return jsonify({"id": pid, "num_tasks_with_annotations": counts[pid]})

    server = serve_wsgi(app)
    server.counts = counts
    return server


def test_reconcile_requests_one_retrain_for_drifted_projects_only(
    redis_server, redis_conn, fake_label_studio, tmp_path
):
    settings = Settings.from_env(
        {
            "REDIS_URL": redis_server,
            "LABEL_STUDIO_URL": fake_label_studio.url,
            "MODEL_DIR": str(tmp_path),
            "RETRAIN_AFTER_ANNOTATIONS": "10",
            "QUEUE_NAME": "reconcile-test",
        }
    )
    client = LabelStudioClient(settings.label_studio_url, "t", retries=0)
    for pid in (1, 2, 3):
        redis_conn.sadd(training_state.projects_key(), pid)
    training_state.update_status(redis_conn, 1, state="done", **{training_state.LS_COUNT_AT_LAST_ROUND: 10})
    training_state.update_status(redis_conn, 2, state="done", **{training_state.LS_COUNT_AT_LAST_ROUND: 0})
    results = reconcile.reconcile_all(settings, redis_conn, client)
    assert results == {1: "retrain", 2: "in sync", 3: "project gone"}
    assert Queue("reconcile-test", connection=redis_conn).count == 1
    # a second pass while the job is queued does not queue another
    assert reconcile.reconcile_all(settings, redis_conn, client)[1] == "in sync"
    assert Queue("reconcile-test", connection=redis_conn).count == 1


def test_an_abandoned_round_is_recorded_as_failed(redis_server, redis_conn, fake_label_studio, tmp_path):
    settings = Settings.from_env(
        {
            "REDIS_URL": redis_server,
            "LABEL_STUDIO_URL": fake_label_studio.url,
            "MODEL_DIR": str(tmp_path),
            "QUEUE_NAME": "reconcile-test-2",
        }
    )
    redis_conn.sadd(training_state.projects_key(), 2)
    training_state.update_status(redis_conn, 2, state="running", annotated_tasks=3)
    reconcile.reconcile_project(
        settings, redis_conn, LabelStudioClient(settings.label_studio_url, "t", retries=0), 2
    )
    status = training_state.get_status(redis_conn, 2)
    assert status["state"] == "failed" and "no heartbeat" in status["error"]


def test_one_reconciler_for_many_workers(redis_server, redis_conn, fake_label_studio, tmp_path):
    """Three worker processes' reconcilers: one pass per interval reaches Label Studio, and another
    takes over once the holder's lease is gone."""
    settings = Settings.from_env(
        {
            "REDIS_URL": redis_server,
            "LABEL_STUDIO_URL": fake_label_studio.url,
            "MODEL_DIR": str(tmp_path),
            "QUEUE_NAME": "reconcile-test-3",
            "RECONCILE_INTERVAL_S": "60",
        }
    )
    client = LabelStudioClient(settings.label_studio_url, "t", retries=0)
    redis_conn.sadd(training_state.projects_key(), 2)
    workers = [reconcile.Reconciler(settings, redis_conn, client, owner=f"worker-{i}") for i in range(3)]
    passes = [w.run_once() for w in workers]
    assert [p is not None for p in passes] == [True, False, False]
    assert passes[0] == {2: "in sync"}
    assert redis_conn.ttl(reconcile.lease_key()) == 180  # 3 intervals: a dead holder lapses
    assert workers[0].run_once() is not None  # the holder renews at every pass
    assert workers[1].run_once() is None
    redis_conn.delete(reconcile.lease_key())  # the holder died and its lease lapsed
    assert workers[2].run_once() == {2: "in sync"}
    assert workers[0].run_once() is None
    workers[2].lease.release()
    workers[0].lease.release()  # not its lease: nothing happens
    assert redis_conn.get(reconcile.lease_key()) is None


def test_a_changed_labeling_config_is_retrained_once(redis_server, redis_conn, serve_wsgi, tmp_path):
    from backend.model_store import ModelStore, new_cold_start_version
    from backend.task_types import task_type_for
    from tests.unit.backend.test_labeling_config import DIGITS

    configs = {4: DIGITS}
    app = Flask("fake-ls-config")

    @app.route("/api/projects/<int:pid>/")
    def project(pid):
        return jsonify({"id": pid, "num_tasks_with_annotations": 3, "label_config": configs[pid]})

    ls = serve_wsgi(app)
    settings = Settings.from_env(
        {
            "REDIS_URL": redis_server,
            "LABEL_STUDIO_URL": ls.url,
            "MODEL_DIR": str(tmp_path),
            "QUEUE_NAME": "reconcile-test-4",
            "RETRAIN_AFTER_ANNOTATIONS": "10",
        }
    )
    client = LabelStudioClient(settings.label_studio_url, "t", retries=0)
    store = ModelStore(settings.model_dir)
    schema = task_type_for(DIGITS)
    version = new_cold_start_version()
    store.predictions_path(4, version).parent.mkdir(parents=True)
    store.predictions_path(4, version).write_text("{}")
    store.publish(4, version, info={"schema": schema.to_dict(), "schema_hash": schema.hash})
    redis_conn.sadd(training_state.projects_key(), 4)
    training_state.update_status(redis_conn, 4, **{training_state.LS_COUNT_AT_LAST_ROUND: 3})
    assert reconcile.reconcile_project(settings, redis_conn, client, 4) == "in sync"

    configs[4] = DIGITS.replace('alias="two"', 'alias="deux"')  # a label renamed in LS
    assert reconcile.reconcile_project(settings, redis_conn, client, 4) == "config changed"
    status = training_state.get_status(redis_conn, 4)
    assert status["labeling_config_change"]["labels_removed"] == ["two"]
    assert Queue("reconcile-test-4", connection=redis_conn).count == 1
    redis_conn.delete(training_state._key(4, "queued"))  # the round ran and failed: not again
    assert reconcile.reconcile_project(settings, redis_conn, client, 4) == "in sync"
    assert Queue("reconcile-test-4", connection=redis_conn).count == 1


def test_a_project_deleted_in_label_studio_is_forgotten(
    redis_server, redis_conn, fake_label_studio, tmp_path
):
    """Project 3 answers 404: after DELETED_PROJECT_GRACE_S of 404s it leaves the project set,
    its Redis keys go and so does its model directory; project 1 keeps everything."""
    import time

    from backend.constants import DELETED_PROJECT_GRACE_S
    from backend.model_store import ModelStore
    from backend.task_index import TaskIndex

    settings = Settings.from_env(
        {
            "REDIS_URL": redis_server,
            "LABEL_STUDIO_URL": fake_label_studio.url,
            "MODEL_DIR": str(tmp_path / "models"),
            "QUEUE_NAME": "reconcile-test-gone",
        }
    )
    client = LabelStudioClient(settings.label_studio_url, "t", retries=0)
    store = ModelStore(settings.model_dir)
    for pid in (1, 3):
        redis_conn.sadd(training_state.projects_key(), pid)
        training_state.update_status(
            redis_conn, pid, state="done", **{training_state.LS_COUNT_AT_LAST_ROUND: 25}
        )
        training_state.count_changes(redis_conn, pid, 2)
        redis_conn.hset(TaskIndex(redis_conn, pid).tasks_key, 10, "/data/upload/x.png")
        (store.project_dir(pid) / "features").mkdir(parents=True)
        (store.project_dir(pid) / "features" / "index.json").write_text("{}")

    assert reconcile.reconcile_all(settings, redis_conn, client) == {1: "in sync", 3: "project gone"}
    assert training_state.known_projects(redis_conn) == [1, 3]  # one 404 deletes nothing
    assert store.project_dir(3).is_dir()
    # the 404s go on past the grace period
    training_state.update_status(redis_conn, 3, **{GONE_SINCE: time.time() - DELETED_PROJECT_GRACE_S - 1})
    assert reconcile.reconcile_all(settings, redis_conn, client) == {1: "in sync", 3: "project forgotten"}
    assert training_state.known_projects(redis_conn) == [1]
    assert not store.project_dir(3).exists() and store.project_dir(1).is_dir()
    assert list(redis_conn.scan_iter(match="al:project:3:*")) == []
    assert TaskIndex(redis_conn, 1).images() == {10: "/data/upload/x.png"}
    assert training_state.pending_changes(redis_conn, 1) == 2
    assert reconcile.reconcile_all(settings, redis_conn, client) == {1: "in sync"}


def test_a_project_that_answers_again_or_is_training_is_kept(
    redis_server, redis_conn, fake_label_studio, tmp_path
):
    import time

    from backend.constants import DELETED_PROJECT_GRACE_S

    settings = Settings.from_env(
        {
            "REDIS_URL": redis_server,
            "LABEL_STUDIO_URL": fake_label_studio.url,
            "MODEL_DIR": str(tmp_path / "models"),
            "QUEUE_NAME": "reconcile-test-back",
        }
    )
    client = LabelStudioClient(settings.label_studio_url, "t", retries=0)
    long_ago = time.time() - DELETED_PROJECT_GRACE_S - 1
    # a 404 long ago, but Label Studio answers now: the mark is cleared
    redis_conn.sadd(training_state.projects_key(), 2)
    training_state.update_status(redis_conn, 2, **{GONE_SINCE: long_ago})
    assert reconcile.reconcile_project(settings, redis_conn, client, 2) == "in sync"
    assert training_state.get_status(redis_conn, 2)[GONE_SINCE] is None
    # a round still runs for a project that answers 404: kept until it ends
    redis_conn.sadd(training_state.projects_key(), 4)
    training_state.update_status(redis_conn, 4, **{GONE_SINCE: long_ago})
    lock = training_state.start_run(redis_conn, 4, "job-a", ttl_s=60)
    assert lock is not None
    assert reconcile.reconcile_project(settings, redis_conn, client, 4) == "project gone"
    assert 4 in training_state.known_projects(redis_conn)
    lock.release()
    assert reconcile.reconcile_project(settings, redis_conn, client, 4) == "project forgotten"
