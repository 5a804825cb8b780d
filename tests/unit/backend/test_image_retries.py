"""A round publishes all of its ranking or none of it: image GETs are retried after transient
failures (connection errors, timeouts, 5xx, 429), and a round that still left more than
PUBLISH_MAX_UNSCORED_SHARE of its tasks unscored by such failures keeps the previous version live.

The images come over real HTTP from a fault-injecting stand-in of Label Studio's upload URLs on
loopback, through the real downloader; the rest of the round is the in-process fake of
test_cold_start_round."""

from __future__ import annotations

import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from flask import Flask

from backend.images import FetchReport, ImageFetcher
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.pipeline import run_training_round
from backend.rounds.collect import LabeledSplit
from backend.rounds.score import NothingScored, unscored_reason
from backend.settings import Settings, SettingsError
from tests.conftest import ServerThread
from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient, png

TOKEN = "legacy-token-for-image-faults"


class FlakyUploads:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: Counter = Counter()
        self.down: set[int] = set()  # always 503 (Label Studio restarting)
        self.missing: set[int] = set()  # 404: no retry mends it
        self.flaky: dict[int, list[int]] = {}  # per task, the statuses before a 200, in order
        self.slow_s: dict[int, float] = {}  # the first request of these tasks hangs this long

    def answer(self, task_id: int):
        with self.lock:
            self.requests[task_id] += 1
            first = self.requests[task_id] == 1
            plan = self.flaky.get(task_id)
            fault = plan.pop(0) if plan else None
        if first and task_id in self.slow_s:
            time.sleep(self.slow_s[task_id])
        if task_id in self.missing:
            return "not found", 404
        if task_id in self.down:
            return "restarting", 503
        if fault == 429:
            return "slow down", 429, {"Retry-After": "0"}
        if fault is not None:
            return "server error", fault
        return png(task_id), 200, {"Content-Type": "image/png"}


def make_app(state: FlakyUploads) -> Flask:
    app = Flask("flaky-uploads")

    @app.route("/data/upload/<int:pid>/<int:task_id>.png")
    def upload(pid, task_id):
        return state.answer(task_id)

    return app


@pytest.fixture(scope="module")
def server():
    state = FlakyUploads()
    with ServerThread(make_app(state)) as running:
        running.state = state
        yield running


@pytest.fixture
def uploads(server):
    server.state.__init__()
    return server.state


def fetcher(url: str, retries: int, timeout_s: float = 5.0) -> ImageFetcher:
    downloader = LabelStudioClient(url, TOKEN, retries=0).image_downloader(retries=retries, backoff_s=0.01)
    return ImageFetcher(downloader, None, max_bytes=1_000_000, max_pixels=1_000_000, timeout_s=timeout_s)


def items(task_ids):
    return [(t, f"/data/upload/{PROJECT}/{t}.png") for t in task_ids]


# ----------------------------------------------------------------------------- the retries


def test_transient_failures_are_retried_and_permanent_ones_are_not(server, uploads):
    uploads.flaky = {1: [503, 503], 2: [429], 3: [502, 504, 500]}
    uploads.slow_s = {4: 1.5}  # the first attempt times out
    uploads.missing = {5}
    uploads.down = {6}
    report = FetchReport()
    got = fetcher(server.url, retries=3, timeout_s=0.5).fetch_many(items(range(1, 8)), report)
    assert [tid for tid, _ in got] == [1, 2, 3, 4, 7]
    assert uploads.requests == Counter({1: 3, 2: 2, 3: 4, 4: 2, 5: 1, 6: 4, 7: 1})
    assert set(report.failed) == {5, 6} and report.transient == {6}
    assert "HTTP 404" in report.failed[5]
    assert "HTTP 503" in report.failed[6] and "(4 attempts)" in report.failed[6]


