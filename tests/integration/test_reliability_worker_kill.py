"""A worker SIGKILLed mid-round: nothing half-done is published, the lock expires, training resumes.

A real RQ worker subprocess (``python -m backend.worker``, which forks a work horse) trains
against a Flask STAND-IN for Label Studio on loopback (the real Label Studio is covered by the
e2e tests). The stand-in holds the bulk prediction import open, so the kill lands at the most
delicate moment: the new checkpoint is on disk but not yet published. The worker's whole process
group (worker + horse) gets SIGKILL, as when a container or the OOM killer takes it down.

The run lock's lifetime is the setting RUN_LOCK_TTL_S (default 120 s); the worker here runs with
3 s, since a 120 s wait does not belong in a test.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from flask import Flask, jsonify, request
from PIL import Image

from backend import queueing, training_state
from backend.model_store import ModelStore
from backend.settings import Settings
from tests.conftest import REPO_ROOT, ServerThread
from tests.integration.worker_processes import kill_tree, start_worker, wait_for
from tests.unit.backend.test_labeling_config import DIGITS

pytestmark = pytest.mark.redis
PROJECT = 17
LOCK_TTL_S = 3


def png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (value, value, value)).save(out, format="PNG")
    return out.getvalue()


class StandIn:
    def __init__(self):
        self.hold_import = True
        self.import_started = threading.Event()
        self.release = threading.Event()
        self.imported: list = []
        self.patches: list = []


def standin_app(state: StandIn) -> Flask:
    app = Flask("label-studio-standin")
    labels = ["0", "1"]

    def task(task_id: int) -> dict:
        data = {"id": task_id, "data": {"image": f"/data/upload/{PROJECT}/{task_id}.png"}, "annotations": []}
        if task_id <= 8:
            data["annotations"] = [
                {
                    "id": task_id,
                    "result": [
                        {
                            "from_name": "digit",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [labels[task_id % 2]]},
                        }
                    ],
                }
            ]
        return data

    pointer: dict = {}  # what the PATCHes set (model_version), answered like Label Studio

    @app.route(f"/api/projects/{PROJECT}/", methods=["GET", "PATCH"])
    def project():
        if request.method == "PATCH":
            state.patches.append(request.get_json())
            pointer.update(request.get_json())
        return jsonify(
            {
                **pointer,
                "id": PROJECT,
                "label_config": DIGITS.replace('<Choice value="2" alias="two"/>', ""),
                "num_tasks_with_annotations": 8,
            }
        )

    @app.route("/api/tasks/")
    def tasks():
        return jsonify([task(i) for i in range(1, 13)])

    @app.route(f"/data/upload/{PROJECT}/<int:task_id>.png")
    def image(task_id):
        return app.response_class(png(40 if task_id % 2 == 0 else 220), mimetype="image/png")

    @app.route(f"/api/projects/{PROJECT}/import/predictions", methods=["POST"])
    def import_predictions():
        if state.hold_import:
            state.import_started.set()
            state.release.wait(60)  # the worker is killed while it waits here
            return jsonify({"detail": "too late"}), 503
        body = request.get_json()
        state.imported.extend(body)
        return jsonify({"created": len(body)}), 201

    @app.route("/api/dm/views/", methods=["GET", "POST"])
    def views():
        return jsonify([] if request.method == "GET" else {"id": 1})

    return app


def start_lock_worker(env: dict, log_path: Path, burst: bool) -> subprocess.Popen:
    return start_worker({**env, "RUN_LOCK_TTL_S": str(LOCK_TTL_S)}, log_path, burst)


def test_a_killed_worker_publishes_nothing_its_lock_expires_and_training_resumes(
    redis_server, redis_conn, tmp_path
):
    state = StandIn()
    with ServerThread(standin_app(state)) as ls:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "REDIS_URL": redis_server,
            "QUEUE_NAME": f"kill-{os.getpid()}",
            "MODEL_DIR": str(tmp_path / "models"),
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": "legacy-kill-test",
            "LABEL_STUDIO_RETRIES": "0",
            "DEVICE": "cpu",
            "TRAIN_EPOCHS": "1",
            "IMAGE_SIZE": "16",
            "RECONCILE_INTERVAL_S": "0",
            "RETRAIN_AFTER_ANNOTATIONS": "1000",
            "LOG_LEVEL": "INFO",
            "SELF_SUPERVISED_STEPS": "0",
        }
        settings = Settings.from_env(env)
        store = ModelStore(settings.model_dir)
        log_path = tmp_path / "worker.log"

        enqueued, first_job = queueing.request_training(settings, redis_conn, PROJECT, "first")
        assert enqueued
        worker = start_lock_worker(env, log_path, burst=False)
        try:
            wait_for(state.import_started.is_set, 90, "the round to reach the prediction import", log_path)
            assert training_state.running_job(redis_conn, PROJECT) == first_job
            assert kill_tree(worker) >= 2  # worker and work horse
            worker.wait(10)
        finally:
            if worker.poll() is None:
                kill_tree(worker)
            state.release.set()
        killed_at = time.monotonic()

        # 1. nothing half-done is published: the pointer is unchanged (still none); the new
        #    checkpoint on disk is complete (atomic write) but was never published
        assert store.published(PROJECT) is None
        assert not (store.project_dir(PROJECT) / "current.json").exists()
        leftovers = [p.name for p in store.project_dir(PROJECT).rglob("*") if p.is_file()]
        assert not [n for n in leftovers if n.endswith(".tmp")], leftovers
        from model.checkpoint import load_checkpoint

        orphans = store.versions(PROJECT)
        assert len(orphans) == 1
        load_checkpoint(store.checkpoint_path(PROJECT, orphans[0]))
        assert state.patches == []  # model_version not moved
        status = training_state.get_status(redis_conn, PROJECT)
        assert status["state"] == "running" and status["phase"] == "pushing_predictions", (
            status,
            log_path.read_text()[-3000:],
        )

        # 2. the dead job's lock is not renewed any more and expires by itself
        assert 0 < redis_conn.ttl(f"al:project:{PROJECT}:lock") <= LOCK_TTL_S
        wait_for(
            lambda: training_state.running_job(redis_conn, PROJECT) is None,
            LOCK_TTL_S + 3,
            "the lock to expire",
        )
        assert time.monotonic() - killed_at <= LOCK_TTL_S + 3

        # the reconciler records the abandoned round instead of showing "running" forever
        from backend.ls_client import LabelStudioClient
        from backend.reconcile import reconcile_project

        reconcile_project(settings, redis_conn, LabelStudioClient.from_settings(settings), PROJECT)
        assert training_state.get_status(redis_conn, PROJECT)["state"] == "failed"

        # 3. a new trigger runs to the end and publishes a fresh version
        state.hold_import = False
        enqueued, second_job = queueing.request_training(settings, redis_conn, PROJECT, "again")
        assert enqueued and second_job != first_job
        rerun = start_lock_worker(env, log_path, burst=True)
        try:
            assert rerun.wait(120) == 0, log_path.read_text()[-3000:]
        finally:
            if rerun.poll() is None:
                kill_tree(rerun)
        published = store.published(PROJECT)
        assert published is not None and published.version != orphans[0]
        assert store.load_published(PROJECT) is not None
        final = training_state.get_status(redis_conn, PROJECT)
        assert final["state"] == "done" and final["running_job_id"] is None, final
        assert {p["model_version"] for p in state.imported} == {published.version}
        assert len(state.imported) == 12
        assert state.patches == [{"model_version": published.version}]
        print(
            f"\nkilled job {first_job} at the prediction import; orphan checkpoint "
            f"{orphans[0]} left unpublished; lock expired; {second_job} published "
            f"{published.version}"
        )


def test_a_trigger_deferred_by_a_dead_jobs_lock_is_requested_once_the_lock_expires(redis_conn):
    """A job that finds the project's lock held marks a follow-up and gives up; normally the lock
    holder requests it when it finishes. A SIGKILLed holder never finishes, so once its lock has
    expired the reconciler claims the follow-up (exactly once)."""
    dead = training_state.RunLock(redis_conn, PROJECT, "dead-job", ttl_s=1)
    assert dead.acquire()  # a job that is then SIGKILLed
    enqueued = []
    training_state.request_training(redis_conn, PROJECT, "start", enqueued.append)
    assert training_state.start_run(redis_conn, PROJECT, enqueued[0]) is None  # deferred
    assert not training_state.take_orphaned_followup(redis_conn, PROJECT)  # holder "alive"
    time.sleep(1.5)  # the dead lock expires
    assert training_state.take_orphaned_followup(redis_conn, PROJECT)
    assert not training_state.take_orphaned_followup(redis_conn, PROJECT)  # only once
