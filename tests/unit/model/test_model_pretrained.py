"""torchvision's pretrained weights (ModelConfig.weights) through torchvision's weights API.

No test downloads anything: the hub cache is a temporary TORCH_HOME holding a locally made file
under the real weights' file name, and the one network call torch.hub makes is replaced by one
that fails.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from model import ModelConfig, TrainConfig, build_network, load_checkpoint, save_checkpoint
from model.pretrained import (
    load_weights_state_dict,
    preprocessing_for,
    resolve_weights,
    weights_file,
    with_weights_preprocessing,
)
from model.trainer import TrainResult

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
R18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1  # resnet18's DEFAULT


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME the hub dir follows (restored after the test); downloads always fail."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    # torch.hub.get_dir() returns a dir set with torch.hub.set_dir() if any, else TORCH_HOME/hub.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError(f"network disabled in tests ({url})")

    # torch.hub.load_state_dict_from_url (what WeightsEnum.get_state_dict calls; torchvision holds
    # its own reference to it) downloads through this module-level function only: replacing it
    # makes every download fail deterministically, without the network, as on an offline machine.
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return home


@pytest.fixture
def cached_resnet18(torch_home) -> dict[str, torch.Tensor]:
    """A randomly initialised resnet18 (fixed seed) saved where the hub cache keeps IMAGENET1K_V1."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = torch_home / "hub" / "checkpoints" / os.path.basename(urlparse(R18.url).path)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_the_cache_path_follows_torch_home(torch_home):
    assert weights_file(R18) == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


def test_default_weights_load_from_the_hub_cache_with_a_new_head(cached_resnet18):
    cfg = ModelConfig(backbone="resnet18", weights="DEFAULT", image_size=64)
    model = build_network(cfg, 4)
    torch.testing.assert_close(model.features.conv1.weight, cached_resnet18["conv1.weight"])
    torch.testing.assert_close(
        model.features.get_submodule("layer4.1.conv2").weight, cached_resnet18["layer4.1.conv2.weight"]
    )
    assert model.head.out_features == 4  # head re-initialised for our classes


@pytest.mark.parametrize("name", ["IMAGENET1K_V1", "imagenet1k_v1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_weights_names_resolve_through_torchvision(name):
    assert resolve_weights("resnet18", name) is R18
    assert resolve_weights("resnet50", "DEFAULT") is torchvision.models.ResNet50_Weights.IMAGENET1K_V2


def test_preprocessing_comes_from_the_weights_transforms():
    expected = {"image_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    assert preprocessing_for("resnet50", "DEFAULT") == expected
    cfg = with_weights_preprocessing(ModelConfig(backbone="resnet50", weights="DEFAULT"))
    assert (cfg.image_size, cfg.mean, cfg.std) == (224, IMAGENET_MEAN, IMAGENET_STD)
    assert cfg.weights == "ResNet50_Weights.IMAGENET1K_V2"  # DEFAULT pinned in the config
    # An explicitly chosen size wins; mean and std still follow the weights.
    kept = with_weights_preprocessing(
        ModelConfig(backbone="resnet50", weights="DEFAULT", image_size=96), keep_image_size=True
    )
    assert (kept.image_size, kept.mean) == (96, IMAGENET_MEAN)
    assert with_weights_preprocessing(ModelConfig()) == ModelConfig()  # no weights: unchanged


def test_missing_file_offline_names_the_path_and_url(torch_home):
    expected_path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ValueError) as error:
        build_network(ModelConfig(backbone="resnet18", weights="DEFAULT", image_size=64), 3)
    message = str(error.value)
    assert str(expected_path) in message
    assert R18.url in message and "URLError" in message
    assert not expected_path.exists()


def test_unknown_weights_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        resolve_weights("resnet50", "IMAGENET22K")
    with pytest.raises(ValueError, match="not weights of 'resnet18'.*valid: DEFAULT, IMAGENET1K_V1"):
        resolve_weights("resnet18", "ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(ValueError, match="valid: DEFAULT, IMAGENET1K_V1"):
        build_network(ModelConfig(backbone="resnet18", weights="V3", image_size=64), 3)


def test_weights_need_a_torchvision_backbone_and_exclude_a_local_file():
    for backbone in ("small_cnn", "cifar_resnet18"):
        with pytest.raises(ValueError, match="torchvision backbone"):
            ModelConfig(backbone=backbone, weights="DEFAULT")
    with pytest.raises(ValueError, match="not both"):
        ModelConfig(backbone="resnet18", weights="DEFAULT", pretrained_weights="w.pt")
    with pytest.raises(ValueError, match="no torchvision pretrained weights"):
        load_weights_state_dict("not_a_model", "DEFAULT")


def test_a_checkpoint_reloads_without_the_weights_file(cached_resnet18, torch_home, tmp_path):
    cfg = with_weights_preprocessing(
        ModelConfig(backbone="resnet18", weights="DEFAULT", image_size=64), keep_image_size=True
    )
    model = build_network(cfg, 3)
    path = tmp_path / "model.pt"
    save_checkpoint(path, TrainResult(model, ["a", "b", "c"], cfg, TrainConfig()))
    weights_file(R18).unlink()  # the cache emptied: reloading must not need (or fetch) it
    loaded = load_checkpoint(path)
    assert loaded.model_config.weights == "ResNet18_Weights.IMAGENET1K_V1"
    torch.testing.assert_close(loaded.model.features.conv1.weight, cached_resnet18["conv1.weight"])
    assert not weights_file(R18).exists()
    # build_network without weights does not touch the (now empty) cache either.
    build_network(cfg, 3, load_weights=False)
