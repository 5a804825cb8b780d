"""A feature shard job's side: build this worker's backbone, fetcher and cache from the round's
plan on the board, then claim and extract shards until none is left (backend/feature_shards.py)."""

from __future__ import annotations

import dataclasses
import logging
import time

from redis import Redis

from backend.feature_shards import ShardWork, marker_name, work_shards
from backend.images import ImageFetcher
from backend.settings import Settings
from backend.shard_board import ShardBoard, worker_token
from model.config import ModelConfig
from model.feature_cache import FeatureCache

log = logging.getLogger(__name__)


def shard_work_from_plan(settings: Settings, plan: dict, board_id: str) -> ShardWork:
    """A shard worker's own backbone, fetcher and cache, built from the round's plan and this
    worker's settings (device, Label Studio connection, MODEL_DIR, image cache, and
    PRETRAINED_WEIGHTS' path when set). Raises when its backbone differs from the round's or it
    does not see the round's cache directory."""
    from backend.ls_client import LabelStudioClient
    from backend.model_store import ModelStore
    from model.feature_keys import backbone_fingerprint, backbone_key
    from model.networks import build_network

    model_config = ModelConfig.from_dict(plan["model_config"])
    if settings.pretrained_weights and model_config.pretrained_weights:
        # the same file may lie elsewhere on this machine; the key check below proves it is the same
        model_config = dataclasses.replace(model_config, pretrained_weights=str(settings.pretrained_weights))
    model = build_network(model_config, num_classes=int(plan["num_classes"]))
    key = backbone_key(model_config, backbone_fingerprint(model), model.taps)
    if key != plan["backbone_key"]:
        raise RuntimeError(
            f"this worker's backbone gives feature key {key}, the round's is "
            f"{plan['backbone_key']}: give every worker the same weights file "
            f"(PRETRAINED_WEIGHTS) or BACKBONE_WEIGHTS"
        )
    root = ModelStore(settings.model_dir).project_dir(int(plan["project_id"])) / "features"
    cache = FeatureCache(root, key)
    if not (cache.directory / marker_name(board_id)).exists():
        raise RuntimeError(
            f"the round's feature cache is not under this worker's MODEL_DIR "
            f"({settings.model_dir}): every worker must share MODEL_DIR"
        )
    limits = plan["fetcher"]
    downloader = LabelStudioClient.from_settings(settings).image_downloader(
        settings.allowed_image_hosts, settings.local_files_document_root
    )
    fetcher = ImageFetcher(
        downloader,
        settings.resolved_image_cache_dir,
        max_bytes=int(limits["max_bytes"]),
        max_pixels=int(limits["max_pixels"]),
        timeout_s=float(limits["timeout_s"]),
        resize_to=limits["resize_to"],
        cache_max_bytes=settings.image_cache_max_bytes,
    )
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
    log.info(
        "feature shard board %s: this worker extracted shards %s (%d images)",
        board_id,
        summary.shards,
        summary.extracted,
    )
    return {
        "state": "done",
        "board": board_id,
        "shards": summary.shards,
        "extracted": summary.extracted,
        "finished_ts": time.time(),
    }
