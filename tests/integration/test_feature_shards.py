"""A round's feature extraction split into shards over several RQ workers (backend/feature_shards.py).

Real parts: a Redis server, RQ workers as subprocesses (``python -m backend.worker``, which forks a
work horse per job), a Flask STAND-IN for Label Studio over loopback HTTP serving real PNG images,
and the project's on-disk feature cache shared through MODEL_DIR. The stand-in holds back chosen
images until a condition on the board in Redis holds, so the interleaving a test needs (two
workers each holding a shard, a worker killed while it holds one) happens every run instead of
by luck of timing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from flask import Flask, jsonify, request
from rq import Queue, SimpleWorker, Worker
from rq.registry import FinishedJobRegistry

from backend import queueing, training_state
from backend.feature_round import extract_into_cache, feature_cache_for, pooled_features
from backend.feature_shards import BOARD_PREFIX, FeatureSharding, split_into_shards
from backend.image_scoring import image_fetcher
from backend.images import FetchReport
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.rounds.configs import model_config_from
from backend.settings import Settings
from model.config import ModelConfig
from model.feature_cache import MAX_SHARDS, FeatureCache
from model.feature_keys import item_key
from model.frozen import PooledFeatures
from model.networks import build_classifier, build_network
from tests.conftest import REPO_ROOT, ServerThread
from tests.integration.worker_processes import kill_tree, start_worker, wait_for
from tests.unit.backend.test_cold_start_round import png
from tests.unit.backend.test_labeling_config import DIGITS

pytestmark = pytest.mark.redis
PROJECT = 23
GATE_TIMEOUT_S = 120


# ----------------------------------------------------------------------------- pure


def test_shards_partition_the_items_in_order():
    items = [(i, f"/data/upload/{PROJECT}/{i}.png") for i in range(1, 24)]
    shards = split_into_shards(items, 5)
    assert [len(s) for s in shards] == [5, 5, 5, 5, 3]
    assert [item for shard in shards for item in shard] == items  # each once, in order
    assert split_into_shards([], 5) == []
    with pytest.raises(ValueError):
        split_into_shards(items, 0)


# ----------------------------------------------------------------------------- the feature cache


def _rows(keys: list[str], seed: int) -> PooledFeatures:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((len(keys), 6 + 4)).astype(np.float32)
    return PooledFeatures.from_matrix(matrix, [2, 4], 4)


def _expected_row(writer: int, put: int) -> np.ndarray:
    return _rows([f"w{writer}-p{put}-{k}" for k in range(5)], seed=writer * 1000 + put).to_matrix()


def _writer(root: str, key: str, writer: int, puts: int, start) -> None:
    cache = FeatureCache(root, key)
    start.wait(30)
    for put in range(puts):
        keys = [f"w{writer}-p{put}-{k}" for k in range(5)]
        cache.put_many(keys, _rows(keys, seed=writer * 1000 + put))


def test_feature_cache_takes_concurrent_writers_in_separate_processes(tmp_path):
    """Four processes put different keys at once, past MAX_SHARDS (so compactions run while the
    others write): every row of every writer is there afterwards, intact."""
    writers, puts = 4, 24
    assert writers * puts > MAX_SHARDS
    context = multiprocessing.get_context("fork")
    start = context.Barrier(writers)
    processes = [
        context.Process(target=_writer, args=(str(tmp_path), "small_cnn-0123456789abcdef", w, puts, start))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    cache = FeatureCache(tmp_path, "small_cnn-0123456789abcdef")
    assert len(cache) == writers * puts * 5
    for writer in range(writers):
        for put in range(puts):
            found, missing = cache.get_many([f"w{writer}-p{put}-{k}" for k in range(5)])
            assert not missing and found is not None
            np.testing.assert_array_equal(found.to_matrix(), _expected_row(writer, put))
    shard_files = list((cache.directory / "shards").iterdir())
    assert len(shard_files) <= MAX_SHARDS + 1 and not [p for p in shard_files if p.name.startswith(".")]


# ----------------------------------------------------------------------------- a stand-in server


class StandIn:
    """Label Studio's calls a round makes; images of ``held`` tasks wait for ``release``."""

    def __init__(self, n_tasks: int, labeled: dict[int, str]):
        self.n_tasks, self.labeled = n_tasks, labeled
        self.held: set[int] = set()
        self.changed = threading.Condition()
        self.patched_at: list[float] = []
        self.imported: list[dict] = []

    def hold(self, task_ids) -> None:
        with self.changed:
            self.held = set(task_ids)
            self.changed.notify_all()


