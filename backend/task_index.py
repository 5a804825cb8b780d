"""The backend's own index of a project's tasks: id -> image reference, and the annotations
(the label state) the label rule reads.

Listing every task with ``fields=all`` each round embeds every stored prediction and annotation:
its cost grows with the project and with every version of predictions kept (10,000 tasks: 56 s,
85 s with two versions). The index keeps what a round needs, updated from Label Studio's task and
annotation webhooks as they arrive, and re-synced at the start of each round by three cheap calls:

1. tasks above an id watermark, fully (``include=id,data``): the tasks created since the last sync;
2. the annotated tasks, for their labels only (``fields=all`` with
   ``include=id,annotations,result,was_cancelled,ground_truth``: no prediction is serialized).
   Their cost follows the annotated tasks, which people made, not the project. Relisted every
   round, they catch every annotation webhook that was missed (created, updated or deleted);
3. Label Studio's own task count (``task_number``) against the index's, like for like: when they
   differ (a missed TASKS_DELETED, a task committed below the watermark), the ids alone are listed
   (``include=id``); tasks gone from Label Studio are dropped and missing ones fetched.

Stored in Redis, not under MODEL_DIR: webhooks arrive in the web process (several gunicorn
workers) and rounds run in RQ workers, possibly on other machines that share Redis; one HSET or
HDEL per task or annotation is atomic without file locks and costs microseconds of the webhook's
time. Size: one hash field per task and per annotation. Losing it costs one full sync: an index
without its meta (or built for another image key of the labeling config) is rebuilt from
scratch. Its size and the cost of a sync against listing every task: docs/how-it-works.md,
'Task index'.

A TASKS_DELETED webhook removes nothing by itself: webhook bodies are not authenticated (Label
Studio sends no credentials with them), so a forged one could drop a real task from every later
ranking. It records the ids as reported deleted; the next sync asks Label Studio about exactly
those ids (one Data Manager query per 1,000) and drops the ones it no longer has.

Not seen: a task whose data is edited in place (Label Studio 1.23 sends no webhook for it and the
id watermark has passed it) keeps its old image reference until the index is rebuilt.

What a webhook's body changes in the index (parsed, never trusted): backend/task_index_events.py.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from redis import Redis

from backend import training_state
from backend.task_index_events import (
    ANNOTATION_DELETES,
    ANNOTATION_UPSERTS,
    TASKS_CREATED,
    TASKS_DELETED,
    IndexChanges,
    annotation_record,
    event_changes,
    image_reference,
)
from backend.task_types import TaskType

log = logging.getLogger(__name__)

# Tasks per page when listing: larger pages list a project faster (docs/how-it-works.md, 'Task
# index').
PAGE_SIZE = 1000
TASK_FIELDS = ("id", "data")
# ``include`` applies to the embedded annotations too: these are the label rule's inputs
LABEL_FIELDS = ("id", "annotations", "result", "was_cancelled", "ground_truth")
# a task Label Studio counts any annotation on: submitted (ground truths too) or skipped
ANNOTATED_FILTERS = (
    ({"filter": "filter:tasks:total_annotations", "operator": "greater", "type": "Number", "value": 0},),
    ({"filter": "filter:tasks:cancelled_annotations", "operator": "greater", "type": "Number", "value": 0},),
)
# the webhooks the index applies (``apply_webhook``)
EVENTS = {TASKS_CREATED, TASKS_DELETED} | ANNOTATION_UPSERTS | ANNOTATION_DELETES


# ----------------------------------------------------------------------------- pure parts


def round_tasks(images: dict[int, str], annotations: dict[int, dict], image_key: str) -> list[dict]:
    """The tasks a round works on, in id order, shaped like Label Studio's listing (id, data,
    annotations), so the label rule and the image URL rule read them unchanged."""
    by_task: dict[int, list[dict]] = {}
    for annotation_id in sorted(annotations):
        record = annotations[annotation_id]
        by_task.setdefault(record["task"], []).append(
            {
                "id": annotation_id,
                "result": record["result"],
                "was_cancelled": record["was_cancelled"],
                "ground_truth": record["ground_truth"],
            }
        )
    return [
        {
            "id": task_id,
            "data": {image_key: images[task_id]} if images[task_id] else {},
            "annotations": by_task.get(task_id, []),
        }
        for task_id in sorted(images)
    ]


def label_studio_task_count(project: dict) -> int | None:
    """Label Studio's own count of the project's tasks, None when the project does not say."""
    value = project.get("task_number") if isinstance(project, dict) else None
    return value if type(value) is int and value >= 0 else None


@dataclass
class SyncReport:
    """What one sync did (mirrored into the project's /status as ``task_index``)."""

    rebuilt: bool = False  # the index was built from scratch
    tasks: int = 0  # tasks in the index after the sync
    new_tasks: int = 0  # listed above the watermark
    annotated_tasks: int = 0  # listed for their labels
    annotations: int = 0
    annotations_dropped: int = 0  # in the index, no longer in Label Studio
    counted_tasks: int | None = None  # Label Studio's task_number
    ids_listed: bool = False  # the counts differed: every id was listed
    tasks_dropped: int = 0  # deleted in Label Studio, no webhook seen
    tasks_recovered: int = 0  # in Label Studio, missing from the index
    deletions_confirmed: int = 0  # reported deleted by a webhook, and gone from Label Studio
    deletions_refused: int = 0  # reported deleted, but Label Studio still has them: kept
    watermark: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------- the Redis edge


def _key(project_id: int, name: str) -> str:
    return f"{training_state.PREFIX}:project:{int(project_id)}:index:{name}"


class TaskIndex:
    """One project's index in Redis: ``tasks`` (task id -> image reference), ``annotations``
    (annotation id -> JSON record) and ``meta`` (image key, watermark, last sync)."""

    def __init__(self, conn: Redis, project_id: int):
        self.conn, self.project_id = conn, int(project_id)
        self.tasks_key = _key(project_id, "tasks")
        self.annotations_key = _key(project_id, "annotations")
        self.meta_key = _key(project_id, "meta")
        self.reported_deleted_key = _key(project_id, "reported_deleted")

    # --- reading ---------------------------------------------------------------------------
    def meta(self) -> dict:
        return {k.decode(): v.decode() for k, v in self.conn.hgetall(self.meta_key).items()}

    def images(self) -> dict[int, str]:
        return {int(k): v.decode() for k, v in self.conn.hscan_iter(self.tasks_key, count=5000)}

    def annotations(self) -> dict[int, dict]:
        return {int(k): json.loads(v) for k, v in self.conn.hscan_iter(self.annotations_key, count=5000)}

    def clear(self) -> None:
        self.conn.delete(self.tasks_key, self.annotations_key, self.meta_key, self.reported_deleted_key)

    def reported_deleted(self) -> set[int]:
        """Task ids a TASKS_DELETED webhook named, not yet confirmed with Label Studio."""
        return {int(t) for t in self.conn.smembers(self.reported_deleted_key)}

    # --- webhooks --------------------------------------------------------------------------
    def apply(self, changes: IndexChanges) -> bool:
        """Apply one webhook's changes; False when the index was never built (the first sync
        lists everything anyway)."""
        image_key = self.conn.hget(self.meta_key, "image_key")
        if image_key is None or not changes:
            return False
        image_key = image_key.decode()
        pipe = self.conn.pipeline(transaction=False)
        for task_id, task in changes.tasks_added.items():
            # never over a listed task: the listing is the authority (its URLs are resolved)
            pipe.hsetnx(self.tasks_key, task_id, image_reference(task, image_key))
        if changes.tasks_deleted:
            # only reported: the next sync confirms them with Label Studio before they leave
            # the index (a forged event must not drop real tasks). Their annotations stay until
            # that sync relists the annotated tasks.
            pipe.sadd(self.reported_deleted_key, *changes.tasks_deleted)
        if changes.annotations_upserted:
            pipe.hset(
                self.annotations_key,
                mapping={a: json.dumps(r) for a, r in changes.annotations_upserted.items()},
            )
        if changes.annotations_deleted:
            pipe.hdel(self.annotations_key, *changes.annotations_deleted)
        pipe.execute()
        return True

    # --- the round's sync ------------------------------------------------------------------
    def sync(self, client, project: dict, schema: TaskType) -> tuple[list[dict], SyncReport]:
        """Bring the index up to date with Label Studio (see the module's docstring) and return
        the round's tasks: every task with its image reference and its annotations as just
        listed."""
        started = time.monotonic()
        report = SyncReport()
        meta = self.meta()
        if meta.get("image_key") != schema.input_key:
            self.clear()
            meta = {}
            report.rebuilt = True
        watermark = self._sync_new_tasks(client, schema, int(meta.get("watermark") or 0), report)
        self._confirm_deletions(client, report)
        annotations, annotated = self._sync_labels(client, report)
        images = self.images()
        self._sync_missing(client, project, schema, images, annotated - images.keys(), report)
        self.conn.hset(
            self.meta_key,
            mapping={
                "image_key": schema.input_key,
                "watermark": watermark,
                "synced_at": training_state.now_iso(),
            },
        )
        report.tasks, report.watermark = len(images), watermark
        report.seconds = round(time.monotonic() - started, 2)
        return round_tasks(images, annotations, schema.input_key), report

    def _sync_new_tasks(self, client, schema: TaskType, watermark: int, report: SyncReport) -> int:
        """Index the tasks above the id ``watermark``; the new watermark."""
        new = {
            t["id"]: image_reference(t, schema.input_key)
            for t in client.iter_tasks_after(
                self.project_id, TASK_FIELDS, after_id=watermark, page_size=PAGE_SIZE
            )
            if isinstance(t, dict) and type(t.get("id")) is int
        }
        if new:
            self.conn.hset(self.tasks_key, mapping=new)
            watermark = max(watermark, max(new))
        report.new_tasks = len(new)
        return watermark

    def _sync_labels(self, client, report: SyncReport) -> tuple[dict[int, dict], set[int]]:
        """Replace the indexed annotations by the ones just listed; (annotations, annotated tasks)."""
        annotations, annotated = self._list_labels(client)
        stale = [a for a in (int(k) for k in self.conn.hkeys(self.annotations_key)) if a not in annotations]
        pipe = self.conn.pipeline(transaction=False)
        if stale:
            pipe.hdel(self.annotations_key, *stale)
        for start in range(0, len(annotations), 5000):
            chunk = list(annotations.items())[start : start + 5000]
            pipe.hset(self.annotations_key, mapping={a: json.dumps(r) for a, r in chunk})
        pipe.execute()
        report.annotated_tasks, report.annotations = len(annotated), len(annotations)
        report.annotations_dropped = len(stale)
        return annotations, annotated

    def _sync_missing(
        self, client, project: dict, schema: TaskType, images: dict, missing: set[int], report: SyncReport
    ) -> None:
        """When Label Studio counts other tasks than the index, drop the tasks gone from it;
        fetch the ``missing`` tasks and those the index lacks. Updates ``images`` in place."""
        report.counted_tasks = label_studio_task_count(project)
        if report.counted_tasks is not None and report.counted_tasks != len(images):
            report.ids_listed = True
            live = {
                t["id"]
                for t in client.iter_tasks_after(self.project_id, ("id",), page_size=PAGE_SIZE)
                if isinstance(t, dict) and type(t.get("id")) is int
            }
            gone = [t for t in images if t not in live]
            if gone:
                self.conn.hdel(self.tasks_key, *gone)
                for task_id in gone:
                    del images[task_id]
            report.tasks_dropped = len(gone)
            missing |= live - images.keys()
        if missing:
            found = {
                t["id"]: image_reference(t, schema.input_key)
                for t in client.tasks_by_id(self.project_id, missing, TASK_FIELDS)
                if isinstance(t, dict) and type(t.get("id")) is int
            }
            if found:
                self.conn.hset(self.tasks_key, mapping=found)
                images.update(found)
            report.tasks_recovered = len(found)

    def _confirm_deletions(self, client, report: SyncReport) -> None:
        """Drop the tasks webhooks reported deleted that Label Studio no longer has; keep (and
        log) those it still has."""
        reported = sorted(self.reported_deleted())
        if not reported:
            return
        pipe = self.conn.pipeline(transaction=False)
        for task_id in reported:
            pipe.hexists(self.tasks_key, task_id)
        indexed = [t for t, present in zip(reported, pipe.execute(), strict=False) if present]
        alive = (
            {
                t["id"]
                for t in client.tasks_by_id(self.project_id, indexed, ("id",))
                if isinstance(t, dict) and type(t.get("id")) is int
            }
            if indexed
            else set()
        )
        gone = [t for t in indexed if t not in alive]
        if gone:
            self.conn.hdel(self.tasks_key, *gone)
        self.conn.srem(self.reported_deleted_key, *reported)
        report.deletions_confirmed = len(gone)
        report.deletions_refused = len(alive)
        if alive:
            log.warning(
                "project %s: TASKS_DELETED named %d task(s) Label Studio still has (kept): %s",
                self.project_id,
                len(alive),
                sorted(alive)[:10],
            )

    def _list_labels(self, client) -> tuple[dict[int, dict], set[int]]:
        """Every annotation of every annotated task (annotation id -> record), and those tasks."""
        annotations: dict[int, dict] = {}
        annotated: set[int] = set()
        for filters in ANNOTATED_FILTERS:  # submitted, then skipped (one conjunction per query)
            for task in client.iter_tasks_after(
                self.project_id, LABEL_FIELDS, filters=filters, with_annotations=True, page_size=PAGE_SIZE
            ):
                if not isinstance(task, dict) or type(task.get("id")) is not int:
                    continue
                annotated.add(task["id"])
                for annotation in task.get("annotations") or []:
                    record = annotation_record(annotation, task["id"])
                    if record is not None:
                        annotations[annotation["id"]] = record
        return annotations, annotated


def tasks_for_round(
    settings, client, project_id: int, project: dict, schema: TaskType, status=lambda **_: None
) -> list[dict]:
    """The tasks a round works on: from the project's index, synced now (Redis configured, as in
    every worker), else from one full listing (a round run without Redis, e.g. in-process)."""
    if not settings.redis_url:
        return list(client.iter_tasks(project_id))
    from backend import queueing

    tasks, report = TaskIndex(queueing.redis_connection(settings), project_id).sync(client, project, schema)
    log.info(
        "project %s: task index synced in %.1fs: %s", project_id, report.seconds, json.dumps(asdict(report))
    )
    status(task_index=asdict(report))
    return tasks


def apply_webhook(conn: Redis, project_id: int, payload: dict) -> bool:
    """Apply a task or annotation webhook to the project's index (False: nothing applied)."""
    if not isinstance(payload, dict) or payload.get("action") not in EVENTS:
        return False
    return TaskIndex(conn, project_id).apply(event_changes(payload))
