import pytest

from backend import webhooks


@pytest.mark.parametrize("body", [None, [], "x", {"project": {"id": 1}}, {"action": 3}])
def test_non_events_are_bad_requests(body):
    with pytest.raises(webhooks.BadEvent):
        webhooks.decide(body)


def test_start_training_asks_for_training():
    d = webhooks.decide({"action": "START_TRAINING", "project": {"id": 4}})
    assert (d.kind, d.project_id) == ("train", 4)


@pytest.mark.parametrize(
    "body, changes",
    [
        ({"action": "ANNOTATION_CREATED", "project": {"id": 4}, "annotation": {"id": 1}}, 1),
        ({"action": "ANNOTATION_UPDATED", "project": {"id": 4}}, 1),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": 4}, "annotations": [{"id": 1}, {"id": 2}]}, 2),
    ],
)
def test_annotation_events_count_changes(body, changes):
    d = webhooks.decide(body)
    assert d.kind == "count" and d.changes == changes and d.project_id == 4


@pytest.mark.parametrize(
    "body",
    [
        {"action": "PROJECT_UPDATED", "project": {"id": 4}},  # sent when we PATCH model_version
        {"action": "TASKS_CREATED", "project": {"id": 4}},
        {"action": "SOMETHING_NEW", "project": {"id": 4}},
        {"action": "START_TRAINING"},  # no project: nothing to train
    ],
)
def test_other_events_are_ignored(body):
    assert webhooks.decide(body).kind == "ignore"


def test_retrain_threshold():
    assert not webhooks.should_retrain(9, 10)
    assert webhooks.should_retrain(10, 10)
    assert not webhooks.should_retrain(100, 0)  # 0 disables automatic retraining
