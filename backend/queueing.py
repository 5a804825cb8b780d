"""Queue wiring: the Redis connection and how a training job is put on the RQ queue."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from redis import Redis
from rq import Queue, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from backend import training_state
from backend.constants import (
    FEATURE_SHARD_JOB_RESULT_TTL_S,
    JOB_FAILURE_TTL_S,
    PRUNE_JOB_RESULT_TTL_S,
    QUEUED_MARKER_GRACE_S,
    REDIS_SOCKET_TIMEOUT_S,
    TRAIN_JOB_RESULT_TTL_S,
)
from backend.settings import Settings

TRAIN_JOB = "backend.jobs.run_training_job"
PRUNE_JOB = "backend.jobs.run_prune_job"
DUE_ROUND_JOB = "backend.jobs.run_due_round"
FEATURE_SHARD_JOB = "backend.jobs.run_feature_shard_job"
log = logging.getLogger(__name__)


def redis_connection(settings: Settings) -> Redis:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (scripts/serve.sh starts an embedded Redis)")
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
    )


def training_queue(settings: Settings, conn: Redis) -> Queue:
    return Queue(settings.queue_name, connection=conn)


# A job in these states may still start its round; any other (finished, failed, stopped,
# canceled) never will.
_WAITING_STATES = frozenset({JobStatus.CREATED, JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED})


def job_alive(conn: Redis, job_id: str) -> bool:
    """Whether the training job ``job_id`` may still start its round: it exists in RQ and waits,
    or it started less than QUEUED_MARKER_GRACE_S ago (a started job takes its queued marker at
    once; one that still has it after that was lost with its worker)."""
    try:
        job = Job.fetch(job_id, connection=conn)
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status in _WAITING_STATES:
        return True
    if status == JobStatus.STARTED:
        started = job.started_at
        if started is None:
            return True
        if started.tzinfo is None:  # RQ stores UTC
            started = started.replace(tzinfo=UTC)
        return (datetime.now(UTC) - started).total_seconds() < QUEUED_MARKER_GRACE_S
    return False


def drop_vanished_queued_job(conn: Redis, project_id: int) -> str | None:
    """Drop the project's queued marker when its job will never run (training_state); returns
    the dropped job id."""
    dropped = training_state.drop_vanished_queued_job(
        conn, project_id, lambda job_id: job_alive(conn, job_id)
    )
    if dropped is not None:
        log.warning(
            "project %s: queued job %s is gone from the queue; its place is freed", project_id, dropped
        )
    return dropped


def request_training(
    settings: Settings, conn: Redis, project_id: int, reason: str, automatic: bool = False
) -> tuple[bool, str | None]:
    """Coalesced enqueue of one training job for a project (see training_state).

    ``automatic``: asked for by annotations (count, reconciler drift) rather than by a person; such
    a job waits for the retraining cadence when it starts (backend.jobs), and a request made while
    an automatic round already waits for it joins that round: (False, None) is returned. A
    waiting round whose time has come (its scheduled start was missed) is started instead.
    """
    if automatic and training_state.deferred_round(conn, project_id) is not None:
        if training_state.take_deferral(conn, project_id, due_by=time.time()) is None:
            return False, None
    queue = training_queue(settings, conn)

    def enqueue(job_id: str) -> None:
        queue.enqueue(
            TRAIN_JOB,
            args=(int(project_id), reason, bool(automatic)),
            job_id=job_id,
            job_timeout=settings.job_timeout_s,
            result_ttl=TRAIN_JOB_RESULT_TTL_S,
            failure_ttl=JOB_FAILURE_TTL_S,
            description=f"train project {project_id}: {reason}",
        )

    return training_state.request_training(
        conn,
        project_id,
        reason,
        enqueue,
        manual=not automatic,
        job_alive=lambda job_id: job_alive(conn, job_id),
    )


def defer_training(
    settings: Settings, conn: Redis, project_id: int, due_ts: float, reason: str
) -> dict | None:
    """An automatic round must wait until ``due_ts`` (epoch seconds): record it and schedule its
    start with RQ's scheduler (every worker runs one; one holds its lock). Returns the pending
    waiting round (an earlier one when one already waits: it covers these annotations too).

    Should the scheduled start be lost (no scheduler alive, Redis refused the job), the next
    annotation webhook or reconcile pass after ``due_ts`` starts the round (start_due_round).
    """
    token = training_state.defer_round(conn, project_id, due_ts, reason)
    if token is not None:
        try:
            training_queue(settings, conn).enqueue_at(
                datetime.fromtimestamp(due_ts, UTC),
                DUE_ROUND_JOB,
                args=(int(project_id), token),
                job_id=f"round-due-p{int(project_id)}-{token}",
                job_timeout=120,
                result_ttl=24 * 3600,
                failure_ttl=7 * 24 * 3600,
                description=f"start the waiting automatic round of project {project_id}",
            )
        except Exception as exc:  # Redis blip: the safety nets above start it once due
            log.warning("project %s: could not schedule the waiting round: %s", project_id, exc)
    return training_state.deferred_round(conn, project_id)


def start_due_round(
    settings: Settings, conn: Redis, project_id: int, token: str | None = None
) -> tuple[bool, str | None] | None:
    """Start the automatic round that waited for the cadence: the one ``token`` names (its
    scheduled job), or without a token one whose time has come. Returns request_training's
    answer, or None when there is none (a round ran meanwhile and covered it, or not yet due)."""
    due_by = None if token is not None else time.time()
    taken = training_state.take_deferral(conn, project_id, token=token, due_by=due_by)
    if taken is None:
        return None
    log.info(
        "project %s: the retraining interval has ended; starting the waiting round (%s)",
        project_id,
        taken.get("reason"),
    )
    return request_training(
        settings,
        conn,
        project_id,
        f"{taken.get('reason')} (waited until {taken.get('due_at')})",
        automatic=True,
    )


def enqueue_prune(settings: Settings, project_id: int, version: str) -> bool:
    """From inside a round's RQ job: queue deleting older versions' predictions as a job of its
    own. False when not in a job or Redis refused: the caller prunes in place."""
    job = get_current_job()
    if job is None:
        return False
    try:
        training_queue(settings, job.connection).enqueue(
            PRUNE_JOB,
            args=(int(project_id), version),
            job_timeout=settings.job_timeout_s,
            result_ttl=PRUNE_JOB_RESULT_TTL_S,
            failure_ttl=JOB_FAILURE_TTL_S,
            description=f"delete old predictions of project {project_id}",
        )
    except Exception as exc:  # Redis blip: housekeeping falls back to the round itself
        log.warning("project %s: could not queue the old predictions' deletion: %s", project_id, exc)
        return False
    return True


def enqueue_feature_shards(settings: Settings, conn: Redis, board_id: str, count: int) -> None:
    """Queue ``count`` jobs that work the feature shards of a round's board
    (backend.feature_shards), at the front of the queue: a round is waiting for them, and a job
    that comes after the round ended finds nothing to do."""
    queue = training_queue(settings, conn)
    for _ in range(count):
        queue.enqueue(
            FEATURE_SHARD_JOB,
            args=(board_id,),
            job_timeout=settings.job_timeout_s,
            result_ttl=FEATURE_SHARD_JOB_RESULT_TTL_S,
            failure_ttl=JOB_FAILURE_TTL_S,
            at_front=True,
            description=f"feature shards of board {board_id}",
        )
