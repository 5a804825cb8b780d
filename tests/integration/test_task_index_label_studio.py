"""The task index against a REAL Label Studio 1.23.2 and a real Redis: its sync gives a round
exactly what a full listing gives, without listing predictions, catches every change whose
webhook was missed (new, changed and deleted annotations, new and deleted tasks), and Label
Studio's own webhooks keep it current between rounds. About a minute with the Label Studio venv
and its database template in place.
"""

from __future__ import annotations

import json

import pytest

from backend import task_index
from backend.app import create_app
from backend.images import FetchReport
from backend.ls_client import LabelStudioClient
from backend.rounds.collect import split_tasks
from backend.settings import Settings
from backend.task_index import TaskIndex
from backend.task_types import task_type_for
from scripts import demo_data
from scripts.lib import lslocal

pytestmark = [pytest.mark.labelstudio, pytest.mark.redis]

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="digit" toName="image" choice="single"><Choice value="0"/><Choice value="1"/>
<Choice value="2"/></Choices></View>"""
SCHEMA = task_type_for(CONFIG)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return [
        path for path, _ in demo_data.render_digits("digits", tmp_path_factory.mktemp("digits"), 12, seed=2)
    ]


@pytest.fixture
def settings(label_studio, pat, redis_server, tmp_path):
    return Settings.from_env(
        {
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": pat,
            "REDIS_URL": redis_server,
            "MODEL_DIR": str(tmp_path / "models"),
            "QUEUE_NAME": f"index-{tmp_path.name}",
            "RETRAIN_AFTER_ANNOTATIONS": "0",
        }
    )


class RecordingClient(LabelStudioClient):
    """The backend's real client; it also keeps every task-list request and what came back."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.task_lists: list[tuple[dict, list]] = []

    def request(self, method, path, **kwargs):
        response = super().request(method, path, **kwargs)
        if method == "GET" and path == "/api/tasks/" and response.status_code == 200:
            body = response.json()
            self.task_lists.append(
                (dict(kwargs.get("params") or {}), body.get("tasks", []) if isinstance(body, dict) else body)
            )
        return response


def choice(label):
    return lslocal.choice_annotation("digit", "image", label)


def split(tasks):
    """What a round makes of the tasks: labeled (id, url, label), unlabeled, the label report."""
    result = split_tasks(tasks, SCHEMA, FetchReport())
    return sorted(result.labeled), sorted(result.unlabeled), result.labels


def full_listing(client, project_id):
    return list(client.iter_tasks(project_id))  # fields=all: what rounds listed before


def sync(index, client, admin, project_id):
    return index.sync(client, admin.get_project(project_id), SCHEMA)


def test_sync_gives_a_round_what_a_full_listing_gives_and_catches_missed_webhooks(
    admin, images, settings, redis_conn
):
    project = admin.create_project("Index without webhooks", CONFIG)
    pid = project["id"]
    ids = admin.import_images(pid, images[:8])
    first = admin.create_annotation(ids[0], choice("0"))
    admin.create_annotation(ids[1], choice("1"), was_cancelled=True)  # skipped
    admin.create_annotation(ids[2], choice("2"), ground_truth=True)
    tie = admin.create_annotation(ids[3], choice("0"))
    admin.create_annotation(ids[3], choice("1"))  # a 1-1 tie
    for version in ("v1", "v2"):  # two versions of predictions: what fields=all would embed
        admin.import_predictions(
            pid, [{"task": t, "result": choice("1"), "score": 0.5, "model_version": version} for t in ids]
        )
    # no backend is connected: Label Studio sends no webhook at all, every change is "missed"
    client = RecordingClient.from_settings(settings)
    index = TaskIndex(redis_conn, pid)

    tasks, report = sync(index, client, admin, pid)
    assert report.rebuilt and report.new_tasks == 8 and report.tasks == 8
    assert (report.annotated_tasks, report.annotations) == (4, 5)
    assert not report.ids_listed
    assert split(tasks) == split(full_listing(client, pid))
    labeled, _, labels = split(tasks)
    assert [(tid, label) for tid, _, label in labeled] == [(ids[0], "0"), (ids[2], "2")]
    assert labels["skipped_only"] == 1 and labels["dropped_by_reason"] == {"tie": 1}
    # no response of the sync carried a prediction (the full listing's did)
    synced = client.task_lists[:-1]
    assert synced and all("predictions" not in t for _, page in synced for t in page)
    assert any(t.get("predictions") for t in client.task_lists[-1][1])

    # changes whose webhooks are missed
    admin.request("PATCH", f"/api/annotations/{first['id']}/", json={"result": choice("2")})
    admin.request("DELETE", f"/api/annotations/{tie['id']}/")  # the tie is resolved
    admin.create_annotation(ids[4], choice("1"))
    admin.request("DELETE", f"/api/tasks/{ids[5]}/")
    new_ids = admin.import_images(pid, images[8:10])

    client.task_lists.clear()
    tasks, report = sync(index, client, admin, pid)
    assert not report.rebuilt and report.new_tasks == 2
    assert report.ids_listed and report.tasks_dropped == 1 and report.tasks == 9
    assert report.annotations_dropped == 1 and report.watermark == max(new_ids)
    assert ids[5] not in index.images() and ids[5] not in {t["id"] for t in tasks}
    assert split(tasks) == split(full_listing(client, pid))
    labeled, _, _ = split(tasks)
    assert [(tid, label) for tid, _, label in labeled] == [
        (ids[0], "2"),
        (ids[2], "2"),
        (ids[3], "1"),
        (ids[4], "1"),
    ]
    # the index holds what it returned
    assert {a: r["task"] for a, r in index.annotations().items()} == {
        a["id"]: t["id"] for t in tasks for a in t["annotations"]
    }

    # nothing changed: three small queries (new tasks, submitted, skipped), no id listing
    client.task_lists.clear()
    tasks_again, report = sync(index, client, admin, pid)
    assert report.new_tasks == 0 and not report.ids_listed and report.tasks_dropped == 0
    assert tasks_again == tasks
    assert len(client.task_lists) == 3
    assert all(
        params["include"] in (",".join(task_index.TASK_FIELDS), ",".join(task_index.LABEL_FIELDS))
        for params, _ in client.task_lists
    )


