"""Combinations of margin and predicted loss, with a per-class cap or k-center diversity.

Added after the MNIST / digits benchmarks (benchmarks/results/ablation.md): the loss prediction
module ranks worse than the classifier's own margin, and top-K by any single score over-samples one
confusable class."""

from __future__ import annotations

import math

import numpy as np

from model.outputs import ScoreOutputs
from model.strategies.diversity import _preselect_k_center
from model.strategies.geometry import _picked_then_rest
from model.strategies.registry import Ranking, order_by_value, register
from model.strategies.uncertainty import _margin, margin_values


def rank_average_values(*value_arrays: np.ndarray) -> np.ndarray:
    """Mean of each item's normalised rank under every value array (1 = most informative under
    all of them). Ties share their mean rank; scale-free, so losses and margins mix fairly."""
    from model.metrics import average_ranks

    n = len(value_arrays[0])
    if n == 0:
        return np.zeros(0)
    scale = max(n - 1, 1)
    return np.mean([average_ranks(np.asarray(v, dtype=np.float64)) / scale for v in value_arrays], axis=0)


def class_capped_order(
    values: np.ndarray, predicted: np.ndarray, budget: int, num_classes: int
) -> np.ndarray:
    """Walk items by descending value; skip an item while its predicted class already has
    ceil(2 * budget / num_classes) picks, until ``budget`` items are picked (skipped items are
    taken afterwards if the caps leave the budget unfilled). Then the rest by value."""
    order = order_by_value(values)
    picks = min(budget, len(order))
    if picks == 0:
        return order
    cap = max(1, math.ceil(2 * picks / max(num_classes, 1)))
    counts = np.zeros(max(num_classes, int(predicted.max(initial=0)) + 1), dtype=np.int64)
    picked: list[int] = []
    skipped: list[int] = []
    for index in order:
        if len(picked) == picks:
            break
        c = int(predicted[index])
        if counts[c] < cap:
            counts[c] += 1
            picked.append(int(index))
        else:
            skipped.append(int(index))
    picked.extend(skipped[: picks - len(picked)])
    return _picked_then_rest(np.asarray(picked, dtype=np.int64), values)


# ----------------------------------------------------------------------------- values functions


def _ll_margin(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    # Rank average within ``outputs``: meaningful when they hold the pool, not one item.
    return rank_average_values(outputs.predicted_loss, margin_values(outputs.probs))


# ----------------------------------------------------------------------------- ranking functions


def margin_class_capped(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """Margin order with a per-predicted-class cap of ceil(2 x budget / C) picks in the batch."""
    probs = outputs.probs
    return Ranking(class_capped_order(margin_values(probs), probs.argmax(axis=1), budget, probs.shape[1]))


def ll_margin_class_capped(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """Rank-average of predicted loss and margin, with the per-predicted-class cap."""
    probs = outputs.probs
    values = rank_average_values(outputs.predicted_loss, margin_values(probs))
    return Ranking(class_capped_order(values, probs.argmax(axis=1), budget, probs.shape[1]))


def margin_diverse(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """Like hybrid, with the margin instead of the predicted loss: the 10 x budget smallest-margin
    items are candidates, k-center greedy on their embeddings picks the batch."""
    return _preselect_k_center(margin_values(outputs.probs), outputs, rng, budget, labeled_embedding)


def ll_margin_diverse(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """Rank-average of predicted loss and margin preselects 10 x budget; k-center picks the batch."""
    values = rank_average_values(outputs.predicted_loss, margin_values(outputs.probs))
    return _preselect_k_center(values, outputs, rng, budget, labeled_embedding)


# ----------------------------------------------------------------------------- the entries


register("ll_margin_rank_avg", "rank average of predicted loss and margin", _ll_margin)
register(
    "margin_class_capped",
    "margin order, at most ceil(2 x budget / C) picks per predicted class",
    _margin,
    margin_class_capped,
    batch_aware=True,
)
register(
    "ll_margin_class_capped",
    "ll_margin_rank_avg with the per-class cap",
    _ll_margin,
    ll_margin_class_capped,
    batch_aware=True,
)
register(
    "margin_diverse",
    "top 10 x budget by margin, k-center greedy among them",
    _margin,
    margin_diverse,
    batch_aware=True,
    uses_labeled_embedding=True,
    clusters=True,
)
register(
    "ll_margin_diverse",
    "top 10 x budget by ll_margin_rank_avg, k-center greedy among them",
    _ll_margin,
    ll_margin_diverse,
    batch_aware=True,
    uses_labeled_embedding=True,
    clusters=True,
)
