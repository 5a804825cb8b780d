"""Queue wiring: the Redis connection and how a training job is put on the RQ queue."""
from __future__ import annotations

import logging

from redis import Redis
from rq import Queue, get_current_job

from backend import training_state
from backend.defaults import (JOB_FAILURE_TTL_S, PRUNE_JOB_RESULT_TTL_S, REDIS_SOCKET_TIMEOUT_S,
                              TRAIN_JOB_RESULT_TTL_S)
from backend.settings import Settings

TRAIN_JOB = "backend.jobs.run_training_job"
PRUNE_JOB = "backend.jobs.run_prune_job"
log = logging.getLogger(__name__)


def redis_connection(settings: Settings) -> Redis:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (scripts/serve.sh starts an embedded Redis)")
    return Redis.from_url(settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                          socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S)


def training_queue(settings: Settings, conn: Redis) -> Queue:
    return Queue(settings.queue_name, connection=conn)


def request_training(settings: Settings, conn: Redis, project_id: int, reason: str):
    """Coalesced enqueue of one training job for a project (see training_state)."""
    queue = training_queue(settings, conn)

    def enqueue(job_id: str) -> None:
        queue.enqueue(TRAIN_JOB, args=(int(project_id), reason), job_id=job_id,
                      job_timeout=settings.job_timeout_s, result_ttl=TRAIN_JOB_RESULT_TTL_S,
                      failure_ttl=JOB_FAILURE_TTL_S,
                      description=f"train project {project_id}: {reason}")

    return training_state.request_training(conn, project_id, reason, enqueue)


def enqueue_prune(settings: Settings, project_id: int, version: str) -> bool:
    """From inside a round's RQ job: queue deleting older versions' predictions as a job of its
    own. False when not in a job or Redis refused: the caller prunes in place."""
    job = get_current_job()
    if job is None:
        return False
    try:
        training_queue(settings, job.connection).enqueue(
            PRUNE_JOB, args=(int(project_id), version), job_timeout=settings.job_timeout_s,
            result_ttl=PRUNE_JOB_RESULT_TTL_S, failure_ttl=JOB_FAILURE_TTL_S,
            description=f"delete old predictions of project {project_id}")
    except Exception as exc:   # Redis blip: housekeeping falls back to the round itself
        log.warning("project %s: could not queue the old predictions' deletion: %s",
                    project_id, exc)
        return False
    return True
