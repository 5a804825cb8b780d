"""A round held back (too many tasks unscored by transient image failures) says why in /status
and leaves the live version as it was (real Redis, the real job bookkeeping and /status)."""

import dataclasses
import time

import pytest

from backend import jobs, queueing, training_state
from backend.app import create_app
from backend.constants import RoundState
from backend.converters import TaskPrediction
from backend.model_store import ModelStore
from backend.rounds.summary import RoundSummary, TaskCounts
from backend.settings import Settings, SettingsError

pytestmark = pytest.mark.redis
PROJECT = 12
LIVE = "coldstart-20261207-100000-abcdef"


def test_a_held_back_round_says_why_in_status_and_keeps_the_live_version(redis_conn, tmp_path):
    settings = Settings(model_dir=tmp_path / "models")
    store = ModelStore(settings.model_dir)
    store.save_predictions(PROJECT, LIVE, [(1, TaskPrediction(None, None, 0.0))])
    store.publish(PROJECT, LIVE)
    training_state.count_changes(redis_conn, PROJECT, 0)  # a project the backend knows
    training_state.update_status(redis_conn, PROJECT, state=RoundState.COLD_START, model_version=LIVE)
    reason = (
        "2 of 28 tasks (7.1%) got no score after transient image failures (e.g. "
        "ImageFetchError: image download failed: HTTP 503 (2 attempts)); "
        "PUBLISH_MAX_UNSCORED_SHARE is 1.0%: the previous version stays live"
    )
    summary = RoundSummary(
        RoundState.HELD_BACK,
        TaskCounts(28, 0, {}, 0),
        images={"skipped_tasks": 2},
        reason=reason,
        timings_s={"total_s": 1.0},
    )

    def status(**fields):
        training_state.update_status(redis_conn, PROJECT, **fields)

    result = jobs._record_finished(redis_conn, PROJECT, "job-1", status, summary, time.monotonic())
    assert result["state"] == "held_back" and "model_version" not in result
    app = create_app(settings, store=store, redis_conn=redis_conn).test_client()
    record = app.get("/status").get_json()["projects"][str(PROJECT)]
    assert record["state"] == "held_back" and record["phase"] == "finished"
    assert record["last_summary"]["reason"] == reason
    assert record["model_version"] == LIVE == record["published_version"]


def held_back_summary(transient: int) -> RoundSummary:
    return RoundSummary(
        RoundState.HELD_BACK,
        TaskCounts(28, 0, {}, 0),
        images={"skipped_tasks": 28, "transient_tasks": transient},
        reason="none of the 28 tasks' images could be scored",
    )


def test_a_held_back_round_is_retried_after_the_setting_and_status_says_when(redis_conn, tmp_path):
    settings = Settings(model_dir=tmp_path / "models", held_back_retry_s=900)
    training_state.count_changes(redis_conn, PROJECT, 0)
    before = time.time()
    waiting = jobs.retry_held_back(settings, redis_conn, PROJECT, held_back_summary(28))
    assert waiting is not None and waiting["reason"] == jobs.RETRY_HELD_BACK_REASON
    assert before + 899 <= waiting["due_ts"] <= time.time() + 901
    # the retry is a scheduled automatic round (RQ's scheduler starts it when due)
    registry = queueing.training_queue(settings, redis_conn).scheduled_job_registry
    assert registry.get_job_ids() == [f"round-due-p{PROJECT}-{waiting['token']}"]
    app = create_app(settings, store=ModelStore(settings.model_dir), redis_conn=redis_conn).test_client()
    record = app.get("/status").get_json()["projects"][str(PROJECT)]
    assert record["next_automatic_round"]["due_at"] == waiting["due_at"]
    assert record["next_automatic_round"]["reason"] == jobs.RETRY_HELD_BACK_REASON


@pytest.mark.parametrize(
    "retry_s, transient, state",
    [
        (0, 28, RoundState.HELD_BACK),  # off
        (900, 0, RoundState.HELD_BACK),  # only failures a retry cannot mend (404s)
        (900, 28, RoundState.FAILED),  # not held back
    ],
)
def test_no_retry_when_off_useless_or_not_held_back(redis_conn, tmp_path, retry_s, transient, state):
    settings = Settings(model_dir=tmp_path / "models", held_back_retry_s=retry_s)
    summary = dataclasses.replace(held_back_summary(transient), state=state)
    assert jobs.retry_held_back(settings, redis_conn, PROJECT, summary) is None
    assert training_state.deferred_round(redis_conn, PROJECT) is None
    with pytest.raises(SettingsError, match="HELD_BACK_RETRY_S"):
        Settings.from_env({"HELD_BACK_RETRY_S": "-1"})
