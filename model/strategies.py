"""Acquisition strategies: pure numpy functions of ScoreOutputs that rank the whole pool.

A strategy is one function ``(outputs, rng, budget, labeled_embedding) -> Ranking`` registered
under a name in STRATEGIES. Every strategy orders ALL N pool items, most informative first.
Batch-aware strategies (coreset, badge, hybrid) pick ``budget`` items jointly; the rest follow in
the order of their remaining score (distance to the picked set, or predicted loss).

Informativeness values are "higher = more informative" everywhere; ``ranking_to_scores`` is the
single conversion to Label Studio scores (lower = more informative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from model.scoring import ScoreOutputs

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


Strategy = Callable[[ScoreOutputs, np.random.Generator, int, "np.ndarray | None"], Ranking]
STRATEGIES: dict[str, Strategy] = {}
# Strategies that need ScoreOutputs.mc_probs, i.e. score(..., mc_samples > 0).
NEEDS_MC_SAMPLES = frozenset({"bald"})


def register(name: str) -> Callable[[Strategy], Strategy]:
    def decorator(function: Strategy) -> Strategy:
        STRATEGIES[name] = function
        return function

    return decorator


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


def _subsample_rows(x: np.ndarray | None, limit: int, rng: np.random.Generator) -> np.ndarray | None:
    if x is None or len(x) <= limit:
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


# ----------------------------------------------------------------------------- strategies


@register("random")
def random_strategy(outputs, rng, budget, labeled_embedding) -> Ranking:
    """The baseline every result is measured against: a seeded random permutation."""
    return Ranking(rng.permutation(len(outputs)).astype(np.int64))


@register("least_confidence")
def least_confidence(outputs, rng, budget, labeled_embedding) -> Ranking:
    return Ranking(order_by_value(least_confidence_values(outputs.probs)))


@register("margin")
def margin(outputs, rng, budget, labeled_embedding) -> Ranking:
    return Ranking(order_by_value(margin_values(outputs.probs)))


@register("entropy")
def entropy(outputs, rng, budget, labeled_embedding) -> Ranking:
    return Ranking(order_by_value(entropy_values(outputs.probs)))


@register("bald")
def bald(outputs, rng, budget, labeled_embedding) -> Ranking:
    """BALD with MC dropout. No silent fallback: without MC samples it is not BALD."""
    if outputs.mc_probs is None:
        raise ValueError("strategy 'bald' needs MC-dropout samples: call score(..., mc_samples=T > 0)")
    return Ranking(order_by_value(bald_values(outputs.mc_probs)))


@register("learning_loss")
def learning_loss(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Yoo & Kweon 2019: highest predicted loss first."""
    return Ranking(order_by_value(outputs.predicted_loss))


