"""Pure interpretation of Label Studio webhook events: what each one asks the backend to do."""

from __future__ import annotations

from dataclasses import dataclass

from backend.constants import WebhookDecision
from backend.converters import parse_project_id

START_TRAINING = "START_TRAINING"
PROJECT_UPDATED = "PROJECT_UPDATED"  # retrains only when the labeling config changed (backend.app)
ANNOTATION_EVENTS = {
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
    "ANNOTATIONS_CREATED",
    "ANNOTATION_DELETED",
}
# Label Studio sends PROJECT_UPDATED also when this backend PATCHes model_version: retraining on it
# would loop, so it is acknowledged and ignored like every other non-training event.


class BadEvent(ValueError):
    """The body is not a webhook event at all (4xx)."""


@dataclass(frozen=True)
class Decision:
    kind: WebhookDecision
    action: str
    project_id: int | None
    changes: int = 0
    reason: str = ""


def decide(payload) -> Decision:
    if not isinstance(payload, dict):
        raise BadEvent("webhook body must be a JSON object")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise BadEvent("webhook body needs an 'action' string")
    try:
        project_id = parse_project_id(payload.get("project"))
    except ValueError:
        return Decision(WebhookDecision.IGNORE, action, None, reason="event names no project")
    if action == START_TRAINING:
        return Decision(WebhookDecision.TRAIN, action, project_id, reason="Start Training pressed")
    if action in ANNOTATION_EVENTS:
        return Decision(WebhookDecision.COUNT, action, project_id, changes=_changes_in(payload, action))
    return Decision(WebhookDecision.IGNORE, action, project_id, reason=f"{action} does not affect training")


def _changes_in(payload: dict, action: str) -> int:
    """ANNOTATIONS_DELETED / ANNOTATIONS_CREATED carry a list; the singular events one item."""
    if action.startswith("ANNOTATIONS_"):
        items = payload.get("annotations")
        if isinstance(items, list) and items:
            return len(items)
    return 1


def should_retrain(pending_changes: int, threshold: int) -> bool:
    return threshold > 0 and pending_changes >= threshold
