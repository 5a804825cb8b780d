"""Joint training: edge-case labeled sets, determinism, schedules, class balance, progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import TrainConfig, TrainResult, score, train
from model.trainer import auto_epochs, batch_index_lists, class_weights, lr_at

DIGIT_LABELS = [str(digit) for digit in range(10)]


def _subset(digits, indices):
    images, targets = digits
    return [images[i] for i in indices], [int(targets[i]) for i in indices]


def test_trains_on_a_single_image(digits, tiny_model_config, quick_train_config):
    images, targets = _subset(digits, [0])
    result = train(images, targets, DIGIT_LABELS, tiny_model_config, quick_train_config)
    assert isinstance(result, TrainResult)
    assert result.metrics["n_train"] == 1 and result.labels == DIGIT_LABELS
    assert not result.model.training


@pytest.mark.parametrize("n", [2, 3, 9, 17])
def test_odd_and_tiny_sets_with_unused_classes(digits, tiny_model_config, n):
    # Labels list 10 classes; the few images cover only some of them.
    images, targets = _subset(digits, range(n))
    result = train(images, targets, DIGIT_LABELS, tiny_model_config, TrainConfig(epochs=2, batch_size=8))
    assert result.model.num_classes == 10
    assert np.isfinite(result.metrics["train_loss"])


def test_deterministic_under_a_seed_on_cpu(digits, tiny_model_config):
    images, targets = _subset(digits, range(24))
    config = TrainConfig(epochs=3, batch_size=8, seed=11, device="cpu")
    first = train(images, targets, DIGIT_LABELS, tiny_model_config, config).model.state_dict()
    second = train(images, targets, DIGIT_LABELS, tiny_model_config, config).model.state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    other = train(
        images, targets, DIGIT_LABELS, tiny_model_config, TrainConfig(epochs=3, batch_size=8, seed=12)
    )
    assert any(not torch.equal(first[k], other.model.state_dict()[k]) for k in first)


def test_global_rng_is_left_untouched(digits, tiny_model_config, quick_train_config):
    images, targets = _subset(digits, range(8))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(images, targets, DIGIT_LABELS, tiny_model_config, quick_train_config)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "lpm_loss,optimizer,lr", [("v1", "sgd", 0.05), ("v2", "adamw", 1e-3), ("mse", "sgd", 0.05)]
)
def test_losses_and_optimizers_are_selectable(digits, tiny_model_config, lpm_loss, optimizer, lr):
    images, targets = _subset(digits, range(20))
    config = TrainConfig(epochs=2, batch_size=8, lpm_loss=lpm_loss, optimizer=optimizer, lr=lr)
    result = train(images, targets, DIGIT_LABELS, tiny_model_config, config)
    assert result.train_config.lpm_loss == lpm_loss and np.isfinite(result.metrics["lpm_loss"])


def test_progress_reports_each_epoch_and_can_cancel(digits, tiny_model_config):
    images, targets = _subset(digits, range(20))
    seen = []
    train(images, targets, DIGIT_LABELS, tiny_model_config, TrainConfig(epochs=3, batch_size=8), seen.append)
    assert [event["epoch"] for event in seen] == [1, 2, 3]
    assert {"epochs", "step", "train_loss", "train_acc", "lpm_loss", "lr", "seconds"} <= set(seen[0])

    class Cancelled(Exception):
        pass

    def cancel(event):
        raise Cancelled

    with pytest.raises(Cancelled):
        train(images, targets, DIGIT_LABELS, tiny_model_config, TrainConfig(epochs=3, batch_size=8), cancel)


def test_learning_rate_milestone_and_detach_schedule(digits, tiny_model_config):
    images, targets = _subset(digits, range(16))
    events = []
    config = TrainConfig(
        epochs=10, batch_size=16, lr=0.01, lr_schedule="step", lr_milestone_fraction=0.8, detach_fraction=0.6
    )
    train(images, targets, DIGIT_LABELS, tiny_model_config, config, events.append)
    assert [e["lr"] for e in events] == pytest.approx([0.01] * 8 + [0.001] * 2)
    assert [e["lpm_input_detached"] for e in events] == [False] * 6 + [True] * 4


def test_validation_split_reports_accuracy_and_lpm_spearman(digits, tiny_model_config):
    images, targets = _subset(digits, range(40))
    result = train(
        images,
        targets,
        DIGIT_LABELS,
        tiny_model_config,
        TrainConfig(epochs=2, batch_size=8, val_fraction=0.25),
    )
    assert result.metrics["n_val"] == 10 and result.metrics["n_train"] == 30
    assert 0.0 <= result.metrics["val_acc"] <= 1.0
    assert "lpm_spearman" in result.metrics


def test_bad_inputs_are_rejected(digits, tiny_model_config, quick_train_config):
    images, targets = _subset(digits, range(3))
    with pytest.raises(ValueError):
        train([], [], DIGIT_LABELS, tiny_model_config, quick_train_config)
    with pytest.raises(ValueError):
        train(images, targets[:2], DIGIT_LABELS, tiny_model_config, quick_train_config)
    with pytest.raises(ValueError, match="class indices"):
        train(images, [0, 1, 10], DIGIT_LABELS, tiny_model_config, quick_train_config)


def test_auto_epochs_rule():
    config = TrainConfig()
    assert auto_epochs(30, config) == 2000  # one batch per epoch -> 2,000 steps
    assert auto_epochs(1000, config) == 125  # 16 batches -> ceil(2000 / 16)
    assert auto_epochs(50_000, config) == config.auto_min_epochs
    assert auto_epochs(30, TrainConfig(auto_target_steps=600, auto_max_epochs=100)) == 100  # capped
    assert auto_epochs(5, TrainConfig(epochs=7)) == 7


def test_cosine_schedule_warms_up_then_decays_to_zero(digits, tiny_model_config):
    cfg = TrainConfig(lr=0.01, lr_schedule="cosine", warmup_fraction=0.1)
    lrs = [lr_at(cfg, cfg.lr, step, 100) for step in range(100)]
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))  # never rises after the warm-up
    assert lrs[-1] < 0.0001
    images, targets = _subset(digits, range(16))
    events = []
    train(
        images,
        targets,
        DIGIT_LABELS,
        tiny_model_config,
        TrainConfig(epochs=4, batch_size=16, lr=0.01, warmup_fraction=0.0),
        events.append,
    )
    seen = [e["lr"] for e in events]  # one step per epoch: the lr of steps 0..3
    assert seen == pytest.approx(
        [lr_at(TrainConfig(lr=0.01, warmup_fraction=0.0), 0.01, s, 4) for s in range(4)]
    )
    assert seen[0] == pytest.approx(0.01) and seen == sorted(seen, reverse=True) and seen[-1] < 0.002


def test_batches_never_hold_a_single_sample():
    batches = batch_index_lists(9, 4, torch.arange(9))
    assert [len(b) for b in batches] == [4, 5]
    assert [len(b) for b in batch_index_lists(1, 4, torch.arange(1))] == [2]
    assert torch.equal(
        torch.sort(torch.cat(batch_index_lists(10, 3, torch.arange(10)))).values, torch.arange(10)
    )


def test_class_weights_balance_and_clip():
    weights = class_weights(torch.tensor([0] * 90 + [1] * 10), num_classes=3, max_weight=10.0)
    assert weights[1] / weights[0] == pytest.approx(9.0)
    assert weights[2] == 1.0  # absent class
    clipped = class_weights(torch.tensor([0] * 999 + [1]), num_classes=2, max_weight=10.0)
    assert clipped.max() == 10.0
    balanced = class_weights(torch.tensor([0, 1, 0, 1]), 2, 10.0)
    assert torch.allclose(balanced, torch.ones(2))


def test_training_result_scores_its_own_images(digits, tiny_model_config, quick_train_config):
    images, targets = _subset(digits, range(12))
    result = train(images, targets, DIGIT_LABELS, tiny_model_config, quick_train_config)
    out = score(result.model, images, tiny_model_config)
    assert out.probs.shape == (12, 10)


def test_initial_state_starts_training_from_given_weights(digits, tiny_model_config):
    images, targets = digits
    first = train(
        images[:40],
        targets[:40].tolist(),
        DIGIT_LABELS,
        tiny_model_config,
        TrainConfig(epochs=2, batch_size=8, seed=0),
    )
    start = {k: v.clone() for k, v in first.model.state_dict().items()}
    # a learning rate too small to move anything: the result is the state it started from
    still = TrainConfig(epochs=1, batch_size=8, seed=5, lr=1e-12, weight_decay=0.0)
    warm = train(
        images[40:80], targets[40:80].tolist(), DIGIT_LABELS, tiny_model_config, still, initial_state=start
    )
    cold = train(images[40:80], targets[40:80].tolist(), DIGIT_LABELS, tiny_model_config, still)
    key = "features.block1.0.weight"
    assert key in start
    assert torch.allclose(warm.model.state_dict()[key], start[key], atol=1e-6)
    assert not torch.allclose(cold.model.state_dict()[key], start[key], atol=1e-3)


def test_weight_average_is_the_trained_model_when_ema_is_on(digits, tiny_model_config):
    from model.trainer import WeightAverage

    images, targets = _subset(digits, range(24))
    plain = TrainConfig(epochs=3, batch_size=8, seed=3, device="cpu")
    averaged = TrainConfig(epochs=3, batch_size=8, seed=3, device="cpu", ema_decay=0.9)
    last = train(images, targets, DIGIT_LABELS, tiny_model_config, plain).model.state_dict()
    smooth = train(images, targets, DIGIT_LABELS, tiny_model_config, averaged).model.state_dict()
    key = "features.block1.0.weight"
    # Same seed, same batches: only the averaging differs, so the weights differ.
    assert not torch.allclose(last[key], smooth[key])
    # Integer buffers (BatchNorm's step count) follow the model instead of being averaged.
    counts = [k for k in last if k.endswith("num_batches_tracked")]
    assert counts and all(torch.equal(last[k], smooth[k]) for k in counts)

    # The average itself: decay 0.5 between two states is their midpoint.
    net = torch.nn.Linear(2, 1)
    average = WeightAverage(net, decay=0.5)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(2.0)
    average.update(net)
    assert torch.allclose(average.state["weight"], start + 1.0)


def test_ema_decay_must_be_below_one():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
