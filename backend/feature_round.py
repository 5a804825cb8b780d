"""The "frozen" training mode of a round: pooled backbone features once per image, cached per
project and backbone version; a light head + loss prediction module trained on them; the pool
scored from them.

A round then costs the backbone only for images it has never seen (new tasks, or every image once
after the backbone changed), plus a few hundred small-matrix steps: seconds on 10,000 tasks. Many
unseen images are split over the queue's workers (backend/feature_shards.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from backend.images import FetchReport, ImageFetcher
from model.config import ModelConfig
from model.feature_cache import FeatureCache
from model.feature_keys import backbone_fingerprint, backbone_key, item_key
from model.frozen import PooledFeatures, extract_pooled
from model.networks import LossLearningNet

if TYPE_CHECKING:  # feature_shards imports this module
    from backend.feature_shards import FeatureSharding

log = logging.getLogger(__name__)
FEATURE_CHUNK_IMAGES = 1024  # images decoded and held in memory at once while extracting features


def feature_cache_for(cache_root: Path, model: LossLearningNet, model_config: ModelConfig) -> FeatureCache:
    """The project's cache for this backbone (its weights' fingerprint is part of the key, so a new
    pretrained file or a refreshed self-supervised backbone starts a new directory); directories of
    other backbones are deleted."""
    cache = FeatureCache(cache_root, backbone_key(model_config, backbone_fingerprint(model), model.taps))
    pruned = cache.prune_other_keys()
    if pruned:
        log.info("feature cache %s: deleted features of %d other backbone(s)", cache_root, len(pruned))
    return cache


def pooled_features(
    model: LossLearningNet,
    model_config: ModelConfig,
    items: list[tuple[int, str]],
    fetcher: ImageFetcher,
    cache: FeatureCache,
    report: FetchReport,
    device: str,
    batch_size: int,
    on_progress: Callable[[int, int], None] | None = None,
    sharding: FeatureSharding | None = None,
    whole_pool: bool = False,
) -> tuple[list[int], PooledFeatures | None, int]:
    """Pooled features of (task id, image url) items: read from the cache, the rest extracted,
    here or, with ``sharding``, in shards over the queue's workers (all of them done before this
    returns). Each cached row is read once. ``whole_pool``: ``items`` are every task of the
    project, so the cache forgets the keys of any other (deleted tasks, replaced images).

    Returns (task ids that have features, in input order; their rows; how many were extracted
    now). Items whose image cannot be fetched are reported in ``report`` and left out.
    """
    keys = [item_key(tid, url) for tid, url in items]
    missing_set = set(cache.missing(keys))  # from the index: no row is read here
    to_extract = [item for item, key in zip(items, keys, strict=False) if key in missing_set]
    if sharding is not None and sharding.splits(len(to_extract)):
        extracted = sharding.extract(
            model,
            model_config,
            to_extract,
            fetcher,
            cache,
            report,
            device=device,
            batch_size=batch_size,
            on_progress=on_progress,
        )
    else:
        extracted = extract_into_cache(
            model,
            model_config,
            to_extract,
            fetcher,
            cache,
            report,
            device=device,
            batch_size=batch_size,
            on_progress=on_progress,
        )
    ids, found = _read_back(items, keys, cache, report)
    if whole_pool:
        dropped = cache.retain(keys)
        if dropped:
            log.info("feature cache %s: forgot %d item(s) no longer in the project", cache.key, dropped)
    return ids, found, extracted


def _read_back(
    items: list[tuple[int, str]], keys: list[str], cache: FeatureCache, report: FetchReport
) -> tuple[list[int], PooledFeatures | None]:
    """(task ids whose rows the cache holds, in input order; their rows) of the items not failed
    in ``report``; an item whose row is still missing is added to ``report``."""
    failed = set(report.failed)
    present = [(tid, key) for (tid, _), key in zip(items, keys, strict=False) if tid not in failed]
    found, still_missing = cache.get_many([key for _, key in present])
    lost = set(still_missing)
    for tid, key in present:
        if key in lost:
            report.add(tid, "feature cache: features could not be stored or read back")
    return [tid for tid, key in present if key not in lost], found


def extract_into_cache(
    model: LossLearningNet,
    model_config: ModelConfig,
    items: list[tuple[int, str]],
    fetcher: ImageFetcher,
    cache: FeatureCache,
    report: FetchReport,
    device: str,
    batch_size: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Run the backbone over the (task id, image url) items, FEATURE_CHUNK_IMAGES at a time, and
    put their rows into ``cache``; images that cannot be fetched go to ``report``. Returns how
    many were extracted; ``on_progress(done, total)`` follows each chunk."""
    extracted = 0
    for start in range(0, len(items), FEATURE_CHUNK_IMAGES):
        chunk_items = items[start : start + FEATURE_CHUNK_IMAGES]
        chunk = fetcher.fetch_many(chunk_items, report)
        if chunk:
            rows = extract_pooled(
                model, [img for _, img in chunk], model_config, device=device, batch_size=batch_size
            )
            url_of = dict(chunk_items)
            cache.put_many([item_key(tid, url_of[tid]) for tid, _ in chunk], rows)
            extracted += len(chunk)
        if on_progress is not None:
            on_progress(min(start + FEATURE_CHUNK_IMAGES, len(items)), len(items))
    return extracted
