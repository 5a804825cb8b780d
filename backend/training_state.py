"""Per-project training state in Redis: coalescing of triggers, the run lock, visible progress.

Invariants (tested against a real Redis):
- at most one queued and one running training job per project;
- a trigger while a job runs schedules exactly one follow-up;
- annotation changes are counted, and reaching the threshold triggers a retrain;
- a follow-up remembers whether a manual request (Start Training) asked for it: automatic ones
  wait for the retraining cadence (backend.cadence), manual ones never do;
- at most one deferred automatic round per project (a round waiting for the cadence).
All keys live under ``al:`` and the Redis connection is always passed in, never global.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from redis import Redis

from backend.constants import PROGRESS_FIELD, QUEUED_MARKER_GRACE_S, QUEUED_TTL_S, RUN_LOCK_TTL_S

PREFIX = "al"
# Status fields holding Label Studio's OWN count of annotated tasks (project.num_tasks_with_annotations):
# as the running round started, and as the last finished or failed round started. The reconciler
# compares Label Studio's count now with the second one, never with the backend's count of usable
# labels (empty or unusable annotations would then look like drift forever).
LS_COUNT_IN_ROUND = "ls_annotated_tasks_in_round"
LS_COUNT_AT_LAST_ROUND = "ls_annotated_tasks_at_last_round"


def _key(project_id: int, name: str) -> str:
    return f"{PREFIX}:project:{int(project_id)}:{name}"


def projects_key() -> str:
    return f"{PREFIX}:projects"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


# --- annotation change counting ----------------------------------------------------------------
def count_changes(conn: Redis, project_id: int, n: int = 1) -> int:
    conn.sadd(projects_key(), int(project_id))
    return int(conn.incrby(_key(project_id, "changes"), n))


def pending_changes(conn: Redis, project_id: int) -> int:
    return int(conn.get(_key(project_id, "changes")) or 0)


def take_changes(conn: Redis, project_id: int) -> int:
    """Reset the counter at the start of a run; changes arriving later count toward the next."""
    return int(conn.getset(_key(project_id, "changes"), 0) or 0)


# --- coalescing ----------------------------------------------------------------------------------
def new_job_id(project_id: int) -> str:
    # unique (uuid), deterministic prefix so logs and RQ's registries show the project
    return f"train-p{int(project_id)}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


# Take the queued marker (KEYS[1]) for job ARGV[1], or join the job holding it; a manual request
# (ARGV[3] == '1') marks the waiting job manual (KEYS[2]) either way. One call, so the waiting job
# either sees the mark when it starts or is gone and this request enqueues a job of its own. The
# mark also tells what a job that vanished from the queue stood for (drop_vanished_queued_job).
_QUEUE_OR_MARK_MANUAL = (
    "local taken = redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) "
    "if ARGV[3] == '1' then redis.call('set', KEYS[2], '1', 'EX', ARGV[2]) end "
    "if taken then return 1 end return 0"
)
# A starting job leaves the queue: drop its queued marker and take the manual mark with it.
_UNQUEUE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) "
    "return redis.call('del', KEYS[2]) end return 0"
)
# GET and DEL in one step (GETDEL needs Redis 6.2).
_TAKE = "local v = redis.call('get', KEYS[1]) if v then redis.call('del', KEYS[1]) end return v"
_DELETE_IF_EQUAL = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
FOLLOWUP_MANUAL, FOLLOWUP_AUTOMATIC = "manual", "automatic"


def request_training(
    conn: Redis,
    project_id: int,
    reason: str,
    enqueue: Callable[[str], None],
    manual: bool = True,
    job_alive: Callable[[str], bool] | None = None,
) -> tuple[bool, str | None]:
    """Enqueue a training job unless one is already waiting; return (enqueued, waiting job id).

    ``enqueue(job_id)`` puts the job on the queue. The queued marker is taken with SET NX so two
    webhooks racing each other enqueue one job. A manual request (Start Training) that joins a
    waiting job marks it manual, so that job does not wait for the retraining cadence.
    ``job_alive(job_id)`` (the queue's answer) lets a request replace a marker whose job vanished
    (drop_vanished_queued_job) instead of joining a job that will never run.
    """
    conn.sadd(projects_key(), int(project_id))
    job_id = new_job_id(project_id)
    for attempt in range(2):
        if conn.eval(
            _QUEUE_OR_MARK_MANUAL,
            2,
            _key(project_id, "queued"),
            _key(project_id, "queued_manual"),
            job_id,
            QUEUED_TTL_S,
            "1" if manual else "0",
        ):
            break
        if (
            attempt == 0
            and job_alive is not None
            and drop_vanished_queued_job(conn, project_id, job_alive) is not None
        ):
            continue  # the manual mark, if any, stays: the job enqueued now inherits it
        existing = conn.get(_key(project_id, "queued"))
        return False, existing.decode() if existing else None
    try:
        enqueue(job_id)
    except Exception:
        conn.delete(_key(project_id, "queued"), _key(project_id, "queued_manual"))
        raise
    update_status(
        conn, project_id, last_queued_job_id=job_id, last_queued_at=now_iso(), last_queued_reason=reason
    )
    return True, job_id


def queued_job(conn: Redis, project_id: int) -> str | None:
    value = conn.get(_key(project_id, "queued"))
    return value.decode() if value else None


def queued_marker_age_s(conn: Redis, project_id: int) -> float | None:
    """Seconds since the queued marker was set (from its remaining time to live); None: no marker."""
    ttl_ms = conn.pttl(_key(project_id, "queued"))
    if ttl_ms == -2:
        return None
    if ttl_ms < 0:  # no expiry (set by hand): old enough to be checked
        return float(QUEUED_TTL_S)
    return QUEUED_TTL_S - ttl_ms / 1000.0


def queued_is_manual(conn: Redis, project_id: int) -> bool:
    """Whether a manual request (Start Training) joined the waiting job."""
    return bool(conn.exists(_key(project_id, "queued_manual")))


def drop_vanished_queued_job(
    conn: Redis, project_id: int, job_alive: Callable[[str], bool], grace_s: float = QUEUED_MARKER_GRACE_S
) -> str | None:
    """Drop the queued marker when the job it names will never start its round: deleted from the
    queue (a dashboard), or its worker was killed between taking it and starting the round.
    ``job_alive(job_id)`` answers from the queue; a marker younger than ``grace_s`` seconds is
    trusted without asking (its job may not be on the queue yet). Returns the dropped job id.

    Without this a vanished job's marker blocks every request (Start Training answers "already
    queued") and the reconciler (the project looks busy) until the marker expires (QUEUED_TTL_S).
    The manual mark stays, so the next job honours a Start Training the vanished job stood for.
    """
    job_id = queued_job(conn, project_id)
    if job_id is None:
        return None
    age = queued_marker_age_s(conn, project_id)
    if age is None or age < grace_s or job_alive(job_id):
        return None
    if conn.eval(_DELETE_IF_EQUAL, 1, _key(project_id, "queued"), job_id):
        update_status(conn, project_id, last_vanished_job={"job_id": job_id, "at": now_iso()})
        return job_id
    return None


class RunLockLost(RuntimeError):
    """The job no longer holds its project's run lock (expired while Redis was unreachable, or
    taken by another worker): it must stop before it pushes or publishes anything."""


class RunLock:
    """The per-project lock a running job holds, renewed by a heartbeat thread."""

    def __init__(self, conn: Redis, project_id: int, job_id: str, ttl_s: int = RUN_LOCK_TTL_S):
        self.conn, self.project_id, self.job_id, self.ttl_s = conn, project_id, job_id, ttl_s
        self.key = _key(project_id, "lock")
        self.manual = True  # set by start_run: False for a purely automatic request

    def acquire(self) -> bool:
        return bool(self.conn.set(self.key, self.job_id, nx=True, ex=self.ttl_s))

    def renew(self) -> bool:
        # only renew our own lock (compare-and-expire in one Lua call)
        return bool(
            self.conn.eval(
                "if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('expire', KEYS[1], ARGV[2]) else return 0 end",
                1,
                self.key,
                self.job_id,
                self.ttl_s,
            )
        )

    def ensure_held(self) -> None:
        """Renew now; raise RunLockLost when the lock is no longer this job's."""
        if not self.renew():
            raise RunLockLost(
                f"project {self.project_id}: job {self.job_id} lost its run lock "
                f"(now held by {running_job(self.conn, self.project_id)!r})"
            )

    def release(self) -> None:
        self.conn.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
            "else return 0 end",
            1,
            self.key,
            self.job_id,
        )


