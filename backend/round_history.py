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
import time

from redis import Redis

from backend import training_state

log = logging.getLogger(__name__)
HISTORY_LENGTH = 200   # rounds kept per project (a few KB each)
# the parts of a round's plain summary the history keeps (the rest is in /status's last_summary)
_KEPT = ("state", "model_version", "reason", "strategy", "metrics", "tasks", "annotated_tasks",
         "annotations_used", "predictions_pushed", "tasks_deleted_during_round", "preselected",
         "embedding", "pick", "timings_s", "warnings", "prospective")


def history_key(project_id: int) -> str:
    return f"{training_state.PREFIX}:project:{int(project_id)}:rounds"


def entry_from_summary(summary: dict, *, job_id: str, duration_s: float) -> dict:
    """The history entry of a round that ended without an error (its plain summary)."""
    entry = {key: summary[key] for key in _KEPT if key in summary}
    images = summary.get("images") or {}
    entry["images"] = {"skipped_tasks": images.get("skipped_tasks", 0),
                       "reasons": images.get("reasons", {})}
    first = summary.get("first_push")
    if first:
        entry["first_push_version"] = first.get("model_version")
    return {**entry, "job_id": job_id, "duration_s": round(duration_s, 2),
            "finished_at": training_state.now_iso(), "finished_ts": round(time.time(), 3)}


def entry_from_failure(error: str, *, job_id: str, duration_s: float) -> dict:
    return {"state": "failed", "error": error[:2000], "job_id": job_id,
            "duration_s": round(duration_s, 2), "finished_at": training_state.now_iso(),
            "finished_ts": round(time.time(), 3)}


def record(conn: Redis, project_id: int, entry: dict) -> None:
    """Add one round's entry (newest first), keeping the newest HISTORY_LENGTH."""
    try:
        pipe = conn.pipeline()
        pipe.lpush(history_key(project_id), json.dumps(entry))
        pipe.ltrim(history_key(project_id), 0, HISTORY_LENGTH - 1)
        pipe.execute()
    except Exception as exc:   # the history is a view: never fail a round over it
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
