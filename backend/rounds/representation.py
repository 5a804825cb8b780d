"""Where a round's backbone starts from: configured weights (torchvision's or a file), the
project's own self-supervised weights (``backend.self_supervised`` learns and keeps them), or its
configured initialisation."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from backend import self_supervised
from backend.constants import RoundPhase
from backend.images import ImageFetcher
from backend.model_store import ModelStore
from backend.rounds.progress import RoundRun
from backend.rounds.score import load_arrays
from backend.settings import Settings
from model.config import ModelConfig
from model.modes import fine_tunes_like_scratch
from model.self_supervised import SelfSupervisedConfig, for_colour

log = logging.getLogger(__name__)


def self_supervised_skip_reason(settings: Settings, model_config: ModelConfig) -> str | None:
    """Why a round starts from its configured initialisation, or None to start from (or, up to
    FROZEN_MAX_LABELS labels without configured weights, train a head on) the project's
    self-supervised weights (pre-trained from PRETRAINED_WEIGHTS when set: adapting a file is
    done only at input sizes where fine-tuning works like training from scratch)."""
    if settings.self_supervised_steps == 0:
        return "SELF_SUPERVISED_STEPS is 0"
    if model_config.weights:
        return "the backbone starts from torchvision's pretrained weights, not adapted"
    if model_config.pretrained_weights and not fine_tunes_like_scratch(
        model_config.image_size, settings.full_training_max_image_size
    ):
        return (
            f"the backbone starts from the configured pretrained weights, not adapted at "
            f"{model_config.image_size} px (above FULL_TRAINING_MAX_IMAGE_SIZE)"
        )
    return None


def has_configured_weights(model_config: ModelConfig) -> bool:
    """Whether the backbone starts from weights (torchvision's, or a file; the project's own
    self-supervised file once a round has set it as ``pretrained_weights``)."""
    return bool(model_config.weights or model_config.pretrained_weights)


def learns_own_weights(settings: Settings, model_config: ModelConfig) -> bool:
    """Whether the project's own self-supervised weights are the round's representation: no
    configured weights, and self-supervision on."""
    return (
        not has_configured_weights(model_config)
        and self_supervised_skip_reason(settings, model_config) is None
    )


def self_supervised_config(settings: Settings, keep_colour: bool = False) -> SelfSupervisedConfig:
    return for_colour(
        SelfSupervisedConfig(
            steps=settings.self_supervised_steps, seed=settings.seed, device=settings.device
        ),
        keep_colour,
    )


def self_supervised_dir(store: ModelStore, project_id: int, keep_colour: bool = False) -> Path:
    """The project's self-supervised weights of one colour choice: each choice keeps its own,
    so a project whose choice changes back reuses them instead of learning them again."""
    return store.project_dir(project_id) / (self_supervised.DIR_NAME + ("-colour" if keep_colour else ""))


def self_supervised_start(
    settings: Settings,
    store: ModelStore,
    project_id: int,
    model_config: ModelConfig,
    fetcher: ImageFetcher,
    pool_items: list[tuple[int, str]],
    run: RoundRun,
) -> tuple[ModelConfig, dict]:
    """``model_config`` with the project's self-supervised weights (learned from ``pool_items``
    now when ``backend.self_supervised`` says so) as ``pretrained_weights``, and what happened,
    for the round summary; ``model_config`` as it is when they do not apply."""
    skip = self_supervised_skip_reason(settings, model_config)
    if skip is not None:
        return model_config, {"weights": None, "why": skip}

    def load_images(items: list[tuple[int, str]]) -> list[np.ndarray]:
        return load_arrays(
            fetcher,
            items,
            model_config,
            lambda loaded, total: run.status(
                phase=RoundPhase.SELF_SUPERVISED_PRETRAINING,
                self_supervised_progress={"images_loaded": loaded, "images": total},
            ),
        )

    path, summary = self_supervised.ensure_weights(
        self_supervised_dir(store, project_id, model_config.keep_colour),
        model_config,
        self_supervised_config(settings, model_config.keep_colour),
        pool_items,
        load_images,
        growth=settings.self_supervised_refresh_growth,
        max_images=settings.self_supervised_max_images,
        progress=run.throttled_progress(RoundPhase.SELF_SUPERVISED_PRETRAINING, "self_supervised_progress"),
    )
    log.info("project %s: self-supervised weights %s", project_id, json.dumps(summary))
    if path is None:
        return model_config, summary
    return dataclasses.replace(model_config, pretrained_weights=str(path)), summary
