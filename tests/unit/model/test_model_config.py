"""Configs are plain data: JSON round trip, unknown keys ignored, bad values rejected."""

from __future__ import annotations

import dataclasses
import json

import pytest

from model import ModelConfig, TrainConfig


@pytest.mark.parametrize("config", [ModelConfig(taps=("layer1", "layer4")), TrainConfig(lpm_loss="v2")])
def test_json_round_trip(config):
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    assert type(config).from_dict(data) == config


def test_unknown_keys_are_ignored_and_missing_keys_default():
    config = ModelConfig.from_dict({"backbone": "resnet18", "from_the_future": 1})
    assert config.backbone == "resnet18" and config.image_size == 32


@pytest.mark.parametrize(
    "factory",
    [
        lambda: ModelConfig(channels=2),
        lambda: ModelConfig(mean=(0.5,)),
        lambda: ModelConfig(dropout=1.0),
        lambda: ModelConfig(image_size=0),
        lambda: TrainConfig(lpm_loss="hinge"),
        lambda: TrainConfig(optimizer="rmsprop"),
        lambda: TrainConfig(batch_size=1),
        lambda: TrainConfig(detach_fraction=1.5),
        lambda: TrainConfig(val_fraction=1.0),
    ],
)
def test_invalid_values_are_rejected(factory):
    with pytest.raises(ValueError):
        factory()
