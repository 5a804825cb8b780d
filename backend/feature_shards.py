"""A round's feature extraction split into shards over every RQ worker of the queue.

The backbone pass over images missing from the feature cache (TRAIN_MODE frozen, a cold start on
a learned backbone) is the one part of a round whose cost grows with the number of new images. With
more missing images than FEATURE_SHARD_IMAGES, the round job:

1. splits them into shards of FEATURE_SHARD_IMAGES and publishes them on a *board* in Redis (keys
   ``al:feature-shards:<board id>:*``) with a plan: the project, the model config as JSON, the
   backbone key of the feature cache, the image fetcher's limits, the batch size and the claim
   lease -- plain data, never pickled torch objects;
2. queues one shard job (``backend.jobs.run_feature_shard_job``) per other worker listening on
   the queue, at the front of the queue;
3. works shards itself like any shard job: claims the lowest shard nobody holds (one Lua script:
   atomic), extracts its images into the project's feature cache, marks it done;
4. once no shard is left to claim, waits for the shards other workers hold. A claim is a Redis
   key with a lease (FEATURE_SHARD_LEASE_S) that its holder's thread renews; when a worker dies
   its claim lapses and the shard is claimed again (by the round itself at the latest). So the
   round never waits for a job nobody runs, and a single worker never deadlocks;
5. reads every row back from the cache. Whatever a shard left missing (a worker's write lost) is
   extracted here. The version switch comes later in the round, so after the last shard.

A shard job builds the backbone itself from the plan and refuses to work (before claiming) when its
weights give another backbone key than the round's (another weights file on that machine), or when
it cannot see the round's feature cache directory (MODEL_DIR not shared). An image that cannot be
fetched is recorded on the board with its reason and reported in the round's FetchReport as today;
a shard job that crashes leaves its shard to be claimed again once the lease lapses.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

from redis import Redis

from backend.defaults import FEATURE_SHARD_LEASE_S, FEATURE_SHARD_POLL_S
from backend.feature_round import extract_into_cache
from backend.images import FetchReport, ImageFetcher
from backend.settings import Settings
from model.config import ModelConfig
from model.feature_cache import FeatureCache
from model.networks import LossLearningNet

log = logging.getLogger(__name__)
BOARD_PREFIX = "al:feature-shards"
StatusCallback = Callable[..., None]
Items = list[tuple[int, str]]


class ShardLost(RuntimeError):
    """This worker's claim on a shard lapsed (another worker holds it now) or the board is gone."""


def split_into_shards(items: Items, shard_images: int) -> list[Items]:
    """Consecutive shards of at most ``shard_images`` items: each item in exactly one shard."""
    if shard_images < 1:
        raise ValueError(f"shard_images must be >= 1, got {shard_images}")
    return [items[start:start + shard_images] for start in range(0, len(items), shard_images)]


def worker_token(role: str) -> str:
    """Who holds a claim, for the board and the logs: role, host, process, a random suffix."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# KEYS: none (every key is under the board's prefix, ARGV[1]). The board's other keys expire with
# its plan: each write copies the plan's remaining lifetime.
_CLAIM = """
local prefix, n, token, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl = redis.call('pttl', prefix .. ':plan')
if ttl <= 0 then return -2 end
for i = 0, n - 1 do
  if redis.call('hexists', prefix .. ':done', i) == 0 then
    if redis.call('set', prefix .. ':claim:' .. i, token, 'NX', 'PX', lease) then
      redis.call('hincrby', prefix .. ':claims', i, 1)
      redis.call('hset', prefix .. ':claimed_by', i, token)
      redis.call('pexpire', prefix .. ':claims', ttl)
      redis.call('pexpire', prefix .. ':claimed_by', ttl)
      return i
    end
  end
end
return -1
"""
_RENEW = """
if redis.call('get', ARGV[1] .. ':claim:' .. ARGV[2]) == ARGV[3] then
  return redis.call('pexpire', ARGV[1] .. ':claim:' .. ARGV[2], ARGV[4])
end
return 0
"""
_FINISH = """
local prefix, i, token, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = redis.call('pttl', prefix .. ':plan')
if ttl <= 0 then return 0 end
local first = redis.call('hsetnx', prefix .. ':done', i, record)
redis.call('pexpire', prefix .. ':done', ttl)
if redis.call('get', prefix .. ':claim:' .. i) == token then
  redis.call('del', prefix .. ':claim:' .. i)