def test_a_task_missing_below_the_watermark_is_found_by_the_count(admin, images, settings, redis_conn):
    project = admin.create_project("Index gaps", CONFIG)
    pid = project["id"]
    ids = admin.import_images(pid, images[:4])
    client = LabelStudioClient.from_settings(settings)
    index = TaskIndex(redis_conn, pid)
    sync(index, client, admin, pid)
    # the index lost one task (e.g. a commit that landed below the watermark after a sync)
    redis_conn.hdel(index.tasks_key, ids[1])
    tasks, report = sync(index, client, admin, pid)
    assert report.ids_listed and report.tasks_recovered == 1 and report.new_tasks == 0
    assert [t["id"] for t in tasks] == ids
    assert tasks[1]["data"]["image"].startswith(f"/data/upload/{pid}/")


def test_label_studio_webhooks_keep_the_index_current_between_rounds(
    admin, images, settings, redis_conn, serve_wsgi
):
    backend = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    project = admin.create_project("Index with webhooks", CONFIG)
    pid = project["id"]
    ids = admin.import_images(pid, images[:4])
    admin.add_ml_backend(pid, backend.url, "al")  # Label Studio adds its webhook to /webhook
    client = LabelStudioClient.from_settings(settings)
    index = TaskIndex(redis_conn, pid)
    sync(index, client, admin, pid)
    assert index.annotations() == {}

    created = admin.create_annotation(ids[0], choice("1"))  # ANNOTATION_CREATED
    assert index.annotations()[created["id"]]["task"] == ids[0]
    assert SCHEMA.annotation_vote(index.annotations()[created["id"]]) == ("1", None)
    admin.request("PATCH", f"/api/annotations/{created['id']}/", json={"result": choice("2")})
    assert SCHEMA.annotation_vote(index.annotations()[created["id"]]) == ("2", None)
    admin.request("DELETE", f"/api/annotations/{created['id']}/")  # ANNOTATIONS_DELETED
    assert created["id"] not in index.annotations()
    admin.request("DELETE", f"/api/tasks/{ids[1]}/")  # TASKS_DELETED
    assert index.reported_deleted() == {ids[1]}  # confirmed with Label Studio at the sync
    (new,) = admin.import_images(pid, images[4:5])  # TASKS_CREATED
    assert index.images()[new].startswith(f"/data/upload/{pid}/")

    # the webhooks left nothing for the count to find
    tasks, report = sync(index, client, admin, pid)
    assert not report.ids_listed and report.tasks_dropped == 0 and report.new_tasks == 1
    assert report.deletions_confirmed == 1 and report.deletions_refused == 0
    assert ids[1] not in index.images() and index.reported_deleted() == set()
    assert [t["id"] for t in tasks] == [ids[0], ids[2], ids[3], new]
    assert json.dumps(split(tasks)) == json.dumps(split(full_listing(client, pid)))


def test_a_forged_tasks_deleted_webhook_drops_no_real_task(admin, images, settings, redis_conn, serve_wsgi):
    """Webhook bodies carry no credentials: anyone who reaches /webhook can send TASKS_DELETED
    for real tasks (with a forged TASKS_CREATED to keep the task counts equal, so the sync's
    count check finds nothing). Deletions are confirmed with Label Studio first."""
    import requests

    backend = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    project = admin.create_project("Index forged deletion", CONFIG)
    pid = project["id"]
    ids = admin.import_images(pid, images[:4])
    client = LabelStudioClient.from_settings(settings)
    index = TaskIndex(redis_conn, pid)
    sync(index, client, admin, pid)
    fake = ids[-1] + 1000
    for forged in (
        {"action": "TASKS_DELETED", "project": {"id": pid}, "tasks": [{"id": ids[2]}]},
        {
            "action": "TASKS_CREATED",
            "project": {"id": pid},
            "tasks": [{"id": fake, "data": {"image": f"/data/upload/{pid}/x.png"}}],
        },
    ):
        assert requests.post(f"{backend.url}/webhook", json=forged, timeout=10).status_code == 200
    tasks, report = sync(index, client, admin, pid)
    assert [t["id"] for t in tasks] == ids  # the real task stays, the fake goes
    assert report.deletions_refused == 1 and report.deletions_confirmed == 0
