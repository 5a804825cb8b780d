"""Creating calls to Label Studio under faults: a lost answer, a 5xx, a 429, a deleted task.

A fault-injection stand-in of Label Studio's prediction import, task look-up and Data Manager tabs
serves real HTTP on loopback (a real Label Studio cannot be made to time out or fail on cue; the
deleted-task case and the look-up are also run against a real one in
tests/integration/test_prediction_push_label_studio.py). The stand-in stores what a request
creates *before* it fails, as Label Studio's import does (create, then recount, no transaction).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from flask import Flask, jsonify, request

from backend import ls_project
from backend.ls_client import LabelStudioClient, LabelStudioError
from backend.prediction_push import duplicate_ids, push_predictions, still_to_send
from tests.conftest import ServerThread

TOKEN = "legacy-token-for-fault-tests"
BULK_TIMEOUT_S = 0.5
HANG_S = 1.5  # longer than BULK_TIMEOUT_S: the client gives up, the server goes on


class FaultyLabelStudio:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self, n_tasks: int = 10):
        self.tasks = set(range(1, n_tasks + 1))
        self.predictions: list[dict] = []
        self.views: list[dict] = []
        self.import_plan: list[str] = []  # one fault per import request, in order
        self.view_plan: list[str] = []
        self.import_bodies: list[list[int]] = []
        self.view_posts = 0
        self.retry_after = "1"
        self.late: threading.Thread | None = None  # an import still running after its answer
        self.next_id = 1

    def store(self, predictions: list[dict]) -> None:
        with self.lock:
            for p in predictions:
                self.predictions.append({**p, "id": self.next_id})
                self.next_id += 1

    def per_task(self, version="v1") -> Counter:
        return Counter(p["task"] for p in self.predictions if p["model_version"] == version)


def make_app(state: FaultyLabelStudio) -> Flask:
    app = Flask("faulty-label-studio")

    @app.route("/api/projects/<int:pid>/import/predictions", methods=["POST"])
    def import_predictions(pid):
        body = request.get_json()
        if state.late is not None:  # the earlier request finishes before this one
            state.late.join()
            state.late = None
        with state.lock:
            state.import_bodies.append([p["task"] for p in body])
            fault = state.import_plan.pop(0) if state.import_plan else "ok"
        if fault == "429":
            return jsonify({"detail": "slow down"}), 429, {"Retry-After": state.retry_after}
        if fault == "502 before storing":
            return jsonify({"detail": "bad gateway"}), 502
        if fault == "504 while still working":
            # a proxy gives up at once; Label Studio stores the chunk a moment later
            state.late = threading.Thread(target=lambda: (time.sleep(0.2), state.store(body)))
            state.late.start()
            return jsonify({"detail": "gateway timeout"}), 504
        if any(p["task"] not in state.tasks for p in body):
            return jsonify({"detail": "invalid task"}), 400
        stored = body[: len(body) // 2] if fault == "500 after storing half" else body
        state.store(stored)
        if fault == "hang after storing":
            time.sleep(HANG_S)
        if fault in ("500 after storing", "500 after storing half"):
            return jsonify({"detail": "server error"}), 500
        return jsonify({"created": len(stored)}), 201

    @app.route("/api/tasks/")
    def tasks():
        query = json.loads(request.args["query"])
        wanted = query["selectedItems"]["included"]
        out = [
            {
                "id": t,
                "predictions": [
                    {"id": p["id"], "model_version": p["model_version"]}
                    for p in state.predictions
                    if p["task"] == t
                ],
            }
            for t in wanted
            if t in state.tasks
        ]
        return jsonify({"tasks": out, "total": len(out)})

    @app.route("/api/predictions/<int:prediction_id>/", methods=["DELETE"])
    def delete_prediction(prediction_id):
        with state.lock:
            state.predictions = [p for p in state.predictions if p["id"] != prediction_id]
        return "", 204

    @app.route("/api/dm/views/")
    def list_views():
        return jsonify(state.views)

    @app.route("/api/dm/views/", methods=["POST"])
    def create_view():
        with state.lock:
            state.view_posts += 1
            fault = state.view_plan.pop(0) if state.view_plan else "ok"
            view = {"id": len(state.views) + 1, "data": request.get_json()["data"]}
            state.views.append(view)
        if fault == "hang after creating":
            time.sleep(HANG_S)
        if fault == "503 after creating":
            # urllib3 alone would POST again on a 503 that carries Retry-After
            return jsonify({"detail": "unavailable"}), 503, {"Retry-After": "0"}
        return jsonify(view), 201

    return app


@pytest.fixture(scope="module")
def server():
    state = FaultyLabelStudio()
    with ServerThread(make_app(state)) as running:
        running.state = state
        yield running


@pytest.fixture
def ls(server):
    server.state.reset()
    return server.state


@pytest.fixture
def client(server):
    return LabelStudioClient(
        server.url, TOKEN, timeout_s=5, retries=3, backoff_s=0.01, bulk_timeout_s=BULK_TIMEOUT_S
    )


def payload(task_ids, version="v1"):
    return [{"task": t, "model_version": version, "score": 0.5, "result": []} for t in task_ids]


def test_a_chunk_whose_answer_is_lost_is_looked_up_not_posted_again(ls, client):
    ls.import_plan = ["hang after storing"]
    report = push_predictions(client, 1, payload(range(1, 11)), "v1", chunk_size=4)
    assert ls.per_task() == Counter({t: 1 for t in range(1, 11)})  # no duplicate
    assert ls.import_bodies == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert report.created == 10 and report.checked_chunks == 1


def test_a_5xx_after_storing_part_of_a_chunk_reposts_only_the_rest(ls, client):
    ls.import_plan = ["500 after storing half"]
    report = push_predictions(client, 1, payload(range(1, 7)), "v1", chunk_size=4)
    assert ls.per_task() == Counter({t: 1 for t in range(1, 7)})
    assert ls.import_bodies == [[1, 2, 3, 4], [3, 4], [5, 6]]
    assert report.created == 6


def test_a_5xx_that_stored_everything_is_not_reposted(ls, client):
    ls.import_plan = ["500 after storing"]
    push_predictions(client, 1, payload(range(1, 5)), "v1", chunk_size=4)
    assert ls.per_task() == Counter({t: 1 for t in range(1, 5)})
    assert ls.import_bodies == [[1, 2, 3, 4]]


def test_a_5xx_that_stored_nothing_is_posted_again(ls, client):
    ls.import_plan = ["502 before storing"]
    report = push_predictions(client, 1, payload(range(1, 5)), "v1", chunk_size=4)
    assert ls.per_task() == Counter({t: 1 for t in range(1, 5)})
    assert ls.import_bodies == [[1, 2, 3, 4]] * 2 and report.checked_chunks == 1


def test_a_chunk_stored_after_its_answer_was_lost_leaves_no_duplicate(ls, client):
    ls.import_plan = ["504 while still working"]
    report = push_predictions(client, 1, payload(range(1, 7)), "v1", chunk_size=4)
    assert ls.import_bodies == [[1, 2, 3, 4], [1, 2, 3, 4], [5, 6]]  # looked up: none yet
    assert ls.per_task() == Counter({t: 1 for t in range(1, 7)})  # the late copies removed
    assert report.duplicates_removed == 4


def test_a_429_waits_for_retry_after_then_posts_again_without_a_lookup(ls, client):
    ls.import_plan = ["429"]
    started = time.monotonic()
    report = push_predictions(client, 1, payload(range(1, 5)), "v1", chunk_size=4)
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert ls.per_task() == Counter({t: 1 for t in range(1, 5)})
    assert report.checked_chunks == 0 and len(ls.import_bodies) == 2


def test_a_long_retry_after_is_capped(ls, server):
    ls.import_plan = ["429"]
    ls.retry_after = "3600"
    client = LabelStudioClient(server.url, TOKEN, retries=2, backoff_s=0.01, retry_after_max_s=0.2)
    started = time.monotonic()
    push_predictions(client, 1, payload([1]), "v1", chunk_size=4)
    assert time.monotonic() - started < 5.0
    assert ls.per_task() == Counter({1: 1})


def test_tasks_deleted_during_the_round_are_dropped_and_the_rest_pushed(ls, client):
    ls.tasks -= {3, 6}
    report = push_predictions(client, 1, payload(range(1, 9)), "v1", chunk_size=4)
    assert ls.per_task() == Counter({t: 1 for t in (1, 2, 4, 5, 7, 8)})
    assert sorted(report.deleted_tasks) == [3, 6] and report.created == 6


def test_a_chunk_that_never_lands_fails_the_push_after_the_retries(ls, client):
    ls.import_plan = ["502 before storing"] * 10
    with pytest.raises(LabelStudioError) as error:
        push_predictions(client, 1, payload(range(1, 3)), "v1", chunk_size=4)
    assert error.value.status == 502
    assert len(ls.import_bodies) == client.retries + 1 and ls.per_task() == Counter()


def test_a_tab_whose_creation_answer_is_lost_is_found_not_created_twice(ls, client):
    ls.view_plan = ["hang after creating"]
    client.timeout_s = BULK_TIMEOUT_S  # tab creation is an ordinary (not bulk) call
    view_id = ls_project.ensure_informative_view(client, 1, "Most informative first")
    titles = [v["data"]["title"] for v in ls.views]
    assert titles == ["Most informative first"] and view_id == ls.views[0]["id"]
    assert ls.view_posts == 1


def test_a_tab_created_despite_a_503_is_found_not_created_twice(ls, client):
    ls.view_plan = ["503 after creating"]
    ls_project.ensure_informative_view(client, 1, "Most informative first")
    assert len(ls.views) == 1 and ls.view_posts == 1


def test_still_to_send_splits_a_chunk_by_what_label_studio_holds():
    chunk = payload([1, 2, 3, 4])
    held = {1: [{"id": 1, "model_version": "v1"}], 2: [{"id": 2, "model_version": "v0"}], 4: []}
    remaining, deleted = still_to_send(chunk, "v1", held)
    assert [p["task"] for p in remaining] == [2, 4] and deleted == [3]


def test_duplicate_ids_keeps_the_first_prediction_of_each_task():
    held = {
        1: [
            {"id": 9, "model_version": "v1"},
            {"id": 4, "model_version": "v1"},
            {"id": 2, "model_version": "v0"},
        ],
        2: [{"id": 5, "model_version": "v1"}],
    }
    assert duplicate_ids(held, "v1") == [9]
