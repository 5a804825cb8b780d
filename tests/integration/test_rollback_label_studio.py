"""Making an older version live again, against a REAL Label Studio 1.23.2 on a loopback port:
the project's model_version and the order Label Studio serves tasks in change back, and no task
holds the version's prediction twice (Label Studio still held a copy of it)."""

from __future__ import annotations

import secrets

import pytest

from backend.converters import TaskPrediction
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.rollback import RollbackRefused, republish
from backend.rounds.publish import push_and_publish
from backend.settings import Settings
from backend.task_types import task_type_for
from tests.integration.test_prediction_push_label_studio import predictions_per_task

pytestmark = pytest.mark.labelstudio

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="label" toName="image" choice="single"><Choice value="a"/><Choice value="b"/></Choices>
</View>"""
OLDER, NEWER = "al-20260101-000001-aaaaaa", "al-20260101-000002-bbbbbb"


def publish_version(settings, client, store, project_id, version, ranking):
    """What a round leaves: a checkpoint file and the version pushed and published."""
    path = store.checkpoint_path(project_id, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not loaded here")
    predictions = [
        (tid, TaskPrediction("a", 0.9, rank / (len(ranking) - 1))) for rank, tid in enumerate(ranking)
    ]
    push_and_publish(
        settings,
        client,
        store,
        project_id,
        version,
        task_type_for(CONFIG),
        predictions,
        about={"strategy": "margin"},
        info={},
    )


def lowest_score_task(admin, project_id, version) -> int:
    return min(
        (p for p in admin.list_predictions(project_id=project_id) if p["model_version"] == version),
        key=lambda p: p["score"],
    )["task"]


def test_an_older_version_is_live_again_in_label_studio(label_studio, pat, admin, tmp_path):
    project_id = admin.create_project(f"rollback {secrets.token_hex(3)}", CONFIG)["id"]
    ids = sorted(admin.import_tasks(project_id, [{"data": {"image": f"/x/{i}.png"}} for i in range(6)]))
    settings = Settings(
        label_studio_url=label_studio.url,
        label_studio_api_key=pat,
        model_dir=tmp_path / "models",
        set_uncertainty_sampling=True,
    )
    client = LabelStudioClient.from_settings(settings)
    store = ModelStore(settings.model_dir, settings.keep_model_versions)
    publish_version(settings, client, store, project_id, OLDER, ids)  # first id first
    publish_version(settings, client, store, project_id, NEWER, ids[::-1])  # last id first
    admin.set_sampling(project_id, "Uncertainty sampling")
    assert admin.get_project(project_id)["model_version"] == NEWER
    assert lowest_score_task(admin, project_id, NEWER) == ids[-1]
    # (next_task is asked once only: Label Studio serves a user the task it holds locked again)

    pushed = republish(settings, client, store, project_id, OLDER)

    assert pushed == len(ids)
    assert admin.get_project(project_id)["model_version"] == OLDER
    assert store.published(project_id).version == OLDER
    assert predictions_per_task(admin, project_id, OLDER) == {t: 1 for t in ids}
    assert admin.next_task(project_id)["id"] == ids[0]  # Label Studio serves its order again
    with pytest.raises(RollbackRefused, match="already the live version"):
        republish(settings, client, store, project_id, OLDER)
