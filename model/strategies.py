"""Acquisition strategies: pure numpy functions of ScoreOutputs that rank the whole pool.

A strategy is ONE registry entry (``StrategySpec`` in ``STRATEGIES``) holding everything about it:
its per-item values function, its ranking (``order_by_value`` of the values unless it is
batch-aware and brings its own ranking function), whether it needs MC-dropout samples, whether it
uses the labeled set's embeddings, whether its ranking carries cluster ids, and the training
settings its name implies. A new strategy is one function + one ``register(...)`` call; the
registry test fails when an entry is incomplete or inconsistent.

Every strategy orders ALL N pool items, most informative first. Batch-aware strategies pick
``budget`` items jointly; the rest follow in the order of their remaining score.

Informativeness values are "higher = more informative" everywhere; ``ranking_to_scores`` is the
single conversion to Label Studio scores (lower = more informative).

numpy only, no torch: backend/settings.py imports this module to check STRATEGY.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from model.outputs import ScoreOutputs

# Picks made by the batch-aware strategies when rank() gets no budget: greedy selection costs
# O(picks x N x D), so the whole pool is not selected greedily; the rest follows by score.
DEFAULT_BUDGET = 100
# Hybrid preselects the top HYBRID_PRESELECT_FACTOR x budget items by predicted loss.
HYBRID_PRESELECT_FACTOR = 10
# Labeled embeddings used as initial k-center centers are subsampled to this many (bounded time).
MAX_LABELED_CENTERS = 5_000
# Rows per block in pairwise distance computations: bounds memory to CHUNK_ROWS x centers floats.
CHUNK_ROWS = 4_096
_EPS = 1e-12


@dataclass
class Ranking:
    order: np.ndarray  # (N,) int64, a permutation of range(N), most informative first
    cluster: np.ndarray | None = None  # (N,) int64 index of the nearest picked item, or None


# (outputs, rng, labeled_embedding) -> (N,) per-item values, higher = more informative
ValuesFunction = Callable[[ScoreOutputs, np.random.Generator, "np.ndarray | None"], np.ndarray]
# (outputs, rng, budget, labeled_embedding) -> Ranking of the whole pool
RankFunction = Callable[[ScoreOutputs, np.random.Generator, int, "np.ndarray | None"], Ranking]


@dataclass(frozen=True)
class StrategySpec:
    """Everything the code base needs to know about one strategy, in one place."""

    name: str
    summary: str  # one line for docs and error messages
    # Per-item informativeness (higher = more informative): the strategy's ranking for value-based
    # strategies; for batch-aware ones the value behind the choice (preselection or rest order).
    values: ValuesFunction
    # Own ranking function; None = order_by_value(values). Required when batch_aware.
    ranking: RankFunction | None = None
    batch_aware: bool = False  # picks ``budget`` items jointly (uses rank()'s budget)
    needs_mc_samples: bool = False  # needs ScoreOutputs.mc_probs: score(..., mc_samples > 0)
    uses_labeled_embedding: bool = False  # rank() uses labeled_embedding (pass it)
    clusters: bool = False  # its Ranking carries cluster ids (pushed with PUSH_CLUSTERS)
    # Training settings the name stands for (TrainConfig field -> value), e.g. learning_loss_v2 is
    # learning_loss's ranking of a module trained with lpm_loss="v2".
    train_overrides: Mapping[str, Any] = field(default_factory=dict)


STRATEGIES: dict[str, StrategySpec] = {}


def register(
    name: str,
    summary: str,
    values: ValuesFunction,
    ranking: RankFunction | None = None,
    *,
    batch_aware: bool = False,
    needs_mc_samples: bool = False,
    uses_labeled_embedding: bool = False,
    clusters: bool = False,
    train_overrides: Mapping[str, Any] | None = None,
) -> StrategySpec:
    """Add one strategy to the registry; refuses a duplicate name or an entry that cannot work."""
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} is registered twice")
    if batch_aware and ranking is None:
        raise ValueError(f"batch-aware strategy {name!r} needs its own ranking function")
    entry = StrategySpec(
        name, summary, values, ranking, batch_aware, needs_mc_samples, uses_labeled_embedding,
        clusters, MappingProxyType(dict(train_overrides or {})),
    )
    STRATEGIES[name] = entry
    return entry


def spec(name: str) -> StrategySpec:
    """The registry entry of ``name``; ValueError naming the known strategies otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None


