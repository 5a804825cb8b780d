"""The entry points every caller uses: ``rank`` (the whole pool, most informative first),
``informativeness_values``, ``needs_mc_samples`` and ``ranking_to_scores`` (the one conversion to
Label Studio scores)."""

from __future__ import annotations

import numpy as np

from model.outputs import ScoreOutputs
from model.strategies.registry import Ranking, StrategySpec, order_by_value, spec

# Picks made by the batch-aware strategies when rank() gets no budget: greedy selection costs
# O(picks x N x D), so the whole pool is not selected greedily; the rest follows by score.
DEFAULT_BUDGET = 100


def _check_outputs(outputs: ScoreOutputs, entry: StrategySpec) -> None:
    n = len(outputs.probs)
    if outputs.probs.ndim != 2 or outputs.predicted_loss.shape != (n,) or outputs.embedding.ndim != 2:
        raise ValueError(
            "ScoreOutputs shapes must be probs (N, C), predicted_loss (N,), embedding (N, D); got "
            f"{outputs.probs.shape}, {outputs.predicted_loss.shape}, {outputs.embedding.shape}"
        )
    if len(outputs.embedding) != n:
        raise ValueError(f"embedding has {len(outputs.embedding)} rows, probs {n}")
    if outputs.mc_probs is not None and (outputs.mc_probs.ndim != 3 or outputs.mc_probs.shape[1] != n):
        raise ValueError(f"mc_probs must be (T, N, C), got {outputs.mc_probs.shape}")
    # No silent fallback: without MC samples, bald is not BALD.
    if entry.needs_mc_samples and outputs.mc_probs is None:
        raise ValueError(
            f"strategy {entry.name!r} needs MC-dropout samples: call score(..., mc_samples=T > 0)"
        )


def informativeness_values(
    strategy: str,
    outputs: ScoreOutputs,
    labeled_embedding: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per-item informativeness (higher = more informative): the registry entry's values function.
    Value-based strategies rank by it; batch strategies have no per-item value, so it is the
    value behind their choice: hybrid -> predicted loss, coreset and typiclust -> squared
    distance to the nearest labeled embedding (0 without one), badge -> gradient-embedding norm,
    the diverse ones -> their preselection value; random -> seeded uniform values."""
    entry = spec(strategy)
    _check_outputs(outputs, entry)
    return np.asarray(entry.values(outputs, np.random.default_rng(seed), labeled_embedding), dtype=np.float64)


def needs_mc_samples(strategy: str) -> bool:
    """Whether ``strategy`` needs score(..., mc_samples > 0)."""
    return spec(strategy).needs_mc_samples


def rank(
    strategy: str,
    outputs: ScoreOutputs,
    seed: int = 0,
    budget: int | None = None,
    labeled_embedding: np.ndarray | None = None,
) -> Ranking:
    """Rank the whole pool with ``strategy``; deterministic for a given seed.

    ``budget``: items picked jointly by batch-aware strategies (default DEFAULT_BUDGET, capped at
    N); ignored by the others. ``labeled_embedding`` (L, D): embeddings of already-labeled items,
    used by the strategies whose entry says ``uses_labeled_embedding`` (initial k-center centers).
    """
    entry = spec(strategy)
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    _check_outputs(outputs, entry)
    if labeled_embedding is not None:
        labeled_embedding = np.asarray(labeled_embedding)
        if labeled_embedding.ndim != 2 or labeled_embedding.shape[1] != outputs.embedding.shape[1]:
            raise ValueError(
                f"labeled_embedding must be (L, {outputs.embedding.shape[1]}), got {labeled_embedding.shape}"
            )
    n = len(outputs)
    if n == 0:
        return Ranking(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64) if entry.clusters else None)
    picks = min(DEFAULT_BUDGET if budget is None else budget, n)
    rng = np.random.default_rng(seed)
    if entry.ranking is None:
        ranking = Ranking(order_by_value(entry.values(outputs, rng, labeled_embedding)))
    else:
        ranking = entry.ranking(outputs, rng, picks, labeled_embedding)
    if len(ranking.order) != n or not np.array_equal(np.sort(ranking.order), np.arange(n)):
        raise RuntimeError(f"strategy {strategy!r} did not return a permutation of the pool")
    return ranking


def ranking_to_scores(order: np.ndarray) -> np.ndarray:
    """THE conversion from a ranking to Label Studio scores: item order[k] gets k / (N - 1).

    Range [0, 1], LOWER = MORE INFORMATIVE (0.0 = label first); N == 1 gives [0.0]. Distinct
    positions give distinct scores, so ties were already broken (stably) by the strategy.
    """
    order = np.asarray(order, dtype=np.int64)
    n = len(order)
    if not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError("order must be a permutation of range(N)")
    scores = np.zeros(n, dtype=np.float64)
    if n > 1:
        scores[order] = np.arange(n, dtype=np.float64) / (n - 1)
    return scores