def start_run(
    conn: Redis, project_id: int, job_id: str, ttl_s: int = RUN_LOCK_TTL_S, manual: bool = True
) -> RunLock | None:
    """Called when a job starts. Returns the held lock, or None when another run holds it.

    When another job runs, this one marks a follow-up (the running job enqueues it at its end)
    and gives up, so two jobs of one project never train at once even with several workers.
    ``lock.manual`` tells whether a manual request asked for this job (``manual``, or a Start
    Training that joined it while it was queued).
    """
    lock = RunLock(conn, project_id, job_id, ttl_s)
    # this job is no longer "queued": new triggers from now on enqueue the follow-up
    joined_by_manual = conn.eval(
        _UNQUEUE, 2, _key(project_id, "queued"), _key(project_id, "queued_manual"), job_id
    )
    lock.manual = bool(manual or joined_by_manual)
    if not lock.acquire():
        mark_followup(conn, project_id, lock.manual)
        return None
    return lock


def mark_followup(conn: Redis, project_id: int, manual: bool) -> None:
    """Ask the running round for one follow-up; a manual ask wins over an automatic one."""
    key = _key(project_id, "followup")
    if manual:
        conn.set(key, FOLLOWUP_MANUAL, ex=QUEUED_TTL_S)
    else:
        conn.set(key, FOLLOWUP_AUTOMATIC, nx=True, ex=QUEUED_TTL_S)


