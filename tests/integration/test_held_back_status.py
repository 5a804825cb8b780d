"""A round held back (too many tasks unscored by transient image failures) says why in /status
and leaves the live version as it was (real Redis, the real job bookkeeping and /status)."""
import time

import pytest

from backend import jobs, training_state
from backend.app import create_app
from backend.converters import TaskPrediction
from backend.defaults import RoundState
from backend.model_store import ModelStore
from backend.rounds.summary import RoundSummary, TaskCounts
from backend.settings import Settings

pytestmark = pytest.mark.redis
PROJECT = 12
LIVE = "coldstart-20261207-100000-abcdef"


def test_a_held_back_round_says_why_in_status_and_keeps_the_live_version(redis_conn, tmp_path):
    settings = Settings(model_dir=tmp_path / "models")
    store = ModelStore(settings.model_dir)
    store.save_predictions(PROJECT, LIVE, [(1, TaskPrediction(None, None, 0.0))])
    store.publish(PROJECT, LIVE)
    training_state.count_changes(redis_conn, PROJECT, 0)   # a project the backend knows
    training_state.update_status(redis_conn, PROJECT, state=RoundState.COLD_START,
                                 model_version=LIVE)
    reason = ("2 of 28 tasks (7.1%) got no score after transient image failures (e.g. "
              "ImageFetchError: image download failed: HTTP 503 (2 attempts)); "
              "PUBLISH_MAX_UNSCORED_SHARE is 1.0%: the previous version stays live")
    summary = RoundSummary(RoundState.HELD_BACK, TaskCounts(28, 0, {}, 0),
                           images={"skipped_tasks": 2}, reason=reason, timings_s={"total_s": 1.0})

    def status(**fields):
        training_state.update_status(redis_conn, PROJECT, **fields)

    result = jobs._record_finished(redis_conn, PROJECT, "job-1", status, summary,
                                   time.monotonic())
    assert result["state"] == "held_back" and "model_version" not in result
    app = create_app(settings, store=store, redis_conn=redis_conn).test_client()
    record = app.get("/status").get_json()["projects"][str(PROJECT)]
    assert record["state"] == "held_back" and record["phase"] == "finished"
    assert record["last_summary"]["reason"] == reason
    assert record["model_version"] == LIVE == record["published_version"]
