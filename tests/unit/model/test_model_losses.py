"""LPM objectives on hand-computed examples, and the feature-detach schedule."""

from __future__ import annotations

import math

import pytest
import torch

from model import ModelConfig, build_network
from model.losses import lpm_loss, margin_ranking_loss, ranking_bce_loss, split_pairs

PREDICTED = torch.tensor([3.0, 1.0, 2.0, 0.0])
TRUE_LOSS = torch.tensor([0.5, 2.0, 1.0, 0.1])
# Pairs (first half vs reversed second half): (0, 3) and (1, 2); l_0 > l_3 and l_1 > l_2.
# v1, margin 1: max(0, -(3 - 0) + 1) = 0 and max(0, -(1 - 2) + 1) = 2 -> mean 1.0


def test_pairs_are_first_half_against_reversed_second_half():
    first, second = split_pairs(torch.arange(5))
    assert first.tolist() == [0, 1] and second.tolist() == [3, 2]


def test_margin_ranking_loss_matches_hand_computation():
    assert margin_ranking_loss(PREDICTED, TRUE_LOSS, margin=1.0).item() == pytest.approx(1.0)
    # margin 0.5: pairs give 0 and 1.5
    assert margin_ranking_loss(PREDICTED, TRUE_LOSS, margin=0.5).item() == pytest.approx(0.75)


def test_ranking_bce_matches_hand_computation():
    expected = (math.log1p(math.exp(-3.0)) + math.log1p(math.exp(1.0))) / 2
    assert ranking_bce_loss(PREDICTED, TRUE_LOSS).item() == pytest.approx(expected, rel=1e-6)


def test_mse_and_selection_by_name():
    expected = ((PREDICTED - TRUE_LOSS) ** 2).mean().item()
    assert lpm_loss("mse", PREDICTED, TRUE_LOSS).item() == pytest.approx(expected)
    assert lpm_loss("v1", PREDICTED, TRUE_LOSS).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="v1"):
        lpm_loss("hinge", PREDICTED, TRUE_LOSS)


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_odd_batch_drops_the_last_sample_and_single_sample_gives_zero(name):
    odd_pred = torch.cat([PREDICTED, torch.tensor([100.0])])
    odd_true = torch.cat([TRUE_LOSS, torch.tensor([-100.0])])
    assert lpm_loss(name, odd_pred, odd_true).item() == pytest.approx(
        lpm_loss(name, PREDICTED, TRUE_LOSS).item()
    )
    single = torch.tensor([1.5], requires_grad=True)
    loss = lpm_loss(name, single, torch.tensor([2.0]))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert single.grad is not None and single.grad.item() == 0.0


def test_true_losses_get_no_gradient():
    true_loss = TRUE_LOSS.clone().requires_grad_(True)
    predicted = PREDICTED.clone().requires_grad_(True)
    for name in ("v1", "v2", "mse"):
        lpm_loss(name, predicted, true_loss).backward()
        assert true_loss.grad is None
        assert predicted.grad is not None


def _backbone_grad_norm(model) -> float:
    grads = [p.grad for p in model.features.parameters() if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


def test_detach_stops_lpm_gradients_into_the_backbone():
    torch.manual_seed(0)
    model = build_network(ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8), num_classes=3)
    model.train()
    x = torch.randn(6, 3, 8, 8)
    true_loss = torch.rand(6)

    out = model(x)
    lpm_loss("v1", out.predicted_loss, true_loss, margin=10.0).backward()
    assert _backbone_grad_norm(model) > 0, "before the detach the LPM shapes the backbone"

    model.zero_grad(set_to_none=True)
    model.detach_lpm_input = True
    out = model(x)
    lpm_loss("v1", out.predicted_loss, true_loss, margin=10.0).backward()
    assert _backbone_grad_norm(model) == 0.0, "after the detach it must not"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.lpm.parameters())

    # The classifier loss still trains the backbone after the detach.
    model.zero_grad(set_to_none=True)
    out = model(x)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert _backbone_grad_norm(model) > 0