@register("learning_loss_v2")
def learning_loss_v2(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Same ranking as learning_loss. v2 differs in how the LPM is trained (TrainConfig.lpm_loss
    = "v2", ranking BCE); at query time both rank by the LPM output."""
    return Ranking(order_by_value(outputs.predicted_loss))


@register("coreset")
def coreset(outputs, rng, budget, labeled_embedding) -> Ranking:
    """k-center greedy on the embeddings, seeded by the labeled set when given; the rest by
    distance to the picked + labeled set (farthest first). cluster = nearest picked item."""
    picked, distance = k_center_greedy(outputs.embedding, budget, rng, labeled_embedding)
    order = _picked_then_rest(picked, distance)
    cluster = nearest_center(outputs.embedding, outputs.embedding[picked])
    return Ranking(order, cluster if len(picked) else None)


@register("typiclust")
def typiclust(outputs, rng, budget, labeled_embedding) -> Ranking:
    """TypiClust (Hacohen et al. 2022, model/coldstart.py): k-means on the embeddings into
    ``budget`` clusters, the most typical item of each cluster no labeled item covers first
    (largest cluster first), then round-robin over the clusters. For a cold start (few labels),
    where uncertainty is meaningless; cluster = k-means cluster. The seed comes from ``rng``."""
    from model.coldstart import typiclust as typiclust_ranking   # scikit-learn: imported on use

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


def _gradient_sq_distances(a, e, a_sq, e_sq, index: int) -> np.ndarray:
    """||g_i - g_k||^2 = |a_i|^2|e_i|^2 + |a_k|^2|e_k|^2 - 2 (a_i.a_k)(e_i.e_k), for all i."""
    cross = (a @ a[index]) * (e @ e[index])
    return np.maximum(a_sq * e_sq + a_sq[index] * e_sq[index] - 2.0 * cross, 0.0)


@register("badge")
def badge(outputs, rng, budget, labeled_embedding) -> Ranking:
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


@register("hybrid")
def hybrid(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Learning-loss preselection + k-center diversity: the top HYBRID_PRESELECT_FACTOR x budget
    items by predicted loss are candidates, k-center greedy on their embeddings picks ``budget``
    of them (no near-duplicates). Order: picks, other candidates, then the rest, each by
    predicted loss. cluster = nearest pick (in embedding space) for every pool item; with a
    budget of 0 nothing is picked and every cluster is -1."""
    return _preselect_k_center(outputs.predicted_loss, outputs, rng, budget, labeled_embedding)


def _rank_values(order: np.ndarray) -> np.ndarray:
    """Values whose descending order is ``order`` (first item gets the highest value)."""
    values = np.empty(len(order), dtype=np.float64)
    values[order] = -np.arange(len(order), dtype=np.float64)
    return values


# ----------------------------------------------------------------------------- public entry points


def _check_outputs(outputs: ScoreOutputs) -> None:
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


def informativeness_values(
    strategy: str,
    outputs: ScoreOutputs,
    labeled_embedding: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per-item informativeness (higher = more informative) for scoring items one at a time,
    e.g. with value_to_score against a reference pool. Batch strategies have no per-item value,
    so they use the value behind their choice: hybrid -> predicted loss, coreset and typiclust
    -> squared distance to the nearest labeled embedding (0 without one; typicality needs the
    whole pool), badge -> gradient-embedding norm;
    random -> seeded uniform values."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(sorted(STRATEGIES))}")
    _check_outputs(outputs)
    n = len(outputs)
    if strategy in NEEDS_MC_SAMPLES and outputs.mc_probs is None:
        raise ValueError(f"strategy {strategy!r} needs MC-dropout samples: call score(..., mc_samples=T > 0)")
    if strategy == "random":
        return np.random.default_rng(seed).random(n)
    if strategy == "least_confidence":
        return least_confidence_values(outputs.probs)
    if strategy == "margin":
        return margin_values(outputs.probs)
    if strategy == "entropy":
        return entropy_values(outputs.probs)
    if strategy == "bald":
        return bald_values(outputs.mc_probs)
    if strategy in ("coreset", "typiclust"):
        if labeled_embedding is None or len(labeled_embedding) == 0 or n == 0:
            return np.zeros(n)
        rng = np.random.default_rng(seed)
        labeled = _subsample_rows(np.asarray(labeled_embedding, np.float32), MAX_LABELED_CENTERS, rng)
        return min_squared_distances(outputs.embedding.astype(np.float32), labeled)
    if strategy == "badge":
        a, e = _gradient_factors(outputs)
        return np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", e, e))
    if strategy in ("margin_class_capped", "margin_diverse"):
        return margin_values(outputs.probs)
    if strategy in ("ll_margin_rank_avg", "ll_margin_class_capped", "ll_margin_diverse"):
        # Rank-average within ``outputs`` (meaningful when they hold the pool, not one item).
        return rank_average_values(outputs.predicted_loss, margin_values(outputs.probs))
    # learning_loss, learning_loss_v2, hybrid and any strategy built on the LPM
    return outputs.predicted_loss.astype(np.float64)


def needs_mc_samples(strategy: str) -> bool:
    """Whether ``strategy`` needs score(..., mc_samples > 0)."""
    return strategy in NEEDS_MC_SAMPLES


def rank(
    strategy: str,
    outputs: ScoreOutputs,
    seed: int = 0,
    budget: int | None = None,
    labeled_embedding: np.ndarray | None = None,
) -> Ranking:
    """Rank the whole pool with ``strategy``; deterministic for a given seed.

    ``budget``: items picked jointly by batch-aware strategies (coreset, badge, hybrid; default
    DEFAULT_BUDGET, capped at N); ignored by the others. ``labeled_embedding`` (L, D): embeddings
    of already-labeled items, used as initial centers by coreset and hybrid.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(sorted(STRATEGIES))}")
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    _check_outputs(outputs)
    if labeled_embedding is not None:
        labeled_embedding = np.asarray(labeled_embedding)
        if labeled_embedding.ndim != 2 or labeled_embedding.shape[1] != outputs.embedding.shape[1]:
            raise ValueError(
                f"labeled_embedding must be (L, {outputs.embedding.shape[1]}), got {labeled_embedding.shape}"
            )
    n = len(outputs)
    if strategy in NEEDS_MC_SAMPLES and outputs.mc_probs is None:
        raise ValueError(f"strategy {strategy!r} needs MC-dropout samples: call score(..., mc_samples=T > 0)")
    if n == 0:
        return Ranking(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64) if strategy == "hybrid" else None)
    picks = min(DEFAULT_BUDGET if budget is None else budget, n)
    ranking = STRATEGIES[strategy](outputs, np.random.default_rng(seed), picks, labeled_embedding)
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


def value_to_score(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map informativeness values (higher = more informative) to scores on the same scale as
    ranking_to_scores, using a reference pool's values: score = (number of reference values
    strictly greater) / (M - 1), clipped to [0, 1]. A value equal to the reference's k-th largest
    gets exactly k / (M - 1), the score it would have in that pool's ranking. NaN values get 1.0
    (least informative); an empty reference gives 0.5 (no information)."""
    values = np.asarray(values, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64).ravel()
    reference = np.sort(reference[~np.isnan(reference)])
    m = len(reference)
    if m == 0:
        return np.full(values.shape, 0.5)
    greater = m - np.searchsorted(reference, values, side="right")
    scores = np.clip(greater / max(m - 1, 1), 0.0, 1.0)
    return np.where(np.isnan(values), 1.0, scores)


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


@register("ll_margin_rank_avg")
def ll_margin_rank_avg(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Rank-average of the LPM's predicted loss and the margin (smallest top-2 gap)."""
    return Ranking(order_by_value(rank_average_values(outputs.predicted_loss, margin_values(outputs.probs))))


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


@register("margin_class_capped")
def margin_class_capped(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Margin order with a per-predicted-class cap of ceil(2 x budget / C) picks in the batch."""
    probs = outputs.probs
    return Ranking(class_capped_order(margin_values(probs), probs.argmax(axis=1), budget, probs.shape[1]))


@register("ll_margin_class_capped")
def ll_margin_class_capped(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Rank-average of predicted loss and margin, with the per-predicted-class cap."""
    probs = outputs.probs
    values = rank_average_values(outputs.predicted_loss, margin_values(probs))
    return Ranking(class_capped_order(values, probs.argmax(axis=1), budget, probs.shape[1]))


def _preselect_k_center(values: np.ndarray, outputs, rng, budget, labeled_embedding) -> Ranking:
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


@register("margin_diverse")
def margin_diverse(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Like hybrid, with the margin instead of the predicted loss: the 10 x budget smallest-margin
    items are candidates, k-center greedy on their embeddings picks the batch."""
    return _preselect_k_center(margin_values(outputs.probs), outputs, rng, budget, labeled_embedding)


@register("ll_margin_diverse")
def ll_margin_diverse(outputs, rng, budget, labeled_embedding) -> Ranking:
    """Rank-average of predicted loss and margin preselects 10 x budget; k-center picks the batch."""
    values = rank_average_values(outputs.predicted_loss, margin_values(outputs.probs))
    return _preselect_k_center(values, outputs, rng, budget, labeled_embedding)