def _followup_kind(raw) -> str | None:
    if raw is None:
        return None
    # anything but "automatic" (e.g. the "1" older versions wrote) is honoured at once
    return FOLLOWUP_AUTOMATIC if raw == FOLLOWUP_AUTOMATIC.encode() else FOLLOWUP_MANUAL


def finish_run(conn: Redis, lock: RunLock, request_followup: Callable[[bool], None]) -> bool:
    """Release the lock; if a follow-up was asked for meanwhile, request exactly one:
    ``request_followup(manual)``."""
    lock.release()
    kind = _followup_kind(conn.eval(_TAKE, 1, _key(lock.project_id, "followup")))
    if kind is None:
        return False
    request_followup(kind == FOLLOWUP_MANUAL)
    return True


def take_orphaned_followup(conn: Redis, project_id: int) -> str | None:
    """A follow-up whose run lock holder is gone (killed worker): claim it so it can be requested.
    Returns its kind (FOLLOWUP_MANUAL or FOLLOWUP_AUTOMATIC), None when there is none to claim.

    Normally the lock holder's finish_run requests the follow-up; a SIGKILLed holder never does.
    """
    if running_job(conn, project_id) is not None:
        return None
    return _followup_kind(conn.eval(_TAKE, 1, _key(project_id, "followup")))


# --- the automatic round waiting for the cadence (backend.cadence) -------------------------------
def defer_round(conn: Redis, project_id: int, due_ts: float, reason: str) -> str | None:
    """Record that an automatic round starts at ``due_ts`` (epoch seconds). Returns the
    deferral's token, or None when one is already pending (it covers these annotations too:
    the round it starts lists the project as it is then)."""
    token = uuid.uuid4().hex[:12]
    value = json.dumps(
        {"due_ts": round(float(due_ts), 3), "due_at": iso(due_ts), "reason": reason, "token": token}
    )
    ttl = max(int(due_ts - time.time()), 0) + QUEUED_TTL_S
    if conn.set(_key(project_id, "deferred"), value, nx=True, ex=ttl):
        return token
    return None


