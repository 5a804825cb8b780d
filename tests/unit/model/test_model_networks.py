"""Every supported family builds with its LPM taps; pretrained weights load from a local file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from model import LossLearningNet, ModelConfig, build_network
from model.networks import backbone_state_dict

FAMILIES = [
    ("small_cnn", 32, ("block1", "block2", "block3")),
    ("cifar_resnet18", 32, ("layer1", "layer2", "layer3", "layer4")),
    ("resnet18", 32, ("layer1", "layer2", "layer3", "layer4")),
    ("resnet34", 32, ("layer1", "layer2", "layer3", "layer4")),
    ("resnet50", 32, ("layer1", "layer2", "layer3", "layer4")),
    ("mobilenet_v3_small", 32, None),
    ("mobilenet_v3_large", 32, None),
    ("efficientnet_b0", 32, None),
    ("convnext_tiny", 32, ("features.1", "features.3", "features.5", "features.7")),
]


@pytest.mark.parametrize("backbone,size,expected_taps", FAMILIES)
def test_family_builds_with_taps_and_gives_three_outputs(backbone, size, expected_taps):
    torch.manual_seed(0)
    model = build_network(ModelConfig(backbone=backbone, image_size=size), num_classes=5)
    assert isinstance(model, LossLearningNet)
    if expected_taps is not None:
        assert model.taps == expected_taps
    assert 2 <= len(model.taps) <= 4
    for mode in ("train", "eval"):
        getattr(model, mode)()
        with torch.no_grad():
            out = model(torch.randn(2, 3, size, size))
        assert out.logits.shape == (2, 5)
        assert out.predicted_loss.shape == (2,)
        assert out.embedding.shape == (2, model.embedding_dim)
        assert torch.isfinite(out.predicted_loss).all()


def test_cifar_resnet18_keeps_full_resolution_in_the_stem():
    model = build_network(ModelConfig(backbone="cifar_resnet18", image_size=32), num_classes=10)
    conv1 = model.features.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(model.features.maxpool, torch.nn.Identity)


def test_custom_taps_and_a_clear_error_for_unknown_ones():
    model = build_network(ModelConfig(backbone="resnet18", image_size=32, taps=("layer3", "layer4")), 3)
    assert model.taps == ("layer3", "layer4") and len(model.lpm.branches) == 2
    with pytest.raises(ValueError, match="taps"):
        build_network(ModelConfig(backbone="resnet18", image_size=32, taps=("nope",)), 3)


def test_unknown_backbone_and_too_small_input_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_network(ModelConfig(backbone="resnet9000"), 3)
    with pytest.raises(ValueError, match="image_size"):
        build_network(ModelConfig(backbone="alexnet", image_size=32), 3)


def test_pretrained_weights_load_from_a_local_file_with_a_new_head(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None, num_classes=1000)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    model = build_network(ModelConfig(backbone="resnet18", image_size=32, pretrained_weights=str(path)), 4)
    torch.testing.assert_close(model.features.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(
        model.features.get_submodule("layer4.1.conv2").weight, source.layer4[1].conv2.weight
    )
    assert model.head.out_features == 4  # head replaced for our classes


def test_pretrained_head_is_kept_when_it_fits(tmp_path):
    source = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3)
    path = tmp_path / "mnv3.pt"
    torch.save({"state_dict": source.state_dict()}, path)  # wrapped dicts are unwrapped
    model = build_network(ModelConfig(backbone="mobilenet_v3_small", pretrained_weights=str(path)), 3)
    torch.testing.assert_close(model.head.weight, source.classifier[3].weight)


def test_a_trained_networks_backbone_is_the_pretrained_start_of_a_network_with_other_classes(tmp_path):
    torch.manual_seed(2)
    trained = build_network(ModelConfig(), 7)
    with torch.no_grad():  # weights and BN statistics a fresh network would not have
        for tensor in trained.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    path = tmp_path / "backbone.pt"
    torch.save(backbone_state_dict(trained), path)
    reused = build_network(ModelConfig(pretrained_weights=str(path)), 3)
    theirs, ours = trained.features.state_dict(), reused.features.state_dict()
    assert theirs.keys() == ours.keys()
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key])
    assert reused.head.out_features == 3


def test_wrong_pretrained_weights_fail_loudly(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        build_network(ModelConfig(backbone="resnet18", pretrained_weights=str(path)), 3)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load pretrained"):
        build_network(ModelConfig(pretrained_weights=str(garbage)), 3)


def test_head_and_loss_module_stay_fp32_under_autocast_and_rankings_agree(digits):
    # CPU autocast in bfloat16 stands in for the GPU's: the backbone may run in bf16, but the
    # head and the loss prediction module must not, or 1,797 predicted losses collapse to a few
    # hundred distinct values (783 before the fix) and the ranking breaks ties by task order.
    from model import ModelConfig, TrainConfig, train
    from model.data import images_to_uint8, normalize
    from model.metrics import spearman
    from model.strategies import margin_values, order_by_value

    images, targets = digits
    config = ModelConfig(image_size=16, small_cnn_width=8, lpm_width=16)
    result = train(
        images[:300],
        targets[:300].tolist(),
        [str(d) for d in range(10)],
        config,
        TrainConfig(epochs=4, batch_size=32),
    )
    net = result.model.eval()
    x = normalize(images_to_uint8(images, config), config)
    with torch.inference_mode():
        full = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(x)
    assert mixed.logits.dtype == mixed.predicted_loss.dtype == mixed.embedding.dtype == torch.float32
    loss32, loss16 = full.predicted_loss.numpy(), mixed.predicted_loss.numpy()
    margin32 = margin_values(torch.softmax(full.logits, 1).numpy())
    margin16 = margin_values(torch.softmax(mixed.logits, 1).numpy())
    assert len(np.unique(loss16)) == len(loss16)
    assert spearman(loss32, loss16) > 0.999 and spearman(margin32, margin16) > 0.999
    top = 100
    assert len(set(order_by_value(loss32)[:top]) & set(order_by_value(loss16)[:top])) >= 0.95 * top
    # margins see the bf16 backbone's rounding; near-ties at the cut may swap, no more
    assert len(set(order_by_value(margin32)[:top]) & set(order_by_value(margin16)[:top])) >= 0.85 * top
