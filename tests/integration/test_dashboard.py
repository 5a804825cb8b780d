"""The dashboard over real HTTP: a running round's phase and progress, versions and the learning
curve after real rounds, "make this version live" (and its refusals), basic auth.

Real Redis; rounds run through the worker's own job function (``backend.jobs.run_training_job``)
in this process with the in-process fake client of test_cold_start_round; the rollback runs on a
real RQ worker (SimpleWorker, in this process) against a stand-in of Label Studio over real HTTP
on loopback that records what the backend asks of it.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests
from flask import Flask, jsonify, request
from rq import SimpleWorker

from backend import jobs, queueing, round_history, training_state
from backend.app import create_app
from backend.model_store import ModelStore
from backend.settings import Settings
from tests.conftest import ServerThread
from tests.unit.backend.test_cold_start_round import FakeClient
from tests.unit.backend.test_labeling_config import DIGITS

pytestmark = pytest.mark.redis
PROJECT = 5  # the fake client's project
LABELS = {1: "0", 2: "1", 3: "two", 5: "0", 6: "1", 7: "two", 9: "0", 10: "1", 11: "two"}
REQUESTS: list[tuple[str, str, object]] = []
STATE: dict = {}


@pytest.fixture(scope="module")
def label_studio():
    """Label Studio's project, prediction import, model-versions and tabs endpoints."""
    app = Flask("label-studio-stand-in")

    @app.route("/api/projects/<int:pid>/", methods=["GET", "PATCH"])
    def project(pid):
        if request.method == "PATCH":
            REQUESTS.append(("PATCH", request.path, request.get_json()))
            STATE["live"] = request.get_json().get("model_version", STATE.get("live"))
        return jsonify({"id": pid, "label_config": DIGITS, "model_version": STATE.get("live")})

    @app.route("/api/projects/<int:pid>/import/predictions", methods=["POST"])
    def import_predictions(pid):
        items = request.get_json()
        REQUESTS.append(("POST", request.path, items))
        for item in items:
            STATE["counts"][item["model_version"]] = STATE["counts"].get(item["model_version"], 0) + 1
        return jsonify({"created": len(items)}), 201

    @app.route("/api/projects/<int:pid>/model-versions/", methods=["GET", "DELETE"])
    def versions(pid):
        if request.method == "DELETE":
            REQUESTS.append(("DELETE", request.path, request.get_json()))
            return jsonify(STATE["counts"].pop(request.get_json()["model_version"], 0))
        return jsonify(STATE["counts"])

    @app.route("/api/dm/views/", methods=["GET", "POST"])
    def views():
        return jsonify(
            [{"id": 1, "data": {"title": "Most informative first", "ordering": ["tasks:predictions_score"]}}]
        )

    @app.route("/api/dm/views/<int:view_id>/", methods=["PATCH"])
    def view(view_id):
        return jsonify({"id": view_id})

    with ServerThread(app) as server:
        yield server


