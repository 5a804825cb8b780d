"""The loss prediction module learns the loss inference sees: its training target is the
per-sample cross-entropy of the head WITHOUT dropout (scoring runs in eval mode); the classifier's
own loss keeps dropout, and MC-dropout scoring (bald) keeps sampling it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig, TrainConfig, build_network, train
from model import objective as objective_module
from model.frozen import extract_pooled, train_frozen
from model.trainer import lpm_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LABELS = [str(d) for d in range(10)]


def first_lpm_target(monkeypatch, module) -> list[torch.Tensor]:
    """Record the target of every LPM loss the module computes (the real loss still runs)."""
    seen: list[torch.Tensor] = []
    real = module.lpm_loss

    def recording(name, predicted, target, margin=1.0):
        seen.append(target.detach().clone())
        return real(name, predicted, target, margin)

    monkeypatch.setattr(module, "lpm_loss", recording)
    return seen


def test_lpm_target_is_the_eval_mode_loss_not_the_dropout_one():
    torch.manual_seed(0)
    net = build_network(ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8, dropout=0.5), 3)
    net.train()
    embedding, y = torch.randn(64, net.embedding_dim), torch.randint(0, 3, (64,))
    with_dropout = net.head(net.dropout(embedding))
    target = lpm_target(net, embedding, with_dropout, y)
    net.eval()
    inference = F.cross_entropy(net.head(embedding), y, reduction="none")
    torch.testing.assert_close(target, inference.detach())
    assert not torch.allclose(target, F.cross_entropy(with_dropout, y, reduction="none"))
    assert not target.requires_grad


def test_full_training_target_does_not_depend_on_dropout(monkeypatch, digits):
    # Same seed, same batch, same weights at step 1; only the dropout rate differs. The target
    # the module is trained on must be identical (before the fix it was the dropped-out loss).
    images, targets = digits
    firsts = []
    for dropout in (0.5, 0.0):
        seen = first_lpm_target(monkeypatch, objective_module)
        config = ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8, dropout=dropout)
        result = train(
            images[:48],
            targets[:48].tolist(),
            LABELS,
            config,
            TrainConfig(epochs=1, batch_size=16, seed=0, val_fraction=0.0),
        )
        firsts.append(seen[0])
        monkeypatch.undo()
    torch.testing.assert_close(firsts[0], firsts[1])
    assert result.metrics["steps"] >= 2


def test_frozen_training_target_does_not_depend_on_dropout(monkeypatch, digits):
    images, targets = digits
    config = ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8)
    torch.manual_seed(0)
    base = build_network(config, len(LABELS))
    features = extract_pooled(base, images[:48], config, device="cpu", batch_size=16)
    firsts = []
    for dropout in (0.5, 0.0):
        seen = first_lpm_target(monkeypatch, objective_module)
        model = copy.deepcopy(base)
        model.dropout.p = dropout
        train_frozen(
            model,
            features,
            targets[:48].tolist(),
            LABELS,
            config,
            TrainConfig(seed=0, device="cpu", batch_size=16, val_fraction=0.0),
        )
        firsts.append(seen[0])
        monkeypatch.undo()
    torch.testing.assert_close(firsts[0], firsts[1])
    assert np.isfinite(firsts[0].numpy()).all()
