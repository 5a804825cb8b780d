"""Cold-start rounds (too few labels or classes) and the pre-selection rule, with an in-process
fake of the Label Studio client (the real Label Studio is covered in tests/e2e)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from backend import converters
from backend.converters import TaskPrediction, preselects
from backend.ml_model import ActiveLearningModel
from backend.model_store import (
    COLD_START_VERSION_RE,
    ModelStore,
    is_own_version,
    new_cold_start_version,
    new_version,
    version_sort_key,
)
from backend.pipeline import run_training_round
from backend.rounds.cold_start import cold_start_reason
from backend.settings import Settings, SettingsError
from backend.task_types import task_type_for
from tests.unit.backend.test_labeling_config import DIGITS

SCHEMA = task_type_for(DIGITS)
PROJECT = 5


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    "probability, threshold, expected",
    [
        (0.49, 0.5, False),
        (0.5, 0.5, True),
        (0.93, 0.5, True),
        (0.01, 0.0, True),  # 0 disables the rule: always pre-select
        (0.99, 1.0, False),
        (1.0, 1.0, True),
        (None, 0.0, False),  # no model, no choice
    ],
)
def test_preselects(probability, threshold, expected):
    assert preselects(probability, threshold) is expected


def test_low_confidence_payload_keeps_its_score_without_a_result():
    low = TaskPrediction("two", 0.41, 0.0, cluster=2)
    payload = converters.prediction_payload(low, SCHEMA, "v", min_confidence=0.5)
    assert payload == {"result": [], "score": 0.0, "model_version": "v", "cluster": 2}
    item = converters.import_payload(7, low, SCHEMA, "v", min_confidence=0.5)
    assert item["result"] == [] and item["task"] == 7 and item["score"] == 0.0
    sure = converters.import_payload(7, TaskPrediction("two", 0.8, 0.3), SCHEMA, "v", 0.5)
    assert sure["result"][0]["value"] == {"choices": ["two"]}
    unlabeled = TaskPrediction(None, None, 0.25)
    assert converters.prediction_payload(unlabeled, SCHEMA, "v", 0.0)["result"] == []


def test_settings_validate_the_new_fields():
    settings = Settings.from_env({"MIN_CLASSES_TO_TRAIN": "3", "PRESELECT_MIN_CONFIDENCE": "0"})
    assert settings.min_classes_to_train == 3 and settings.preselect_min_confidence == 0.0
    assert Settings().min_classes_to_train == 2 and Settings().preselect_min_confidence == 0.5
    for env in (
        {"PRESELECT_MIN_CONFIDENCE": "1.5"},
        {"PRESELECT_MIN_CONFIDENCE": "-0.1"},
        {"MIN_CLASSES_TO_TRAIN": "0"},
        {"COLDSTART_PICK": "densest"},
    ):
        with pytest.raises(SettingsError, match=next(iter(env))):
            Settings.from_env(env)


def test_cold_start_reason():
    settings = Settings()
    assert "MIN_ANNOTATIONS_TO_TRAIN" in cold_start_reason(1, 1, settings)
    assert "MIN_CLASSES_TO_TRAIN" in cold_start_reason(12, 1, settings)
    assert cold_start_reason(2, 2, settings) is None


def test_versions_of_both_kinds_are_ours_and_sort_by_time():
    cold = new_cold_start_version()
    assert COLD_START_VERSION_RE.match(cold) and is_own_version(cold)
    assert is_own_version(new_version()) and not is_own_version("Active learning")
    older_trained = "al-20260101-000000-abcdef"
    newer_cold = "coldstart-20260102-000000-abcdef"
    assert sorted([newer_cold, older_trained], key=version_sort_key) == [older_trained, newer_cold]


# ----------------------------------------------------------------------------- the round


def png(seed: int) -> bytes:
    """Four kinds of images (stripes in 4 orientations / colours) with pixel noise."""
    rng = np.random.default_rng(seed)
    kind = seed % 4
    a = np.zeros((24, 24, 3), np.uint8)
    if kind == 0:
        a[::4] = 255
    elif kind == 1:
        a[:, ::4] = 255
    elif kind == 2:
        a[:12] = (255, 0, 0)
    else:
        a[np.eye(24, dtype=bool)] = 255
    a = np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="PNG")
    return out.getvalue()


class FakeClient:
    """The LabelStudioClient calls a round makes, recorded."""

    def __init__(self, n_tasks: int, annotated: dict[int, str]):
        self.tasks = [
            {
                "id": i,
                "data": {"image": f"/data/upload/{PROJECT}/{i}.png"},
                "annotations": (
                    [
                        {
                            "id": i,
                            "result": [
                                {
                                    "from_name": "digit",
                                    "to_name": "image",
                                    "type": "choices",
                                    "value": {"choices": [annotated[i]]},
                                }
                            ],
                        }
                    ]
                    if i in annotated
                    else []
                ),
            }
            for i in range(1, n_tasks + 1)
        ]
        self.imported: list[dict] = []
        self.patches: list[dict] = []
        self.views: list[dict] = [{"id": 1, "data": {"title": "Default", "hiddenColumns": {}}}]
        self.deleted: list[str] = []

    def get_project(self, project_id):
        return {"id": project_id, "label_config": DIGITS}

    def iter_tasks(self, project_id):
        return iter(self.tasks)

    def image_downloader(self, allowed_hosts=(), local_files_root=None, **retry):
        return self  # serves the images itself (fetch_image_bytes)

    def fetch_image_bytes(self, url, *, task_id, max_bytes, timeout_s):
        return png(task_id)

    def import_predictions(self, project_id, items):
        self.imported.extend(items)
        return len(items)

    def patch_project(self, project_id, data):
        self.patches.append(data)
        return data

    def list_views(self, project_id):
        return self.views

    def create_view(self, project_id, data):
        self.views.append({"id": len(self.views) + 1, "data": data})
        return self.views[-1]

    def update_view(self, view_id, project_id, data):
        return {"id": view_id, "data": data}

    def get_json(self, path):
        counts: dict[str, int] = {}
        for item in self.imported:
            counts[item["model_version"]] = counts.get(item["model_version"], 0) + 1
        return {v: c for v, c in counts.items() if v not in self.deleted}

    def delete_model_version(self, project_id, version):
        self.deleted.append(version)


@pytest.fixture
def settings(tmp_path):
    return Settings(
        model_dir=tmp_path / "models",
        query_batch_size=4,
        seed=0,
        keep_prediction_versions=1,
        self_supervised_steps=0,
    )


def run(settings, client):
    store = ModelStore(settings.model_dir, settings.keep_model_versions)
    events = []
    summary = run_training_round(
        settings, PROJECT, lambda **kw: events.append(kw), client=client, store=store
    )
    return summary.to_dict(), store, events  # the plain form the job stores and returns


def test_no_labels_gives_a_cold_start_ranking_without_choices(settings):
    client = FakeClient(24, {})
    summary, store, events = run(settings, client)
    assert summary["state"] == "cold_start" and "MIN_ANNOTATIONS_TO_TRAIN" in summary["reason"]
    version = summary["model_version"]
    assert COLD_START_VERSION_RE.match(version)
    assert summary["predictions_pushed"] == 24 and summary["preselected"] == 0
    assert summary["clusters"] == 4 and summary["clusters_covered_by_labels"] == 0
    # four kinds of image: a clustered embedding, so each cluster's most typical member first
    assert summary["pick"] == "typical" and summary["cluster_structure"] < 0.8
    assert {p["model_version"] for p in client.imported} == {version}
    assert all(p["result"] == [] for p in client.imported)
    scores = sorted(p["score"] for p in client.imported)
    np.testing.assert_allclose(scores, np.arange(24) / 23, atol=1e-6)
    # the first 4 (one per cluster) are one of each kind of image
    first = sorted(client.imported, key=lambda p: p["score"])[:4]
    assert sorted(p["task"] % 4 for p in first) == [0, 1, 2, 3]
    assert client.patches == [{"model_version": version}]  # pushed first, then PATCH
    assert any(v["data"]["title"] == "Most informative first" for v in client.views)
    assert any(e.get("phase") == "cold_start_ranking" for e in events)
    published = store.published(PROJECT)
    assert published.version == version and published.cold_start
    assert store.load_published(PROJECT) is None  # no model to load


def test_one_class_of_labels_is_a_cold_start_with_their_clusters_covered(settings):
    # tasks 4 and 8 (kind 0) are labeled with the same class
    client = FakeClient(24, {4: "1", 8: "1", 12: "1"})
    summary, store, _ = run(settings, client)
    assert summary["state"] == "cold_start" and "MIN_CLASSES_TO_TRAIN" in summary["reason"]
    assert summary["annotations_used"] == 3 and summary["clusters_covered_by_labels"] == 1
    by_score = [p["task"] for p in sorted(client.imported, key=lambda p: p["score"])]
    assert by_score[-3:] == [4, 8, 12]  # labeled tasks after the pool
    assert sorted(t % 4 for t in by_score[:3]) == [1, 2, 3]  # uncovered kinds first
    assert by_score[3] % 4 == 0  # then the covered one


def test_predict_during_cold_start_answers_stored_scores_and_untrained_for_new_tasks(settings):
    client = FakeClient(8, {})
    summary, store, _ = run(settings, client)
    stored_score = {p["task"]: p["score"] for p in client.imported}
    model = ActiveLearningModel(
        label_config=DIGITS, project_id=PROJECT, settings=settings, store=store, client=client
    )
    new_task = {"id": 99, "data": {"image": f"/data/upload/{PROJECT}/99.png"}}
    known, new = model.predict([client.tasks[2], new_task])
    assert known == {"result": [], "score": stored_score[3], "model_version": summary["model_version"]}
    assert new == converters.untrained_payload()


def test_a_second_cold_start_replaces_the_first_and_prunes_it(settings, monkeypatch):
    # versions carry second-resolution timestamps: name them so the two rounds differ in time
    names = iter(["coldstart-20260101-000000-ffffff", "coldstart-20260101-000001-000000"])
    monkeypatch.setattr("backend.rounds.cold_start.new_cold_start_version", lambda: next(names))
    client = FakeClient(12, {})
    first, store, _ = run(settings, client)
    second, store, _ = run(settings, client)
    assert second["model_version"] != first["model_version"]
    assert client.deleted == [first["model_version"]]  # KEEP_PREDICTION_VERSIONS=1
    assert store.published(PROJECT).version == second["model_version"]


def test_a_project_with_only_labeled_tasks_is_skipped(settings):
    summary, _, _ = run(settings, FakeClient(1, {1: "0"}))
    assert summary["state"] == "skipped" and "no unlabeled task" in summary["reason"]


def test_without_weights_a_cold_start_learns_the_projects_backbone_and_ranks_on_it(settings, monkeypatch):
    # versions carry second-resolution timestamps; a 4-step pre-training takes less than one
    names = (f"coldstart-20260101-00000{i}-000000" for i in range(10))
    monkeypatch.setattr("backend.rounds.cold_start.new_cold_start_version", lambda: next(names))
    learning = dataclasses.replace(settings, self_supervised_steps=4)
    client = FakeClient(24, {})
    summary, store, events = run(learning, client)
    # a pixel ranking first, at once; then the ranking on the freshly learned weights
    first = summary["first_push"]
    assert first["embedding"] == "pixels" and first["predictions_pushed"] == 24
    assert summary["embedding"] == "self_supervised" and summary["pick"] == "stratified"
    assert summary["self_supervised"]["learned_now"] is True
    assert summary["model_version"] != first["model_version"]
    assert [p["model_version"] for p in client.imported] == [first["model_version"]] * 24 + [
        summary["model_version"]
    ] * 24
    assert client.patches == [
        {"model_version": first["model_version"]},
        {"model_version": summary["model_version"]},
    ]
    assert store.published(PROJECT).version == summary["model_version"]
    assert first["model_version"] in client.deleted  # KEEP_PREDICTION_VERSIONS=1
    phases = [e.get("phase") for e in events if e.get("phase")]
    assert phases.index("self_supervised_pretraining") > phases.index("cold_start_ranking")
    final = [p for p in client.imported if p["model_version"] == summary["model_version"]]
    assert sorted(p["task"] for p in final) == list(range(1, 25)) and all(p["result"] == [] for p in final)

    # the next cold start ranks on the stored weights straight away
    again, _, _ = run(learning, client)
    assert again["embedding"] == "self_supervised" and "first_push" not in again
    assert again["self_supervised"]["learned_now"] is False
    assert again["self_supervised"]["weights"] == summary["self_supervised"]["weights"]

    # and the first trained round reuses them too
    for task, label in ((1, "0"), (2, "1")):
        client.tasks[task - 1]["annotations"] = [
            {
                "id": task,
                "result": [
                    {
                        "from_name": "digit",
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ],
            }
        ]
    trained, _, _ = run(dataclasses.replace(learning, train_steps=5), client)
    assert trained["state"] == "done", trained["reason"]
    assert trained["self_supervised"]["learned_now"] is False


def test_a_cold_start_with_self_supervision_off_ranks_on_pixels_once(settings):
    client = FakeClient(12, {})
    summary, _, _ = run(settings, client)  # SELF_SUPERVISED_STEPS=0
    assert summary["embedding"] == "pixels" and "first_push" not in summary
    assert "self_supervised" not in summary
    assert len({p["model_version"] for p in client.imported}) == 1