@pytest.fixture
def env(label_studio, monkeypatch, redis_server, redis_conn, tmp_path):
    REQUESTS.clear()
    STATE.clear()
    STATE["counts"] = {}
    for name, value in {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": "legacy-token-dash",
        "LABEL_STUDIO_RETRIES": "0",
        "REDIS_URL": redis_server,
        "QUEUE_NAME": "dashboard-test",
        "MODEL_DIR": str(tmp_path / "models"),
        "IMAGE_SIZE": "16",
        "TRAIN_STEPS": "20",
        "SELF_SUPERVISED_STEPS": "0",
        "QUERY_BATCH_SIZE": "4",
        "DEVICE": "cpu",
        "SEED": "0",
        "RECIPE_SEARCH_BUDGET_S": "0",
        "KEEP_MODEL_VERSIONS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    redis_conn.sadd(training_state.projects_key(), PROJECT)  # as a webhook or /setup does
    return Settings.from_env()


@pytest.fixture
def fake_client(monkeypatch):
    """Rounds see the in-process fake (their task listing too: the index is not tested here)."""
    client = FakeClient(12, LABELS)

    class Factory:
        @staticmethod
        def from_settings(_settings):
            return client

    monkeypatch.setattr("backend.pipeline.LabelStudioClient", Factory)
    monkeypatch.setattr(
        "backend.task_index.tasks_for_round",
        lambda settings, c, pid, project, schema, status=None: list(c.iter_tasks(pid)),
    )
    return client


def serve(settings, redis_conn, serve_wsgi):
    return serve_wsgi(create_app(settings, redis_conn=redis_conn))


def run_round(n: int) -> dict:
    # versions carry second-resolution timestamps: rounds a second apart sort in their order
    time.sleep(max(0.0, 1.05 - (time.time() % 1)))
    return jobs.run_training_job(PROJECT, f"round {n}")


def test_a_running_round_shows_its_phase_progress_and_time_left(env, redis_conn, serve_wsgi):
    lock = training_state.RunLock(redis_conn, PROJECT, "train-p5-test")
    assert lock.acquire()
    training_state.update_status(
        redis_conn,
        PROJECT,
        state="running",
        phase="training",
        started_at=training_state.iso(time.time() - 42),
        duration_s=75.0,
        training_progress={"epoch": 3, "epochs": 10, "seconds": 6.0},
    )
    server = serve(env, redis_conn, serve_wsgi)
    page = requests.get(server.url + "/dashboard", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    text = page.text
    assert "Training the model" in text and "3 of 10 epochs" in text
    assert "about 14.0 s left" in text and 'style="width:30.0%"' in text
    assert re.search(r"running for 4\d\.\d s", text) and "the last round took 75.0 s: about 3" in text
    # the phases before training are passed, the later ones still to come
    assert re.search(r'data-phase="fetching_tasks">.*?passed', text)
    assert re.search(r'data-phase="scoring">.*?to come', text)
    polled = requests.get(server.url + "/dashboard/progress.json", timeout=10).json()
    live = polled["projects"][str(PROJECT)]
    training = [bar for bar in live["running"]["bars"] if bar["phase"] == "training"]
    assert live["phase"] == "training" and training and training[0]["fraction"] == 0.3
    assert "3 of 10 epochs" in live["html"]
    assert requests.get(server.url + "/", timeout=5).json()["status"] == "UP"  # still JSON


def test_a_real_round_is_seen_in_progress_while_it_pushes(env, redis_conn, serve_wsgi, fake_client):
    pushing, release = threading.Event(), threading.Event()
    original = fake_client.import_predictions

    def slow_import(project_id, items):
        pushing.set()
        release.wait(30)
        return original(project_id, items)

    fake_client.import_predictions = slow_import
    worker = threading.Thread(target=run_round, args=(1,))
    worker.start()
    try:
        server = serve(env, redis_conn, serve_wsgi)
        assert pushing.wait(120)
        text = requests.get(server.url + "/dashboard", timeout=10).text
        assert "Sending the predictions to Label Studio" in text
        assert re.search(r'data-phase="training">.*?passed', text)
    finally:
        release.set()
        worker.join(120)
    polled = requests.get(server.url + "/dashboard/progress.json", timeout=10).json()
    assert polled["projects"][str(PROJECT)]["running"] is None


def make_live(server, version, headers=None, **kw):
    return requests.post(
        f"{server.url}/dashboard/projects/{PROJECT}/versions/{version}/make-live",
        headers={"X-Requested-With": "dashboard", **(headers or {})},
        timeout=10,
        **kw,
    )


def test_two_rounds_two_versions_and_a_rollback_republishes_the_older(
    env, redis_conn, serve_wsgi, fake_client
):
    first, second = run_round(1), run_round(2)
    older, newer = first["model_version"], second["model_version"]
    server = serve(env, redis_conn, serve_wsgi)
    text = requests.get(server.url + "/dashboard", timeout=10).text
    for version in (older, newer):
        assert f'<tr data-version="{version}">' in text
    assert text.count('class="point-train_acc"') == 2  # the learning curve: two points
    assert "make this version live" in text and "legacy-token-dash" not in text

    answer = make_live(server, older)
    assert answer.status_code == 202, answer.text
    SimpleWorker([queueing.training_queue(env, redis_conn)], connection=redis_conn).work(burst=True)
    store = ModelStore(env.model_dir, env.keep_model_versions)
    assert store.published(PROJECT).version == older
    assert ("PATCH", f"/api/projects/{PROJECT}/", {"model_version": older}) in REQUESTS
    pushed = [item for method, _, body in REQUESTS if method == "POST" for item in body]
    stored = dict(store.stored_predictions(PROJECT, older).items())
    assert sorted(p["task"] for p in pushed) == sorted(stored) and {p["model_version"] for p in pushed} == {
        older
    }
    assert {p["task"]: p["score"] for p in pushed} == {t: p.score for t, p in stored.items()}
    # its copy in Label Studio was deleted before the push: no task holds it twice
    deletes = [
        i
        for i, (method, _, body) in enumerate(REQUESTS)
        if method == "DELETE" and body == {"model_version": older}
    ]
    assert deletes and deletes[0] < next(i for i, r in enumerate(REQUESTS) if r[0] == "POST")
    status = requests.get(server.url + "/status", timeout=10).json()["projects"][str(PROJECT)]
    assert status["published_version"] == older and status["rollback"]["state"] == "done"
    text = requests.get(server.url + "/dashboard", timeout=10).text
    assert f'<b class="live-version">{older}</b>' in text


def test_the_next_round_measures_the_live_versions_guesses_on_the_new_labels(
    env, redis_conn, serve_wsgi, fake_client
):
    later = (9, 10, 11)
    for task in fake_client.tasks:  # these three are annotated only after the first round
        if task["id"] in later:
            task["annotations"], task["later"] = [], task["annotations"]
    first = run_round(1)["model_version"]
    for n, task in enumerate(t for t in fake_client.tasks if t["id"] in later):
        task["annotations"] = [{**task.pop("later")[0], "id": 100 + n}]  # Label Studio's next ids
    run_round(2)
    store = ModelStore(env.model_dir, env.keep_model_versions)
    guesses = store.stored_predictions(PROJECT, first)
    right = sum(guesses.get(t).label == LABELS[t] for t in later)
    measured = round_history.rounds(redis_conn, PROJECT)[0]["prospective"]
    assert measured["version"] == first and measured["tasks"] == len(later)
    assert measured["correct"] == right
    text = requests.get(serve(env, redis_conn, serve_wsgi).url + "/dashboard", timeout=10).text
    row = re.search(rf'<tr data-version="{first}">.*?</tr>', text).group(0)
    assert f"{right / len(later) * 100:.1f}%</span> of 3 tasks" in row
    assert "so this figure is pessimistic" in text


def test_the_first_tasks_come_from_the_published_pointer(env, redis_conn, serve_wsgi, fake_client):
    version = run_round(1)["model_version"]
    store = ModelStore(env.model_dir, env.keep_model_versions)
    stored = sorted(store.stored_predictions(PROJECT, version).items(), key=lambda i: i[1].score)
    kept = store.published(PROJECT).info["first_tasks"]
    assert [t["task_id"] for t in kept] == [tid for tid, _ in stored[:8]]
    assert kept[0]["label"] == stored[0][1].label and kept[0]["score"] == stored[0][1].score
    # the page reads them there: it needs not the version's predictions file for them
    store.predictions_path(PROJECT, version).unlink()
    text = requests.get(serve(env, redis_conn, serve_wsgi).url + "/dashboard", timeout=10).text
    assert f">task {stored[0][0]}</a>" in text and text.count("<td><a href=") == 8


def test_a_pruned_version_is_refused_with_the_reason(env, redis_conn, serve_wsgi, fake_client):
    versions = [run_round(n)["model_version"] for n in range(1, 4)]  # KEEP_MODEL_VERSIONS=2
    server = serve(env, redis_conn, serve_wsgi)
    text = requests.get(server.url + "/dashboard", timeout=10).text
    assert "were pruned" in text and "KEEP_MODEL_VERSIONS" in text
    answer = make_live(server, versions[0])
    assert answer.status_code == 409 and "pruned" in answer.json()["error"]
    assert make_live(server, versions[2]).json()["error"].endswith("already the live version")
    assert queueing.training_queue(env, redis_conn).count == 0


def test_basic_auth_guards_the_page_and_the_action(env, redis_conn, serve_wsgi, monkeypatch):
    monkeypatch.setenv("BASIC_AUTH_USER", "admin")
    monkeypatch.setenv("BASIC_AUTH_PASS", "dash-s3cret")
    server = serve(Settings.from_env(), redis_conn, serve_wsgi)
    version = "al-20260101-000000-abcdef"
    for path in ("/dashboard", "/dashboard/progress.json"):
        assert requests.get(server.url + path, timeout=10).status_code == 401
        assert requests.get(server.url + path, auth=("admin", "wrong"), timeout=10).status_code == 401
    assert make_live(server, version).status_code == 401
    page = requests.get(server.url + "/dashboard", auth=("admin", "dash-s3cret"), timeout=10)
    assert page.status_code == 200 and "dash-s3cret" not in page.text
    assert "legacy-token-dash" not in page.text
    # authenticated, but posted by a page of another site: refused
    answer = make_live(
        server, version, auth=("admin", "dash-s3cret"), headers={"Origin": "http://evil.example"}
    )
    assert answer.status_code == 403
    answer = make_live(server, version, auth=("admin", "dash-s3cret"))
    assert answer.status_code == 409  # it reached the action: no such version's files


def test_the_page_renders_fast_with_50_versions_and_100000_tasks(env, redis_conn, serve_wsgi):
    from backend.converters import TaskPrediction

    store = ModelStore(env.model_dir, 50)
    versions = [f"al-20260101-{i // 60:04d}{i % 60:02d}-abcdef" for i in range(50)]
    for n, version in enumerate(versions):
        round_history.record(
            redis_conn,
            PROJECT,
            {
                "state": "done",
                "model_version": version,
                "annotations_used": 20 * (n + 1),
                "metrics": {
                    "mode": "frozen",
                    "val_acc": 0.5 + n / 200,
                    "train_acc": 0.9,
                    "lpm_spearman": 0.3,
                },
                "timings_s": {
                    "list_tasks_s": 1.0,
                    "train_s": 5.0,
                    "score_s": 9.0,
                    "push_s": 3.0,
                    "total_s": 19.0,
                },
                "finished_at": "2026-01-01T00:00:00Z",
            },
        )
    live = versions[-1]
    path = store.checkpoint_path(PROJECT, live)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not read by the page")
    store.save_predictions(
        PROJECT,
        live,
        ((tid, TaskPrediction("0", 0.7, tid / 100_000)) for tid in range(1, 100_001)),
        strategy="margin",
    )
    store.publish(PROJECT, live)
    server = serve(env, redis_conn, serve_wsgi)
    first = requests.get(server.url + "/dashboard", timeout=30)  # parses the predictions once
    assert first.status_code == 200 and first.text.count('class="point-accuracy"') == 50
    assert ">task 1</a>" in first.text  # the live ranking's first task
    took = []
    for _ in range(3):
        started = time.perf_counter()
        requests.get(server.url + "/dashboard", timeout=30).raise_for_status()
        took.append(time.perf_counter() - started)
    # 300 ms is the aim on an idle machine; the bound leaves room for a busy test host
    assert min(took) < 1.0, took
    print(f"dashboard with 50 versions and 100,000 tasks: {min(took) * 1000:.0f} ms")


def test_thumbnails_come_from_the_image_cache_only(env, redis_conn, serve_wsgi):
    import io

    from PIL import Image

    from backend.images import ImageCache
    from backend.task_index import TaskIndex
    from tests.unit.backend.test_cold_start_round import png

    url = f"{env.label_studio_url}/data/upload/{PROJECT}/1.png"
    redis_conn.hset(TaskIndex(redis_conn, PROJECT).tasks_key, mapping={1: url, 2: url + "x"})
    big = Image.open(io.BytesIO(png(1))).resize((300, 200))
    data = io.BytesIO()
    big.save(data, format="PNG")
    ImageCache(env.resolved_image_cache_dir).put(url, data.getvalue())
    server = serve(env, redis_conn, serve_wsgi)
    base = f"{server.url}/dashboard/projects/{PROJECT}/tasks"
    answer = requests.get(f"{base}/1/thumbnail", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).size == (96, 64)
    assert requests.get(f"{base}/2/thumbnail", timeout=10).status_code == 404  # not cached
    assert requests.get(f"{base}/3/thumbnail", timeout=10).status_code == 404  # not indexed
    assert REQUESTS == []  # Label Studio was never asked


def test_a_browser_at_the_root_is_sent_to_the_page_and_clients_still_get_json(env, redis_conn, serve_wsgi):
    server = serve(env, redis_conn, serve_wsgi)
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    answer = requests.get(server.url + "/", headers=browser, allow_redirects=False, timeout=10)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/dashboard")
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        plain = requests.get(server.url + "/", headers=headers, timeout=10)
        assert plain.status_code == 200 and plain.json()["status"] == "UP"
    health = requests.get(server.url + "/health", headers=browser, timeout=10)
    assert health.json()["status"] == "UP"
