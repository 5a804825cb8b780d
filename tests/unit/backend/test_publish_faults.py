"""Publishing under Label Studio faults: a version is live in both places (Label Studio's project
model_version, our pointer that /predict serves) or in neither, and a tab that cannot be updated
after publishing is a warning of the round, not its failure.

A fault-injection stand-in of Label Studio's project (GET, PATCH) and Data Manager tabs serves
real HTTP on loopback and is called through the real client (retries and all); the rest of the
round (tasks, images, the prediction import) is the in-process fake of test_cold_start_round."""

from __future__ import annotations

import threading

import pytest
from flask import Flask, jsonify, request

from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.pipeline import run_training_round
from backend.rounds.publish import PublishError
from backend.settings import Settings
from tests.conftest import ServerThread
from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient
from tests.unit.backend.test_labeling_config import DIGITS


class StandInProject:
    def __init__(self):
        self.lock = threading.Lock()
        self.project = {"id": PROJECT, "label_config": DIGITS, "model_version": ""}
        self.patch_plan: list[str] = []  # one fault per PATCH of the project, in order
        self.views_fault: int | None = None
        self.views: list[dict] = []
        self.patch_requests = 0


def make_app(state: StandInProject) -> Flask:
    app = Flask("stand-in-project")

    @app.route("/api/projects/<int:pid>/", methods=["GET"])
    def get_project(pid):
        return jsonify(state.project)

    @app.route("/api/projects/<int:pid>/", methods=["PATCH"])
    def patch_project(pid):
        with state.lock:
            state.patch_requests += 1
            fault = state.patch_plan.pop(0) if state.patch_plan else "ok"
            if fault == "503":
                return jsonify({"detail": "restarting"}), 503
            if fault != "ignore":  # "ignore": answered, not applied
                state.project.update(request.get_json())
            return jsonify(state.project)

    @app.route("/api/dm/views/", methods=["GET", "POST"])
    def views():
        if state.views_fault:
            return jsonify({"detail": "server error"}), state.views_fault
        if request.method == "POST":
            state.views.append({"id": len(state.views) + 1, "data": request.get_json()["data"]})
            return jsonify(state.views[-1]), 201
        return jsonify(state.views)

    return app


class HttpProjectClient(FakeClient):
    """The round's fake client, with the project and the tabs over HTTP (the real client)."""

    def __init__(self, n_tasks: int, http: LabelStudioClient):
        super().__init__(n_tasks, {})
        self.http = http

    def get_project(self, project_id):
        return self.http.get_project(project_id)

    def patch_project(self, project_id, data):
        self.patches.append(data)
        return self.http.patch_project(project_id, data)

    def list_views(self, project_id):
        return self.http.list_views(project_id)

    def create_view(self, project_id, data):
        return self.http.create_view(project_id, data)

    def update_view(self, view_id, project_id, data):
        return self.http.update_view(view_id, project_id, data)


@pytest.fixture
def label_studio():
    state = StandInProject()
    with ServerThread(make_app(state)) as server:
        server.state = state
        yield server


@pytest.fixture
def round_env(label_studio, tmp_path):
    http = LabelStudioClient(label_studio.url, "legacy-token", timeout_s=5, retries=2, backoff_s=0.01)
    client = HttpProjectClient(12, http)
    settings = Settings(model_dir=tmp_path / "models", query_batch_size=4, seed=0, self_supervised_steps=0)
    store = ModelStore(settings.model_dir, settings.keep_model_versions)

    def round_():
        return run_training_round(settings, PROJECT, lambda **_: None, client=client, store=store).to_dict()

    return label_studio.state, client, store, round_


def test_a_pointer_patch_that_keeps_failing_leaves_the_previous_version_live(round_env):
    ls, _, store, round_ = round_env
    first = round_()["model_version"]
    assert ls.project["model_version"] == first == store.published(PROJECT).version
    ls.patch_plan = ["503"] * 10  # Label Studio down past the client's retries
    with pytest.raises(Exception) as failed:
        round_()
    assert ls.patch_requests == 1 + 3  # the first round's PATCH; 1 + 2 retries
    assert ls.project["model_version"] == first
    assert store.published(PROJECT).version == first  # /predict serves what the tab shows
    assert failed.type is PublishError and "could not point Label Studio" in str(failed.value)


def test_a_pointer_patch_answered_but_not_applied_is_caught(round_env):
    ls, _, store, round_ = round_env
    ls.patch_plan = ["ignore"]
    with pytest.raises(PublishError, match="its model_version is ''"):
        round_()
    assert store.published(PROJECT) is None  # nothing was live, nothing is


def test_a_pointer_patch_is_retried_through_a_short_outage(round_env):
    ls, _, store, round_ = round_env
    ls.patch_plan = ["503", "503"]
    summary = round_()
    assert summary["state"] == "cold_start"
    assert ls.project["model_version"] == summary["model_version"]
    assert store.published(PROJECT).version == summary["model_version"]


def test_a_tab_that_cannot_be_updated_is_a_warning_not_a_failed_round(round_env):
    ls, _, store, round_ = round_env
    ls.views_fault = 500
    summary = round_()
    assert summary["state"] == "cold_start"
    assert ls.project["model_version"] == summary["model_version"]
    assert store.published(PROJECT).version == summary["model_version"]
    [warning] = summary["warnings"]
    assert "tab could not be updated" in warning and "HTTP 500" in warning
    ls.views_fault = None
    assert "warnings" not in round_()  # a round that updated its tab has none
    assert [v["data"]["title"] for v in ls.views] == ["Most informative first"]
