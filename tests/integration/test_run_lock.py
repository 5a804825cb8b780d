"""A round whose run lock is lost stops before it pushes or publishes (real Redis)."""

import time

import pytest

from backend import jobs, training_state

pytestmark = pytest.mark.redis


def test_the_heartbeat_notices_a_stolen_lock(redis_conn):
    lock = training_state.start_run(redis_conn, 7, "job-a", ttl_s=1)
    heartbeat = jobs._Heartbeat(lock)  # renews every ttl/4 = 0.25 s
    heartbeat.start()
    try:
        # past the lock's own 1 s: only renewals keep it (a missing key has TTL -2, so the check
        # is on the holder and on a TTL refreshed within the last beat or two)
        time.sleep(1.6)
        assert not heartbeat.lost.is_set()
        assert training_state.running_job(redis_conn, 7) == "job-a"
        assert redis_conn.pttl(training_state._key(7, "lock")) > 400  # renewed < 0.6 s ago
        redis_conn.set(training_state._key(7, "lock"), "job-b", ex=60)  # another worker took it
        assert heartbeat.lost.wait(3)
    finally:
        heartbeat.stopped.set()
        heartbeat.join(5)
    assert not heartbeat.is_alive()


def test_guarded_phases_check_the_lock_before_they_run(redis_conn):
    lock = training_state.start_run(redis_conn, 8, "job-a", ttl_s=60)
    heartbeat = jobs._Heartbeat(lock)  # not started: the synchronous check alone is under test
    recorded = []
    status = jobs.guarded_status(lock, heartbeat, lambda **kw: recorded.append(kw))
    status(phase="training")
    status(phase="publishing")
    assert [r["phase"] for r in recorded] == ["training", "publishing"]
    redis_conn.delete(training_state._key(8, "lock"))  # expired while Redis was away
    with pytest.raises(training_state.RunLockLost):
        status(phase="publishing")
    status(phase="scoring")  # unguarded: the heartbeat's job
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
    assert training_state.running_job(redis_conn, 9) == "job-b"  # the new holder keeps it


def test_every_publish_checks_the_lock_not_only_the_first(redis_conn):
    lock = training_state.start_run(redis_conn, 10, "job-a", ttl_s=60)
    heartbeat = jobs._Heartbeat(lock)  # not started: the synchronous check alone is under test
    recorded = []
    status = jobs.guarded_status(lock, heartbeat, lambda **kw: recorded.append(kw))
    for phase in (
        "pushing_predictions",
        "publishing",
        "updating_views",
        "self_supervised_pretraining",
        "cold_start_ranking",
    ):
        status(phase=phase)  # a first publish, then more work
    redis_conn.set(training_state._key(10, "lock"), "job-b", ex=60)  # another worker took it
    with pytest.raises(training_state.RunLockLost, match="job-b"):
        status(phase="pushing_predictions")  # the second push is refused
    with pytest.raises(training_state.RunLockLost):
        status(phase="publishing")
    assert "publishing" not in [r["phase"] for r in recorded][2:]


def test_a_cold_start_that_lost_its_lock_never_publishes_its_second_ranking(redis_conn, tmp_path):
    """A cold start pushes a pixel ranking, learns the project's weights, then pushes again: a
    worker that lost the lock meanwhile must not publish over the newer holder's version."""
    from backend.model_store import ModelStore
    from backend.pipeline import run_training_round
    from backend.settings import Settings
    from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient

    settings = Settings(
        model_dir=tmp_path / "models",
        query_batch_size=4,
        seed=0,
        keep_prediction_versions=1,
        self_supervised_steps=4,
    )
    store = ModelStore(settings.model_dir, settings.keep_model_versions)
    client = FakeClient(24, {})
    lock = training_state.start_run(redis_conn, PROJECT, "job-a", ttl_s=60)
    heartbeat = jobs._Heartbeat(lock)  # not started: the check before each publish is under test
    phases = []

    def update(**fields):
        phases.append(fields.get("phase"))
        if fields.get("phase") == "self_supervised_pretraining":  # minutes, in real life
            redis_conn.set(training_state._key(PROJECT, "lock"), "job-b", ex=60)

    with pytest.raises(training_state.RunLockLost, match="job-b"):
        run_training_round(
            settings, PROJECT, jobs.guarded_status(lock, heartbeat, update), client=client, store=store
        )
    first = {p["model_version"] for p in client.imported}
    assert len(first) == 1 and len(client.imported) == 24  # the first ranking only
    assert client.patches == [{"model_version": first.pop()}]
    assert store.published(PROJECT).version == client.patches[0]["model_version"]
    assert phases.count("publishing") == 1
