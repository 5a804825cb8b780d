"""Catch what webhooks missed: compare Label Studio's own annotation count with the last round.

Label Studio sends each webhook once, with a 1 s timeout, and never retries; a webhook that
arrives while Redis is down is answered 503 and lost. So the worker periodically asks Label Studio
how many tasks carry annotations and retrains a project whose count drifted by at least
RETRAIN_AFTER_ANNOTATIONS since its last training round (an automatic round: it waits for the
retraining cadence, backend.cadence). It also notices a round whose worker died (state "running"
but nobody holds the project's run lock), records it as failed, requests the follow-up a trigger
asked for while that dead round still held the lock, and starts an automatic round whose wait
has ended when its scheduled start was missed. A project Label Studio deleted (404 on every
pass for DELETED_PROJECT_GRACE_S) is forgotten: out of the project set, its Redis keys and its
model directory (checkpoints, predictions, feature cache, self-supervised weights) deleted.

Label Studio's count is compared with Label Studio's count as the last round started (stored by
the round), never with the backend's count of usable labels. Only one worker process reconciles
at a time (a Redis lease), however many RQ workers run.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid

from backend import queueing, training_state
from backend.constants import DELETED_PROJECT_GRACE_S, RECONCILER_LEASE_INTERVALS, RoundPhase, RoundState
from backend.ls_client import LabelStudioClient, LabelStudioError
from backend.model_store import ModelStore
from backend.settings import Settings
from backend.task_types import UnsupportedConfig, schema_change, task_type_for

log = logging.getLogger(__name__)


def label_studio_count(project: dict) -> int:
    """Label Studio's own count of annotated tasks (tasks with a non-skipped, non-ground-truth
    annotation, empty ones included): what a round stores and the reconciler compares."""
    try:
        return max(int(project.get("num_tasks_with_annotations") or 0), 0)
    except (TypeError, ValueError):
        return 0


def annotation_drift(annotated_tasks_now: int, annotated_tasks_at_last_round: int | None) -> int:
    """How many annotated tasks the last round did not see (new or deleted ones both count)."""
    if annotated_tasks_at_last_round is None:
        return annotated_tasks_now
    return abs(annotated_tasks_now - annotated_tasks_at_last_round)


def needs_retrain(drift: int, threshold: int, busy: bool) -> bool:
    return threshold > 0 and not busy and drift >= threshold


def fail_abandoned_round(conn, project_id: int) -> None:
    """Marks failed a round whose status says running while no job runs it (its worker stopped)."""
    training_state.update_status(
        conn,
        project_id,
        state=RoundState.FAILED,
        phase=RoundPhase.FAILED,
        error="the worker stopped during this round (no heartbeat); the next trigger retrains",
    )
    log.warning("project %s: a training round was abandoned by its worker", project_id)


def reconcile_project(settings: Settings, conn, client: LabelStudioClient, project_id: int) -> str:
    """One check of one project; returns what was done (for logs and tests)."""
    status = training_state.get_status(conn, project_id)
    running = status.get("running_job_id")
    if status.get("state") == RoundState.RUNNING and not running:
        fail_abandoned_round(conn, project_id)
    followup = training_state.take_orphaned_followup(conn, project_id)
    if followup:
        queueing.request_training(
            settings,
            conn,
            project_id,
            "follow-up of an abandoned round",
            automatic=followup == training_state.FOLLOWUP_AUTOMATIC,
        )
        log.info("project %s: follow-up of an abandoned round requested", project_id)
        return "retrain"
    # an automatic round that waited for the cadence and whose scheduled start was missed
    if queueing.start_due_round(settings, conn, project_id) is not None:
        return "retrain"
    # a queued job that vanished (deleted, or its worker died before the round began): the
    # request it stood for is made again
    if status.get("queued_job_id") and queueing.drop_vanished_queued_job(conn, project_id) is not None:
        queueing.request_training(
            settings,
            conn,
            project_id,
            "reconcile: the queued job vanished",
            automatic=not training_state.queued_is_manual(conn, project_id),
        )
        return "retrain"
    busy = bool(running or status.get("queued_job_id"))
    try:
        project = client.get_project(project_id)
    except LabelStudioError as exc:
        if exc.status == 404:
            return project_gone(settings, conn, project_id, status, busy)
        raise
    if status.get(GONE_SINCE) is not None:  # answered again: it was not deleted after all
        training_state.update_status(conn, project_id, **{GONE_SINCE: None})
    if not busy and retrain_on_config_change(settings, conn, project_id, project, "reconcile"):
        return "config changed"
    drift = annotation_drift(label_studio_count(project), status.get(training_state.LS_COUNT_AT_LAST_ROUND))
    if needs_retrain(drift, settings.retrain_after_annotations, busy):
        if status.get("next_automatic_round"):  # a round already waits for the cadence
            return "waiting"
        queueing.request_training(
            settings,
            conn,
            project_id,
            f"reconcile: {drift} annotated tasks since the last round",
            automatic=True,
        )
        log.info("project %s: %d annotated tasks since the last round -> retrain", project_id, drift)
        return "retrain"
    return "in sync"


GONE_SINCE = "label_studio_404_since_ts"  # status field: epoch seconds of the first 404


def project_gone(settings: Settings, conn, project_id: int, status: dict, busy: bool) -> str:
    """Label Studio answered 404 for the project. The first 404 is recorded; once the project
    has answered 404 for DELETED_PROJECT_GRACE_S and no round runs or waits for it, it is
    forgotten (forget_project). Returns "project gone" or "project forgotten"."""
    now = time.time()
    since = status.get(GONE_SINCE)
    if since is None:
        training_state.update_status(conn, project_id, **{GONE_SINCE: now})
        log.warning(
            "project %s: Label Studio answers 404; forgotten in %d s unless it comes back",
            project_id,
            DELETED_PROJECT_GRACE_S,
        )
        return "project gone"
    if busy or now - float(since) < DELETED_PROJECT_GRACE_S:
        return "project gone"
    forget_project(settings, conn, project_id)
    return "project forgotten"


def forget_project(settings: Settings, conn, project_id: int) -> None:
    """Delete what the backend keeps of a project Label Studio deleted: its Redis keys and its
    model directory (versions, predictions, feature cache, self-supervised weights)."""
    keys = training_state.forget_project(conn, project_id)
    directory = ModelStore(settings.model_dir, settings.keep_model_versions).project_dir(project_id)
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        log.warning("project %s: could not delete all of %s", project_id, directory)
    log.info("project %s: deleted in Label Studio; %d Redis keys and %s removed", project_id, keys, directory)


def config_change(settings: Settings, project_id: int, project: dict) -> dict | None:
    """How the project's labeling config differs from the published version's (a renamed, added
    or removed label), or None; an unsupported config is not ours to retrain."""
    try:
        schema = task_type_for(project.get("label_config"))
    except UnsupportedConfig:
        return None
    published = ModelStore(settings.model_dir, settings.keep_model_versions).published(project_id)
    return schema_change(published.info if published else None, schema)


def retrain_on_config_change(
    settings: Settings, conn, project_id: int, project: dict, source: str
) -> dict | None:
    """Request one retrain when the project's labeling config differs from the published
    version's; returns the change (also in /status as labeling_config_change), else None.

    One retrain per changed config: a round that then fails is not requested again for it."""
    change = config_change(settings, project_id, project)
    if change is None:
        return None
    status = training_state.get_status(conn, project_id)
    if status.get("config_retrain_requested_for") == change["to_hash"]:
        return None
    queueing.request_training(settings, conn, project_id, f"{source}: labeling config changed")
    training_state.update_status(
        conn, project_id, labeling_config_change=change, config_retrain_requested_for=change["to_hash"]
    )
    log.info(
        "project %s: labeling config changed since the published version (%s) -> retrain", project_id, change
    )
    return change


def reconcile_all(settings: Settings, conn, client: LabelStudioClient | None = None) -> dict:
    client = client or LabelStudioClient.from_settings(settings)
    results = {}
    for project_id in training_state.known_projects(conn):
        try:
            results[project_id] = reconcile_project(settings, conn, client, project_id)
        except Exception as exc:  # one unreachable project must not stop the others
            results[project_id] = f"error: {type(exc).__name__}"
            log.warning("project %s: reconcile failed: %s", project_id, exc)
    return results


def lease_key() -> str:
    return f"{training_state.PREFIX}:reconciler"


class ReconcilerLease:
    """Which one of the N worker processes runs the reconciler (N workers would otherwise make
    N times the project GETs). The holder renews it at every pass; it lives LEASE_INTERVALS
    intervals, so a dead holder's lease lapses and another worker takes over."""

    LEASE_INTERVALS = RECONCILER_LEASE_INTERVALS

    def __init__(self, conn, interval_s: int, owner: str | None = None):
        self.conn = conn
        self.ttl_s = max(int(interval_s) * self.LEASE_INTERVALS, 1)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def hold(self) -> bool:
        """Take the lease when free, renew it when ours (one atomic call); False: another's."""
        return bool(
            self.conn.eval(
                "local v = redis.call('get', KEYS[1]) "
                "if v == false or v == ARGV[1] then "
                "redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end return 0",
                1,
                lease_key(),
                self.owner,
                self.ttl_s,
            )
        )

    def release(self) -> None:
        self.conn.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end",
            1,
            lease_key(),
            self.owner,
        )


class Reconciler(threading.Thread):
    """Runs reconcile_all every RECONCILE_INTERVAL_S seconds in whichever worker process holds
    the reconciler lease."""

    def __init__(
        self, settings: Settings, conn, client: LabelStudioClient | None = None, owner: str | None = None
    ):
        super().__init__(daemon=True, name="reconciler")
        self.settings, self.conn, self.client = settings, conn, client
        self.lease = ReconcilerLease(conn, settings.reconcile_interval_s, owner)
        self.stopped = threading.Event()

    def run_once(self) -> dict | None:
        """One pass if this process holds the lease; None when another process does."""
        if not self.lease.hold():
            return None
        return reconcile_all(self.settings, self.conn, self.client)

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reconcile_interval_s):
            try:
                self.run_once()
            except Exception as exc:
                log.warning("reconcile pass failed: %s", exc)
        try:
            self.lease.release()
        except Exception:  # Redis gone at shutdown: the lease lapses by itself
            pass
