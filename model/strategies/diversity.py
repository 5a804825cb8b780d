"""Batch-aware diversity strategies: coreset (k-center greedy), TypiClust, BADGE (k-means++ on
gradient embeddings) and hybrid (predicted-loss preselection, then k-center). Each picks
``budget`` items jointly; the rest follow by the value behind the choice."""

from __future__ import annotations

import numpy as np

from model.outputs import ScoreOutputs
from model.strategies.geometry import (
    MAX_LABELED_CENTERS,
    _picked_then_rest,
    _subsample_rows,
    k_center_greedy,
    min_squared_distances,
    nearest_center,
)
from model.strategies.learning_loss import _predicted_loss
from model.strategies.registry import Ranking, order_by_value, register

# Hybrid preselects the top HYBRID_PRESELECT_FACTOR x budget items by predicted loss.
HYBRID_PRESELECT_FACTOR = 10


def _distance_to_labeled(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    """Squared distance to the nearest labeled embedding (0 without a labeled set)."""
    n = len(outputs)
    if labeled_embedding is None or len(labeled_embedding) == 0 or n == 0:
        return np.zeros(n)
    labeled = _subsample_rows(np.asarray(labeled_embedding, np.float32), MAX_LABELED_CENTERS, rng)
    return min_squared_distances(outputs.embedding.astype(np.float32), labeled)


# ----------------------------------------------------------------------------- ranking functions
# Signature (outputs, rng, budget, labeled_embedding) -> Ranking.


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
    """TypiClust (Hacohen et al. 2022, model/cold_start.py): k-means on the embeddings into
    ``budget`` clusters, the most typical item of each cluster no labeled item covers first
    (largest cluster first), then round-robin over the clusters. For a cold start (few labels),
    where uncertainty is meaningless; cluster = k-means cluster. The seed comes from ``rng``."""
    from model.cold_start import typiclust as typiclust_ranking  # scikit-learn: imported on use

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


def _gradient_norm(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    a, e = _gradient_factors(outputs)
    return np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", e, e))


def _preselect_k_center(
    values: np.ndarray,
    outputs: ScoreOutputs,
    rng: np.random.Generator,
    budget: int,
    labeled_embedding: np.ndarray | None,
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


# ----------------------------------------------------------------------------- the entries


register(
    "coreset",
    "k-center greedy on the embeddings from the labeled set, then farthest first",
    _distance_to_labeled,
    coreset,
    batch_aware=True,
    uses_labeled_embedding=True,
    clusters=True,
)
register(
    "typiclust",
    "most typical item of each uncovered k-means cluster (cold start)",
    _distance_to_labeled,
    typiclust,
    batch_aware=True,
    uses_labeled_embedding=True,
    clusters=True,
)
register(
    "badge", "k-means++ on gradient embeddings, then farthest first", _gradient_norm, badge, batch_aware=True
)
register(
    "hybrid",
    "top 10 x budget by predicted loss, k-center greedy among them",
    _predicted_loss,
    hybrid,
    batch_aware=True,
    uses_labeled_embedding=True,
    clusters=True,
)
