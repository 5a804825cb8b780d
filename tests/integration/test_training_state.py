"""Coalescing, follow-ups and the run lock against a real Redis server."""

import pytest

from backend import training_state as ts

pytestmark = pytest.mark.redis


def collector():
    jobs = []
    return jobs, jobs.append


def test_triggers_while_queued_coalesce_into_one_job(redis_conn):
    jobs, enqueue = collector()
    first = ts.request_training(redis_conn, 1, "start", enqueue)
    for _ in range(100):  # START_TRAINING spam
        again = ts.request_training(redis_conn, 1, "start", enqueue)
        assert again == (False, first[1])
    assert first[0] and len(jobs) == 1 and jobs[0] == first[1]


def test_a_trigger_during_a_run_schedules_exactly_one_follow_up(redis_conn):
    jobs, enqueue = collector()
    _, job_a = ts.request_training(redis_conn, 1, "start", enqueue)
    lock = ts.start_run(redis_conn, 1, job_a)
    assert lock is not None and ts.running_job(redis_conn, 1) == job_a
    # while A runs, triggers enqueue one new job (B) and coalesce the rest
    for _ in range(10):
        ts.request_training(redis_conn, 1, "annotations", enqueue)
    assert len(jobs) == 2
    job_b = jobs[1]
    # with several workers B may start while A runs: it must not train, only ask a follow-up
    assert ts.start_run(redis_conn, 1, job_b) is None
    followups = []
    assert ts.finish_run(redis_conn, lock, followups.append) is True
    assert followups == [True] and ts.running_job(redis_conn, 1) is None  # a manual ask
    # nothing more is pending after the follow-up was requested
    lock2 = ts.start_run(redis_conn, 1, "next")
    assert ts.finish_run(redis_conn, lock2, followups.append) is False


def test_projects_are_isolated(redis_conn):
    jobs, enqueue = collector()
    assert ts.request_training(redis_conn, 1, "x", enqueue)[0]
    assert ts.request_training(redis_conn, 2, "x", enqueue)[0]
    lock1 = ts.start_run(redis_conn, 1, jobs[0])
    lock2 = ts.start_run(redis_conn, 2, jobs[1])
    assert lock1 and lock2
    ts.count_changes(redis_conn, 1, 3)
    assert ts.pending_changes(redis_conn, 2) == 0
    assert ts.known_projects(redis_conn) == [1, 2]


def test_changes_are_counted_and_taken_at_run_start(redis_conn):
    assert ts.count_changes(redis_conn, 3) == 1
    assert ts.count_changes(redis_conn, 3, 4) == 5
    assert ts.take_changes(redis_conn, 3) == 5
    assert ts.pending_changes(redis_conn, 3) == 0


def test_a_dead_runs_lock_expires_and_only_the_owner_renews_or_releases(redis_conn):
    lock = ts.RunLock(redis_conn, 9, "job-a", ttl_s=1)
    assert lock.acquire()
    other = ts.RunLock(redis_conn, 9, "job-b", ttl_s=1)
    assert not other.acquire() and not other.renew()
    other.release()  # must not free job-a's lock
    assert ts.running_job(redis_conn, 9) == "job-a"
    import time

    time.sleep(1.3)  # job-a's worker died: no heartbeat
    assert other.acquire()


def test_failed_enqueue_leaves_no_queued_marker(redis_conn):
    def broken(job_id):
        raise RuntimeError("queue down")

    with pytest.raises(RuntimeError):
        ts.request_training(redis_conn, 5, "x", broken)
    jobs, enqueue = collector()
    assert ts.request_training(redis_conn, 5, "x", enqueue)[0]


def test_status_is_visible(redis_conn):
    ts.update_status(redis_conn, 4, state="running", metrics={"acc": 0.9})
    status = ts.get_status(redis_conn, 4)
    assert status["state"] == "running" and status["metrics"] == {"acc": 0.9}
    assert status["pending_annotation_changes"] == 0


def test_a_phase_that_begins_shows_none_of_an_earlier_phases_counts(redis_conn):
    """Seen in a real round: as the next round began training, its bar read the last round's
    "147 of 150 epochs" until the first epoch ended; scoring showed feature extraction's count."""
    from backend.dashboard_data import round_in_progress

    ts.update_status(
        redis_conn,
        5,
        training_progress={"step": 147, "steps": 150, "seconds": 160},
        scoring_progress={"done": 300, "total": 300},
    )  # what a round left
    assert ts.RunLock(redis_conn, 5, "train-p5-next").acquire()
    status = ts.round_status(redis_conn, 5)
    status(state="running", phase="training")

    def training_bar() -> dict:
        running = round_in_progress(ts.get_status(redis_conn, 5))
        assert running is not None
        return next(b for b in running["bars"] if b["phase"] == "training")

    assert ts.get_status(redis_conn, 5)["training_progress"] is None
    assert training_bar()["state"] == "now" and training_bar()["text"] == ""
    assert training_bar()["left_s"] is None
    status(phase="training", training_progress={"step": 3, "steps": 150, "seconds": 3})
    status(phase="training", pool_consistency_progress={"images_loaded": 10})  # same phase
    assert training_bar()["text"] == "3 of 150 steps"
    # feature extraction and scoring share a field: scoring starts from nothing
    status(phase="extracting_features", scoring_progress={"done": 300, "total": 300})
    status(phase="scoring")
    assert ts.get_status(redis_conn, 5)["scoring_progress"] is None
    status(phase="scoring", scoring_progress={"done": 20, "total": 300})
    assert ts.get_status(redis_conn, 5)["scoring_progress"] == {"done": 20, "total": 300}
