"""What the backend answers to a Label Studio event that reached /webhook or /train: whether its
labeling config can be trained on, and whether the event is counted, queues a round or waits."""

from __future__ import annotations

import logging

from backend import queueing, training_state, webhooks
from backend.constants import EventAnswer, WebhookDecision
from backend.settings import Settings
from backend.task_types import UnsupportedConfig, task_type_for

log = logging.getLogger(__name__)


def unsupported_config(project) -> UnsupportedConfig | None:
    """Why the labeling config an event carries cannot be trained on, or None (also when the
    event carries none)."""
    labeling = project.get("label_config") if isinstance(project, dict) else None
    if labeling:
        try:
            task_type_for(labeling)
        except UnsupportedConfig as exc:
            return exc
    return None


def answer_training_event(settings: Settings, conn, decision: webhooks.Decision) -> dict:
    project_id = decision.project_id
    if project_id is None:  # events without a project are answered before this
        raise ValueError(f"{decision.action} names no project")
    training_state.remember_last_seen(conn, project_id, decision.action)
    if decision.kind == WebhookDecision.TRAIN:
        enqueued, job_id = queueing.request_training(settings, conn, project_id, decision.reason)
        log.info(
            "project %s: %s -> %s %s",
            project_id,
            decision.action,
            "queued" if enqueued else "already queued",
            job_id,
        )
        return {"status": EventAnswer.QUEUED if enqueued else EventAnswer.ALREADY_QUEUED, "job_id": job_id}
    pending = training_state.count_changes(conn, project_id, decision.changes)
    # an automatic round that waited for the cadence and whose scheduled start was missed
    started = queueing.start_due_round(settings, conn, project_id)
    if started is not None:
        enqueued, job_id = started
        return {
            "status": EventAnswer.QUEUED if enqueued else EventAnswer.ALREADY_QUEUED,
            "job_id": job_id,
            "pending_changes": pending,
        }
    if webhooks.should_retrain(pending, settings.retrain_after_annotations):
        enqueued, job_id = queueing.request_training(
            settings, conn, project_id, f"{pending} annotation changes", automatic=True
        )
        waiting = None if enqueued else training_state.deferred_round(conn, project_id)
        if waiting is not None:  # joins the round that waits for the retraining interval
            return {
                "status": EventAnswer.WAITING,
                "pending_changes": pending,
                "next_automatic_round": waiting,
            }
        log.info(
            "project %s: %d annotation changes -> retrain (%s)",
            project_id,
            pending,
            "queued" if enqueued else "already queued",
        )
        return {
            "status": EventAnswer.QUEUED if enqueued else EventAnswer.ALREADY_QUEUED,
            "job_id": job_id,
            "pending_changes": pending,
        }
    return {
        "status": EventAnswer.COUNTED,
        "pending_changes": pending,
        "retrain_after": settings.retrain_after_annotations,
    }
