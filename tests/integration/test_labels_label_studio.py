"""The label rule, the reconciler's count, the run lock and the tab's filter against a REAL
Label Studio 1.23.2 and a real Redis, with training rounds run in-process (cold-start rounds:
MIN_ANNOTATIONS_TO_TRAIN is set high, since what is under test is what counts as a label, not
the model). About 1-2 minutes with the Label Studio venv and its database template in place.
"""

from __future__ import annotations

import pytest
import requests

from backend import jobs, ls_project, reconcile, training_state
from backend.app import create_app
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.settings import Settings
from scripts import demo_data

pytestmark = [pytest.mark.labelstudio, pytest.mark.redis]

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="digit" toName="image" choice="single"><Choice value="0"/><Choice value="1"/>
<Choice value="2"/></Choices></View>"""
MULTI_CONFIG = CONFIG.replace('choice="single"', 'choice="multiple"')
TITLE = "Most informative first"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return [
        path for path, _ in demo_data.render_digits("digits", tmp_path_factory.mktemp("digits"), 12, seed=1)
    ]


@pytest.fixture
def env(label_studio, pat, redis_server, tmp_path, monkeypatch):
    """The settings a worker would read (run_training_job reads its settings from the env)."""
    values = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat,
        "REDIS_URL": redis_server,
        "MODEL_DIR": str(tmp_path / "models"),
        "QUEUE_NAME": f"labels-{tmp_path.name}",
        "RETRAIN_AFTER_ANNOTATIONS": "1",
        "MIN_ANNOTATIONS_TO_TRAIN": "100",
        "SET_UNCERTAINTY_SAMPLING": "false",
        "IMAGE_CACHE_DIR": str(tmp_path / "images"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env(values)


def choice(*labels):
    return [{"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": list(labels)}}]


def test_empty_and_multi_choice_annotations_never_look_like_drift(admin, images, env, redis_conn):
    project = admin.create_project("Labels and counts", CONFIG)
    ids = admin.import_images(project["id"], images)
    admin.create_annotation(ids[0], choice("0"))
    admin.create_annotation(ids[1], choice("1"))
    admin.create_annotation(ids[2], [])  # submitted empty
    admin.create_annotation(ids[3], choice("0", "1"))  # two choices (LS does not check)
    admin.create_annotation(ids[4], choice("0"))  # a 1-1 tie
    admin.create_annotation(ids[4], choice("1"))
    admin.create_annotation(ids[5], choice("2"), was_cancelled=True)  # skipped
    admin.create_annotation(ids[6], choice("1"))  # outvoted by a ground truth
    admin.create_annotation(ids[6], choice("2"), ground_truth=True)
    admin.create_annotation(ids[8], choice("2"), ground_truth=True)  # a ground truth alone
    ls_count = admin.get_project(project["id"])["num_tasks_with_annotations"]
    # Label Studio counts the empty, two-choice and tied tasks, but not a task whose only
    # annotation is a ground truth
    assert ls_count == 6

    summary = jobs.run_training_job(project["id"], "test")
    assert summary["state"] == "cold_start"
    assert summary["labels"] == {
        "labeled": 4,
        "from_ground_truth": 2,
        "dropped": 3,
        "dropped_by_reason": {"empty_result": 1, "not_a_single_choice": 1, "tie": 1},
        "skipped_only": 1,
    }
    status = training_state.get_status(redis_conn, project["id"])
    assert status[training_state.LS_COUNT_AT_LAST_ROUND] == ls_count
    assert status["last_summary"]["labels"] == summary["labels"]

    client = LabelStudioClient.from_settings(env)
    # before: 3 usable labels against Label Studio's 6 looked like 3 new annotations, every pass
    assert reconcile.reconcile_project(env, redis_conn, client, project["id"]) == "in sync"
    assert reconcile.reconcile_project(env, redis_conn, client, project["id"]) == "in sync"
    admin.create_annotation(ids[7], choice("2"))  # a real new annotation
    assert reconcile.reconcile_project(env, redis_conn, client, project["id"]) == "retrain"


def test_a_round_that_loses_its_run_lock_publishes_nothing(admin, images, env, redis_conn, monkeypatch):
    project = admin.create_project("Lost lock", CONFIG)
    ids = admin.import_images(project["id"], images[:6])
    admin.create_annotation(ids[0], choice("0"))
    first = jobs.run_training_job(project["id"], "first")
    store = ModelStore(env.model_dir)
    assert store.published(project["id"]).version == first["model_version"]

    # another worker takes the project's lock while this round pushes (its lock had expired):
    # the real import goes through, then the lock is gone
    real_import = LabelStudioClient.import_predictions

    def import_then_lose_the_lock(self, project_id, items):
        created = real_import(self, project_id, items)
        redis_conn.set(training_state._key(project_id, "lock"), "job-of-another-worker", ex=60)
        return created

    monkeypatch.setattr(LabelStudioClient, "import_predictions", import_then_lose_the_lock)
    with pytest.raises(training_state.RunLockLost):
        jobs.run_training_job(project["id"], "second")
    assert store.published(project["id"]).version == first["model_version"]
    assert admin.get_project(project["id"])["model_version"] == first["model_version"]
    status = training_state.get_status(redis_conn, project["id"])
    assert status["last_lost_lock"]["held_by"] == "job-of-another-worker"
    assert status["state"] != "failed"  # the other worker's round is not ours to mark
    assert training_state.running_job(redis_conn, project["id"]) == "job-of-another-worker"


def test_setup_refuses_a_multi_choice_config_with_the_reason(admin, env, redis_conn, serve_wsgi):
    backend = serve_wsgi(create_app(env, redis_conn=redis_conn))
    project = admin.create_project("Multi choice", MULTI_CONFIG)
    with pytest.raises(Exception) as refused:
        admin.add_ml_backend(project["id"], backend.url, "al")
    # Label Studio shows the status line of a failed /setup, never its body: the reason is there
    assert "has choice='multiple'" in str(refused.value)
    assert admin.list_ml_backends(project["id"]) == []
    answer = requests.post(
        backend.url + "/setup", json={"project": str(project["id"]), "schema": MULTI_CONFIG}, timeout=10
    )
    assert answer.status_code == 400 and "has choice='multiple'" in answer.json()["error"]
    assert "has choice='multiple'" in answer.reason
    single = admin.create_project("Single choice", CONFIG)
    assert admin.add_ml_backend(single["id"], backend.url, "al")["id"]


def _tab_task_ids(admin, project_id: int) -> set[int]:
    (view,) = [v for v in admin.list_views(project_id) if (v.get("data") or {}).get("title") == TITLE]
    body = admin.get_json("/api/tasks/", params={"view": view["id"], "project": project_id, "page_size": 100})
    return {t["id"] for t in (body["tasks"] if isinstance(body, dict) else body)}


@pytest.mark.parametrize("overlap", [1, 2])
def test_the_tab_keeps_tasks_that_still_need_annotators(admin, images, env, overlap):
    project = admin.create_project(
        f"Overlap {overlap}", CONFIG, maximum_annotations=overlap, overlap_cohort_percentage=100
    )
    ids = admin.import_images(project["id"], images[:4])
    client = LabelStudioClient.from_settings(env)
    ls_project.ensure_informative_view(client, project["id"], TITLE)
    admin.create_annotation(ids[0], choice("0"))
    admin.create_annotation(ids[1], choice("1"), was_cancelled=True)
    visible = _tab_task_ids(admin, project["id"])
    assert ids[2] in visible and ids[3] in visible
    # one annotation completes a task only when one annotator per task is asked for
    assert (ids[0] in visible) is (overlap == 2)
