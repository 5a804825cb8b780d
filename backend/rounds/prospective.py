"""Prospective accuracy: how the live version's guesses fared on the tasks annotated after it
was trained, measured when the next round collects the project's labels.

A trained version keeps, with its stored predictions, the highest annotation id Label Studio had
given when its round collected (``annotation_watermark``; Label Studio numbers annotations in
creation order). At the next round, every labeled task whose first annotation came later was
not among the version's training labels: its stored guess was a real prediction, and the
annotator's label says whether it was right. Nothing is asked of Label Studio: the round has
the labels already, the version's predictions are on disk. The counts go into the round's
summary and the round history, where the dashboard reads them.

These tasks are the ones the ranking served first, the hardest for the model: the figure is a
pessimistic estimate of the version's accuracy, not an unbiased one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from backend.converters import TaskPrediction, preselects
from backend.model_store import ModelStore, is_cold_start_version

log = logging.getLogger(__name__)


def prospective_counts(
    prediction_of: Callable[[int], TaskPrediction | None],
    labeled: list[tuple[int, str, str]],
    first_annotation: dict[int, int],
    watermark: int,
    min_confidence: float,
) -> dict:
    """Of the labeled tasks (task id, url, label) first annotated after ``watermark``, and
    which the version guessed: how many, how many guesses were the label, how many guesses
    were pre-selected (PRESELECT_MIN_CONFIDENCE) and how many of those were the label."""
    counts = {"tasks": 0, "correct": 0, "preselected": 0, "preselected_correct": 0}
    for task_id, _, label in labeled:
        first = first_annotation.get(task_id)
        if first is None or first <= watermark:
            continue
        guess = prediction_of(task_id)
        if guess is None or guess.label is None:
            continue
        right = guess.label == label
        counts["tasks"] += 1
        counts["correct"] += int(right)
        if preselects(guess.probability, min_confidence):
            counts["preselected"] += 1
            counts["preselected_correct"] += int(right)
    return counts


def measure_live_version(
    store: ModelStore,
    project_id: int,
    labeled: list[tuple[int, str, str]],
    first_annotation: dict[int, int],
    min_confidence: float,
) -> dict | None:
    """The live version's prospective counts (with its name and watermark), or None when there
    is nothing to measure: no version, a cold-start ranking (no guesses), or a version stored
    before watermarks were kept."""
    published = store.published(project_id)
    if published is None or is_cold_start_version(published.version):
        return None
    try:
        stored = store.stored_predictions(project_id, published.version)
    except ValueError:
        return None
    watermark = stored.about.get("annotation_watermark")
    if type(watermark) is not int:
        return None
    counts = prospective_counts(stored.get, labeled, first_annotation, watermark, min_confidence)
    log.info(
        "project %s: %s guessed %d of %d tasks annotated since it was trained",
        project_id,
        published.version,
        counts["correct"],
        counts["tasks"],
    )
    return {"version": published.version, "since_annotation": watermark, **counts}
