"""Pure conversions between Label Studio JSON and what the model consumes and produces."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from backend.defaults import PlaceholderVersion
from backend.labeling_config import ImageClassificationSchema


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


def task_image_url(task: dict, schema: ImageClassificationSchema) -> str:
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise TaskError("task has no data object")
    url = data.get(schema.image_key)
    if not isinstance(url, str) or not url.strip():
        raise TaskError(f"task data has no image under {schema.image_key!r}")
    return url.strip()


# Why an annotated task gives no training label (the keys of the per-round label report).
DROP_TIE = "tie"                         # annotators disagree and no label has a majority
DROP_EMPTY = "empty_result"              # submitted with nothing chosen
DROP_NOT_SINGLE = "not_a_single_choice"  # several choices, or none on the configured <Choices>
DROP_UNKNOWN = "choice_not_in_config"    # a label the current config does not have (renamed?)


@dataclass(frozen=True)
class LabelDecision:
    """What THE label rule makes of one task: a training label, or why not."""
    label: str | None            # the training label; None when the task gives none
    dropped: str | None = None   # a DROP_* reason when completed annotations give no label
    source: str | None = None    # "ground_truth" or "majority" when ``label`` is set
    skipped: bool = False        # only skipped/cancelled annotations (still work to do)


def completed_annotations(task: dict) -> list[dict]:
    """Annotations Label Studio counts as completed: not skipped/cancelled, with a result.

    (Label Studio's counts use ``was_cancelled=False`` and ``result IS NOT NULL``: an empty list
    counts as an annotation there, and the rule reports it as dropped here.)
    """
    return [a for a in (task.get("annotations") or [])
            if isinstance(a, dict) and not a.get("was_cancelled") and a.get("result") is not None]


def annotation_vote(annotation: dict, schema: ImageClassificationSchema
                    ) -> tuple[str | None, str | None]:
    """(label, None) when the annotation chose exactly one label of the config, else (None, why)."""
    result = annotation.get("result")
    if not isinstance(result, list) or not result:
        return None, DROP_EMPTY
    ours = [item for item in result
            if isinstance(item, dict) and item.get("from_name") == schema.from_name]
    choices = [c for item in ours for c in ((item.get("value") or {}).get("choices") or [])
               if isinstance(c, str)]
    if len(choices) != 1:
        return None, DROP_NOT_SINGLE
    if choices[0] not in schema.labels:
        return None, DROP_UNKNOWN
    return choices[0], None


def majority(votes: list[str]) -> str | None:
    """The label with strictly more votes than any other; None on a tie or without votes."""
    counts = Counter(votes).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


# When no annotation of a task gives a label, the most telling reason is reported.
_DROP_PRIORITY = (DROP_UNKNOWN, DROP_NOT_SINGLE, DROP_EMPTY)


def decide_label(task: dict, schema: ImageClassificationSchema) -> LabelDecision:
    """THE label rule: ground truth first, then the majority of completed annotations; a tie
    gives no training label (reported). Skipped/cancelled and empty annotations never vote."""
    completed = completed_annotations(task)
    if not completed:
        skipped = any(isinstance(a, dict) and a.get("was_cancelled")
                      for a in (task.get("annotations") or []))
        return LabelDecision(None, skipped=skipped)
    voted = [(a, *annotation_vote(a, schema)) for a in completed]
    ground_truth = [label for a, label, _ in voted if label is not None and a.get("ground_truth")]
    # ground truths that disagree are a tie: other annotators' votes do not overrule them
    votes = ground_truth or [label for _, label, _ in voted if label is not None]
    if votes:
        label = majority(votes)
        if label is None:
            return LabelDecision(None, DROP_TIE)
        return LabelDecision(label, source="ground_truth" if ground_truth else "majority")
    reasons = {why for _, _, why in voted}
    return LabelDecision(None, next(r for r in _DROP_PRIORITY if r in reasons))


def annotated_label(task: dict, schema: ImageClassificationSchema) -> str | None:
    """The task's training label under ``decide_label``, or None."""
    return decide_label(task, schema).label


def label_report(decisions: list[LabelDecision]) -> dict:
    """Per-round counts of the label rule: tasks with a training label, tasks dropped and why,
    tasks only skipped."""
    dropped = Counter(d.dropped for d in decisions if d.dropped)
    return {"labeled": sum(1 for d in decisions if d.label is not None),
            "from_ground_truth": sum(1 for d in decisions if d.source == "ground_truth"),
            "dropped": sum(dropped.values()),
            "dropped_by_reason": dict(sorted(dropped.items())),
            "skipped_only": sum(1 for d in decisions if d.skipped)}


@dataclass(frozen=True)
class TaskPrediction:
    label: str | None          # None: no model yet (cold start), nothing to pre-select
    probability: float | None  # the model's probability of ``label``
    score: float               # Label Studio score: lower = more informative
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


def prediction_result(pred: TaskPrediction, schema: ImageClassificationSchema) -> list[dict]:
    return [{
        "from_name": schema.from_name,
        "to_name": schema.to_name,
        "type": "choices",
        "value": {"choices": [pred.label]},
        "score": round(float(pred.probability), 6),
    }]


def prediction_payload(pred: TaskPrediction, schema: ImageClassificationSchema,
                       model_version: str, min_confidence: float = 0.0) -> dict:
    """The answer of /predict for one task; its result is empty unless ``preselects``."""
    # a label the current config no longer has (renamed or removed since the model was trained)
    # is never pre-selected
    chosen = pred.label in schema.labels and preselects(pred.probability, min_confidence)
    payload = {"result": prediction_result(pred, schema) if chosen else [],
               # full double precision: rounding would tie neighbours from ~1M tasks (1/(N-1) < 1e-6)
               "score": float(pred.score), "model_version": model_version}
    if pred.cluster is not None:
        payload["cluster"] = int(pred.cluster)
    return payload


def import_payload(task_id: int, pred: TaskPrediction, schema: ImageClassificationSchema,
                   model_version: str, min_confidence: float = 0.0) -> dict:
    """One item of a bulk prediction import (POST /api/projects/{id}/import/predictions)."""
    item = prediction_payload(pred, schema, model_version, min_confidence)
    item["task"] = int(task_id)
    return item


def untrained_payload() -> dict:
    """Honest answer before any model exists: no result, a neutral score, a clear version."""
    return {"result": [], "score": 0.5, "model_version": PlaceholderVersion.UNTRAINED}