def test_retries_are_bounded_by_the_setting(server, uploads):
    uploads.flaky = {1: [503, 503]}
    report = FetchReport()
    assert fetcher(server.url, retries=1).fetch_many(items([1]), report) == []
    assert uploads.requests[1] == 2 and report.transient == {1}
    assert Settings().image_fetch_retries == 3 and Settings().image_fetch_backoff_s == 1.0
    for env in (
        {"IMAGE_FETCH_RETRIES": "-1"},
        {"IMAGE_FETCH_BACKOFF_S": "-1"},
        {"PUBLISH_MAX_UNSCORED_SHARE": "1.5"},
    ):
        with pytest.raises(SettingsError, match=next(iter(env))):
            Settings.from_env(env)


def test_a_long_outage_stops_the_retries_until_an_image_comes_back(server, uploads):
    down = range(1, 61)
    uploads.down = set(down)
    report = FetchReport()
    one = fetcher(server.url, retries=3)
    assert one.fetch_many(items(down), report) == [] and report.transient == set(down)
    # every image retried would be 240 requests; after OUTAGE_IMAGES images in a row (and those
    # in flight on the other fetch threads) the rest get one attempt each
    assert sum(uploads.requests.values()) < 60 + (16 + one.threads) * 3
    uploads.down = set()
    uploads.flaky = {61: [503], 62: [503]}
    assert [tid for tid, _ in one.fetch_many(items([61]), report)] == []  # no retry yet
    assert [tid for tid, _ in one.fetch_many(items([63]), report)] == [63]  # one came back:
    assert [tid for tid, _ in one.fetch_many(items([62]), report)] == [62]  # retries again
    assert uploads.requests[62] == 2


# ----------------------------------------------------------------------------- the round


class HttpImagesClient(FakeClient):
    """The round's fake client, with its task images over HTTP (the real downloader)."""

    def __init__(self, n_tasks: int, annotated: dict[int, str], url: str):
        super().__init__(n_tasks, annotated)
        self.http = LabelStudioClient(url, TOKEN, retries=0)

    def image_downloader(self, allowed_hosts=(), local_files_root=None, **retry):
        return self.http.image_downloader(allowed_hosts, local_files_root, **retry)

    def add_tasks(self, task_ids):
        self.tasks += [
            {"id": t, "data": {"image": f"/data/upload/{PROJECT}/{t}.png"}, "annotations": []}
            for t in task_ids
        ]


@pytest.fixture
def round_env(server, uploads, tmp_path):
    client = HttpImagesClient(24, {}, server.url)
    settings = Settings(
        model_dir=tmp_path / "models",
        query_batch_size=4,
        seed=0,
        self_supervised_steps=0,
        image_fetch_retries=1,
        image_fetch_backoff_s=0.01,
        image_fetch_timeout_s=5,
    )
    store = ModelStore(settings.model_dir, settings.keep_model_versions)

    def round_(settings=settings):
        return run_training_round(settings, PROJECT, lambda **_: None, client=client, store=store).to_dict()

    first = round_()
    assert first["state"] == "cold_start" and len(client.imported) == 24
    return uploads, client, store, round_, first["model_version"]


def test_a_round_missing_too_many_tasks_keeps_the_previous_version_live(round_env):
    uploads, client, store, round_, first = round_env
    client.add_tasks(range(25, 29))  # uploaded while Label Studio restarts
    uploads.down = {25, 26}  # 2 of 28 tasks: 7 %, above 1 %
    summary = round_()
    assert summary["state"] == "held_back" and "model_version" not in summary
    assert "2 of 28 tasks (7.1%)" in summary["reason"]
    assert "HTTP 503" in summary["reason"] and "PUBLISH_MAX_UNSCORED_SHARE is 1.0%" in summary["reason"]
    assert store.published(PROJECT).version == first
    assert len(client.imported) == 24 and client.patches == [{"model_version": first}]


def test_retries_carry_a_round_through_a_short_outage(round_env):
    uploads, client, store, round_, first = round_env
    client.add_tasks(range(25, 29))
    uploads.flaky = {25: [503], 26: [502], 27: [429]}
    summary = round_()
    assert summary["state"] == "cold_start" and summary["images"]["skipped_tasks"] == 0
    pushed = [p["task"] for p in client.imported if p["model_version"] == summary["model_version"]]
    assert sorted(pushed) == list(range(1, 29))
    assert store.published(PROJECT).version == summary["model_version"] != first