end
return first
"""


class ShardBoard:
    """One round's shards in Redis: the plan, each shard's items, claims, progress, results."""

    def __init__(self, conn: Redis, board_id: str):
        self.conn = conn
        self.board_id = board_id
        self.prefix = f"{BOARD_PREFIX}:{board_id}"
        self._claim = conn.register_script(_CLAIM)
        self._renew = conn.register_script(_RENEW)
        self._finish = conn.register_script(_FINISH)

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    @classmethod
    def publish(cls, conn: Redis, plan: dict, shards: list[Items], ttl_s: int) -> "ShardBoard":
        """A new board holding ``shards`` and ``plan``; every key of it expires after ``ttl_s``
        (the round job's timeout) should the round die without removing it."""
        board = cls(conn, uuid.uuid4().hex)
        with conn.pipeline() as pipe:
            pipe.hset(board.key("items"), mapping={
                str(i): json.dumps(shard) for i, shard in enumerate(shards)})
            pipe.expire(board.key("items"), ttl_s)
            pipe.set(board.key("plan"), json.dumps({**plan, "shards": len(shards)}), ex=ttl_s)
            pipe.execute()
        return board

    def plan(self) -> dict | None:
        raw = self.conn.get(self.key("plan"))
        return json.loads(raw) if raw is not None else None

    def items(self, index: int) -> Items:
        raw = self.conn.hget(self.key("items"), str(index))
        if raw is None:
            raise ShardLost(f"feature shard board {self.board_id} is gone")
        return [(int(tid), str(url)) for tid, url in json.loads(raw)]

    def claim(self, n_shards: int, token: str, lease_s: float) -> int:
        """The index of the shard this worker now holds; -1: every shard is done or held by
        someone; -2: the board is gone (the round ended)."""
        return int(self._claim(args=[self.prefix, n_shards, token, int(lease_s * 1000)]))

    def renew(self, index: int, token: str, lease_s: float) -> bool:
        return bool(self._renew(args=[self.prefix, index, token, int(lease_s * 1000)]))

    def record_progress(self, index: int, images: int) -> None:
        with self.conn.pipeline() as pipe:
            pipe.hset(self.key("progress"), str(index), images)
            pipe.expire(self.key("progress"), max(int(self.conn.ttl(self.key("plan"))), 1))
            pipe.execute()

    def finish(self, index: int, token: str, extracted: int, failed: dict[int, str]) -> bool:
        """Mark the shard done (its failures first, so whoever sees it done sees them); False
        when another worker had already finished it or the board is gone."""
        if failed:
            with self.conn.pipeline() as pipe:
                pipe.hset(self.key("failed"), mapping={str(k): v for k, v in failed.items()})
                pipe.expire(self.key("failed"), max(int(self.conn.ttl(self.key("plan"))), 1))
                pipe.execute()
        record = json.dumps({"by": token, "extracted": extracted, "failed": len(failed),
                             "finished_ts": time.time()})
        return bool(self._finish(args=[self.prefix, index, token, record]))

    def done(self) -> dict[int, dict]:
        return {int(k): json.loads(v) for k, v in self.conn.hgetall(self.key("done")).items()}

    def claims(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.conn.hgetall(self.key("claims")).items()}

    def images_done(self) -> int:
        return sum(int(v) for v in self.conn.hvals(self.key("progress")))

    def failed(self) -> dict[int, str]:
        return {int(k): v.decode() for k, v in self.conn.hgetall(self.key("failed")).items()}

    def remove(self, n_shards: int) -> None:
        names = ["plan", "items", "claims", "claimed_by", "done", "failed", "progress"]
        self.conn.delete(*[self.key(name) for name in names],
                         *[self.key(f"claim:{i}") for i in range(n_shards)])


class _LeaseKeeper(threading.Thread):
    """Renews a shard's claim every third of its lease while this worker extracts it; ``lost``
    is set when the claim is no longer this worker's (it lapsed and another took it)."""

    def __init__(self, board: ShardBoard, index: int, token: str, lease_s: float):
        super().__init__(daemon=True, name=f"shard-lease-{index}")
        self.board, self.index, self.token, self.lease_s = board, index, token, lease_s
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 3):
            try:
                if not self.board.renew(self.index, self.token, self.lease_s):
                    self.lost.set()
                    return
            except Exception as exc:   # Redis blip: the next renewal retries within the lease
                log.warning("feature shard %s: lease renewal failed: %s", self.index, exc)


