"""Learning from the unlabeled pool while training: views, pseudo-labels, the loss, the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import ModelConfig, TrainConfig, train
from model.consistency import (
    PseudoLabels,
    consistency_loss,
    cutout,
    pseudo_labels,
    strong_view,
    weak_view,
)

DIGIT_LABELS = [str(digit) for digit in range(10)]


def test_pseudo_labels_keep_only_confident_predictions():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.2], [0.0, 0.0, 9.0]])
    labels = pseudo_labels(logits, threshold=0.9)
    assert labels.targets.tolist() == [0, 2, 2]
    assert labels.mask.tolist() == [1.0, 0.0, 1.0]


def test_consistency_loss_is_zero_without_a_confident_image_and_averages_over_the_batch():
    strong = torch.tensor([[0.0, 3.0], [2.0, 0.0]], requires_grad=True)
    none = PseudoLabels(torch.tensor([0, 0]), torch.tensor([0.0, 0.0]))
    assert float(consistency_loss(strong, none).detach()) == 0.0
    one = PseudoLabels(torch.tensor([0, 0]), torch.tensor([1.0, 0.0]))
    loss = consistency_loss(strong, one)
    expected = torch.nn.functional.cross_entropy(strong[:1], torch.tensor([0])) / 2
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    loss.backward()
    assert strong.grad is not None
    assert torch.all(strong.grad[1] == 0)  # the unconfident image teaches nothing


def test_cutout_blanks_one_square_of_the_given_share_per_image():
    batch = torch.ones(16, 3, 20, 20)
    out = cutout(batch, 0.4, torch.Generator().manual_seed(0))
    blanked = (out == 0).all(dim=1).sum(dim=(1, 2))
    assert torch.all(blanked <= 8 * 8)  # at most the whole 8 x 8 square, clipped at the edges
    assert torch.all(blanked > 0)  # its centre is always inside the image
    assert int(blanked.max()) == 64  # some square fits wholly inside
    assert torch.equal(batch, torch.ones(16, 3, 20, 20))  # the input is not changed


def _red_images(n: int) -> torch.Tensor:
    batch = torch.zeros(n, 3, 16, 16, dtype=torch.uint8)
    batch[:, 0] = 200
    batch[:, 1:] = 40
    return batch


def test_the_weak_view_keeps_colours_the_strong_view_may_change_them():
    config = ModelConfig(image_size=16)
    batch = _red_images(64)
    weak = weak_view(batch, config, torch.Generator().manual_seed(0))
    assert torch.all(weak[:, 0].mean(dim=(1, 2)) > weak[:, 1].mean(dim=(1, 2)))
    strong = strong_view(batch, config, torch.Generator().manual_seed(0))
    red_first = strong[:, 0].mean(dim=(1, 2)) > strong[:, 1].mean(dim=(1, 2))
    assert not torch.all(red_first)  # some strong views are grey or inverted


def _digits_subset(digits, count):
    images, targets = digits
    return images[:count], [int(t) for t in targets[:count]]


def test_training_learns_from_the_pool_only_when_its_weight_is_set(digits, tiny_model_config):
    images, targets = _digits_subset(digits, 20)
    pool = digits[0][20:220]
    base = TrainConfig(
        epochs=3, batch_size=8, seed=3, device="cpu", unlabeled_batch_size=16, pseudo_label_threshold=0.0
    )
    alone = train(images, targets, DIGIT_LABELS, tiny_model_config, base)
    off = train(images, targets, DIGIT_LABELS, tiny_model_config, base, unlabeled=pool)
    on = train(
        images,
        targets,
        DIGIT_LABELS,
        tiny_model_config,
        TrainConfig(**{**base.to_dict(), "unlabeled_weight": 1.0}),
        unlabeled=pool,
    )
    assert "pseudo_label_share" not in off.metrics
    for name, value in alone.model.state_dict().items():
        assert torch.equal(value, off.model.state_dict()[name]), name
    assert on.metrics["unlabeled_images"] == 200
    assert on.metrics["pseudo_label_share"] == 1.0  # threshold 0: every view is pseudo-labeled
    changed = [
        name
        for name, value in alone.model.state_dict().items()
        if value.is_floating_point() and not torch.equal(value, on.model.state_dict()[name])
    ]
    assert changed


def test_a_high_threshold_pseudo_labels_less_of_the_pool(digits, tiny_model_config):
    images, targets = _digits_subset(digits, 20)
    pool = [np.asarray(img.resize((8, 8)).convert("RGB"))[:, :, :3].copy() for img in digits[0][20:120]]
    shares = []
    for threshold in (0.0, 0.99):
        config = TrainConfig(
            epochs=2,
            batch_size=8,
            seed=0,
            device="cpu",
            unlabeled_weight=1.0,
            unlabeled_batch_size=16,
            pseudo_label_threshold=threshold,
        )
        result = train(images, targets, DIGIT_LABELS, tiny_model_config, config, unlabeled=pool)
        shares.append(result.metrics["pseudo_label_share"])
    assert shares[0] == 1.0 and shares[1] < 0.5


@pytest.mark.parametrize(
    "field,value", [("unlabeled_weight", -1.0), ("unlabeled_batch_size", 0), ("pseudo_label_threshold", 1.5)]
)
def test_bad_consistency_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})