def test_failures_within_the_share_or_that_no_retry_mends_still_publish(round_env):
    uploads, client, store, round_, first = round_env
    client.add_tasks(range(25, 29))
    uploads.missing = {25, 26}  # gone for good: not a reason to hold back
    uploads.down = {27}  # 1 of 28: 3.6 %, within a 5 % setting
    settings = Settings(
        model_dir=store.model_dir,
        query_batch_size=4,
        seed=0,
        self_supervised_steps=0,
        image_fetch_retries=1,
        image_fetch_backoff_s=0.01,
        publish_max_unscored_share=0.05,
    )
    summary = round_(settings)
    assert summary["state"] == "cold_start" and summary["images"]["skipped_tasks"] == 3
    assert store.published(PROJECT).version == summary["model_version"] != first


def test_a_trained_round_missing_too_many_tasks_is_held_back_too(round_env):
    uploads, client, store, round_, first = round_env
    for task in client.tasks[:8]:
        task["annotations"] = [
            {
                "id": task["id"],
                "result": [
                    {
                        "from_name": "digit",
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": [str(task["id"] % 2)]},
                    }
                ],
            }
        ]
    client.add_tasks(range(25, 29))
    uploads.down = {25, 26}
    settings = Settings(
        model_dir=store.model_dir,
        query_batch_size=4,
        seed=0,
        image_size=16,
        train_steps=5,
        self_supervised_steps=0,
        image_fetch_retries=1,
        image_fetch_backoff_s=0.01,
    )
    summary = round_(settings)
    assert summary["state"] == "held_back" and "2 of 28 tasks" in summary["reason"]
    assert store.published(PROJECT).version == first and store.versions(PROJECT) == []


# ----------------------------------------------------------------------------- nothing scored


def no_cache_settings(store: ModelStore, **overrides) -> Settings:
    """The round's settings with an empty image cache, so every image is asked for again."""
    return Settings(
        model_dir=store.model_dir,
        query_batch_size=4,
        seed=0,
        self_supervised_steps=0,
        image_fetch_retries=1,
        image_fetch_backoff_s=0.01,
        image_cache_dir=store.model_dir.parent / "empty-cache",
        **overrides,
    )


@pytest.mark.parametrize("fault", ["down", "missing"])
def test_a_round_that_scores_no_image_is_held_back_like_a_partial_one(round_env, fault):
    uploads, client, store, round_, first = round_env
    client.add_tasks(range(25, 29))
    setattr(uploads, fault, set(range(1, 29)))  # Label Studio restarting, or every image gone
    summary = round_(no_cache_settings(store))
    assert summary["state"] == "held_back" and "model_version" not in summary
    assert summary["reason"].startswith("none of the 28 tasks' images could be scored (28 failed")
    assert ("HTTP 503" if fault == "down" else "HTTP 404") in summary["reason"]
    assert summary["reason"].endswith("the previous version stays live")
    assert store.published(PROJECT).version == first
    assert len(client.imported) == 24 and client.patches == [{"model_version": first}]


def test_nothing_scored_holds_back_a_trained_round_whatever_the_failures():
    report = FetchReport()
    for task_id in (1, 2, 3):
        report.add(task_id, "ImageFetchError: image download failed: HTTP 404")
    split = LabeledSplit([(3, "u3", "a")], [(1, "u1"), (2, "u2")])
    collected = SimpleNamespace(split=split, report=report)
    settings = Settings(publish_max_unscored_share=1.0)
    reason = unscored_reason(settings, collected, [])
    assert reason is not None and reason.startswith("none of the 3 tasks' images")
    assert unscored_reason(settings, collected, [3]) is None  # permanent failures: publishes
    with pytest.raises(NothingScored, match="none of the 3 tasks' images"):
        raise NothingScored(report, 3)
