"""Each scored task's prediction as the round pushes it: a label and its probability (a trained
model's, or none for a cold-start ranking), the task's score and its cluster."""

from __future__ import annotations

import heapq

import numpy as np

from backend.converters import TaskPrediction


def build_predictions(
    ids: list[int], answers: list[tuple[str, float]], scores: np.ndarray, clusters: np.ndarray | None
) -> list[tuple[int, TaskPrediction]]:
    """Each scored task's prediction: the task type's answer (``TaskType.model_answers``) with
    its probability, the task's score and its cluster."""
    out = []
    for row, task_id in enumerate(ids):
        cluster = None if clusters is None or clusters[row] < 0 else int(clusters[row])
        label, probability = answers[row]
        out.append(
            (
                task_id,
                TaskPrediction(
                    label=label, probability=probability, score=float(scores[row]), cluster=cluster
                ),
            )
        )
    return out


def ranking_predictions(
    ids: list[int], scores: np.ndarray, clusters: np.ndarray, push_clusters: bool
) -> list[tuple[int, TaskPrediction]]:
    """A ranking without a model (cold start): each task's score, its cluster when
    ``push_clusters`` (and it has one), no label."""
    return [
        (
            tid,
            TaskPrediction(
                label=None,
                probability=None,
                score=float(scores[row]),
                cluster=int(clusters[row]) if push_clusters and clusters[row] >= 0 else None,
            ),
        )
        for row, tid in enumerate(ids)
    ]


FIRST_TASKS_KEPT = 8  # the ranking's first tasks the published pointer keeps, for the dashboard


def first_tasks(predictions: list[tuple[int, TaskPrediction]], n: int = FIRST_TASKS_KEPT) -> list[dict]:
    """The ``n`` tasks served first (the lowest scores) with the model's guess, as plain values:
    kept with the published pointer, so the dashboard shows them without parsing every
    prediction of the version."""
    return [
        {"task_id": int(tid), "score": p.score, "label": p.label, "probability": p.probability}
        for tid, p in heapq.nsmallest(n, predictions, key=lambda item: item[1].score)
    ]
