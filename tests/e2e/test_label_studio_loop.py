"""The whole loop against a real Label Studio 1.23.2 and the backend started by scripts/serve.sh.

Label Studio, the backend (gunicorn), its embedded Redis and RQ worker all run as real processes
on loopback; images are real digits rendered to PNG and uploaded through Label Studio's API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO_ROOT, free_port

lslocal = pytest.importorskip("scripts.lib.lslocal")
demo_data = pytest.importorskip("scripts.demo_data")

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

DIGITS_CONFIG = demo_data.DIGITS_LABEL_CONFIG
EMAIL, PASSWORD = "admin@example.com", "e2e-Passw0rd"
N_TASKS, FIRST_ANNOTATIONS, RETRAIN_AFTER = 60, 20, 21
JOB_DEADLINE_S = 420


def ls_venv() -> Path:
    return lslocal.default_ls_venv_dir()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    venv = ls_venv()
    if not (venv / "bin" / "label-studio").exists():
        pytest.fail(f"Label Studio venv missing at {venv}: run scripts/test.sh, which installs it")
    server = lslocal.start_label_studio(
        venv, tmp_path_factory.mktemp("label-studio"), free_port(), EMAIL, PASSWORD
    )
    print(f"\nLabel Studio up in {server.started_in_s:.1f} s at {server.url}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pat(label_studio) -> str:
    return lslocal.create_personal_access_token(label_studio.url, EMAIL, PASSWORD)


@pytest.fixture(scope="module")
def backend(label_studio, pat, tmp_path_factory):
    port = free_port()
    data = tmp_path_factory.mktemp("backend")
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat,
        "MODEL_DIR": str(data / "models"),
        "PORT": str(port),
        "VENV_DIR": sys.prefix,
        "RETRAIN_AFTER_ANNOTATIONS": str(RETRAIN_AFTER),  # > FIRST_ANNOTATIONS
        # an automatic round here starts as soon as its annotations are in: the cadence's
        # waiting and scheduled start are tested with a real worker in
        # tests/integration/test_cadence.py, and waiting a round's duration on a busy CPU
        # would only stretch this test past its deadline
        "RETRAIN_MIN_INTERVAL_S": "0",
        "RETRAIN_DURATION_FACTOR": "0",
        "SET_UNCERTAINTY_SAMPLING": "true",
        "LOG_LEVEL": "INFO",
        "KEEP_PREDICTION_VERSIONS": "1",
        # the protocol is under test here, not accuracy (benchmarks/domain_suite.py measures
        # the default recipe's 2,000 steps); 300 keeps each round a few seconds on CI's CPU
        "TRAIN_STEPS": "300",
        # the first trained round learns the project's self-supervised weights and the next
        # reuses them, for real; 30 steps instead of 1,000 keep that to seconds
        "SELF_SUPERVISED_STEPS": "30",
    }
    env.pop("REDIS_URL", None)  # serve.sh starts its embedded Redis
    log_path = data / "backend.log"
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            ["bash", str(REPO_ROOT / "scripts" / "serve.sh")],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO_ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(
            lambda: _health(url),
            120,
            f"backend /health (log {log_path})",
            lambda: log_path.read_text()[-3000:],
            process,
        )
        print(f"backend up in {time.monotonic() - started:.1f} s at {url}")
        yield type("Backend", (), {"url": url, "log": log_path, "process": process})
    finally:
        lslocal.stop_serve(process)
        tail = log_path.read_text()[-2000:]
        print(f"--- backend log tail ---\n{tail}")


def _health(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait_for(check, timeout_s, what, diagnostics=lambda: "", process=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited while waiting for {what}:\n{diagnostics()}")
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n{diagnostics()}")


def _project_status(backend, project_id: int) -> dict:
    body = requests.get(backend.url + "/status", timeout=5).json()
    return body.get("projects", {}).get(str(project_id), {})


def _wait_for_version(backend, project_id: int, not_version: str | None) -> dict:
    def done():
        status = _project_status(backend, project_id)
        if status.get("state") == "failed":
            raise AssertionError(f"training failed: {status.get('error')}")
        if (
            status.get("state") == "done"
            and status.get("model_version")
            and status["model_version"] != not_version
            and not status.get("running_job_id")
        ):
            return status
        return None

    return _wait_for(done, JOB_DEADLINE_S, "a new model version", lambda: backend.log.read_text()[-4000:])


def _wait_for_pruned(admin, project_id: int, old_version: str) -> dict:
    """Label Studio's model versions once the old one and the placeholders are deleted."""

    def pruned():
        versions = admin.get_json(f"/api/projects/{project_id}/model-versions/")
        return versions if old_version not in versions and "untrained" not in versions else None

    return _wait_for(pruned, 120, f"the predictions of {old_version} deleted")


