"""The model and training configs a round works with, as the settings say."""

from __future__ import annotations

import dataclasses

from backend.settings import Settings
from model.config import ModelConfig, TrainConfig


def model_config_from(settings: Settings) -> ModelConfig:
    config = ModelConfig(
        backbone=settings.backbone,
        image_size=settings.image_size,
        pretrained_weights=(str(settings.pretrained_weights) if settings.pretrained_weights else None),
        weights=settings.backbone_weights or None,
        augment_policy=settings.augment_policy,
        input_norm=settings.input_norm,
        # auto starts colour-invariant; a trained round decides (rounds/colour.py)
        keep_colour=settings.keep_colour == "true",
    )
    if config.weights is None:
        return config
    from model.pretrained import with_weights_preprocessing

    # The weights' own input size, mean and std; an IMAGE_SIZE other than the default wins.
    default_size = Settings.__dataclass_fields__["image_size"].default
    return with_weights_preprocessing(config, keep_image_size=settings.image_size != default_size)


def train_config_from(settings: Settings) -> TrainConfig:
    config = TrainConfig(
        epochs=settings.train_epochs,
        batch_size=settings.train_batch_size,
        lpm_loss=settings.lpm_loss,
        seed=settings.seed,
        device=settings.device,
        unlabeled_weight=settings.pool_consistency_weight,
    )
    if settings.train_steps:
        config = dataclasses.replace(config, auto_target_steps=settings.train_steps)
    return config