# ----------------------------------------------------------------------------- value helpers


def order_by_value(values: np.ndarray) -> np.ndarray:
    """Indices by descending value; ties keep pool order (stable); NaN last."""
    values = np.asarray(values, dtype=np.float64)
    keys = np.where(np.isnan(values), -np.inf, values)
    return np.argsort(-keys, kind="stable").astype(np.int64)


def least_confidence_values(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs.max(axis=1)


def margin_values(probs: np.ndarray) -> np.ndarray:
    """Negative gap between the two most probable classes (a small gap = informative)."""
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top_two = np.partition(probs, -2, axis=1)[:, -2:]
    return -(top_two[:, 1] - top_two[:, 0])


def entropy_values(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), _EPS, 1.0)
    return -(probs * np.log(p)).sum(axis=-1)


def bald_values(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information H[mean_t p_t] - mean_t H[p_t] over T MC-dropout samples (T, N, C)."""
    return entropy_values(mc_probs.mean(axis=0)) - entropy_values(mc_probs).mean(axis=0)


# ----------------------------------------------------------------------------- k-center greedy


def _squared_distances(x: np.ndarray, x_sq: np.ndarray, center: np.ndarray) -> np.ndarray:
    """||x_i - center||^2 via norms (no (N, D) temporary), clipped at 0 against round-off."""
    return np.maximum(x_sq - 2.0 * (x @ center) + float(center @ center), 0.0)


def min_squared_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """For each row of x, the squared distance to its nearest center; chunked over both inputs."""
    best = np.full(len(x), np.inf, dtype=np.float64)
    if len(centers) == 0:
        return best
    x_sq = np.einsum("ij,ij->i", x, x)
    c_sq = np.einsum("ij,ij->i", centers, centers)
    for start in range(0, len(x), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        for c_start in range(0, len(centers), CHUNK_ROWS):
            cols = slice(c_start, c_start + CHUNK_ROWS)
            # ||x||^2 is constant per row, so it is added after the min (one pass less).
            d = x[rows] @ centers[cols].T
            d *= -2.0
            d += c_sq[None, cols]
            best[rows] = np.minimum(best[rows], d.min(axis=1) + x_sq[rows])
    return np.maximum(best, 0.0)


def nearest_center(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``centers`` for each row of ``x`` (chunked over x)."""
    out = np.zeros(len(x), dtype=np.int64)
    if len(centers) == 0:
        return out
    c_sq = np.einsum("ij,ij->i", centers, centers)
    for start in range(0, len(x), CHUNK_ROWS):
        block = x[start : start + CHUNK_ROWS]
        out[start : start + CHUNK_ROWS] = np.argmin(c_sq[None, :] - 2.0 * (block @ centers.T), axis=1)
    return out


def _subsample_rows(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= limit:
        return x
    return x[np.sort(rng.choice(len(x), size=limit, replace=False))]


def k_center_greedy(
    x: np.ndarray, picks: int, rng: np.random.Generator, labeled: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (Sener & Savarese 2018): repeatedly take the point farthest from all
    centers so far (the labeled set, then earlier picks). Returns (picked indices in pick order,
    each point's final squared distance to its nearest center). Without labeled centers the
    first pick is random (seeded). Memory O(N) beyond x; time O(picks x N x D)."""
    n = len(x)
    picks = min(picks, n)
    # float32 halves time and memory of the dominant matmuls; the round-off (~1e-7 relative)
    # cannot matter for choosing the farthest point.
    x = np.asarray(x, dtype=np.float32)
    x_sq = np.einsum("ij,ij->i", x, x)
    if labeled is not None:
        labeled = _subsample_rows(labeled, MAX_LABELED_CENTERS, rng)
    if labeled is not None and len(labeled):
        distance = min_squared_distances(x, np.asarray(labeled, dtype=np.float32))
    else:
        distance = np.full(n, np.inf)
    distance = distance.astype(np.float64)
    chosen = np.zeros(n, dtype=bool)
    picked: list[int] = []
    for _ in range(picks):
        if np.isinf(distance).all():
            index = int(rng.integers(n))
        else:
            candidates = np.where(chosen, -1.0, distance)
            index = int(np.argmax(candidates))  # lowest index among equals: deterministic
        picked.append(index)
        chosen[index] = True
        distance = np.minimum(distance, _squared_distances(x, x_sq, x[index]))
        distance[index] = 0.0
    return np.asarray(picked, dtype=np.int64), distance


def _picked_then_rest(picked: np.ndarray, rest_values: np.ndarray) -> np.ndarray:
    """The picked items in pick order, then all others by descending ``rest_values``."""
    remaining = np.ones(len(rest_values), dtype=bool)
    remaining[picked] = False
    rest = order_by_value(rest_values)
    return np.concatenate([picked, rest[remaining[rest]]]).astype(np.int64)


# ----------------------------------------------------------------------------- values functions
# Signature (outputs, rng, labeled_embedding) -> (N,) values, higher = more informative.


def _random_values(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return rng.random(len(outputs))


def _least_confidence(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return least_confidence_values(outputs.probs)


def _margin(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return margin_values(outputs.probs)


def _entropy(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return entropy_values(outputs.probs)


def _bald(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    if outputs.mc_probs is None:
        raise ValueError("strategy 'bald' needs MC-dropout samples: call score(..., mc_samples=T > 0)")
    return bald_values(outputs.mc_probs)


def _predicted_loss(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return outputs.predicted_loss.astype(np.float64)


def _distance_to_labeled(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    """Squared distance to the nearest labeled embedding (0 without a labeled set)."""
    n = len(outputs)
    if labeled_embedding is None or len(labeled_embedding) == 0 or n == 0:
        return np.zeros(n)
    labeled = _subsample_rows(np.asarray(labeled_embedding, np.float32), MAX_LABELED_CENTERS, rng)
    return min_squared_distances(outputs.embedding.astype(np.float32), labeled)


def _ll_margin(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    # Rank average within ``outputs``: meaningful when they hold the pool, not one item.
    return rank_average_values(outputs.predicted_loss, margin_values(outputs.probs))


# ----------------------------------------------------------------------------- ranking functions
# Signature (outputs, rng, budget, labeled_embedding) -> Ranking; only strategies whose order is
# not order_by_value(values) have one.


def _random_ranking(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """A seeded random permutation (kept as the original draw, so seeded runs stay comparable)."""
    return Ranking(rng.permutation(len(outputs)).astype(np.int64))


def coreset(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """k-center greedy on the embeddings, seeded by the labeled set when given; the rest by
    distance to the picked + labeled set (farthest first). cluster = nearest picked item."""
    picked, distance = k_center_greedy(outputs.embedding, budget, rng, labeled_embedding)
    order = _picked_then_rest(picked, distance)
    cluster = nearest_center(outputs.embedding, outputs.embedding[picked])
    return Ranking(order, cluster if len(picked) else None)


def typiclust(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """TypiClust (Hacohen et al. 2022, model/coldstart.py): k-means on the embeddings into
    ``budget`` clusters, the most typical item of each cluster no labeled item covers first
    (largest cluster first), then round-robin over the clusters. For a cold start (few labels),
    where uncertainty is meaningless; cluster = k-means cluster. The seed comes from ``rng``."""
    from model.coldstart import typiclust as typiclust_ranking  # scikit-learn: imported on use

    seed = int(rng.integers(2**31 - 1))
    result = typiclust_ranking(outputs.embedding, labeled_embedding, n_clusters=max(budget, 1), seed=seed)
    return Ranking(result.order, result.cluster)


def _gradient_factors(outputs: ScoreOutputs) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's gradient embedding g_i = (p_i - onehot(argmax p_i)) (x) e_i, kept factored:
    a = p - onehot (N, C) and e (N, D), never materialising the (N, C*D) matrix."""
    probs = outputs.probs.astype(np.float64)
    a = probs.copy()
    a[np.arange(len(a)), probs.argmax(axis=1)] -= 1.0
    return a, outputs.embedding.astype(np.float64)


def _gradient_sq_distances(
    a: np.ndarray, e: np.ndarray, a_sq: np.ndarray, e_sq: np.ndarray, index: int
) -> np.ndarray:
    """||g_i - g_k||^2 = |a_i|^2|e_i|^2 + |a_k|^2|e_k|^2 - 2 (a_i.a_k)(e_i.e_k), for all i."""
    cross = (a @ a[index]) * (e @ e[index])
    return np.maximum(a_sq * e_sq + a_sq[index] * e_sq[index] - 2.0 * cross, 0.0)


def badge(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings. The first pick has
    the largest gradient norm, each next one is drawn with probability proportional to its
    squared distance to the picks so far. The rest follows by that distance (largest first)."""
    n = len(outputs)
    picks = min(budget, n)
    a, e = _gradient_factors(outputs)
    a_sq, e_sq = np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", e, e)
    distance = np.full(n, np.inf)
    picked: list[int] = []
    for k in range(picks):
        if k == 0:
            index = int(np.argmax(a_sq * e_sq))
        else:
            weights = distance.copy()
            weights[picked] = 0.0
            total = weights.sum()
            if total > 0:
                index = int(rng.choice(n, p=weights / total))
            else:  # every remaining point coincides with a pick: any of them is as good
                index = int(rng.choice(np.setdiff1d(np.arange(n), picked)))
        picked.append(index)
        distance = np.minimum(distance, _gradient_sq_distances(a, e, a_sq, e_sq, index))
        distance[index] = 0.0
    return Ranking(_picked_then_rest(np.asarray(picked, dtype=np.int64), distance))


# ----------------------------------------------------------------------------- combinations
# Added after the MNIST / digits benchmarks (benchmarks/results/ablation.md): the LPM ranks worse
# than the classifier's own margin, and top-K by any single score over-samples one confusable class.


def rank_average_values(*value_arrays: np.ndarray) -> np.ndarray:
    """Mean of each item's normalised rank under every value array (1 = most informative under
    all of them). Ties share their mean rank; scale-free, so losses and margins mix fairly."""
    from model.metrics import average_ranks

    n = len(value_arrays[0])
    if n == 0:
        return np.zeros(0)
    scale = max(n - 1, 1)
    return np.mean([average_ranks(np.asarray(v, dtype=np.float64)) / scale for v in value_arrays], axis=0)


def class_capped_order(values: np.ndarray, predicted: np.ndarray, budget: int, num_classes: int) -> np.ndarray:
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


def _preselect_k_center(
    values: np.ndarray, outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """Top HYBRID_PRESELECT_FACTOR x budget by ``values``, k-center greedy among them (seeded by
    the labeled set), then the other candidates and the rest by value; cluster = nearest pick."""
    n = len(outputs)
    picks = min(budget, n)
    by_value = order_by_value(values)
    candidates = by_value[: min(n, max(picks, HYBRID_PRESELECT_FACTOR * picks))]
    local, _ = k_center_greedy(outputs.embedding[candidates], picks, rng, labeled_embedding)
    picked = candidates[local]
    order = _picked_then_rest(picked, _rank_values(by_value))
    embedding = outputs.embedding
    cluster = nearest_center(embedding, embedding[picked]) if len(picked) else np.full(n, -1, np.int64)
    return Ranking(order, cluster)


def _rank_values(order: np.ndarray) -> np.ndarray:
    """Values whose descending order is ``order`` (first item gets the highest value)."""
    values = np.empty(len(order), dtype=np.float64)
    values[order] = -np.arange(len(order), dtype=np.float64)
    return values


def hybrid(
    outputs: ScoreOutputs, rng: np.random.Generator, budget: int, labeled_embedding: np.ndarray | None
) -> Ranking:
    """Learning-loss preselection + k-center diversity: the top HYBRID_PRESELECT_FACTOR x budget
    items by predicted loss are candidates, k-center greedy on their embeddings picks ``budget``
    of them (no near-duplicates). Order: picks, other candidates, then the rest, each by
    predicted loss. cluster = nearest pick (in embedding space) for every pool item; with a
    budget of 0 nothing is picked and every cluster is -1."""
    return _preselect_k_center(outputs.predicted_loss, outputs, rng, budget, labeled_embedding)


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


def _gradient_norm(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    a, e = _gradient_factors(outputs)
    return np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", e, e))


# ----------------------------------------------------------------------------- the registry
# One entry per strategy. Value-based entries rank by order_by_value(values); batch-aware ones
# bring their ranking. tests/unit/model/test_model_strategies.py checks every entry's flags
# against what its functions actually do.

register("random", "seeded random permutation: the baseline to beat", _random_values, _random_ranking)
register("least_confidence", "1 - max p", _least_confidence)
register("margin", "smallest gap between the two most probable classes first", _margin)
register("entropy", "highest softmax entropy first", _entropy)
register("bald", "mutual information over MC-dropout samples (needs score(..., mc_samples=T))",
         _bald, needs_mc_samples=True)
register("learning_loss", "highest predicted loss first (Yoo & Kweon 2019)", _predicted_loss)
# Not a second ranking: the same ranking as learning_loss of a module trained with the ranking
# BCE objective (TA-VAAL). The name stands for that training setting (LPM_LOSS=v2).
register("learning_loss_v2", "learning_loss's ranking, module trained with lpm_loss=v2",
         _predicted_loss, train_overrides={"lpm_loss": "v2"})
register("coreset", "k-center greedy on the embeddings from the labeled set, then farthest first",
         _distance_to_labeled, coreset, batch_aware=True, uses_labeled_embedding=True, clusters=True)
register("typiclust", "most typical item of each uncovered k-means cluster (cold start)",
         _distance_to_labeled, typiclust, batch_aware=True, uses_labeled_embedding=True, clusters=True)
register("badge", "k-means++ on gradient embeddings, then farthest first", _gradient_norm, badge,
         batch_aware=True)
register("hybrid", "top 10 x budget by predicted loss, k-center greedy among them", _predicted_loss,
         hybrid, batch_aware=True, uses_labeled_embedding=True, clusters=True)
register("ll_margin_rank_avg", "rank average of predicted loss and margin", _ll_margin)
register("margin_class_capped", "margin order, at most ceil(2 x budget / C) picks per predicted class",
         _margin, margin_class_capped, batch_aware=True)
register("ll_margin_class_capped", "ll_margin_rank_avg with the per-class cap", _ll_margin,
         ll_margin_class_capped, batch_aware=True)
register("margin_diverse", "top 10 x budget by margin, k-center greedy among them", _margin,
         margin_diverse, batch_aware=True, uses_labeled_embedding=True, clusters=True)
register("ll_margin_diverse", "top 10 x budget by ll_margin_rank_avg, k-center greedy among them",
         _ll_margin, ll_margin_diverse, batch_aware=True, uses_labeled_embedding=True, clusters=True)


# ----------------------------------------------------------------------------- public entry points


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
        raise ValueError(f"strategy {entry.name!r} needs MC-dropout samples: call score(..., mc_samples=T > 0)")


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



# ----------------------------------------------------------------------------- placing new items
# A task the published round did not rank (created since) is placed by its nearest already-ranked
# task in embedding space and gets that task's pushed score: the one mapping for value-based and
# batch-aware strategies alike, on the scale of the push (unlabeled and labeled tasks), so an
# exact or near duplicate of a ranked task gets its twin's score (a diversity pick's included).

# Width of the embeddings a round keeps for placing new tasks. A fixed seeded Gaussian projection
# (Johnson-Lindenstrauss) to this many dimensions keeps nearest neighbours, and exact duplicates
# exactly, while bounding the file to 256 bytes per task whatever the backbone's width (100,000
# tasks: 25.6 MB; resnet50's 2,048 dims would take 819 MB).
NEIGHBOUR_DIMS = 64
# Rows of new items per block in nearest_rows (with CHUNK_ROWS reference rows: 32 MB of doubles).
NEAREST_BLOCK_ROWS = 1_024


def neighbour_embedding(embedding: np.ndarray) -> np.ndarray:
    """(N, D) embeddings -> (N, min(D, NEIGHBOUR_DIMS)) float32; the same D always gets the same
    projection, so a round and a later /predict agree."""
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.ndim != 2:
        raise ValueError(f"embedding must be (N, D), got {embedding.shape}")
    d = embedding.shape[1]
    if d <= NEIGHBOUR_DIMS:
        return np.ascontiguousarray(embedding)
    matrix = np.random.default_rng(d).standard_normal((d, NEIGHBOUR_DIMS)).astype(np.float32)
    return embedding @ (matrix / np.float32(np.sqrt(NEIGHBOUR_DIMS)))


def nearest_rows(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``reference`` for each row of ``x`` (Euclidean; the lowest
    index among equals). float64, so near duplicates are told apart from their neighbours
    (float32's cancellation in |r|^2 - 2 x.r would blur distances below ~1e-3 |x|); chunked so
    memory stays NEAREST_BLOCK_ROWS x CHUNK_ROWS doubles (32 MB)."""
    x = np.asarray(x, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if len(reference) == 0:
        raise ValueError("nearest_rows needs at least one reference row")
    best = np.full(len(x), np.inf)
    index = np.zeros(len(x), dtype=np.int64)
    r_sq = np.einsum("ij,ij->i", reference, reference)
    for start in range(0, len(x), NEAREST_BLOCK_ROWS):
        rows = slice(start, start + NEAREST_BLOCK_ROWS)
        block = x[rows]
        for r_start in range(0, len(reference), CHUNK_ROWS):
            cols = slice(r_start, r_start + CHUNK_ROWS)
            # ||x||^2 is the same for every reference row, so it is left out of the comparison.
            d = r_sq[None, cols] - 2.0 * (block @ reference[cols].T)
            local = d.argmin(axis=1)
            local_best = d[np.arange(len(block)), local]
            better = local_best < best[rows]
            best[rows] = np.where(better, local_best, best[rows])
            index[rows] = np.where(better, local + r_start, index[rows])
    return index


def place_by_nearest(embedding: np.ndarray, ranked_embedding: np.ndarray) -> np.ndarray:
    """For new items' embeddings (N, D), the row of the nearest ranked item (``ranked_embedding``
    as kept by the round, i.e. already through neighbour_embedding); the caller gives each new
    item that row's pushed score."""
    ranked_embedding = np.asarray(ranked_embedding, dtype=np.float32)
    projected = neighbour_embedding(embedding)
    if ranked_embedding.ndim != 2 or ranked_embedding.shape[1] != projected.shape[1]:
        raise ValueError(f"ranked embeddings {ranked_embedding.shape} do not match new ones "
                         f"{projected.shape} (another backbone?)")
    return nearest_rows(projected, ranked_embedding)
