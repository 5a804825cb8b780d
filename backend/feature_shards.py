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

The board itself (its Redis keys, the atomic claims, the leases): backend/shard_board.py; a shard
job's side (its backbone, fetcher and cache built from the plan): backend/shard_job.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import Redis

from backend.constants import FEATURE_SHARD_LEASE_S, FEATURE_SHARD_POLL_S
from backend.feature_round import extract_into_cache
from backend.images import FetchReport, ImageFetcher
from backend.settings import Settings
from backend.shard_board import BOARD_PREFIX as BOARD_PREFIX  # re-exported
from backend.shard_board import Items as Items  # re-exported
from backend.shard_board import ShardBoard as ShardBoard  # re-exported
from backend.shard_board import ShardLost as ShardLost  # re-exported
from backend.shard_board import _leased
from backend.shard_board import split_into_shards as split_into_shards  # re-exported
from backend.shard_board import worker_token as worker_token  # re-exported
from model.config import ModelConfig
from model.feature_cache import FeatureCache
from model.networks import LossLearningNet

log = logging.getLogger(__name__)
StatusCallback = Callable[..., None]


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

    shards: list[int] = field(default_factory=list)  # indices this worker finished
    extracted: int = 0  # images it ran through the backbone


def work_one_shard(
    board: ShardBoard,
    index: int,
    token: str,
    lease_s: float,
    work: ShardWork,
    on_chunk: Callable[[], None] | None = None,
) -> int:
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

        extracted = extract_into_cache(
            work.model,
            work.model_config,
            items,
            work.fetcher,
            work.cache,
            report,
            device=work.device,
            batch_size=work.batch_size,
            on_progress=after_chunk,
        )
    board.finish(index, token, extracted, report.failed)
    return extracted


