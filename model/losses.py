"""Objectives of the Loss Prediction Module: it learns to rank (or regress) the target loss.

All take the LPM output ``predicted`` (B,) and the per-sample target loss ``target`` (B,); the
target is always detached, so the LPM objective never changes the target loss itself.
Pairs follow the reference implementation: first half of the batch vs the reversed second half.
With an odd batch the last sample sits out of the pairing; with a batch of one the loss is 0
(still attached to the graph, so backward() works).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first half, reversed second half) of ``values``; an odd last element is dropped."""
    half = values.shape[0] // 2
    return values[:half], values[half : 2 * half].flip(0)


def _zero(predicted: torch.Tensor) -> torch.Tensor:
    return predicted.sum() * 0.0


def margin_ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """v1 (the paper): mean over pairs of max(0, -sign(l_i - l_j) * (p_i - p_j) + margin).

    Tied true losses (sign 0) add a constant ``margin`` and no gradient: no preferred order.
    """
    if predicted.shape[0] < 2:
        return _zero(predicted)
    p_i, p_j = split_pairs(predicted)
    l_i, l_j = split_pairs(target.detach())
    sign = torch.sign(l_i - l_j)
    return torch.clamp(margin - sign * (p_i - p_j), min=0.0).mean()


def ranking_bce_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """v2 (TA-VAAL): mean over pairs of BCE(sigmoid(p_i - p_j), 1[l_i > l_j]). ``margin`` unused."""
    del margin
    if predicted.shape[0] < 2:
        return _zero(predicted)
    p_i, p_j = split_pairs(predicted)
    l_i, l_j = split_pairs(target.detach())
    return F.binary_cross_entropy_with_logits(p_i - p_j, (l_i > l_j).to(p_i.dtype))


def mse_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Plain regression of the per-sample loss (the paper's weaker baseline). ``margin`` unused."""
    del margin
    if predicted.shape[0] < 1:
        return _zero(predicted)
    return F.mse_loss(predicted, target.detach())


LPM_LOSS_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "v1": margin_ranking_loss,
    "v2": ranking_bce_loss,
    "mse": mse_loss,
}


def lpm_loss(name: str, predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    try:
        function = LPM_LOSS_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown lpm_loss {name!r}; known: {sorted(LPM_LOSS_FUNCTIONS)}") from None
    return function(predicted, target, margin)
