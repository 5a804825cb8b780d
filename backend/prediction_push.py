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
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.ls_client import LabelStudioClient, LabelStudioError

log = logging.getLogger(__name__)


@dataclass
class PushReport:
    created: int = 0                    # predictions Label Studio created in this push
    deleted_tasks: list[int] = field(default_factory=list)   # tasks gone before their chunk landed
    checked_chunks: int = 0             # chunks whose outcome had to be looked up
    requests: int = 0                   # import requests sent


def chunks(items: list, size: int) -> list[list]:
    if size <= 0:
        raise ValueError(f"chunk size must be > 0, got {size}")
    return [items[start:start + size] for start in range(0, len(items), size)]


def still_to_send(chunk: list[dict], version: str, versions_of: dict[int, set[str]]
                  ) -> tuple[list[dict], list[int]]:
    """(predictions of ``chunk`` Label Studio still lacks, task ids that no longer exist).

    ``versions_of`` maps each existing task of the chunk to the versions of its predictions.
    """
    remaining, deleted = [], []
    for item in chunk:
        task_id = int(item["task"])
        if task_id not in versions_of:
            deleted.append(task_id)
        elif version not in versions_of[task_id]:
            remaining.append(item)
    return remaining, deleted


def push_predictions(client: LabelStudioClient, project_id: int, payload: list[dict],
                     version: str, chunk_size: int) -> PushReport:
    """Import ``payload`` (predictions of ``version``) in chunks of ``chunk_size``.

    Raises LabelStudioError when Label Studio refuses a chunk for another reason than deleted
    tasks, or when a chunk still has not landed after LABEL_STUDIO_RETRIES checked re-posts.
    """
    report = PushReport()
    for chunk in chunks(payload, chunk_size):
        _push_chunk(client, project_id, chunk, version, report)
    if report.deleted_tasks:
        log.warning("project %s: %d task(s) were deleted during the round; their predictions were "
                    "dropped (e.g. %s)", project_id, len(report.deleted_tasks),
                    report.deleted_tasks[:5])
    return report


def _push_chunk(client: LabelStudioClient, project_id: int, chunk: list[dict], version: str,
                report: PushReport) -> None:
    attempt = 0
    while chunk:
        report.requests += 1
        try:
            created = client.import_predictions(project_id, chunk)
            report.created += created
            if created != len(chunk):   # a stock Label Studio drops what it finds invalid
                log.warning("project %s: Label Studio created %d of %d predictions of a chunk",
                            project_id, created, len(chunk))
            return
        except LabelStudioError as exc:
            # 400: a task of the chunk may have been deleted since the round listed it.
            # Lost answer or 5xx: the chunk may have landed. Anything else: refused, surface it.
            if not (exc.outcome_unknown or exc.status == 400) or attempt >= client.retries:
                raise
            failure = exc
        report.checked_chunks += 1
        versions_of = client.task_prediction_versions(project_id, [p["task"] for p in chunk])
        remaining, deleted = still_to_send(chunk, version, versions_of)
        report.deleted_tasks.extend(deleted)
        landed = len(chunk) - len(remaining) - len(deleted)
        report.created += landed
        if failure.status == 400 and not deleted and landed == 0:
            raise failure   # every task exists and nothing landed: Label Studio refused the data
        log.info("project %s: chunk of %d predictions failed (%s); %d had landed, %d task(s) "
                 "deleted, re-posting %d", project_id, len(chunk), failure, landed, len(deleted),
                 len(remaining))
        if remaining and failure.status != 400:
            client.wait_before_retry(attempt)
        chunk = remaining
        attempt += 1