def work_shards(
    board: ShardBoard,
    n_shards: int,
    token: str,
    lease_s: float,
    work: ShardWork,
    on_chunk: Callable[[], None] | None = None,
) -> ShardSummary:
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
    return {
        "max_bytes": fetcher.max_bytes,
        "max_pixels": fetcher.max_pixels,
        "timeout_s": fetcher.timeout_s,
        "resize_to": fetcher.resize_to,
    }


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
    last: dict = field(default_factory=dict)  # the last extraction's summary (also in status)

    def splits(self, n_images: int) -> bool:
        """Whether ``n_images`` missing images are worth more than one shard."""
        return self.shard_images > 0 and n_images > self.shard_images

    def publish(
        self,
        model_config: ModelConfig,
        num_classes: int,
        items: Items,
        fetcher: ImageFetcher,
        cache: FeatureCache,
        batch_size: int,
    ) -> tuple[ShardBoard, int]:
        """The board of this extraction (and the marker shard workers check the shared cache
        directory by); returns it and its number of shards."""
        shards = split_into_shards(items, self.shard_images)
        plan = {
            "project_id": self.project_id,
            "model_config": model_config.to_dict(),
            "num_classes": num_classes,
            "backbone_key": cache.key,
            "fetcher": fetcher_limits(fetcher),
            "batch_size": batch_size,
            "lease_s": self.lease_s,
        }
        board = ShardBoard.publish(self.conn, plan, shards, self.job_timeout_s)
        cache.directory.mkdir(parents=True, exist_ok=True)
        (cache.directory / marker_name(board.board_id)).touch()
        return board, len(shards)

    def extract(
        self,
        model: LossLearningNet,
        model_config: ModelConfig,
        items: Items,
        fetcher: ImageFetcher,
        cache: FeatureCache,
        report: FetchReport,
        *,
        device: str,
        batch_size: int,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Extract ``items`` into ``cache`` in shards over the workers; return how many images
        went through a backbone (here and elsewhere). Returns once every shard is done: every
        row is in the cache then."""
        board, n_shards = self.publish(
            model_config, int(model.head.out_features), items, fetcher, cache, batch_size
        )
        work = ShardWork(model, model_config, fetcher, cache, device, batch_size)
        token = worker_token("round")
        try:
            helpers = max(0, min(n_shards - 1, self.other_workers()))
            if helpers:
                self.enqueue(board.board_id, helpers)
            log.info(
                "project %s: feature extraction of %d images in %d shards of %d, %d shard "
                "job(s) queued for other workers",
                self.project_id,
                len(items),
                n_shards,
                self.shard_images,
                helpers,
            )
            return self.join(board, n_shards, token, work, items, report, on_progress, helpers)
        finally:
            board.remove(n_shards)
            (cache.directory / marker_name(board.board_id)).unlink(missing_ok=True)

    def join(
        self,
        board: ShardBoard,
        n_shards: int,
        token: str,
        work: ShardWork,
        items: Items,
        report: FetchReport,
        on_progress: Callable[[int, int], None] | None,
        helpers: int,
    ) -> int:
        """Work shards here until none is left to claim, wait for those others hold (claiming
        again any whose lease lapsed), then merge the shards' failures into ``report`` and
        extract here whatever is still missing from the cache. Returns the images extracted."""

        def progress() -> None:
            done = board.done()
            self.last = {
                "shards": n_shards,
                "done": len(done),
                "shard_jobs_queued": helpers,
                "by_other_workers": sum(1 for r in done.values() if r["by"] != token),
            }
            self.status(feature_shards=self.last)
            if on_progress is not None:
                on_progress(min(board.images_done(), len(items)), len(items))

        while True:
            work_shards(board, n_shards, token, self.lease_s, work, on_chunk=progress)
            if board.plan() is None:  # outlived its lifetime (JOB_TIMEOUT_S): never wait forever
                raise RuntimeError(
                    f"feature shard board {board.board_id} expired before its shards were done"
                )
            progress()
            if self.last["done"] >= n_shards:
                break
            time.sleep(self.poll_s)
        done = board.done()
        self.last.update(
            last_done_ts=max(r["finished_ts"] for r in done.values()),
            reclaimed=sum(1 for n in board.claims().values() if n > 1),
        )
        for task_id, reason in board.failed().items():
            report.add(task_id, reason)
        extracted = sum(int(r["extracted"]) for r in done.values())
        self.last["extracted_after_shards"] = self._extract_left_over(work, items, report)
        self.status(feature_shards=self.last)
        log.info(
            "project %s: %d feature shards done, %d by other workers, %d claimed again after a lapsed lease",
            self.project_id,
            n_shards,
            self.last["by_other_workers"],
            self.last["reclaimed"],
        )
        return extracted + self.last["extracted_after_shards"]

    @staticmethod
    def _extract_left_over(work: ShardWork, items: Items, report: FetchReport) -> int:
        from model.feature_keys import item_key

        failed = set(report.failed)
        wanted = [(tid, url) for tid, url in items if tid not in failed]
        missing = work.cache.missing([item_key(tid, url) for tid, url in wanted])
        if not missing:
            return 0
        missing_set = set(missing)
        left = [(tid, url) for tid, url in wanted if item_key(tid, url) in missing_set]
        log.warning("feature shards left %d image(s) out of the cache; extracting them here", len(left))
        return extract_into_cache(
            work.model,
            work.model_config,
            left,
            work.fetcher,
            work.cache,
            report,
            device=work.device,
            batch_size=work.batch_size,
        )


def marker_name(board_id: str) -> str:
    """A file the round puts in its feature cache directory: a shard worker that does not see it
    does not share MODEL_DIR with the round, and refuses to work."""
    return f".shard-board-{board_id}"


def sharding_for_round(settings: Settings, project_id: int, status: StatusCallback) -> FeatureSharding | None:
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

    return FeatureSharding(
        conn,
        project_id,
        settings.feature_shard_images,
        settings.job_timeout_s,
        enqueue,
        other_workers,
        status,
    )
