"""RQ job entry points (run by the worker started in scripts/serve.sh)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING

from rq import get_current_job

from backend import cadence, queueing, round_history, training_state
from backend.constants import RUN_LOCK_RENEWALS_PER_TTL, RoundPhase, RoundState
from backend.settings import Settings

if TYPE_CHECKING:
    from backend.rounds.summary import RoundSummary

log = logging.getLogger(__name__)


# Phases that change what annotators see: each first checks, with one Redis call, that this job
# still holds the run lock (the heartbeat alone could be a beat late). Every time: a cold-start
# round publishes twice, and its second push must not land over a newer round's version.
GUARDED_PHASES = frozenset({RoundPhase.PUSHING_PREDICTIONS, RoundPhase.PUBLISHING})
# Once a round has published (this phase follows), it finishes its housekeeping (tab, pruning):
# stopping it then would only leave a published version reported as failed.
AFTER_PUBLISHING = RoundPhase.UPDATING_VIEWS
RETRY_HELD_BACK_REASON = "retry of a round held back by image failures"


class _Heartbeat(threading.Thread):
    """Renews the project's run lock while a job works, so a killed worker's lock expires.

    A renewal that finds the lock gone (expired, or another worker's) sets ``lost``; the job's
    status callback then stops the round at its next step (RunLockLost)."""

    def __init__(self, lock: training_state.RunLock):
        super().__init__(daemon=True, name=f"heartbeat-{lock.project_id}")
        self.lock = lock
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lock.ttl_s / RUN_LOCK_RENEWALS_PER_TTL):
            try:
                held = self.lock.renew()
            except Exception as exc:  # Redis blip: the next beat retries
                log.warning("project %s: lock renewal failed: %s", self.lock.project_id, exc)
                continue
            if not held:
                log.error(
                    "project %s: job %s lost its run lock; the round stops",
                    self.lock.project_id,
                    self.lock.job_id,
                )
                self.lost.set()
                return


def guarded_status(lock: training_state.RunLock, heartbeat: _Heartbeat, update):
    """The status callback a round gets: records progress, and until the round has published
    raises RunLockLost once the lock is lost (checked synchronously before GUARDED_PHASES, before
    each publish of a round that publishes more than once)."""
    published = threading.Event()

    def status(**fields) -> None:
        phase = fields.get("phase")
        if phase == AFTER_PUBLISHING:
            published.set()
        elif phase in GUARDED_PHASES:
            published.clear()  # another push: it publishes only while the lock is held
        if not published.is_set():
            if heartbeat.lost.is_set():
                raise training_state.RunLockLost(
                    f"project {lock.project_id}: job {lock.job_id} lost its run lock"
                )
            if phase in GUARDED_PHASES:
                lock.ensure_held()
        update(**fields)

    return status


def _followup(settings: Settings, conn, project_id: int):
    """What finish_run calls when a trigger came while the project was busy."""
    return lambda manual: queueing.request_training(
        settings, conn, project_id, "follow-up", automatic=not manual
    )


def wait_for_cadence(settings: Settings, conn, lock: training_state.RunLock, reason: str) -> dict | None:
    """An automatic round asked for too soon after the last one (backend.cadence): schedule it
    for when the interval ends and give the project back. None: it may run now."""
    last = training_state.get_status(conn, lock.project_id)
    now = time.time()
    wait = cadence.automatic_round_wait_s(
        now,
        last.get("finished_ts"),
        last.get("duration_s"),
        settings.retrain_min_interval_s,
        settings.retrain_duration_factor,
    )
    if wait <= 0:
        return None
    waiting = queueing.defer_training(settings, conn, lock.project_id, now + wait, reason)
    # a trigger that came during this check (Start Training included) is requested as usual
    training_state.finish_run(conn, lock, _followup(settings, conn, lock.project_id))
    log.info(
        "project %s: automatic round (%s) waits %.0f s for the retraining interval",
        lock.project_id,
        reason,
        wait,
    )
    return {
        "state": RoundState.WAITING.value,
        "project_id": lock.project_id,
        "wait_s": round(wait, 1),
        "next_automatic_round": waiting,
    }


def run_training_job(project_id: int, reason: str = "", automatic: bool = False) -> dict:
    """Train, score, push and publish a new model version for one project (coalesced).

    ``automatic``: asked for by annotations, not by a person; such a round first waits for the
    retraining cadence (wait_for_cadence), unless Start Training joined it while it was queued.
    """
    settings = Settings.from_env()
    job = get_current_job()
    conn = job.connection if job else queueing.redis_connection(settings)
    job_id = job.id if job else training_state.new_job_id(project_id)
    lock = training_state.start_run(conn, project_id, job_id, settings.run_lock_ttl_s, manual=not automatic)
    if lock is None:
        log.info("project %s: another training job runs; %s deferred to a follow-up", project_id, job_id)
        # a plain string, as in every job result: RQ pickles it for readers without this package
        return {"state": RoundState.DEFERRED.value, "project_id": project_id}
    if not lock.manual:
        waiting = wait_for_cadence(settings, conn, lock, reason)
        if waiting is not None:
            return waiting
    # this round lists the project as it is now: an automatic round waiting for later is void
    training_state.clear_deferral(conn, project_id)

    heartbeat = _Heartbeat(lock)
    heartbeat.start()
    changes = training_state.take_changes(conn, project_id)
    started = time.monotonic()
    training_state.update_status(
        conn,
        project_id,
        state=RoundState.RUNNING,
        job_id=job_id,
        reason=reason,
        started_at=training_state.now_iso(),
        finished_at=None,
        annotation_changes_consumed=changes,
        error=None,
        phase=RoundPhase.STARTING,
    )
    log.info("project %s: training job %s started (%s)", project_id, job_id, reason)

    status = training_state.round_status(conn, project_id)

    try:
        from backend.pipeline import run_training_round  # heavy (torch): import in the worker

        summary = run_training_round(settings, project_id, guarded_status(lock, heartbeat, status))
        result = _record_finished(conn, project_id, job_id, status, summary, started)
        retry_held_back(settings, conn, project_id, summary)
        return result
    except training_state.RunLockLost as exc:
        _record_lost_lock(conn, project_id, job_id, status, exc)
        raise
    except Exception as exc:
        _record_failure(conn, project_id, job_id, status, exc, started)
        raise
    finally:
        heartbeat.stopped.set()
        training_state.finish_run(conn, lock, _followup(settings, conn, project_id))


def _record_finished(
    conn, project_id: int, job_id: str, status, summary: RoundSummary, started: float
) -> dict:
    """A round that ended without an error: its state and summary in the project's status; the
    summary's plain form is the job's result."""
    published = {}
    if summary.published:  # a cold start is a ranking without a model: no metrics
        published = {
            "model_version": summary.model_version,
            "annotations_used": summary.counts.annotations_used,
            "metrics": summary.metrics,
        }
    training_state.remember_round_count(conn, project_id)
    # the plain form (states as strings): RQ pickles a job's result, and a reader without this
    # package (rq-dashboard) must be able to load it
    plain = summary.to_dict()
    status(
        state=summary.state,
        phase=RoundPhase.FINISHED,
        finished_at=training_state.now_iso(),
        finished_ts=time.time(),
        duration_s=round(time.monotonic() - started, 2),
        last_summary=plain,
        annotated_tasks=summary.counts.annotated_tasks,
        **published,
    )
    round_history.record(
        conn,
        project_id,
        round_history.entry_from_summary(plain, job_id=job_id, duration_s=time.monotonic() - started),
    )
    log.info("project %s: job %s %s in %.1fs", project_id, job_id, summary.state, time.monotonic() - started)
    return plain


def retry_held_back(settings: Settings, conn, project_id: int, summary: RoundSummary) -> dict | None:
    """A round held back with tasks left unscored by transient failures (Label Studio
    restarting, say): request another automatic round HELD_BACK_RETRY_S from now (the cadence's
    deferral, shown in /status as next_automatic_round). Returns it; None when there is no
    retry (off, not held back, or only failures a retry cannot mend)."""
    if (
        settings.held_back_retry_s <= 0
        or summary.state != RoundState.HELD_BACK
        or not summary.images.get("transient_tasks")
    ):
        return None
    due = time.time() + settings.held_back_retry_s
    try:
        waiting = queueing.defer_training(settings, conn, project_id, due, RETRY_HELD_BACK_REASON)
    except Exception as exc:  # Redis blip: the next trigger retrains
        log.warning("project %s: could not schedule the held-back round's retry: %s", project_id, exc)
        return None
    log.info("project %s: round held back; another round at %s", project_id, (waiting or {}).get("due_at"))
    return waiting


def _record_lost_lock(conn, project_id: int, job_id: str, status, exc: Exception) -> None:
    """A round stopped because its run lock was lost: another worker may run this project now,
    and its status is not ours to overwrite, unless nobody holds the lock (then the round is
    recorded as failed like any other)."""
    holder = training_state.running_job(conn, project_id)
    status(last_lost_lock={"job_id": job_id, "at": training_state.now_iso(), "held_by": holder})
    if holder is None:
        status(
            state=RoundState.FAILED,
            phase=RoundPhase.FAILED,
            finished_at=training_state.now_iso(),
            error=f"RunLockLost: {exc}"[:2000],
        )
    log.error("project %s: job %s stopped before publishing: %s", project_id, job_id, exc)


def _record_failure(conn, project_id: int, job_id: str, status, exc: Exception, started: float) -> None:
    """A round that failed: the error in the project's status. Label Studio's count this round
    started from is remembered, so the reconciler does not retry a failing round every pass: it
    retrains once the count drifts again."""
    training_state.remember_round_count(conn, project_id)
    status(
        state=RoundState.FAILED,
        phase=RoundPhase.FAILED,
        finished_at=training_state.now_iso(),
        finished_ts=time.time(),
        duration_s=round(time.monotonic() - started, 2),
        error=f"{type(exc).__name__}: {exc}"[:2000],
    )
    round_history.record(
        conn,
        project_id,
        round_history.entry_from_failure(
            f"{type(exc).__name__}: {exc}", job_id=job_id, duration_s=time.monotonic() - started
        ),
    )
    log.error("project %s: job %s failed: %s\n%s", project_id, job_id, exc, traceback.format_exc())


def run_due_round(project_id: int, token: str) -> dict:
    """Run by RQ's scheduler when a waiting automatic round's interval has ended: request that
    round (nothing when a round ran meanwhile and covered its annotations)."""
    settings = Settings.from_env()
    job = get_current_job()
    conn = job.connection if job else queueing.redis_connection(settings)
    answer = queueing.start_due_round(settings, conn, project_id, token=token)
    if answer is None:
        return {"state": "superseded", "project_id": project_id}
    enqueued, job_id = answer
    return {"state": "requested", "project_id": project_id, "job_id": job_id, "enqueued": enqueued}


def run_prune_job(project_id: int, version: str) -> dict:
    """Delete the predictions of this backend's older versions (queued by a finished round)."""
    from backend.ls_client import LabelStudioClient
    from backend.rounds.publish import prune_old_predictions

    settings = Settings.from_env()
    deleted = prune_old_predictions(settings, LabelStudioClient.from_settings(settings), project_id, version)
    return {"project_id": project_id, "kept": version, "deleted_versions": deleted}


def run_feature_shard_job(board_id: str) -> dict:
    """Extract feature shards of a round's board until none is left (backend.shard_job)."""
    from backend.shard_job import run_shard_job  # heavy (torch): import in the worker

    settings = Settings.from_env()
    job = get_current_job()
    conn = job.connection if job else queueing.redis_connection(settings)
    return run_shard_job(settings, conn, board_id)
