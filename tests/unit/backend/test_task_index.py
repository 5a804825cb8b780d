"""The task index's pure parts: what a webhook changes, and the tasks a round gets."""

from backend import converters, task_index, task_index_events
from backend.task_types import task_type_for
from tests.unit.backend.test_labeling_config import DIGITS

SCHEMA = task_type_for(DIGITS)


def choice(label):
    return [
        {
            "from_name": SCHEMA.from_name,
            "to_name": SCHEMA.to_name,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def test_annotation_events_become_records_of_what_the_label_rule_reads():
    payload = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 3},
        "annotation": {
            "id": 11,
            "task": 7,
            "result": choice("1"),
            "was_cancelled": False,
            "ground_truth": True,
            "lead_time": 3.2,
        },
        "task": {"id": 7, "data": {"image": "/data/upload/3/a.png"}, "project": 3},
    }
    changes = task_index_events.event_changes(payload)
    assert changes.annotations_upserted == {
        11: {"task": 7, "result": choice("1"), "was_cancelled": False, "ground_truth": True}
    }
    assert list(changes.tasks_added) == [7]
    many = task_index_events.event_changes(
        {
            "action": "ANNOTATIONS_CREATED",
            "annotation": [{"id": 1, "task": 2, "result": []}, {"id": 3, "task": {"id": 4}}, {"id": "x"}],
        }
    )
    assert sorted(many.annotations_upserted) == [1, 3]
    assert many.annotations_upserted[3]["task"] == 4


def test_deletions_and_creations_and_malformed_events():
    assert task_index_events.event_changes(
        {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 4}, {"id": 5}, {"nope": 1}, "x"]}
    ).annotations_deleted == (4, 5)
    assert task_index_events.event_changes(
        {"action": "TASKS_DELETED", "tasks": [{"id": 9}]}
    ).tasks_deleted == (9,)
    created = task_index_events.event_changes(
        {"action": "TASKS_CREATED", "tasks": [{"id": 1, "data": {"image": "u"}}, {"id": None}, 7]}
    )
    assert list(created.tasks_added) == [1]
    for junk in (
        {"action": "TASKS_CREATED", "tasks": "all"},
        {"action": "ANNOTATION_UPDATED", "annotation": None},
        {"action": "PROJECT_UPDATED"},
        {"action": "ANNOTATIONS_DELETED"},
        None,
        [],
    ):
        assert not task_index_events.event_changes(junk)


def test_round_tasks_read_like_label_studio_s_listing():
    images = {3: "/data/upload/1/c.png", 1: "/data/upload/1/a.png", 2: ""}
    annotations = {
        10: {"task": 1, "result": choice("1"), "was_cancelled": False, "ground_truth": False},
        12: {"task": 1, "result": choice("1"), "was_cancelled": False, "ground_truth": False},
        11: {"task": 3, "result": choice("1"), "was_cancelled": True, "ground_truth": False},
        13: {"task": 99, "result": choice("1"), "was_cancelled": False, "ground_truth": False},
    }
    tasks = task_index.round_tasks(images, annotations, SCHEMA.image_key)
    assert [t["id"] for t in tasks] == [1, 2, 3]  # id order; task 99 is gone
    assert [a["id"] for a in tasks[0]["annotations"]] == [10, 12]
    assert SCHEMA.decide_label(tasks[0]).label == "1"
    assert SCHEMA.decide_label(tasks[2]).skipped
    assert SCHEMA.task_input(tasks[2]) == "/data/upload/1/c.png"
    try:
        SCHEMA.task_input(tasks[1])  # no image: reported as before
        raise AssertionError("a task without an image must be refused")
    except converters.TaskError as exc:
        assert "no image" in str(exc)


def test_label_studio_task_count_is_read_only_when_present():
    assert task_index.label_studio_task_count({"task_number": 12}) == 12
    assert task_index.label_studio_task_count({}) is None
    assert task_index.label_studio_task_count({"task_number": "12"}) is None
