"""Pure conversions between Label Studio JSON and what the model consumes and produces."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from backend.labeling_config import ImageClassificationSchema

UNTRAINED_VERSION = "untrained"


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


def _choice_of(result: Iterable[dict], schema: ImageClassificationSchema) -> str | None:
    for item in result or ():
        if not isinstance(item, dict) or item.get("from_name") != schema.from_name:
            continue
        choices = (item.get("value") or {}).get("choices")
        if isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], str):
            return choices[0]
    return None


def annotated_label(task: dict, schema: ImageClassificationSchema) -> str | None:
    """The label of the task's newest usable annotation, or None when it has none.

    Cancelled (skipped) annotations and results with a choice outside the config are ignored,
    so a label removed from the config never reaches training.
    """
    annotations = [a for a in (task.get("annotations") or [])
                   if isinstance(a, dict) and not a.get("was_cancelled")]
    annotations.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                    a.get("id") or 0), reverse=True)
    for annotation in annotations:
        label = _choice_of(annotation.get("result"), schema)
        if label in schema.labels:
            return label
    return None


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
    chosen = pred.label is not None and preselects(pred.probability, min_confidence)
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
    return {"result": [], "score": 0.5, "model_version": UNTRAINED_VERSION}