@contextlib.contextmanager
def _leased(board: ShardBoard, index: int, token: str, lease_s: float) -> Iterator[_LeaseKeeper]:
    keeper = _LeaseKeeper(board, index, token, lease_s)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stopped.set()


@dataclass
class ShardWork:
    """What one worker needs to extract shards: its backbone, fetcher, the cache, its device."""
    model: LossLearningNet
    model_config: ModelConfig
    fetcher: ImageFetcher
    cache: FeatureCache
    device: str
    batch_size: int


@dataclass
class ShardSummary:
    """What ``work_shards`` did in this worker."""
    shards: list[int] = field(default_factory=list)   # indices this worker finished
    extracted: int = 0                                # images it ran through the backbone


def work_one_shard(board: ShardBoard, index: int, token: str, lease_s: float, work: ShardWork,
                   on_chunk: Callable[[], None] | None = None) -> int:
    """Extract the claimed shard ``index`` into the cache and mark it done; the images extracted.
    Raises ShardLost (the shard is someone else's now) without marking it."""
    items = board.items(index)
    report = FetchReport()
    with _leased(board, index, token, lease_s) as lease:
        def after_chunk(done: int, _total: int) -> None:
            if lease.lost.is_set():
                raise ShardLost(f"feature shard {index}: the claim lapsed; another worker has it")
            board.record_progress(index, done)
            if on_chunk is not None:
                on_chunk()
        extracted = extract_into_cache(work.model, work.model_config, items, work.fetcher,
                                       work.cache, report, device=work.device,
                                       batch_size=work.batch_size, on_progress=after_chunk)
    board.finish(index, token, extracted, report.failed)
    return extracted


def work_shards(board: ShardBoard, n_shards: int, token: str, lease_s: float, work: ShardWork,
                on_chunk: Callable[[], None] | None = None) -> ShardSummary:
    """Claim and extract shards until none is left to claim (done, or held by others)."""
    summary = ShardSummary()
    while True:
        index = board.claim(n_shards, token, lease_s)
        if index < 0:
            return summary
        try:
            summary.extracted += work_one_shard(board, index, token, lease_s, work, on_chunk)
        except ShardLost as exc:
            log.warning("%s", exc)
            continue
        summary.shards.append(index)


def fetcher_limits(fetcher: ImageFetcher) -> dict:
    """The image fetcher's settings a shard worker must use to see the same pixels."""
    return {"max_bytes": fetcher.max_bytes, "max_pixels": fetcher.max_pixels,
            "timeout_s": fetcher.timeout_s, "resize_to": fetcher.resize_to}


