"""The unlabeled pool images a full training learns from by consistency (POOL_CONSISTENCY_WEIGHT,
model/consistency.py): a seeded sample of the round's unlabeled tasks, as model-ready arrays."""

from __future__ import annotations

import logging

import numpy as np

from backend.constants import RoundPhase
from backend.images import ImageFetcher
from backend.rounds.progress import RoundRun
from backend.rounds.score import load_arrays
from backend.self_supervised import sample_pool
from backend.settings import Settings
from model.config import ModelConfig

log = logging.getLogger(__name__)


def consistency_items(
    pool_items: list[tuple[int, str]], labeled_ids: set[int], max_images: int, seed: int
) -> list[tuple[int, str]]:
    """The unlabeled (task id, url) of ``pool_items`` that training learns from: all of them, or
    a seeded sample of ``max_images`` kept in pool order."""
    unlabeled = [item for item in pool_items if item[0] not in labeled_ids]
    return sample_pool(unlabeled, max_images, seed)


def load_consistency_pool(
    settings: Settings,
    pool_items: list[tuple[int, str]],
    labeled_ids: set[int],
    fetcher: ImageFetcher,
    model_config: ModelConfig,
    run: RoundRun,
) -> list[np.ndarray] | None:
    """The model-ready arrays of the sampled unlabeled images, or None when consistency is off or
    the pool has no unlabeled image. An image that cannot be read is left out here; scoring reports
    the pool's failures once, later in the round."""
    if settings.pool_consistency_weight <= 0:
        return None
    items = consistency_items(pool_items, labeled_ids, settings.pool_consistency_max_images, settings.seed)
    arrays = load_arrays(
        fetcher,
        items,
        model_config,
        lambda loaded, total: run.status(
            phase=RoundPhase.TRAINING,
            pool_consistency_progress={"images_loaded": loaded, "images": total},
        ),
    )
    log.info("%d of %d unlabeled pool images loaded for consistency training", len(arrays), len(items))
    return arrays or None