def _label_of_task(task: dict, labels_by_name: dict[str, str]) -> str:
    # uploads are stored as /data/upload/<project>/<8 hex>-<original name>
    stored = task["data"]["image"].rsplit("/", 1)[-1]
    return labels_by_name[stored.split("-", 1)[1]]


def test_the_whole_loop(label_studio, pat, backend, tmp_path):
    admin = lslocal.LabelStudioAdmin(label_studio.url, pat)
    project = admin.create_project("Digits e2e", DIGITS_CONFIG)
    pid = project["id"]
    rendered = demo_data.render_digits("digits", tmp_path / "images", N_TASKS, seed=0)
    labels_by_name = {Path(path).name: label for path, label in rendered}
    admin.import_images(pid, [path for path, _ in rendered])
    tasks = admin.list_tasks(pid)
    assert len(tasks) == N_TASKS

    # 1. connect the backend as the UI does; Label Studio calls /health and /setup
    ml = admin.add_ml_backend(pid, backend.url, title="Active learning")
    # Label Studio checks /health and /setup again on this GET: "ER" or "DI" when either fails
    # (tests/integration/test_lslocal.py shows the state turning "ER")
    connected = admin.get_ml_backend(ml["id"])
    assert connected["state"] == "CO", connected

    # 2. before training: an honest answer through LS's own /predict call
    first = tasks[0]
    r = requests.post(
        backend.url + "/predict",
        json={"tasks": [first], "project": f"{pid}.0", "label_config": DIGITS_CONFIG},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["results"][0]["model_version"] == "untrained"

    # 3. an annotator labels a few images (balanced over classes), then the admin presses Start Training
    by_label: dict[str, list[dict]] = {}
    for task in tasks:
        by_label.setdefault(_label_of_task(task, labels_by_name), []).append(task)
    annotated = [group[i] for i in range(2) for group in by_label.values() if len(group) > i]
    annotated = annotated[:FIRST_ANNOTATIONS]
    for task in annotated:
        admin.create_annotation(
            task["id"], lslocal.choice_annotation("digit", "image", _label_of_task(task, labels_by_name))
        )
    t0 = time.monotonic()
    admin.start_training(ml["id"])
    print(f"Start Training round trip (LS -> /webhook -> LS): {time.monotonic() - t0:.3f} s")
    t_train = time.monotonic()
    status = _wait_for_version(backend, pid, None)
    version = status["model_version"]
    print(
        f"train + score + push of {N_TASKS} tasks: {time.monotonic() - t_train:.1f} s; "
        f"summary: {status.get('last_summary')}"
    )
    assert status["annotations_used"] == len(annotated)
    learned = status["last_summary"]["self_supervised"]
    assert learned["learned_now"] and learned["images"] == N_TASKS and learned["steps"] == 30

    # every task holds exactly one prediction of the new version, score in [0, 1]; it
    # pre-selects a choice only when the model is sure enough (PRESELECT_MIN_CONFIDENCE 0.5)
    scores, without_choice = {}, 0
    for task in admin.list_tasks(pid):
        current = [p for p in admin.list_predictions(task_id=task["id"]) if p.get("model_version") == version]
        assert len(current) == 1, f"task {task['id']}: {len(current)} predictions of {version}"
        assert 0.0 <= current[0]["score"] <= 1.0
        if current[0]["result"]:
            (result,) = current[0]["result"]
            assert result["value"]["choices"][0] in labels_by_name.values()
            assert result["score"] >= 0.5
        else:
            without_choice += 1
        scores[task["id"]] = current[0]["score"]
    assert (
        without_choice == status["last_summary"]["predictions_pushed"] - status["last_summary"]["preselected"]
    )
    print(f"{without_choice} of {len(scores)} predictions pushed without a pre-selected choice")
    project = admin.get_project(pid)
    assert project["model_version"] == version
    assert project["sampling"] == "Uncertainty sampling"
    views = [
        v for v in admin.list_views(pid) if (v.get("data") or {}).get("title") == "Most informative first"
    ]
    assert len(views) == 1 and views[0]["data"]["ordering"] == ["tasks:predictions_score"]

    # unlabeled tasks rank before labeled ones, and LS serves the lowest score next
    annotated_ids = {t["id"] for t in annotated}
    unlabeled_scores = {tid: s for tid, s in scores.items() if tid not in annotated_ids}
    assert max(unlabeled_scores.values()) < min(scores[tid] for tid in annotated_ids)
    next_task = admin.next_task(pid)
    assert next_task["id"] == min(unlabeled_scores, key=unlabeled_scores.get)

    # a task imported after the round is run through the published model by /predict
    extra = demo_data.render_digits("digits", tmp_path / "late", 1, seed=99)
    (late_id,) = admin.import_images(pid, [extra[0][0]])
    r = requests.post(
        backend.url + "/predict",
        json={"tasks": [admin.get_task(late_id)], "project": f"{pid}.0", "label_config": DIGITS_CONFIG},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    late = r.json()["results"][0]
    assert late["model_version"] == version and len(late["result"]) <= 1
    assert all(item["score"] >= 0.5 for item in late["result"])
    assert 0.0 <= late["score"] <= 1.0

    # the same images re-uploaded as new tasks (as a user re-importing a folder would) get their
    # twins' pushed scores: the round's first pick (a diversity pick), a middle one, a labeled one
    path_by_name = {Path(path).name: path for path, _ in rendered}
    by_score = sorted(scores, key=scores.get)
    twins = [by_score[0], by_score[len(by_score) // 2], next(iter(annotated_ids))]
    stored_name = {t["id"]: t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1] for t in tasks}
    copies = admin.import_images(pid, [path_by_name[stored_name[twin]] for twin in twins])
    r = requests.post(
        backend.url + "/predict",
        json={
            "tasks": [admin.get_task(copy) for copy in copies],
            "project": f"{pid}.0",
            "label_config": DIGITS_CONFIG,
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert [item["score"] for item in r.json()["results"]] == [scores[twin] for twin in twins]

    # 4. more annotations retrain on their own
    remaining = [t for t in tasks if t["id"] not in annotated_ids][:RETRAIN_AFTER]
    for task in remaining:
        admin.create_annotation(
            task["id"], lslocal.choice_annotation("digit", "image", _label_of_task(task, labels_by_name))
        )
    status2 = _wait_for_version(backend, pid, version)
    # a webhook of the first batch may land after the first job started and count toward this
    # round, so the retrain can fire a little before the last of these annotations
    assert len(annotated) < status2["annotations_used"] <= len(annotated) + len(remaining)
    assert admin.get_project(pid)["model_version"] == status2["model_version"]
    # the second round measured the first version's guesses on the tasks annotated since
    measured = status2["last_summary"]["prospective"]
    assert measured["version"] == version
    assert measured["tasks"] == status2["last_summary"]["annotated_tasks"] - len(annotated) > 0
    assert 0 <= measured["preselected_correct"] <= measured["preselected"] <= measured["tasks"]
    # the project has not grown by SELF_SUPERVISED_REFRESH_GROWTH: the weights are reused
    reused = status2["last_summary"]["self_supervised"]
    assert not reused["learned_now"] and reused["weights"] == learned["weights"]
    # with KEEP_PREDICTION_VERSIONS=1 the first version's predictions are gone from Label Studio
    # (deleted by a job queued after the round published)
    versions = _wait_for_pruned(admin, pid, version)
    assert versions.get(status2["model_version"]) == N_TASKS + 1 + len(copies)  # + late tasks
    assert version not in versions and "untrained" not in versions


def _wait_for_state(backend, project_id: int, state: str, not_version: str | None) -> dict:
    def reached():
        status = _project_status(backend, project_id)
        if status.get("state") == "failed":
            raise AssertionError(f"round failed: {status.get('error')}")
        if (
            status.get("state") == state
            and status.get("model_version") not in (None, not_version)
            and not status.get("running_job_id")
        ):
            return status
        return None

    return _wait_for(reached, 120, f"a {state} round", lambda: backend.log.read_text()[-4000:])


def _tab_order(admin, project_id: int, title: str) -> list[dict]:
    """Tasks as the tab lists them (its filter and ordering applied by Label Studio)."""
    (view,) = [v for v in admin.list_views(project_id) if (v.get("data") or {}).get("title") == title]
    body = admin.get_json(
        "/api/tasks/", params={"view": view["id"], "project": project_id, "page_size": 100, "fields": "all"}
    )
    return body["tasks"] if isinstance(body, dict) else body


def test_cold_start_rounds_push_a_typiclust_ranking_without_choices(label_studio, pat, backend, tmp_path):
    """No labels, then labels of one class: no classifier is trained; the pool is ranked by
    TypiClust (first on pixels, then on the project's self-supervised backbone learned in that
    round) and pushed with empty results, which Label Studio stores, orders in the tab and serves
    through uncertainty sampling."""
    t_start = time.monotonic()
    admin = lslocal.LabelStudioAdmin(label_studio.url, pat)
    pid = admin.create_project("Cold start e2e", DIGITS_CONFIG)["id"]
    rendered = demo_data.render_digits("digits", tmp_path / "images", 40, seed=1)
    labels_by_name = {Path(path).name: label for path, label in rendered}
    admin.import_images(pid, [path for path, _ in rendered])
    tasks = admin.list_tasks(pid)
    ml = admin.add_ml_backend(pid, backend.url, title="Active learning")

    # 1. Start Training with no annotation at all: a cold-start round
    admin.start_training(ml["id"])
    status = _wait_for_state(backend, pid, "cold_start", None)
    version = status["model_version"]
    summary = status["last_summary"]
    assert version.startswith("coldstart-") and "MIN_ANNOTATIONS_TO_TRAIN" in summary["reason"]
    # a pixel ranking at once, then the ranking on the weights the round learned
    assert summary["first_push"]["embedding"] == "pixels"
    assert summary["embedding"] == "self_supervised" and summary["pick"] == "stratified"
    assert summary["self_supervised"]["learned_now"] is True
    assert summary["predictions_pushed"] == len(tasks) and summary["preselected"] == 0
    predictions = [p for p in admin.list_predictions(project_id=pid) if p["model_version"] == version]
    assert len(predictions) == len(tasks) and all(p["result"] == [] for p in predictions)
    score_of = {p["task"]: p["score"] for p in predictions}
    assert sorted(score_of.values()) == pytest.approx(  # pushed at full double precision
        [i / (len(tasks) - 1) for i in range(len(tasks))], abs=1e-12
    )
    project = admin.get_project(pid)
    assert project["model_version"] == version and project["sampling"] == "Uncertainty sampling"
    # the tab lists them by score ascending; "Label All Tasks" serves the lowest score
    listed = [t["id"] for t in _tab_order(admin, pid, "Most informative first")]
    assert listed == sorted(score_of, key=score_of.get)
    first = admin.next_task(pid)
    assert first["id"] == listed[0]
    first_picks = {_label_of_task(admin.get_task(tid), labels_by_name) for tid in listed[:10]}
    print(f"cold start: {len(first_picks)} of 10 classes among the first 10 tasks of the tab")
    # /predict for a task imported after the round: honest, no guess
    extra = demo_data.render_digits("digits", tmp_path / "late", 1, seed=98)
    (late_id,) = admin.import_images(pid, [extra[0][0]])
    r = requests.post(
        backend.url + "/predict",
        json={"tasks": [admin.get_task(late_id)], "project": f"{pid}.0", "label_config": DIGITS_CONFIG},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["results"][0] == {
        "result": [],
        "score": 0.5,
        "model_version": "untrained",
    }

    # 2. the annotator labels what it was served, then two more tasks of the same class: still
    #    one class only, so the next round is a cold start too, with that class's cluster covered
    label = _label_of_task(first, labels_by_name)
    same = [t for t in tasks if _label_of_task(t, labels_by_name) == label and t["id"] != first["id"]][:2]
    annotated = [first["id"]] + [t["id"] for t in same]
    for task_id in annotated:
        admin.create_annotation(task_id, lslocal.choice_annotation("digit", "image", label))
    admin.start_training(ml["id"])
    status2 = _wait_for_state(backend, pid, "cold_start", version)
    version2 = status2["model_version"]
    assert "MIN_CLASSES_TO_TRAIN" in status2["last_summary"]["reason"]
    assert "first_push" not in status2["last_summary"]  # the weights are reused
    assert status2["last_summary"]["self_supervised"]["learned_now"] is False
    assert status2["annotations_used"] == len(annotated)
    assert status2["last_summary"]["clusters_covered_by_labels"] >= 1
    assert admin.get_project(pid)["model_version"] == version2
    scores2 = {
        p["task"]: p["score"]
        for p in admin.list_predictions(project_id=pid)
        if p["model_version"] == version2
    }
    assert min(scores2[t] for t in annotated) > max(s for t, s in scores2.items() if t not in annotated)
    listed2 = [t["id"] for t in _tab_order(admin, pid, "Most informative first")]
    assert not set(listed2) & set(annotated)  # the tab hides annotated tasks
    assert listed2 == sorted(listed2, key=scores2.get)
    assert admin.next_task(pid)["id"] == listed2[0]
    # KEEP_PREDICTION_VERSIONS=1: the first cold-start version and the placeholders are gone
    _wait_for_pruned(admin, pid, version)
    _wait_for_pruned(admin, pid, summary["first_push"]["model_version"])
    print(f"cold-start e2e (2 rounds, {len(tasks)} tasks): {time.monotonic() - t_start:.1f} s")


def test_backend_client_accepts_both_token_kinds(label_studio, pat):
    from backend.ls_client import LabelStudioClient, LabelStudioError

    admin = lslocal.LabelStudioAdmin(label_studio.url, pat)
    admin.set_legacy_api_tokens_enabled(True)
    legacy = admin.get_legacy_api_token()
    for token, kind in ((pat, "personal access token"), (legacy, "legacy token")):
        client = LabelStudioClient(label_studio.url, token, retries=0)
        assert client.token_kind == kind
        assert client.whoami()["email"] == EMAIL
    with pytest.raises(LabelStudioError, match="401"):
        LabelStudioClient(label_studio.url, "0" * 40, retries=0).whoami()
