"""BACKBONE_WEIGHTS: validated without torch, passed to the model with the weights' preprocessing."""

import pytest

from backend.rounds.configs import model_config_from
from backend.settings import Settings, SettingsError


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"BACKBONE": "resnet50", "BACKBONE_WEIGHTS": "DEFAULT", "PRETRAINED_WEIGHTS": "/w.pt"}, "not both"),
        ({"BACKBONE_WEIGHTS": "DEFAULT"}, "BACKBONE_WEIGHTS needs a torchvision BACKBONE"),
        ({"BACKBONE": "cifar_resnet18", "BACKBONE_WEIGHTS": "DEFAULT"}, "BACKBONE_WEIGHTS"),
    ],
)
def test_bad_combinations_name_the_variables(env, needle):
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_weights_bring_their_input_size_mean_and_std():
    config = model_config_from(Settings.from_env({"BACKBONE": "resnet50", "BACKBONE_WEIGHTS": "DEFAULT"}))
    assert config.weights == "ResNet50_Weights.IMAGENET1K_V2"
    assert config.image_size == 224
    assert config.mean == (0.485, 0.456, 0.406) and config.std == (0.229, 0.224, 0.225)


def test_a_chosen_image_size_wins_over_the_weights():
    config = model_config_from(
        Settings.from_env({"BACKBONE": "resnet50", "BACKBONE_WEIGHTS": "IMAGENET1K_V1", "IMAGE_SIZE": "96"})
    )
    assert config.weights == "ResNet50_Weights.IMAGENET1K_V1"
    assert config.image_size == 96 and config.mean == (0.485, 0.456, 0.406)


def test_without_weights_the_config_is_unchanged():
    config = model_config_from(Settings.from_env({"BACKBONE": "resnet18"}))
    assert config.weights is None and config.image_size == 32
