"""Each project's finished rounds, newest first, in Redis: what the dashboard's history, version
list and learning curve show.

A round's summary (``backend.rounds.summary``) lives in /status only until the next round ends;
here a compact copy of every round's outcome is kept (at most ``HISTORY_LENGTH`` per project,
under the project's ``al:`` keys, so forgetting a project forgets its history). Recording never
fails a round: a Redis error is logged and the round goes on.
"""

from __future__ import annotations

import json
import logging
import statistics
import time

from redis import Redis

from backend import training_state

log = logging.getLogger(__name__)
HISTORY_LENGTH = 200  # rounds kept per project (a few KB each)
# the parts of a round's plain summary the history keeps (the rest is in /status's last_summary)
_KEPT = (
    "state",
    "model_version",
    "reason",
    "strategy",
    "metrics",
    "tasks",
    "annotated_tasks",
    "annotations_used",
    "predictions_pushed",
    "tasks_deleted_during_round",
    "preselected",
    "embedding",
    "pick",
    "timings_s",
    "warnings",
    "prospective",
)


def history_key(project_id: int) -> str:
    return f"{training_state.PREFIX}:project:{int(project_id)}:rounds"


def _folds(values) -> list[float]:
    if not isinstance(values, (list, tuple)):
        return []
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _estimate(folds: list[float], kind: str) -> dict:
    return {
        "mean": round(statistics.fmean(folds), 4),
        "std": round(statistics.stdev(folds), 4) if len(folds) > 1 else None,
        "folds": folds,
        "kind": kind,
    }


def accuracy_of(summary: dict) -> dict | None:
    """A trained round's accuracy estimate with its spread over folds: the mean, the standard
    deviation over the folds (None: a single held-out split), the per-fold values and what it
    measured. In order: the recipe search's cross-validation of the recipe the round trained
    with; a held-out part of the labels, where the trainer kept one; the colour choice's
    cross-validated linear probe on the backbone's features (the backbone the round kept)."""
    searched = summary.get("recipe_search") or {}
    folds = _folds((searched.get("fold_acc") or {}).get(searched.get("chosen")))
    if len(folds) >= 2:
        return _estimate(folds, f"{len(folds)}-fold cross-validated")
    metrics = summary.get("metrics") or {}
    if isinstance(metrics.get("val_acc"), (int, float)):
        return _estimate([float(metrics["val_acc"])], "held-out")
    colour = (summary.get("self_supervised") or {}).get("colour") or {}
    folds = _folds(
        colour.get("with_colour_fold_accuracy" if colour.get("keep_colour") else "invariant_fold_accuracy")
    )
    if len(folds) >= 2:
        return _estimate(folds, f"{len(folds)}-fold cross-validated linear probe")
    return None


def entry_from_summary(summary: dict, *, job_id: str, duration_s: float) -> dict:
    """The history entry of a round that ended without an error (its plain summary)."""
    entry = {key: summary[key] for key in _KEPT if key in summary}
    accuracy = accuracy_of(summary)
    if accuracy is not None:
        entry["accuracy"] = accuracy
    images = summary.get("images") or {}
    entry["images"] = {"skipped_tasks": images.get("skipped_tasks", 0), "reasons": images.get("reasons", {})}
    first = summary.get("first_push")
    if first:
        entry["first_push_version"] = first.get("model_version")
    return {
        **entry,
        "job_id": job_id,
        "duration_s": round(duration_s, 2),
        "finished_at": training_state.now_iso(),
        "finished_ts": round(time.time(), 3),
    }


def entry_from_failure(error: str, *, job_id: str, duration_s: float) -> dict:
    return {
        "state": "failed",
        "error": error[:2000],
        "job_id": job_id,
        "duration_s": round(duration_s, 2),
        "finished_at": training_state.now_iso(),
        "finished_ts": round(time.time(), 3),
    }


def record(conn: Redis, project_id: int, entry: dict) -> None:
    """Add one round's entry (newest first), keeping the newest HISTORY_LENGTH."""
    try:
        pipe = conn.pipeline()
        pipe.lpush(history_key(project_id), json.dumps(entry))
        pipe.ltrim(history_key(project_id), 0, HISTORY_LENGTH - 1)
        pipe.execute()
    except Exception as exc:  # the history is a view: never fail a round over it
        log.warning("project %s: round not added to the history: %s", project_id, exc)


def rounds(conn: Redis, project_id: int, limit: int = HISTORY_LENGTH) -> list[dict]:
    """The project's recorded rounds, newest first (unreadable entries left out)."""
    out = []
    for raw in conn.lrange(history_key(project_id), 0, max(limit, 1) - 1):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out
