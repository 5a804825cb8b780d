"""Old versions' predictions are deleted by a job of their own, after the round has ended.

Real Redis and a real RQ worker (rq's SimpleWorker, in this process so the stand-in's record is
visible); Label Studio's project, model-versions and tabs endpoints are a small stand-in over real
HTTP on loopback (what is tested is the order of the backend's own steps, not Label Studio).
"""

from __future__ import annotations

import pytest
from flask import Flask, jsonify, request
from rq import Queue, SimpleWorker

from backend.ls_client import LabelStudioClient
from backend.rounds import publish
from backend.settings import Settings
from tests.conftest import ServerThread

pytestmark = pytest.mark.redis

V1, V2, V3, V4 = (f"al-20260101-00000{i}-abcdef" for i in range(1, 5))
TITLE = "Most informative first"
EVENTS: list[str] = []
STATE: dict = {}


@pytest.fixture(scope="module")
def label_studio():
    app = Flask("versions-stand-in")

    @app.route("/api/projects/<int:pid>/")
    def project(pid):
        return jsonify({"id": pid, "model_version": STATE["live"]})

    @app.route("/api/projects/<int:pid>/model-versions/", methods=["GET", "DELETE"])
    def versions(pid):
        if request.method == "DELETE":
            version = request.get_json()["model_version"]
            STATE["counts"].pop(version, None)
            EVENTS.append(f"delete {version}")
            return jsonify(1)
        return jsonify(STATE["counts"])

    @app.route("/api/dm/views/")
    def views():
        return jsonify([{"id": 1, "data": {"title": TITLE, "ordering": ["tasks:predictions_score"]}}])

    with ServerThread(app) as server:
        yield server


@pytest.fixture
def env(label_studio, monkeypatch, redis_server):
    EVENTS.clear()
    STATE.clear()
    for name, value in {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": "legacy-t",
        "KEEP_PREDICTION_VERSIONS": "1",
        "REDIS_URL": redis_server,
        "QUEUE_NAME": "prune-test",
        "INFORMATIVE_VIEW_TITLE": TITLE,
    }.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def round_tail(project_id: int, version: str) -> None:
    """The end of a round, run as an RQ job: update the tabs, then the round is done."""
    settings = Settings.from_env()
    publish.update_views(settings, LabelStudioClient.from_settings(settings), project_id, version)
    EVENTS.append("round done")


def test_the_round_ends_before_old_predictions_are_deleted(env, redis_conn):
    STATE.update(live=V2, counts={V1: 10, V2: 10})
    queue = Queue(env.queue_name, connection=redis_conn)
    queue.enqueue(f"{__name__}.round_tail", args=(1, V2))
    SimpleWorker([queue], connection=redis_conn).work(burst=True)
    assert EVENTS == ["round done", f"delete {V1}"]
    assert STATE["counts"] == {V2: 10}


def test_outside_a_queue_the_round_prunes_in_place(env):
    STATE.update(live=V2, counts={V1: 10, V2: 10})
    round_tail(1, V2)
    assert EVENTS == [f"delete {V1}", "round done"]


def test_a_late_prune_never_deletes_the_live_version(env):
    # the prune queued after V2 runs once V3 is live and V4 is being pushed (KEEP=1)
    STATE.update(live=V3, counts={V2: 10, V3: 10, V4: 5})
    deleted = publish.prune_old_predictions(env, LabelStudioClient.from_settings(env), 1, V2)
    assert deleted == [] and set(STATE["counts"]) == {V2, V3, V4}
    STATE.update(counts={V1: 10, V2: 10, V3: 10, V4: 5})
    assert publish.prune_old_predictions(env, LabelStudioClient.from_settings(env), 1, V3) == [V1, V2]
