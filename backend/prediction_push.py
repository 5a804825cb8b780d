"""Pushing one version's predictions to Label Studio in chunks, without duplicates.

A prediction import is not idempotent: Label Studio creates the predictions, then recounts the
project's tasks (slow on a stock 1.23), outside a transaction. A chunk whose answer is lost (read
timeout, broken connection) or that ends in a 5xx may therefore have landed, wholly or in part.
Such a chunk is never re-posted blindly: the backend asks Label Studio which of the chunk's tasks
still exist and which already hold a prediction of this version, and re-posts only the rest.
The same look-up turns a 400 caused by tasks deleted during the round into "drop those tasks and
push the others", instead of failing a round that already trained and scored.

Each round pushes a fresh version, so "this task holds a prediction of this version" means "this
push created it".

One race remains: an answer lost while Label Studio had not yet created anything (a proxy timing
out a long request, say) looks like "nothing landed", and the original request may still create
its predictions after the re-post. So once every chunk is sent, the tasks of every chunk whose
outcome was unknown are looked up again and any second prediction of this version is deleted,
before the version is published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.ls_client import LabelStudioClient, LabelStudioError

log = logging.getLogger(__name__)


@dataclass
class PushReport:
    created: int = 0  # predictions Label Studio created in this push
    deleted_tasks: list[int] = field(default_factory=list)  # tasks gone before their chunk landed
    checked_chunks: int = 0  # chunks whose outcome had to be looked up
    requests: int = 0  # import requests sent
    uncertain_tasks: list[int] = field(default_factory=list)  # tasks of chunks lost or 5xx'd
    duplicates_removed: int = 0


def chunks(items: list, size: int) -> list[list]:
    if size <= 0:
        raise ValueError(f"chunk size must be > 0, got {size}")
    return [items[start : start + size] for start in range(0, len(items), size)]


def still_to_send(
    chunk: list[dict], version: str, held: dict[int, list[dict]]
) -> tuple[list[dict], list[int]]:
    """(predictions of ``chunk`` Label Studio still lacks, task ids that no longer exist).

    ``held`` maps each existing task of the chunk to its predictions (``model_version``, ``id``).
    """
    remaining, deleted = [], []
    for item in chunk:
        task_id = int(item["task"])
        if task_id not in held:
            deleted.append(task_id)
        elif not any(p["model_version"] == version for p in held[task_id]):
            remaining.append(item)
    return remaining, deleted


def duplicate_ids(held: dict[int, list[dict]], version: str) -> list[int]:
    """Ids of every prediction of ``version`` beyond the first (lowest id) of its task."""
    extra = []
    for predictions in held.values():
        ids = sorted(int(p["id"]) for p in predictions if p["model_version"] == version)
        extra.extend(ids[1:])
    return extra


def push_predictions(
    client: LabelStudioClient, project_id: int, payload: list[dict], version: str, chunk_size: int
) -> PushReport:
    """Import ``payload`` (predictions of ``version``) in chunks of ``chunk_size``.

    Raises LabelStudioError when Label Studio refuses a chunk for another reason than deleted
    tasks, or when a chunk still has not landed after LABEL_STUDIO_RETRIES checked re-posts.
    """
    report = PushReport()
    for chunk in chunks(payload, chunk_size):
        _push_chunk(client, project_id, chunk, version, report)
    if report.uncertain_tasks:
        held = client.task_predictions(project_id, report.uncertain_tasks)
        for prediction_id in duplicate_ids(held, version):
            client.delete_prediction(prediction_id)
            report.duplicates_removed += 1
        if report.duplicates_removed:
            log.warning(
                "project %s: a lost import answer left %d duplicate prediction(s); deleted",
                project_id,
                report.duplicates_removed,
            )
    if report.deleted_tasks:
        log.warning(
            "project %s: %d task(s) were deleted during the round; their predictions were dropped (e.g. %s)",
            project_id,
            len(report.deleted_tasks),
            report.deleted_tasks[:5],
        )
    return report


def _push_chunk(
    client: LabelStudioClient, project_id: int, chunk: list[dict], version: str, report: PushReport
) -> None:
    attempt = 0
    while chunk:
        report.requests += 1
        try:
            created = client.import_predictions(project_id, chunk)
            report.created += created
            if created != len(chunk):  # a stock Label Studio drops what it finds invalid
                log.warning(
                    "project %s: Label Studio created %d of %d predictions of a chunk",
                    project_id,
                    created,
                    len(chunk),
                )
            return
        except LabelStudioError as exc:
            # 400: a task of the chunk may have been deleted since the round listed it.
            # Lost answer or 5xx: the chunk may have landed. Anything else: refused, surface it.
            if not (exc.outcome_unknown or exc.status == 400) or attempt >= client.retries:
                raise
            failure = exc
        report.checked_chunks += 1
        if failure.outcome_unknown:
            report.uncertain_tasks.extend(int(p["task"]) for p in chunk)
        held = client.task_predictions(project_id, [p["task"] for p in chunk])
        remaining, deleted = still_to_send(chunk, version, held)
        report.deleted_tasks.extend(deleted)
        landed = len(chunk) - len(remaining) - len(deleted)
        report.created += landed
        if failure.status == 400 and not deleted and landed == 0:
            raise failure  # every task exists and nothing landed: Label Studio refused the data
        log.info(
            "project %s: chunk of %d predictions failed (%s); %d had landed, %d task(s) "
            "deleted, re-posting %d",
            project_id,
            len(chunk),
            failure,
            landed,
            len(deleted),
            len(remaining),
        )
        if remaining and failure.status != 400:
            client.wait_before_retry(attempt)
        chunk = remaining
        attempt += 1
