"""What a Label Studio task or annotation webhook changes in the task index (backend/task_index.py):
the webhooks' actions, and the parsing of their bodies into records, never trusting their shape."""

from __future__ import annotations

from dataclasses import dataclass, field

TASKS_CREATED, TASKS_DELETED = "TASKS_CREATED", "TASKS_DELETED"
ANNOTATION_UPSERTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
ANNOTATION_DELETES = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}


def _ids(items) -> list[int]:
    """Integer ids of ``[{"id": 3}, ...]`` (malformed items skipped)."""
    if not isinstance(items, list):
        return []
    return [item["id"] for item in items if isinstance(item, dict) and type(item.get("id")) is int]


def annotation_record(annotation, task_id: int | None = None) -> dict | None:
    """What the index keeps of one annotation: what the label rule reads, and its task."""
    if not isinstance(annotation, dict) or type(annotation.get("id")) is not int:
        return None
    task = task_id if task_id is not None else annotation.get("task")
    if isinstance(task, dict):
        task = task.get("id")
    if type(task) is not int:
        return None
    return {
        "task": task,
        "result": annotation.get("result"),
        "was_cancelled": bool(annotation.get("was_cancelled")),
        "ground_truth": bool(annotation.get("ground_truth")),
    }


def image_reference(task: dict, image_key: str) -> str:
    """The task's image URL under the config's key, "" when it has none (the round then reports
    the task as it always did)."""
    data = task.get("data") if isinstance(task, dict) else None
    value = data.get(image_key) if isinstance(data, dict) else None
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True)
class IndexChanges:
    """What one webhook changes in the index."""

    tasks_added: dict = field(default_factory=dict)  # task id -> task (id, data)
    tasks_deleted: tuple = ()
    annotations_upserted: dict = field(default_factory=dict)  # annotation id -> record
    annotations_deleted: tuple = ()

    def __bool__(self) -> bool:
        return bool(
            self.tasks_added or self.tasks_deleted or self.annotations_upserted or self.annotations_deleted
        )


def event_changes(payload: dict) -> IndexChanges:
    """The index changes a Label Studio webhook carries (anything malformed is left out)."""
    action = payload.get("action") if isinstance(payload, dict) else None
    if action == TASKS_CREATED:
        tasks = payload.get("tasks")
        return IndexChanges(
            tasks_added={
                t["id"]: t
                for t in (tasks if isinstance(tasks, list) else [])
                if isinstance(t, dict) and type(t.get("id")) is int
            }
        )
    if action == TASKS_DELETED:
        return IndexChanges(tasks_deleted=tuple(_ids(payload.get("tasks"))))
    if action in ANNOTATION_DELETES:
        return IndexChanges(annotations_deleted=tuple(_ids(payload.get("annotations"))))
    if action in ANNOTATION_UPSERTS:
        annotations = payload.get("annotation")
        annotations = annotations if isinstance(annotations, list) else [annotations]
        tasks = payload.get("task")
        tasks = tasks if isinstance(tasks, list) else [tasks]
        records = {a["id"]: r for a in annotations if (r := annotation_record(a)) is not None}
        return IndexChanges(
            tasks_added={t["id"]: t for t in tasks if isinstance(t, dict) and type(t.get("id")) is int},
            annotations_upserted=records,
        )
    return IndexChanges()
