"""The retraining cadence against a real Redis and real RQ (its scheduler included): an automatic
round right after a round waits, annotations meanwhile join it, it starts when the interval ends,
and Start Training never waits.

No Label Studio listens at LABEL_STUDIO_URL: a round that really starts fails at once on its first
call to Label Studio, which is how these tests tell "started" from "waiting".
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry

from backend import jobs, queueing, reconcile, training_state
from backend.app import create_app
from backend.ls_client import LabelStudioClient
from backend.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.redis
REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = 5


@pytest.fixture
def env(redis_server, tmp_path, monkeypatch):
    """What a worker reads (run_training_job reads its settings from the environment);
    ``env.settings(NAME=value, ...)`` changes some and returns the Settings."""
    values = {
        "REDIS_URL": redis_server,
        "QUEUE_NAME": f"cadence-{tmp_path.name}",
        "MODEL_DIR": str(tmp_path / "models"),
        "IMAGE_CACHE_DIR": str(tmp_path / "images"),
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "LABEL_STUDIO_API_KEY": "legacy-cadence-test",
        "LABEL_STUDIO_RETRIES": "0",
        "RECONCILE_INTERVAL_S": "0",
        "RETRAIN_AFTER_ANNOTATIONS": "2",
        "RETRAIN_MIN_INTERVAL_S": "600",
        "RETRAIN_DURATION_FACTOR": "1",
        "SELF_SUPERVISED_STEPS": "0",
    }

    class Env(dict):
        def settings(self, **overrides) -> Settings:
            self.update({key: str(value) for key, value in overrides.items()})
            for key, value in self.items():
                monkeypatch.setenv(key, value)
            return Settings.from_env(self)

    return Env(values)


def a_round_just_finished(conn, duration_s: float = 1.0) -> None:
    training_state.update_status(conn, PROJECT, state="done", finished_ts=time.time(), duration_s=duration_s)


def run_queued_jobs(settings: Settings, conn) -> None:
    """Run what is on the queue in this process (RQ's SimpleWorker: no fork)."""
    SimpleWorker([queueing.training_queue(settings, conn)], connection=conn).work(burst=True)


def webhook(url: str, action: str = "ANNOTATION_CREATED") -> dict:
    body = {"action": action, "project": {"id": PROJECT}, "annotation": {"id": 1}}
    answer = requests.post(url + "/webhook", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_annotations_right_after_a_round_wait_for_the_interval_and_join_one_round(
    env, redis_conn, serve_wsgi
):
    settings = env.settings()
    queue = queueing.training_queue(settings, redis_conn)
    a_round_just_finished(redis_conn, duration_s=900.0)  # gap: max(600 s, 1 x 900 s)
    backend = serve_wsgi(create_app(settings, redis_conn=redis_conn))

    assert webhook(backend.url)["status"] == "counted"
    assert webhook(backend.url)["status"] == "queued"  # the threshold: an automatic job
    run_queued_jobs(settings, redis_conn)
    (job,) = [queue.fetch_job(i) for i in queue.finished_job_registry.get_job_ids()]
    assert job.return_value()["state"] == "waiting"
    assert 899 <= job.return_value()["wait_s"] <= 900
    status = training_state.get_status(redis_conn, PROJECT)
    assert status["state"] == "done"  # no round started
    assert status["pending_annotation_changes"] == 2  # kept for the round that waits
    waiting = status["next_automatic_round"]
    assert waiting["reason"] == "2 annotation changes"
    assert 895 <= waiting["due_ts"] - time.time() <= 900
    # its start is scheduled with RQ's scheduler, for the end of the interval
    scheduled = ScheduledJobRegistry(queue=queue)
    assert scheduled.get_job_ids() == [f"round-due-p{PROJECT}-{waiting['token']}"]
    # RQ keeps whole seconds (truncated) and due_ts milliseconds (rounded): they differ by at most 1 s
    assert abs(scheduled.get_scheduled_time(scheduled.get_job_ids()[0]).timestamp() - waiting["due_ts"]) <= 1

    # more annotations join the waiting round: no job, no second schedule
    for _ in range(5):
        answer = webhook(backend.url)
        assert answer["status"] == "waiting"
        assert answer["next_automatic_round"]["token"] == waiting["token"]
    assert queue.count == 0 and scheduled.count == 1
    assert training_state.get_status(redis_conn, PROJECT)["pending_annotation_changes"] == 7


def test_the_waiting_round_starts_when_the_interval_ends_through_the_workers_scheduler(
    env, redis_conn, tmp_path
):
    settings = env.settings(RETRAIN_MIN_INTERVAL_S=2)
    a_round_just_finished(redis_conn, duration_s=1.0)  # gap: max(2 s, 1 x 1 s)
    training_state.count_changes(redis_conn, PROJECT, 3)
    assert queueing.request_training(settings, redis_conn, PROJECT, "3 annotation changes", automatic=True)[0]
    run_queued_jobs(settings, redis_conn)
    waiting = training_state.deferred_round(redis_conn, PROJECT)
    assert waiting is not None and waiting["due_ts"] - time.time() <= 2

    time.sleep(max(waiting["due_ts"] - time.time(), 0) + 0.5)
    # the backend's own worker: its scheduler moves the due start onto the queue, the worker runs
    # it, and the round it requests starts (and fails on the missing Label Studio)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.run(
            [sys.executable, "-m", "backend.worker", "--burst"],
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert worker.returncode == 0, log_path.read_text()[-3000:]
    status = training_state.get_status(redis_conn, PROJECT)
    assert status["state"] == "failed", (status, log_path.read_text()[-3000:])
    assert "Label Studio" in status["error"]
    assert status["reason"].startswith("3 annotation changes (waited until ")
    assert status["next_automatic_round"] is None
    assert status["pending_annotation_changes"] == 0  # the round took them
    assert status["annotation_changes_consumed"] == 3


def test_start_training_never_waits_and_voids_the_waiting_round(env, redis_conn, serve_wsgi):
    settings = env.settings()
    queue = queueing.training_queue(settings, redis_conn)
    a_round_just_finished(redis_conn)
    assert queueing.request_training(settings, redis_conn, PROJECT, "2 annotation changes", automatic=True)[0]
    run_queued_jobs(settings, redis_conn)
    waiting = training_state.deferred_round(redis_conn, PROJECT)
    assert waiting is not None

    backend = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    assert webhook(backend.url, "START_TRAINING")["status"] == "queued"
    run_queued_jobs(settings, redis_conn)
    status = training_state.get_status(redis_conn, PROJECT)
    assert status["state"] == "failed" and status["reason"] == "Start Training pressed"
    assert status["next_automatic_round"] is None
    # the waiting round's scheduled start finds it covered by the round that ran
    assert jobs.run_due_round(PROJECT, waiting["token"])["state"] == "superseded"
    assert queue.count == 0


def test_start_training_that_joins_a_queued_automatic_job_is_not_held_back(env, redis_conn):
    settings = env.settings()
    a_round_just_finished(redis_conn)
    enqueued, job_id = queueing.request_training(settings, redis_conn, PROJECT, "annotations", automatic=True)
    assert enqueued
    # Start Training while that automatic job is still queued: it joins it...
    assert queueing.request_training(settings, redis_conn, PROJECT, "Start Training") == (False, job_id)
    # ...and the job runs at once instead of waiting for the interval
    run_queued_jobs(settings, redis_conn)
    status = training_state.get_status(redis_conn, PROJECT)
    assert status["state"] == "failed" and status["job_id"] == job_id
    assert status["next_automatic_round"] is None


def test_a_missed_scheduled_start_is_caught_by_the_next_webhook(env, redis_conn, serve_wsgi):
    settings = env.settings(RETRAIN_AFTER_ANNOTATIONS=100)
    queue = queueing.training_queue(settings, redis_conn)
    # a round that waited and whose scheduled start never ran (no worker with a scheduler)
    token = training_state.defer_round(redis_conn, PROJECT, time.time() - 1, "12 annotation changes")
    assert token
    backend = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    answer = webhook(backend.url)  # one annotation, far below the threshold
    assert answer["status"] == "queued"
    assert training_state.deferred_round(redis_conn, PROJECT) is None
    (job,) = queue.get_jobs()
    assert job.args[0] == PROJECT and job.args[2] is True  # an automatic round
    assert job.args[1].startswith("12 annotation changes (waited until ")
    # its scheduled start, should it run late, starts nothing more
    assert jobs.run_due_round(PROJECT, token)["state"] == "superseded"
    assert queue.count == 1


def test_a_missed_scheduled_start_is_caught_by_the_reconciler(env, redis_conn):
    settings = env.settings()
    client = LabelStudioClient(settings.label_studio_url, "t", retries=0)
    redis_conn.sadd(training_state.projects_key(), PROJECT)
    training_state.defer_round(redis_conn, PROJECT, time.time() + 60, "later")
    # not due yet: the reconciler leaves it (and Label Studio is unreachable: reported)
    assert reconcile.reconcile_all(settings, redis_conn, client)[PROJECT].startswith("error")
    assert training_state.deferred_round(redis_conn, PROJECT) is not None
    redis_conn.delete(training_state._key(PROJECT, "deferred"))
    training_state.defer_round(redis_conn, PROJECT, time.time() - 1, "due")
    assert reconcile.reconcile_all(settings, redis_conn, client) == {PROJECT: "retrain"}
    assert queueing.training_queue(settings, redis_conn).count == 1


def test_a_follow_up_remembers_whether_start_training_asked_for_it(redis_conn):
    running = training_state.start_run(redis_conn, PROJECT, "job-a")
    assert running is not None
    # an automatic job that starts meanwhile asks for an automatic follow-up
    assert training_state.start_run(redis_conn, PROJECT, "job-b", manual=False) is None
    asked = []
    assert training_state.finish_run(redis_conn, running, asked.append)
    assert asked == [False]
    # a manual ask wins over an automatic one, whatever the order
    running = training_state.start_run(redis_conn, PROJECT, "job-c")
    assert training_state.start_run(redis_conn, PROJECT, "job-d", manual=True) is None
    assert training_state.start_run(redis_conn, PROJECT, "job-e", manual=False) is None
    assert training_state.finish_run(redis_conn, running, asked.append)
    assert asked == [False, True]
    # a follow-up left by a killed worker keeps its kind for the reconciler
    dead = training_state.start_run(redis_conn, PROJECT, "job-f")
    assert training_state.start_run(redis_conn, PROJECT, "job-g", manual=False) is None
    dead.release()
    assert training_state.take_orphaned_followup(redis_conn, PROJECT) == "automatic"
    assert training_state.take_orphaned_followup(redis_conn, PROJECT) is None


def test_one_deferral_at_a_time_claimed_exactly_once(redis_conn):
    first = training_state.defer_round(redis_conn, PROJECT, time.time() + 30, "a")
    assert first and training_state.defer_round(redis_conn, PROJECT, time.time() + 5, "b") is None
    assert training_state.take_deferral(redis_conn, PROJECT, token="someone-else") is None
    assert training_state.take_deferral(redis_conn, PROJECT, due_by=time.time()) is None  # not due
    assert training_state.take_deferral(redis_conn, PROJECT, token=first)["reason"] == "a"
    assert training_state.take_deferral(redis_conn, PROJECT, token=first) is None