@dataclass
class FeatureSharding:
    """A round's way to split its feature extraction over the queue's workers (``extract``)."""
    conn: Redis
    project_id: int
    shard_images: int
    job_timeout_s: int
    # enqueue(board_id, count): queue ``count`` shard jobs for the board
    enqueue: Callable[[str, int], None]
    # how many other workers may take a shard job now (workers on the queue, this one excluded)
    other_workers: Callable[[], int]
    status: StatusCallback = lambda **_: None
    lease_s: float = FEATURE_SHARD_LEASE_S
    poll_s: float = FEATURE_SHARD_POLL_S
    last: dict = field(default_factory=dict)   # the last extraction's summary (also in status)

    def splits(self, n_images: int) -> bool:
        """Whether ``n_images`` missing images are worth more than one shard."""
        return self.shard_images > 0 and n_images > self.shard_images

    def publish(self, model_config: ModelConfig, num_classes: int, items: Items,
                fetcher: ImageFetcher, cache: FeatureCache, batch_size: int) -> tuple[ShardBoard, int]:
        """The board of this extraction (and the marker shard workers check the shared cache
        directory by); returns it and its number of shards."""
        shards = split_into_shards(items, self.shard_images)
        plan = {"project_id": self.project_id, "model_config": model_config.to_dict(),
                "num_classes": num_classes, "backbone_key": cache.key,
                "fetcher": fetcher_limits(fetcher), "batch_size": batch_size,
                "lease_s": self.lease_s}
        board = ShardBoard.publish(self.conn, plan, shards, self.job_timeout_s)
        cache.directory.mkdir(parents=True, exist_ok=True)
        (cache.directory / marker_name(board.board_id)).touch()
        return board, len(shards)

    def extract(self, model: LossLearningNet, model_config: ModelConfig, items: Items,
                fetcher: ImageFetcher, cache: FeatureCache, report: FetchReport, *, device: str,
                batch_size: int, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Extract ``items`` into ``cache`` in shards over the workers; return how many images
        went through a backbone (here and elsewhere). Returns once every shard is done: every
        row is in the cache then."""
        board, n_shards = self.publish(model_config, int(model.head.out_features), items, fetcher,
                                       cache, batch_size)
        work = ShardWork(model, model_config, fetcher, cache, device, batch_size)
        token = worker_token("round")
        try:
            helpers = max(0, min(n_shards - 1, self.other_workers()))
            if helpers:
                self.enqueue(board.board_id, helpers)
            log.info("project %s: feature extraction of %d images in %d shards of %d, %d shard "
                     "job(s) queued for other workers", self.project_id, len(items), n_shards,
                     self.shard_images, helpers)
            return self.join(board, n_shards, token, work, items, report, on_progress, helpers)
        finally:
            board.remove(n_shards)
            (cache.directory / marker_name(board.board_id)).unlink(missing_ok=True)

    def join(self, board: ShardBoard, n_shards: int, token: str, work: ShardWork, items: Items,
             report: FetchReport, on_progress: Callable[[int, int], None] | None,
             helpers: int) -> int:
        """Work shards here until none is left to claim, wait for those others hold (claiming
        again any whose lease lapsed), then merge the shards' failures into ``report`` and
        extract here whatever is still missing from the cache. Returns the images extracted."""
        def progress() -> None:
            done = board.done()
            self.last = {"shards": n_shards, "done": len(done), "shard_jobs_queued": helpers,
                         "by_other_workers": sum(1 for r in done.values() if r["by"] != token)}
            self.status(feature_shards=self.last)
            if on_progress is not None:
                on_progress(min(board.images_done(), len(items)), len(items))

        while True:
            work_shards(board, n_shards, token, self.lease_s, work, on_chunk=progress)
            if board.plan() is None:   # outlived its lifetime (JOB_TIMEOUT_S): never wait forever
                raise RuntimeError(f"feature shard board {board.board_id} expired before its "
                                   f"shards were done")
            progress()
            if self.last["done"] >= n_shards:
                break
            time.sleep(self.poll_s)
        done = board.done()
        self.last.update(last_done_ts=max(r["finished_ts"] for r in done.values()),
                         reclaimed=sum(1 for n in board.claims().values() if n > 1))
        for task_id, reason in board.failed().items():
            report.add(task_id, reason)
        extracted = sum(int(r["extracted"]) for r in done.values())
        self.last["extracted_after_shards"] = self._extract_left_over(work, items, report)
        self.status(feature_shards=self.last)
        log.info("project %s: %d feature shards done, %d by other workers, %d claimed again "
                 "after a lapsed lease", self.project_id, n_shards, self.last["by_other_workers"],
                 self.last["reclaimed"])
        return extracted + self.last["extracted_after_shards"]

    @staticmethod
    def _extract_left_over(work: ShardWork, items: Items, report: FetchReport) -> int:
        from model.feature_cache import item_key
        failed = set(report.failed)
        wanted = [(tid, url) for tid, url in items if tid not in failed]
        _, missing = work.cache.get_many([item_key(tid, url) for tid, url in wanted])
        if not missing:
            return 0
        missing_set = set(missing)
        left = [(tid, url) for tid, url in wanted if item_key(tid, url) in missing_set]
        log.warning("feature shards left %d image(s) out of the cache; extracting them here",
                    len(left))
        return extract_into_cache(work.model, work.model_config, left, work.fetcher, work.cache,
                                  report, device=work.device, batch_size=work.batch_size)


def marker_name(board_id: str) -> str:
    """A file the round puts in its feature cache directory: a shard worker that does not see it
    does not share MODEL_DIR with the round, and refuses to work."""
    return f".shard-board-{board_id}"


def sharding_for_round(settings: Settings, project_id: int,
                       status: StatusCallback) -> FeatureSharding | None:
    """The round's FeatureSharding when it runs in an RQ job and FEATURE_SHARD_IMAGES allows;
    None otherwise (the round then extracts every image itself)."""
    from rq import Worker, get_current_job

    from backend import queueing
    job = get_current_job()
    if job is None or settings.feature_shard_images <= 0:
        return None
    conn = job.connection
    queue = queueing.training_queue(settings, conn)

    def other_workers() -> int:
        return max(0, Worker.count(connection=conn, queue=queue) - 1)

    def enqueue(board_id: str, count: int) -> None:
        queueing.enqueue_feature_shards(settings, conn, board_id, count)

    return FeatureSharding(conn, project_id, settings.feature_shard_images, settings.job_timeout_s,
                           enqueue, other_workers, status)


# ----------------------------------------------------------------------------- shard job


def shard_work_from_plan(settings: Settings, plan: dict, board_id: str) -> ShardWork:
    """A shard worker's own backbone, fetcher and cache, built from the round's plan and this
    worker's settings (device, Label Studio connection, MODEL_DIR, image cache, and
    PRETRAINED_WEIGHTS' path when set). Raises when its backbone differs from the round's or it
    does not see the round's cache directory."""
    from backend.ls_client import LabelStudioClient
    from backend.model_store import ModelStore
    from model.feature_cache import backbone_fingerprint, backbone_key
    from model.networks import build_network

    model_config = ModelConfig.from_dict(plan["model_config"])
    if settings.pretrained_weights and model_config.pretrained_weights:
        # the same file may lie elsewhere on this machine; the key check below proves it is the same
        model_config = dataclasses.replace(model_config,
                                           pretrained_weights=str(settings.pretrained_weights))
    model = build_network(model_config, num_classes=int(plan["num_classes"]))
    key = backbone_key(model_config, backbone_fingerprint(model), model.taps)
    if key != plan["backbone_key"]:
        raise RuntimeError(f"this worker's backbone gives feature key {key}, the round's is "
                           f"{plan['backbone_key']}: give every worker the same weights file "
                           f"(PRETRAINED_WEIGHTS) or BACKBONE_WEIGHTS")
    root = ModelStore(settings.model_dir).project_dir(int(plan["project_id"])) / "features"
    cache = FeatureCache(root, key)
    if not (cache.directory / marker_name(board_id)).exists():
        raise RuntimeError(f"the round's feature cache is not under this worker's MODEL_DIR "
                           f"({settings.model_dir}): every worker must share MODEL_DIR")
    limits = plan["fetcher"]
    downloader = LabelStudioClient.from_settings(settings).image_downloader(
        settings.allowed_image_hosts, settings.local_files_document_root)
    fetcher = ImageFetcher(downloader, settings.resolved_image_cache_dir, max_bytes=int(limits["max_bytes"]),
                           max_pixels=int(limits["max_pixels"]),
                           timeout_s=float(limits["timeout_s"]), resize_to=limits["resize_to"],
                           cache_max_bytes=settings.image_cache_max_bytes)
    return ShardWork(model, model_config, fetcher, cache, settings.device, int(plan["batch_size"]))


def run_shard_job(settings: Settings, conn: Redis, board_id: str) -> dict:
    """A shard job's body: claim and extract the board's shards until none is left."""
    board = ShardBoard(conn, board_id)
    plan = board.plan()
    if plan is None:
        return {"state": "nothing to do", "board": board_id, "shards": []}
    work = shard_work_from_plan(settings, plan, board_id)
    token = worker_token("shard-job")
    summary = work_shards(board, int(plan["shards"]), token, float(plan["lease_s"]), work)
    log.info("feature shard board %s: this worker extracted shards %s (%d images)", board_id,
             summary.shards, summary.extracted)
    return {"state": "done", "board": board_id, "shards": summary.shards,
            "extracted": summary.extracted, "finished_ts": time.time()}