def standin_app(state: StandIn) -> Flask:
    app = Flask("label-studio-standin")

    def task(task_id: int) -> dict:
        annotations = []
        if task_id in state.labeled:
            annotations = [
                {
                    "id": task_id,
                    "result": [
                        {
                            "from_name": "digit",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [state.labeled[task_id]]},
                        }
                    ],
                }
            ]
        return {
            "id": task_id,
            "data": {"image": f"/data/upload/{PROJECT}/{task_id}.png"},
            "annotations": annotations,
        }

    pointer: dict = {}  # what the PATCHes set (model_version), answered like Label Studio

    @app.route(f"/api/projects/{PROJECT}/", methods=["GET", "PATCH"])
    def project():
        if request.method == "PATCH":
            state.patched_at.append(time.time())
            pointer.update(request.get_json())
        return jsonify(
            {
                **pointer,
                "id": PROJECT,
                "label_config": DIGITS.replace('<Choice value="2" alias="two"/>', ""),
                "num_tasks_with_annotations": len(state.labeled),
            }
        )

    @app.route("/api/tasks/")
    def tasks():
        return jsonify([task(i) for i in range(1, state.n_tasks + 1)])

    @app.route(f"/data/upload/{PROJECT}/<int:task_id>.png")
    def image(task_id):
        with state.changed:
            state.changed.wait_for(lambda: task_id not in state.held, timeout=GATE_TIMEOUT_S)
        return app.response_class(png(task_id), mimetype="image/png")

    @app.route(f"/api/projects/{PROJECT}/import/predictions", methods=["POST"])
    def import_predictions():
        body = request.get_json()
        state.imported.extend(body)
        return jsonify({"created": len(body)}), 201

    @app.route("/api/dm/views/", methods=["GET", "POST"])
    def views():
        return jsonify([] if request.method == "GET" else {"id": 1})

    return app


def board(conn) -> tuple[dict[int, str], dict[int, list[int]], int]:
    """The board in Redis now: shard -> who claimed it last, shard -> its task ids, shards done
    (all empty while there is none)."""
    plans = list(conn.scan_iter(f"{BOARD_PREFIX}:*:plan"))
    if not plans:
        return {}, {}, 0
    prefix = plans[0].decode()[: -len(":plan")]
    holders = {int(k): v.decode() for k, v in conn.hgetall(f"{prefix}:claimed_by").items()}
    items = {int(k): [tid for tid, _ in json.loads(v)] for k, v in conn.hgetall(f"{prefix}:items").items()}
    return holders, items, int(conn.hlen(f"{prefix}:done"))


def in_background(*stages) -> threading.Thread:
    """Run each (condition, action) in turn: the action once its condition holds, or after
    GATE_TIMEOUT_S (the test's assertions then fail with a reason, instead of hanging)."""

    def run():
        for condition, action in stages:
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while time.monotonic() < deadline and not condition():
                time.sleep(0.05)
            action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def shard_jobs_holding(conn) -> dict[int, str]:
    """Shards whose last claim is a shard job's (another worker's), and not done."""
    holders, _, _ = board(conn)
    return {i: token for i, token in holders.items() if token.startswith("shard-job")}


def hold_back_other_workers_shards(state: StandIn, conn, n_shards: int, workers: int) -> None:
    """Every image waits until ``workers`` shard jobs each hold a shard; then the images of
    those shards wait until the round has done every other shard, so those shards end last,
    while the round waits for them."""
    taken: dict[int, str] = {}

    def held_by_others() -> bool:
        taken.update(shard_jobs_holding(conn))
        return len(set(taken.values())) >= workers

    def keep_theirs() -> None:
        _, items, _ = board(conn)
        state.hold(tid for i in taken for tid in items.get(i, []))

    in_background(
        (held_by_others, keep_theirs),
        (lambda: board(conn)[2] >= n_shards - len(taken), lambda: state.hold(())),
    )


