"""Make an older version live again ("rollback"): no retraining, its stored ranking re-published.

Every version keeps, under MODEL_DIR, what it pushed to Label Studio (``ModelStore``: the stored
predictions, and a trained version's checkpoint), the newest KEEP_MODEL_VERSIONS of them. Making
one live again pushes those stored predictions to Label Studio once more (its older copy there,
if Label Studio still holds one, is deleted first, so no task gets two), points the project's
model_version at it and moves the published pointer: the same code a round publishes with
(``backend.rounds.publish.push_and_publish`` and ``update_views``).

It runs as an RQ job on the training queue (a push takes minutes on big projects, longer than
an HTTP request may), holding the project's run lock like a round, so a rollback and a round
never publish over each other; a round triggered meanwhile runs as the usual follow-up. Its
progress and outcome are the project's ``rollback`` field in /status.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import get_current_job

from backend import queueing, round_history, training_state
from backend.constants import JOB_FAILURE_TTL_S, PRUNE_JOB_RESULT_TTL_S, RoundPhase
from backend.model_store import ModelStore, is_cold_start_version, is_own_version
from backend.settings import Settings

log = logging.getLogger(__name__)
ROLLBACK_JOB = "backend.rollback.run_rollback_job"


class RollbackRefused(Exception):
    """A version cannot be made live; the message says why, in words for the page."""


def files_kept(store: ModelStore, project_id: int, version: str) -> bool:
    """Whether MODEL_DIR still holds what re-publishing ``version`` needs."""
    if not is_own_version(version):
        return False
    needed = [store.predictions_path(project_id, version)]
    if not is_cold_start_version(version):
        needed.append(store.checkpoint_path(project_id, version))
    return all(path.exists() for path in needed)


def refusal(store: ModelStore, project_id: int, version: str, live: str | None | bool = True) -> str | None:
    """Why ``version`` cannot be made live now (None: it can). ``live``: the live version when
    the caller read it already (True: read it here)."""
    if not is_own_version(version):
        return f"{version!r} is not a version of this backend"
    if live is True:
        published = store.published(project_id)
        live = published.version if published else None
    if live == version:
        return f"{version} is already the live version"
    if not files_kept(store, project_id, version):
        return (
            f"the files of {version} were pruned: MODEL_DIR keeps the newest "
            f"{store.keep_versions} versions of a project (KEEP_MODEL_VERSIONS)"
        )
    return None


def request_rollback(
    settings: Settings, conn: Redis, store: ModelStore, project_id: int, version: str
) -> str:
    """Queue making ``version`` live; returns the job id. RollbackRefused with the reason when
    it cannot be (see ``refusal``), or while a round of the project runs."""
    reason = refusal(store, project_id, version)
    if reason is None and training_state.running_job(conn, project_id) is not None:
        reason = "a round of this project is running: try again once it has finished"
    if reason is not None:
        raise RollbackRefused(reason)
    job = queueing.training_queue(settings, conn).enqueue(
        ROLLBACK_JOB,
        args=(int(project_id), version),
        job_timeout=settings.job_timeout_s,
        result_ttl=PRUNE_JOB_RESULT_TTL_S,
        failure_ttl=JOB_FAILURE_TTL_S,
        description=f"make {version} live in project {project_id}",
    )
    training_state.update_status(
        conn,
        project_id,
        rollback={
            "version": version,
            "state": "queued",
            "job_id": job.id,
            "requested_at": training_state.now_iso(),
        },
    )
    log.info("project %s: making %s live again (job %s)", project_id, version, job.id)
    return job.id


def republish(
    settings: Settings,
    client,
    store: ModelStore,
    project_id: int,
    version: str,
    status=lambda **_: None,
    history: list[dict] | None = None,
) -> int:
    """Push ``version``'s stored predictions into Label Studio again and publish it (our pointer
    and the project's model_version), then update the tab. Returns the predictions pushed."""
    from backend.rounds.publish import push_and_publish, update_views  # torch-free, but heavy
    from backend.task_types import task_type_for

    reason = refusal(store, project_id, version)
    if reason is not None:
        raise RollbackRefused(reason)
    schema = task_type_for(client.get_project(project_id).get("label_config"))
    stored = store.stored_predictions(project_id, version)
    predictions = stored.items()
    unknown = sorted({p.label for _, p in predictions if p.label is not None} - set(schema.labels))
    if unknown:
        raise RollbackRefused(
            f"the labeling config changed since {version}: it has no choice {', '.join(unknown[:5])}"
        )
    status(phase=RoundPhase.PUSHING_PREDICTIONS)  # the job checks it still holds the lock
    # a copy Label Studio may still hold (KEEP_PREDICTION_VERSIONS): none of it left twice
    client.delete_model_version(project_id, version)
    pushed = push_and_publish(
        settings,
        client,
        store,
        project_id,
        version,
        schema,
        predictions,
        about=stored.about,
        info=_info(version, history or []),
        status=status,
    )
    update_views(settings, client, project_id, version)
    return pushed.predictions_pushed


def _info(version: str, history: list[dict]) -> dict:
    """What the published pointer says of a re-published version (its round's metrics)."""
    info: dict = {"republished_at": training_state.now_iso()}
    for entry in history:
        if entry.get("model_version") == version:
            info.update(metrics=entry.get("metrics") or {}, annotations_used=entry.get("annotations_used"))
            break
    return info


def run_rollback_job(project_id: int, version: str) -> dict:
    """The RQ job: take the run lock (or give up, a round runs), re-publish, record the outcome."""
    from backend.jobs import _followup, _Heartbeat, guarded_status
    from backend.ls_client import LabelStudioClient

    settings = Settings.from_env()
    job = get_current_job()
    conn = job.connection if job else queueing.redis_connection(settings)
    job_id = job.id if job else f"rollback-p{int(project_id)}"
    record: dict = {"version": version, "job_id": job_id}

    def report(state: str, **more) -> dict:
        record.update(state=state, at=training_state.now_iso(), **more)
        training_state.update_status(conn, project_id, rollback=record)
        return {"project_id": project_id, **record}

    lock = training_state.RunLock(conn, project_id, job_id, settings.run_lock_ttl_s)
    if not lock.acquire():
        return report("refused", error="a round of this project was running: try again once it has finished")
    heartbeat = _Heartbeat(lock)
    heartbeat.start()
    report("running")
    try:
        store = ModelStore(settings.model_dir, settings.keep_model_versions)
        status = guarded_status(
            lock, heartbeat, lambda **fields: report("running", phase=str(fields.get("phase") or ""))
        )
        pushed = republish(
            settings,
            LabelStudioClient.from_settings(settings),
            store,
            project_id,
            version,
            status,
            round_history.rounds(conn, project_id),
        )
        return report("done", predictions_pushed=pushed, phase="")
    except RollbackRefused as exc:
        return report("refused", error=str(exc))
    except Exception as exc:
        report("failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        heartbeat.stopped.set()
        training_state.finish_run(conn, lock, _followup(settings, conn, project_id))
