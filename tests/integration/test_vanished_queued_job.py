"""A queued marker whose RQ job vanished does not block the project (real Redis, real RQ).

The marker lives QUEUED_TTL_S (7 days); trusting it blindly left Start Training answering
"already queued" and the reconciler seeing a busy project for that long."""

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, jsonify
from rq import Queue, Worker
from rq.job import Job
from rq.utils import utcformat

from backend import queueing, reconcile, training_state
from backend.constants import QUEUED_MARKER_GRACE_S, QUEUED_TTL_S
from backend.ls_client import LabelStudioClient
from backend.settings import Settings

pytestmark = pytest.mark.redis


def _settings(redis_server, tmp_path, queue_name, ls_url="http://127.0.0.1:9"):
    return Settings.from_env(
        {
            "REDIS_URL": redis_server,
            "LABEL_STUDIO_URL": ls_url,
            "MODEL_DIR": str(tmp_path),
            "QUEUE_NAME": queue_name,
            "RETRAIN_AFTER_ANNOTATIONS": "10",
        }
    )


def _age_marker(conn, project_id: int, age_s: float) -> None:
    """Make the queued marker as old as ``age_s`` (its age is read from its remaining TTL)."""
    conn.pexpire(training_state._key(project_id, "queued"), int((QUEUED_TTL_S - age_s) * 1000))


def test_start_training_replaces_a_job_deleted_from_the_queue(redis_server, redis_conn, tmp_path):
    settings = _settings(redis_server, tmp_path, "vanished-deleted")
    queue = Queue(settings.queue_name, connection=redis_conn)
    enqueued, first = queueing.request_training(settings, redis_conn, 4, "start training")
    assert enqueued and queue.job_ids == [first]
    # a waiting job that exists is joined, however old its marker
    _age_marker(redis_conn, 4, 3 * QUEUED_MARKER_GRACE_S)
    assert queueing.request_training(settings, redis_conn, 4, "again") == (False, first)

    Job.fetch(first, connection=redis_conn).delete()  # what a dashboard's "delete" does
    assert queue.job_ids == [] and training_state.queued_job(redis_conn, 4) == first
    enqueued, second = queueing.request_training(settings, redis_conn, 4, "start training")
    assert enqueued and second != first
    assert queue.job_ids == [second]
    assert training_state.queued_job(redis_conn, 4) == second
    assert training_state.get_status(redis_conn, 4)["last_vanished_job"]["job_id"] == first


def test_a_young_marker_is_trusted_while_its_job_is_being_enqueued(redis_conn):
    # the marker is set just before the job reaches the queue: a request in between joins it
    jobs: list[str] = []
    _, first = training_state.request_training(redis_conn, 5, "x", jobs.append)
    answer = training_state.request_training(redis_conn, 5, "y", jobs.append, job_alive=lambda job_id: False)
    assert answer == (False, first) and jobs == [first]


def test_a_job_whose_worker_died_before_the_round_began_is_replaced(redis_server, redis_conn, tmp_path):
    settings = _settings(redis_server, tmp_path, "vanished-killed")
    queue = Queue(settings.queue_name, connection=redis_conn)
    _, first = queueing.request_training(settings, redis_conn, 6, "start training")
    # a worker takes the job and marks it started, then is SIGKILLed before the job function ran
    worker = Worker([queue], connection=redis_conn)
    job, _ = Queue.dequeue_any([queue], None, connection=redis_conn)
    assert job.id == first
    worker.prepare_job_execution(job)
    assert Job.fetch(first, connection=redis_conn).get_status() == "started"
    # just started: trusted (its round takes the marker within milliseconds)
    _age_marker(redis_conn, 6, 3 * QUEUED_MARKER_GRACE_S)
    assert queueing.request_training(settings, redis_conn, 6, "again") == (False, first)
    # started long ago and still holding the marker: its worker is gone
    long_ago = datetime.now(UTC) - timedelta(seconds=2 * QUEUED_MARKER_GRACE_S)
    redis_conn.hset(job.key, "started_at", utcformat(long_ago))
    enqueued, second = queueing.request_training(settings, redis_conn, 6, "again")
    assert enqueued and second != first and queue.job_ids == [second]


def test_the_reconciler_frees_a_project_whose_queued_job_vanished(
    redis_server, redis_conn, serve_wsgi, tmp_path
):
    app = Flask("fake-ls")

    @app.route("/api/projects/<int:pid>/")
    def project(pid):
        return jsonify({"id": pid, "num_tasks_with_annotations": 0})

    server = serve_wsgi(app)
    settings = _settings(redis_server, tmp_path, "vanished-reconcile", server.url)
    client = LabelStudioClient(settings.label_studio_url, "t", retries=0)
    queue = Queue(settings.queue_name, connection=redis_conn)
    _, first = queueing.request_training(settings, redis_conn, 7, "start training")
    training_state.update_status(redis_conn, 7, state="done", **{training_state.LS_COUNT_AT_LAST_ROUND: 0})
    assert reconcile.reconcile_project(settings, redis_conn, client, 7) == "in sync"
    _age_marker(redis_conn, 7, 3 * QUEUED_MARKER_GRACE_S)
    assert reconcile.reconcile_project(settings, redis_conn, client, 7) == "in sync"
    Job.fetch(first, connection=redis_conn).delete()
    assert reconcile.reconcile_project(settings, redis_conn, client, 7) == "retrain"
    queued = training_state.queued_job(redis_conn, 7)
    assert queued not in (None, first) and queue.job_ids == [queued]
    # the Start Training the vanished job stood for is honoured: the new job is manual
    assert training_state.queued_is_manual(redis_conn, 7)
