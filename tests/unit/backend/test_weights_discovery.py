"""DISCOVER_WEIGHTS: torchvision weights already in the torch hub cache are used without a setting.

The weights files here are made by the test (a randomly initialised network saved where torch's hub
cache keeps the real file), since nothing can be downloaded: what is tested is that the file is
found, chosen, and loaded as the network's starting point.
"""

from pathlib import Path

import pytest
import torch
import torchvision

from backend.rounds.configs import model_config_from
from backend.settings import Settings
from model import build_network
from model.pretrained import weights_file
from model.weights_cache import CACHED_WEIGHTS, find_cached_weights, hub_checkpoints_dir

RESNET18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache of this test's own (TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def place(weights, model_name: str) -> dict[str, torch.Tensor]:
    """A state dict of ``model_name`` saved where the hub cache keeps ``weights``."""
    torch.manual_seed(0)
    state = torchvision.models.get_model(model_name).state_dict()
    path = weights_file(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_the_file_list_is_torchvisions(hub):
    for backbone, weights, filename in CACHED_WEIGHTS:
        member = torchvision.models.get_model_weights(backbone)[weights.split(".")[1]]
        assert f"{type(member).__name__}.{member.name}" == weights
        assert weights_file(member).name == filename
    listed = {weights for _, weights, _ in CACHED_WEIGHTS}
    for backbone in {b for b, _, _ in CACHED_WEIGHTS}:
        for member in torchvision.models.get_model_weights(backbone):
            assert f"{type(member).__name__}.{member.name}" in listed


@pytest.mark.parametrize("env", [{"TORCH_HOME": "/srv/t"}, {"XDG_CACHE_HOME": "/srv/x"}, {}])
def test_the_cache_folder_follows_torchs_rule(monkeypatch, env):
    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hub_checkpoints_dir() == Path(torch.hub.get_dir()) / "checkpoints"


def test_an_empty_cache_changes_nothing(hub):
    assert find_cached_weights() is None
    settings = Settings.from_env({})
    assert settings.backbone == "small_cnn" and settings.backbone_weights == ""


def test_cached_weights_become_the_backbone_and_are_loaded_offline(hub):
    state = place(RESNET18, "resnet18")
    settings = Settings.from_env({})
    assert (settings.backbone, settings.backbone_weights) == ("resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    config = model_config_from(settings)
    assert config.image_size == 224 and config.input_norm == "dataset"
    network = build_network(config, num_classes=4)
    loaded = {k: v for k, v in network.state_dict().items() if k.endswith("conv1.weight")}
    assert loaded and any(torch.equal(v, state["conv1.weight"]) for v in loaded.values())


def test_smaller_networks_are_preferred(hub):
    place(torchvision.models.ResNet50_Weights.IMAGENET1K_V2, "resnet50")
    assert find_cached_weights()[:2] == ("resnet50", "ResNet50_Weights.IMAGENET1K_V2")
    place(RESNET18, "resnet18")
    assert find_cached_weights()[:2] == ("resnet18", "ResNet18_Weights.IMAGENET1K_V1")


@pytest.mark.parametrize(
    "env",
    [
        {"DISCOVER_WEIGHTS": "false"},
        {"BACKBONE": "resnet34"},
        {"PRETRAINED_WEIGHTS": "/nonexistent/weights.pt"},
    ],
)
def test_a_user_choice_wins_over_discovery(hub, env):
    place(RESNET18, "resnet18")
    settings = Settings.from_env(env)
    assert settings.backbone_weights == ""
    assert settings.backbone == env.get("BACKBONE", "small_cnn")


def test_an_empty_file_is_not_taken_for_weights(hub):
    path = weights_file(RESNET18)
    path.parent.mkdir(parents=True)
    path.touch()
    assert find_cached_weights() is None


def test_each_listed_network_names_its_preferred_weights():
    from model.weights_cache import weights_for

    assert weights_for("resnet50") == "ResNet50_Weights.IMAGENET1K_V2"
    assert weights_for("resnet18") == "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(ValueError, match="resnet18"):
        weights_for("vgg16")


def test_the_fetch_command_refuses_an_unknown_network(capsys):
    from model.weights_cache import main

    with pytest.raises(SystemExit) as exited:
        main(["--fetch", "vgg16"])
    assert exited.value.code == 2 and "no pretrained weights are listed" in capsys.readouterr().err


def test_the_image_bakes_weights_only_when_asked():
    dockerfile = (Path(__file__).resolve().parents[3] / "docker" / "Dockerfile").read_text()
    assert 'ARG TORCHVISION_WEIGHTS=""' in dockerfile
    assert 'if [ -n "$TORCHVISION_WEIGHTS" ]' in dockerfile
    assert "python -m model.weights_cache --fetch" in dockerfile
    # the app user's own hub cache, where discovery looks when the container runs
    assert "TORCH_HOME=~app/.cache/torch" in dockerfile and "--home-dir /home/app" in dockerfile
