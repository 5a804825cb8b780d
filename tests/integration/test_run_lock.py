"""A round whose run lock is lost stops before it pushes or publishes (real Redis)."""
import time

import pytest

from backend import jobs, training_state

pytestmark = pytest.mark.redis


def test_the_heartbeat_notices_a_stolen_lock(redis_conn):
    lock = training_state.start_run(redis_conn, 7, "job-a", ttl_s=1)
    heartbeat = jobs._Heartbeat(lock)   # renews every ttl/4 = 0.25 s
    heartbeat.start()
    try:
        # past the lock's own 1 s: only renewals keep it (a missing key has TTL -2, so the check
        # is on the holder and on a TTL refreshed within the last beat or two)
        time.sleep(1.6)
        assert not heartbeat.lost.is_set()
        assert training_state.running_job(redis_conn, 7) == "job-a"
        assert redis_conn.pttl(training_state._key(7, "lock")) > 400   # renewed < 0.6 s ago
        redis_conn.set(training_state._key(7, "lock"), "job-b", ex=60)   # another worker took it
        assert heartbeat.lost.wait(3)
    finally:
        heartbeat.stopped.set()
        heartbeat.join(5)
    assert not heartbeat.is_alive()


def test_guarded_phases_check_the_lock_before_they_run(redis_conn):
    lock = training_state.start_run(redis_conn, 8, "job-a", ttl_s=60)
    heartbeat = jobs._Heartbeat(lock)   # not started: the synchronous check alone is under test
    recorded = []
    status = jobs.guarded_status(lock, heartbeat, lambda **kw: recorded.append(kw))
    status(phase="training")
    status(phase="publishing")
    assert [r["phase"] for r in recorded] == ["training", "publishing"]
    redis_conn.delete(training_state._key(8, "lock"))          # expired while Redis was away
    with pytest.raises(training_state.RunLockLost):
        status(phase="publishing")
    status(phase="scoring")                                    # unguarded: the heartbeat's job
    heartbeat.lost.set()
    with pytest.raises(training_state.RunLockLost):
        status(phase="scoring")
    assert [r["phase"] for r in recorded] == ["training", "publishing", "scoring"]
    # once published, the round finishes its housekeeping instead of reporting a failure
    status(phase="updating_views")
    status(phase="scoring")
    assert [r["phase"] for r in recorded][-2:] == ["updating_views", "scoring"]


def test_a_lock_that_expired_and_was_taken_is_not_renewed(redis_conn):
    lock = training_state.start_run(redis_conn, 9, "job-a", ttl_s=1)
    deadline = time.monotonic() + 5
    while redis_conn.exists(training_state._key(9, "lock")) and time.monotonic() < deadline:
        time.sleep(0.1)
    other = training_state.start_run(redis_conn, 9, "job-b", ttl_s=60)
    assert other is not None
    with pytest.raises(training_state.RunLockLost, match="job-b"):
        lock.ensure_held()
    assert training_state.running_job(redis_conn, 9) == "job-b"   # the new holder keeps it