# ----------------------------------------------------------------------------- workers


def pretrained_file(path: Path, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    net = build_classifier(ModelConfig(backbone="small_cnn", image_size=16), num_classes=2)
    torch.save(net.state_dict(), path)
    return path


def worker_env(redis_url: str, tmp_path: Path, ls_url: str, queue_name: str, **extra) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "REDIS_URL": redis_url,
        "QUEUE_NAME": queue_name,
        "MODEL_DIR": str(tmp_path / "models"),
        "IMAGE_CACHE_DIR": str(tmp_path / "image-cache"),
        "LABEL_STUDIO_URL": ls_url,
        "LABEL_STUDIO_API_KEY": "legacy-shard-test",
        "LABEL_STUDIO_RETRIES": "0",
        "DEVICE": "cpu",
        "IMAGE_SIZE": "16",
        "PRETRAINED_WEIGHTS": str(pretrained_file(tmp_path / "backbone.pt")),
        "IMAGE_FETCH_TIMEOUT_S": str(GATE_TIMEOUT_S + 30),
        "RECONCILE_INTERVAL_S": "0",
        "RETRAIN_AFTER_ANNOTATIONS": "1000",
        "TRAIN_EPOCHS": "1",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def kill_worker(process: subprocess.Popen) -> None:
    kill_tree(process)
    process.wait(10)


def stop(process: subprocess.Popen) -> None:
    """Warm shutdown (SIGTERM: RQ finishes the current job), then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            kill_worker(process)


# ----------------------------------------------------------------------------- the round's side


class RoundSide:
    """What a round has when it reaches feature extraction: backbone, fetcher, cache, items."""

    def __init__(self, env: dict, n_items: int):
        self.settings = Settings.from_env(env)
        self.config = model_config_from(self.settings)
        self.model = build_network(self.config, num_classes=2)
        store = ModelStore(self.settings.model_dir)
        self.cache = feature_cache_for(store.project_dir(PROJECT) / "features", self.model, self.config)
        self.client = LabelStudioClient.from_settings(self.settings)
        self.fetcher = image_fetcher(self.settings, self.client, self.config.image_size)
        self.items = [(i, f"/data/upload/{PROJECT}/{i}.png") for i in range(1, n_items + 1)]

    def reference(self, tmp_path: Path) -> np.ndarray:
        """The items' features extracted in one process, unsharded, into a cache of its own."""
        cache = FeatureCache(tmp_path / "reference", self.cache.key)
        # an image cache of its own: the sharded run downloads every image through the stand-in
        fetcher = image_fetcher(
            replace(self.settings, image_cache_dir=tmp_path / "ref-images"),
            self.client,
            self.config.image_size,
        )
        extract_into_cache(
            self.model,
            self.config,
            self.items,
            fetcher,
            cache,
            FetchReport(),
            device="cpu",
            batch_size=self.settings.score_batch_size,
        )
        found, missing = cache.get_many([item_key(t, u) for t, u in self.items])
        assert not missing and found is not None
        return found.to_matrix()

    def sharding(
        self, conn, shard_images: int, other_workers: int, events: list, lease_s: float = 60.0
    ) -> FeatureSharding:
        return FeatureSharding(
            conn,
            PROJECT,
            shard_images,
            job_timeout_s=600,
            enqueue=lambda board, count: queueing.enqueue_feature_shards(self.settings, conn, board, count),
            other_workers=lambda: other_workers,
            status=lambda **kw: events.append(kw),
            lease_s=lease_s,
            poll_s=0.1,
        )

    def pooled(self, sharding: FeatureSharding, report: FetchReport):
        return pooled_features(
            self.model,
            self.config,
            self.items,
            self.fetcher,
            self.cache,
            report,
            device="cpu",
            batch_size=self.settings.score_batch_size,
            sharding=sharding,
        )


def stored_rows(cache: FeatureCache) -> int:
    """Rows written to the cache's shard files: one per put row (no compaction under MAX_SHARDS),
    so it equals the number of items only when no item went through a backbone twice."""
    return cache.stored_rows()


def test_two_workers_extract_every_task_exactly_once_with_the_features_of_one(
    redis_server, redis_conn, tmp_path
):
    state = StandIn(40, {})
    with ServerThread(standin_app(state)) as ls:
        env = worker_env(redis_server, tmp_path, ls.url, f"shards-{os.getpid()}")
        round_side = RoundSide(env, 40)
        reference = round_side.reference(tmp_path)
        state.hold(range(1, 41))  # from here every image waits (see below)
        logs = tmp_path / "workers.log"
        workers = [start_worker(env, logs) for _ in range(2)]
        try:
            queue = Queue(env["QUEUE_NAME"], connection=redis_conn)
            wait_for(
                lambda: Worker.count(connection=redis_conn, queue=queue) == 2,
                60,
                "both workers to register",
                logs,
            )
            # both workers take part, and the round has to wait for their shards
            hold_back_other_workers_shards(state, redis_conn, n_shards=10, workers=2)
            events: list = []
            sharding = round_side.sharding(redis_conn, shard_images=4, other_workers=2, events=events)
            report = FetchReport()
            ids, features, extracted = round_side.pooled(sharding, report)
        finally:
            for worker in workers:
                stop(worker)

        assert report.failed == {}
        assert ids == list(range(1, 41)) and features is not None  # none missing, in order
        np.testing.assert_allclose(features.to_matrix(), reference, rtol=1e-5, atol=1e-6)
        shards = sharding.last
        assert shards["shards"] == shards["done"] == 10 and shards["shard_jobs_queued"] == 2
        assert shards["by_other_workers"] >= 2 and shards["reclaimed"] == 0, shards
        # none duplicated: 40 images through a backbone in all, 40 rows written to the cache
        assert extracted == 40 and stored_rows(round_side.cache) == 40
        helpers = FinishedJobRegistry(queue=queue)
        results = [queue.fetch_job(job_id).return_value() for job_id in helpers.get_job_ids()]
        helper_shards = [i for result in results for i in result["shards"]]
        assert len(results) == 2 and all(result["shards"] for result in results), results
        assert len(helper_shards) == len(set(helper_shards)) == shards["by_other_workers"]
        # the board and the cache directory's marker are gone once the round has its rows
        assert not list(redis_conn.scan_iter(f"{BOARD_PREFIX}:*"))
        assert not [p for p in round_side.cache.directory.iterdir() if p.name.startswith(".shard")]
        assert any("feature_shards" in event for event in events)


def test_one_worker_does_not_wait_for_shard_jobs_nobody_runs(redis_server, redis_conn, tmp_path):
    """The round queues a shard job, but no other worker is free: it works every shard itself;
    the job, run later, finds its board gone and does nothing."""
    state = StandIn(12, {})
    with ServerThread(standin_app(state)) as ls:
        env = worker_env(redis_server, tmp_path, ls.url, f"alone-{os.getpid()}")
        round_side = RoundSide(env, 12)
        events: list = []
        sharding = round_side.sharding(redis_conn, shard_images=3, other_workers=1, events=events)
        started = time.monotonic()
        ids, features, extracted = round_side.pooled(sharding, FetchReport())
        assert time.monotonic() - started < 60
        assert ids == list(range(1, 13)) and extracted == 12
        assert sharding.last["shards"] == sharding.last["done"] == 4
        assert sharding.last["by_other_workers"] == 0 and sharding.last["shard_jobs_queued"] == 1
        queue = Queue(env["QUEUE_NAME"], connection=redis_conn)
        assert queue.count == 1
        SimpleWorker([queue], connection=redis_conn).work(burst=True)
        (job_id,) = FinishedJobRegistry(queue=queue).get_job_ids()
        assert queue.fetch_job(job_id).return_value()["state"] == "nothing to do"
        # below one shard's worth nothing is split (no board, no job)
        small = round_side.sharding(redis_conn, shard_images=12, other_workers=1, events=[])
        assert not small.splits(12) and small.splits(13)


def test_a_shard_abandoned_by_a_killed_worker_is_done_again(redis_server, redis_conn, tmp_path):
    state = StandIn(16, {})
    with ServerThread(standin_app(state)) as ls:
        env = worker_env(redis_server, tmp_path, ls.url, f"dead-{os.getpid()}")
        round_side = RoundSide(env, 16)
        reference = round_side.reference(tmp_path)
        state.hold(range(1, 17))
        logs = tmp_path / "worker.log"
        worker = start_worker(env, logs)
        try:
            queue = Queue(env["QUEUE_NAME"], connection=redis_conn)
            wait_for(
                lambda: Worker.count(connection=redis_conn, queue=queue) == 1,
                60,
                "the worker to register",
                logs,
            )
            # the worker is SIGKILLed (with its work horse) while it holds a shard
            in_background(
                (lambda: shard_jobs_holding(redis_conn), lambda: (kill_worker(worker), state.hold(())))
            )
            sharding = round_side.sharding(
                redis_conn, shard_images=4, other_workers=1, events=[], lease_s=2.0
            )
            report = FetchReport()
            ids, features, extracted = round_side.pooled(sharding, report)
        finally:
            if worker.poll() is None:
                kill_worker(worker)
        assert worker.returncode == -signal.SIGKILL, logs.read_text()[-3000:]
        assert report.failed == {} and ids == list(range(1, 17)) and features is not None
        np.testing.assert_allclose(features.to_matrix(), reference, rtol=1e-5, atol=1e-6)
        assert sharding.last["reclaimed"] == 1 and sharding.last["by_other_workers"] == 0
        assert extracted == 16 and stored_rows(round_side.cache) == 16


# ----------------------------------------------------------------------------- a whole round


def test_a_round_publishes_only_after_the_last_shard(redis_server, redis_conn, tmp_path):
    """A real round job on one worker, a second worker taking a shard job: the version is
    switched (Label Studio's model_version PATCHed, the store's pointer published) after every
    shard is done, the other worker's included."""
    labeled = {i: str(i % 2) for i in range(1, 9)}
    state = StandIn(12, labeled)
    with ServerThread(standin_app(state)) as ls:
        env = worker_env(
            redis_server,
            tmp_path,
            ls.url,
            f"round-{os.getpid()}",
            FEATURE_SHARD_IMAGES="2",
            TRAIN_MODE="frozen",
        )
        settings = Settings.from_env(env)
        # the pool lists unlabeled tasks first: tasks 9-12 make the first two shards; their
        # images wait until the other worker's shard job holds one, which then ends last
        state.hold({9, 10, 11, 12})
        hold_back_other_workers_shards(state, redis_conn, n_shards=6, workers=1)
        logs = tmp_path / "workers.log"
        queue = Queue(settings.queue_name, connection=redis_conn)
        workers = [start_worker(env, logs) for _ in range(2)]
        try:
            wait_for(
                lambda: Worker.count(connection=redis_conn, queue=queue) == 2,
                60,
                "both workers to register",
                logs,
            )
            enqueued, job_id = queueing.request_training(settings, redis_conn, PROJECT, "shards")
            assert enqueued
            job = wait_for(
                lambda: (
                    (j := queue.fetch_job(job_id)) is not None
                    and j.get_status() in ("finished", "failed")
                    and j
                ),
                240,
                "the round to end",
                logs,
            )
        finally:
            for worker in workers:
                stop(worker)
        assert job.get_status() == "finished", logs.read_text()[-4000:]
        summary = job.return_value()
        assert summary["state"] == "done" and summary["metrics"]["mode"] == "frozen"
        assert summary["metrics"]["features_extracted"] == 12
        assert summary["predictions_pushed"] == 12
        status = training_state.get_status(redis_conn, PROJECT)
        shards = status["feature_shards"]
        assert shards["shards"] == shards["done"] == 6 and shards["by_other_workers"] >= 1, shards
        helper_results = [
            queue.fetch_job(j).return_value()
            for j in FinishedJobRegistry(queue=queue).get_job_ids()
            if j != job_id
        ]
        assert [r for r in helper_results if r and r.get("shards")], helper_results
        # the switch comes after the last shard (last_done_ts: the latest of every shard's end,
        # the other worker's included)
        assert len(state.patched_at) == 1
        assert state.patched_at[0] > shards["last_done_ts"]
        published = ModelStore(settings.model_dir).published(PROJECT)
        assert published is not None and published.version == summary["model_version"]