def deferred_round(conn: Redis, project_id: int) -> dict | None:
    raw = conn.get(_key(project_id, "deferred"))
    return json.loads(raw) if raw else None


def take_deferral(
    conn: Redis, project_id: int, *, token: str | None = None, due_by: float | None = None
) -> dict | None:
    """Claim the pending deferral, exactly once: the one named by ``token`` (its scheduled job),
    or, without a token, one due at ``due_by`` (the next webhook or the reconciler, for a
    scheduler that did not fire it). None when there is nothing to claim."""
    key = _key(project_id, "deferred")
    raw = conn.get(key)
    if not raw:
        return None
    pending = json.loads(raw)
    if token is not None and pending.get("token") != token:
        return None
    if token is None and (due_by is None or float(pending.get("due_ts", 0)) > due_by):
        return None
    return pending if conn.eval(_DELETE_IF_EQUAL, 1, key, raw) else None


def clear_deferral(conn: Redis, project_id: int) -> None:
    """A round starts: it sees every annotation so far, so a pending deferral is void."""
    conn.delete(_key(project_id, "deferred"))


def running_job(conn: Redis, project_id: int) -> str | None:
    value = conn.get(_key(project_id, "lock"))
    return value.decode() if value else None


# --- visible progress ------------------------------------------------------------------------
def update_status(conn: Redis, project_id: int, **fields) -> None:
    key = _key(project_id, "status")
    conn.hset(key, mapping={k: json.dumps(v) for k, v in fields.items()})


def round_status(conn: Redis, project_id: int) -> Callable[..., None]:
    """A round's status callback: ``update_status``, except that a phase that begins (a ``phase``
    other than the one before) starts with its progress field empty unless the same write fills
    it, so the bar of a phase never shows the counts of an earlier phase or round (scoring shares
    its field with feature extraction; each round reuses the fields of the round before)."""
    announced: list[str | None] = [None]

    def status(**fields) -> None:
        phase = fields.get("phase")
        if phase is not None and phase != announced[0]:
            announced[0] = str(phase)
            if phase in PROGRESS_FIELD:
                fields.setdefault(PROGRESS_FIELD[phase], None)
        update_status(conn, project_id, **fields)

    return status


def get_status(conn: Redis, project_id: int) -> dict:
    raw = conn.hgetall(_key(project_id, "status"))
    out = {k.decode(): json.loads(v) for k, v in raw.items()}
    out["pending_annotation_changes"] = pending_changes(conn, project_id)
    out["queued_job_id"] = queued_job(conn, project_id)
    out["running_job_id"] = running_job(conn, project_id)
    out["next_automatic_round"] = deferred_round(conn, project_id)  # waiting for the cadence
    return out


def remember_round_count(conn: Redis, project_id: int) -> int | None:
    """At the end of a round (done or failed): the count it started from becomes the reference."""
    seen = get_status(conn, project_id).get(LS_COUNT_IN_ROUND)
    if seen is not None:
        update_status(conn, project_id, **{LS_COUNT_AT_LAST_ROUND: seen})
    return seen


def forget_project(conn: Redis, project_id: int) -> int:
    """Drop a project Label Studio deleted: out of the project set, and every key it has
    (status, counters, markers, the task index). Returns how many keys were deleted."""
    conn.srem(projects_key(), int(project_id))
    keys = list(conn.scan_iter(match=f"{PREFIX}:project:{int(project_id)}:*", count=1000))
    return int(conn.delete(*keys)) if keys else 0


def known_projects(conn: Redis) -> list[int]:
    return sorted(int(p) for p in conn.smembers(projects_key()))


def remember_last_seen(conn: Redis, project_id: int, event: str) -> None:
    update_status(conn, project_id, last_event=event, last_event_at=now_iso())
