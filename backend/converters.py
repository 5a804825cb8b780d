"""Pure conversions between Label Studio JSON and what the model consumes and produces."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend.constants import PlaceholderVersion

if TYPE_CHECKING:  # the task types import this module; it only needs their interface
    from backend.task_types import TaskType


class TaskError(ValueError):
    """One task cannot be used; the message is the per-task reason shown in job summaries."""


def parse_project_id(value: Any) -> int:
    """Label Studio names a project as 12, "12", "12.1700000000" (/setup, /predict) or {"id": 12}."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or value is None:
        raise ValueError("no project id")
    if isinstance(value, int):
        project_id = value
    else:
        head = str(value).split(".", 1)[0].strip()
        if not head.isdigit():
            raise ValueError(f"not a project id: {str(value)[:40]!r}")
        project_id = int(head)
    if project_id <= 0:
        raise ValueError(f"not a project id: {project_id}")
    return project_id


# Why an annotated task gives no training label (the keys of the per-round label report); each
# task type adds its own (backend/task_types/).
DROP_TIE = "tie"  # annotators disagree and no label has a majority
DROP_EMPTY = "empty_result"  # submitted with nothing chosen


@dataclass(frozen=True)
class LabelDecision:
    """What THE label rule makes of one task: a training label, or why not."""

    label: str | None  # the training label; None when the task gives none
    dropped: str | None = None  # a DROP_* reason when completed annotations give no label
    source: str | None = None  # "ground_truth" or "majority" when ``label`` is set
    skipped: bool = False  # only skipped/cancelled annotations (still work to do)


def completed_annotations(task: dict) -> list[dict]:
    """Annotations Label Studio counts as completed: not skipped/cancelled, with a result.

    (Label Studio's counts use ``was_cancelled=False`` and ``result IS NOT NULL``: an empty list
    counts as an annotation there, and the rule reports it as dropped here.)
    """
    return [
        a
        for a in (task.get("annotations") or [])
        if isinstance(a, dict) and not a.get("was_cancelled") and a.get("result") is not None
    ]


def majority(votes: list[str]) -> str | None:
    """The label with strictly more votes than any other; None on a tie or without votes."""
    counts = Counter(votes).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


# One annotation's vote: (label, None), or (None, the DROP_* reason it gives no label).
Vote = Callable[[dict], tuple[str | None, str | None]]


def decide_by_vote(task: dict, vote: Vote, drop_priority: Sequence[str]) -> LabelDecision:
    """THE label rule: ground truth first, then the majority of completed annotations; a tie
    gives no training label (reported). Skipped/cancelled and empty annotations never vote.

    ``vote`` reads one annotation (the task type's); when no annotation gives a label, the first
    reason of ``drop_priority`` among theirs is reported (the most telling one).
    """
    completed = completed_annotations(task)
    if not completed:
        skipped = any(isinstance(a, dict) and a.get("was_cancelled") for a in (task.get("annotations") or []))
        return LabelDecision(None, skipped=skipped)
    voted = [(a, *vote(a)) for a in completed]
    ground_truth = [label for a, label, _ in voted if label is not None and a.get("ground_truth")]
    # ground truths that disagree are a tie: other annotators' votes do not overrule them
    votes = ground_truth or [label for _, label, _ in voted if label is not None]
    if votes:
        label = majority(votes)
        if label is None:
            return LabelDecision(None, DROP_TIE)
        return LabelDecision(label, source="ground_truth" if ground_truth else "majority")
    reasons = {why for _, _, why in voted}
    return LabelDecision(None, next(r for r in drop_priority if r in reasons))


def label_report(decisions: list[LabelDecision]) -> dict:
    """Per-round counts of the label rule: tasks with a training label, tasks dropped and why,
    tasks only skipped."""
    dropped = Counter(d.dropped for d in decisions if d.dropped)
    return {
        "labeled": sum(1 for d in decisions if d.label is not None),
        "from_ground_truth": sum(1 for d in decisions if d.source == "ground_truth"),
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dict(sorted(dropped.items())),
        "skipped_only": sum(1 for d in decisions if d.skipped),
    }


@dataclass(frozen=True)
class TaskPrediction:
    label: str | None  # None: no model yet (cold start), nothing to pre-select
    probability: float | None  # the model's probability of ``label``
    score: float  # Label Studio score: lower = more informative
    cluster: int | None = None


def preselects(probability: float | None, min_confidence: float) -> bool:
    """THE pre-selection rule, for the bulk push and /predict alike: a prediction pre-selects its
    top class only when the model gives it at least ``min_confidence`` (PRESELECT_MIN_CONFIDENCE);
    below it the prediction goes out with an empty result and keeps its score, so annotators are
    not anchored on a guess exactly on the uncertain tasks served first. 0 always pre-selects; no
    probability (no model) never does."""
    if probability is None:
        return False
    return min_confidence <= 0.0 or float(probability) >= min_confidence


def prediction_payload(
    pred: TaskPrediction, schema: TaskType, model_version: str, min_confidence: float = 0.0
) -> dict:
    """The answer of /predict for one task; its result is empty unless ``preselects`` and the
    task type can show the answer under the current config (``TaskType.prediction_result``)."""
    shown = preselects(pred.probability, min_confidence)
    result = schema.prediction_result(pred) if shown else None
    payload = {
        "result": result or [],
        # full double precision: rounding would tie neighbours from ~1M tasks (1/(N-1) < 1e-6)
        "score": float(pred.score),
        "model_version": model_version,
    }
    if pred.cluster is not None:
        payload["cluster"] = int(pred.cluster)
    return payload


def import_payload(
    task_id: int, pred: TaskPrediction, schema: TaskType, model_version: str, min_confidence: float = 0.0
) -> dict:
    """One item of a bulk prediction import (POST /api/projects/{id}/import/predictions)."""
    item = prediction_payload(pred, schema, model_version, min_confidence)
    item["task"] = int(task_id)
    return item


def untrained_payload() -> dict:
    """Honest answer before any model exists: no result, a neutral score, a clear version."""
    return {"result": [], "score": 0.5, "model_version": PlaceholderVersion.UNTRAINED}
