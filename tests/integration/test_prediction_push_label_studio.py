"""The prediction push against a REAL Label Studio 1.23.2 on a loopback port.

Run once with Label Studio's memory-efficient prediction import (the flag scripts/lib/lslocal sets)
and once with its stock (legacy) import: both refuse a chunk naming a deleted task with a 400, but
the first may have created earlier batches of the same request before refusing.
"""

from __future__ import annotations

import secrets

import pytest

from backend.ls_client import LabelStudioClient, LabelStudioError
from backend.prediction_push import duplicate_ids, push_predictions
from scripts.lib import lslocal
from tests.conftest import free_port

pytestmark = pytest.mark.labelstudio

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="label" toName="image" choice="single"><Choice value="a"/><Choice value="b"/></Choices>
</View>"""
EMAIL, PASSWORD = "push@example.com", "push-" + secrets.token_urlsafe(10)


@pytest.fixture(scope="module", params=["flag on", "stock import"])
def label_studio(request, tmp_path_factory):
    flag = "true" if request.param == "flag on" else "false"
    server = lslocal.start_label_studio(
        lslocal.ensure_ls_venv(),
        tmp_path_factory.mktemp("label-studio"),
        free_port(),
        EMAIL,
        PASSWORD,
        extra_env={lslocal.PREDICTIONS_IMPORT_FLAG: flag},
    )
    token = lslocal.create_personal_access_token(server.url, EMAIL, PASSWORD)
    yield server, lslocal.LabelStudioAdmin(server.url, token), token, flag == "true"
    server.stop()


def new_project(admin, n_tasks: int) -> tuple[int, list[int]]:
    project = admin.create_project(f"push {secrets.token_hex(3)}", CONFIG)
    ids = admin.import_tasks(project["id"], [{"data": {"image": f"/x/{i}.png"}} for i in range(n_tasks)])
    assert len(ids) == n_tasks
    return project["id"], sorted(ids)


def payload(task_ids, version):
    return [
        {
            "task": t,
            "model_version": version,
            "score": i / len(task_ids),
            "result": [
                {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["a"]}}
            ],
        }
        for i, t in enumerate(task_ids)
    ]


def predictions_per_task(admin, project_id, version) -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in admin.list_predictions(project_id=project_id):
        if p["model_version"] == version:
            counts[p["task"]] = counts.get(p["task"], 0) + 1
    return counts


def test_a_task_deleted_before_the_push_is_dropped_and_the_rest_lands_once(label_studio):
    server, admin, token, _ = label_studio
    project_id, ids = new_project(admin, 12)
    gone = ids[4]
    admin.request("DELETE", f"/api/tasks/{gone}/")
    client = LabelStudioClient(server.url, token, retries=2, backoff_s=0.01)

    report = push_predictions(client, project_id, payload(ids, "v1"), "v1", chunk_size=5)

    assert report.deleted_tasks == [gone]
    assert report.created == 11 and report.checked_chunks == 1
    assert predictions_per_task(admin, project_id, "v1") == {t: 1 for t in ids if t != gone}


def test_the_lookup_sees_only_the_given_existing_tasks_and_their_predictions(label_studio):
    server, admin, token, _ = label_studio
    project_id, ids = new_project(admin, 6)
    client = LabelStudioClient(server.url, token)
    push_predictions(client, project_id, payload(ids[:2], "v1"), "v1", chunk_size=10)
    admin.request("DELETE", f"/api/tasks/{ids[3]}/")

    found = client.task_predictions(project_id, [ids[0], ids[2], ids[3]])

    assert set(found) == {ids[0], ids[2]} and found[ids[2]] == []
    assert [p["model_version"] for p in found[ids[0]]] == ["v1"]
    assert isinstance(found[ids[0]][0]["id"], int)


def test_duplicates_of_a_version_are_found_and_deleted(label_studio):
    server, admin, token, _ = label_studio
    project_id, ids = new_project(admin, 4)
    admin.import_predictions(project_id, payload(ids, "v1"))
    admin.import_predictions(project_id, payload(ids[:2], "v1"))  # a re-post that raced
    client = LabelStudioClient(server.url, token)
    extra = duplicate_ids(client.task_predictions(project_id, ids), "v1")
    assert len(extra) == 2
    for prediction_id in extra:
        client.delete_prediction(prediction_id)
    client.delete_prediction(extra[0])  # already gone: fine
    assert predictions_per_task(admin, project_id, "v1") == {t: 1 for t in ids}


def test_a_chunk_label_studio_cannot_store_never_lands_twice(label_studio):
    server, admin, token, flag_on = label_studio
    project_id, ids = new_project(admin, 3)
    client = LabelStudioClient(server.url, token, retries=2, backoff_s=0.01)
    broken = [{"task": t, "model_version": "v1", "score": "not a number", "result": []} for t in ids]
    if flag_on:
        # the memory-efficient import answers a non-numeric score with a 500: checked, re-posted
        # LABEL_STUDIO_RETRIES times, then the push fails clearly
        with pytest.raises(LabelStudioError) as error:
            push_predictions(client, project_id, broken, "v1", chunk_size=10)
        assert error.value.status == 500
    else:
        # the stock import drops predictions it finds invalid and answers 201 {"created": 0}
        assert push_predictions(client, project_id, broken, "v1", chunk_size=10).created == 0
    assert predictions_per_task(admin, project_id, "v1") == {}
