"""Cold start: rank a pool before any classifier can be trained (few or no labels).

Pure numpy + scikit-learn (no torch). The label-free pixel embedding for when no learned
features exist yet (``pixel_embedding``): model/pixel_pca.py. Here:

* ``typiclust_order``: TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a
  Budget"): k-means into ``n_clusters``; the typicality of an item is the inverse of its mean
  distance to its ``k_neighbors`` nearest neighbours *within its cluster*; clusters that no
  labeled item covers come first (largest first), and from each cluster its most typical item
  is taken. Then the next round over the clusters takes each one's second most typical item,
  and so on, so the whole pool gets a permutation, most useful first. Optionally coarse to fine
  (``start_clusters``), so that every prefix of the one ranking is a good batch.
* ``cluster_structure`` / ``pick="auto"``: TypiClust's premise is that the embedding's clusters
  mean something. Where they do not (a pixel embedding of textures, shapes or letters, whose
  classes differ by form, not by where the ink is), its "most typical" items are the most uniform
  images (flat, low contrast), and training on them lost against a random draw
  (benchmarks/results/coldstart-accuracy.md). So the pick within each cluster follows the
  measured structure: k-means inertia of the embedding over that of a structureless Gaussian with
  the same covariance (the values per domain: the same file). At or below
  ``TYPICAL_MAX_INERTIA_RATIO`` the most typical member is taken; above it a random member
  ("stratified": one random draw per cluster, which keeps the clusters' coverage and cannot
  concentrate on an atypical corner of the data).

Bounded cost for large pools:

* k-means is ``KMeans`` up to ``MINIBATCH_KMEANS_ABOVE`` items, ``MiniBatchKMeans`` beyond.
* No N x N matrix is ever formed: nearest neighbours are searched within each cluster, in
  blocks of ``CHUNK_ROWS`` rows. A cluster larger than ``TYPICALITY_SAMPLE`` items measures its
  members' typicality against a seeded random subsample of ``TYPICALITY_SAMPLE`` of its members
  (the neighbours are then drawn from that sample; typicality is a density estimate, and a few
  thousand points estimate it well), so the cost per cluster is O(size x TYPICALITY_SAMPLE x D).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

MINIBATCH_KMEANS_ABOVE = 20_000  # pool size above which k-means runs in mini-batches
TYPICALITY_SAMPLE = 3_000  # neighbours of a cluster's members are searched among at most this many
CHUNK_ROWS = 1_024  # rows per block in distance computations
STRUCTURE_SAMPLE = 5_000  # rows the cluster-structure test clusters (seeded subsample above it)
# inertia ratio (unitless, 1 = no more clustered than a Gaussian) at or below which the most
# typical member of each cluster is picked; between the digits' and the non-digit domains' ratios
# (benchmarks/results/coldstart-accuracy.md)
TYPICAL_MAX_INERTIA_RATIO = 0.8
PICKS = ("auto", "typical", "stratified")
# what a cold-start ranking clusters: a pixel embedding, configured weights' features, or the
# project's own self-supervised backbone's
EMBEDDINGS = ("pixels", "backbone", "self_supervised")
_EPS = 1e-8


def pick_for(setting: str, embedding: str) -> str:
    """The ``pick`` a ranking on ``embedding`` (one of EMBEDDINGS) uses for COLDSTART_PICK
    ``setting``. ``auto`` on the project's self-supervised embedding is ``stratified``: a
    contrastive embedding looks clustered whether or not its clusters are classes, and there the
    most typical members did worse than random members on the synthetic domains
    (benchmarks/results/coldstart-accuracy-selfsup.md). Elsewhere ``auto`` stays, to be decided by
    the embedding's structure (``typiclust``)."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    return "stratified" if setting == "auto" and embedding == "self_supervised" else setting


# ----------------------------------------------------------------------------- TypiClust


@dataclass
class TypiClustResult:
    order: np.ndarray  # (N,) int64 permutation, most useful first
    cluster: np.ndarray  # (N,) int64 k-means cluster of each item
    typicality: np.ndarray  # (N,) float64, 1 / mean distance to the k nearest cluster neighbours
    #                         (zeros when pick is "stratified": not computed)
    covered: np.ndarray  # (n_clusters,) bool: a labeled item falls in that cluster
    pick: str = "typical"  # how each cluster's members were ordered: "typical" or "stratified"
    structure: float | None = None  # cluster_structure of the embedding, when pick was "auto"


def cluster_structure(embedding: np.ndarray, n_clusters: int, seed: int = 0) -> float:
    """How much more clustered the embedding is than a structureless cloud: k-means inertia with
    ``n_clusters`` over the inertia of a Gaussian sample with the same mean, covariance and size
    (unitless; about 1 for no structure, lower for real clusters). At most STRUCTURE_SAMPLE rows
    (seeded subsample); deterministic for a seed. Fewer than 2 rows or clusters, or no spread: 1.0.
    """
    x = np.asarray(embedding, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if len(x) > STRUCTURE_SAMPLE:
        x = x[np.sort(rng.choice(len(x), STRUCTURE_SAMPLE, replace=False))]
    n_clusters = min(int(n_clusters), len(x))
    if x.ndim != 2 or x.shape[1] == 0 or n_clusters < 2:
        return 1.0
    centered = x - x.mean(axis=0)
    # principal axes: in them the covariance is diagonal, so the reference is a product of 1-D
    # Gaussians with the components' standard deviations (k-means inertia is rotation-invariant)
    _, singular, axes = np.linalg.svd(centered, full_matrices=False)
    projected = centered @ axes.T
    spread = singular / np.sqrt(len(x))
    if not np.any(spread > 0):
        return 1.0
    reference = rng.standard_normal(projected.shape) * spread
    inertia = _kmeans(projected.astype(np.float32), n_clusters, seed)[0].inertia_
    reference_inertia = _kmeans(reference.astype(np.float32), n_clusters, seed)[0].inertia_
    return float(inertia / reference_inertia) if reference_inertia > 0 else 1.0


def _kmeans(x: np.ndarray, n_clusters: int, seed: int):
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) > MINIBATCH_KMEANS_ABOVE:
        model = MiniBatchKMeans(
            n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=max(1024, 4 * n_clusters)
        )
    else:
        model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=3)
    with warnings.catch_warnings():
        # duplicates can leave fewer distinct points than clusters: sklearn warns, result is usable
        warnings.simplefilter("ignore")
        labels = model.fit_predict(x)
    return model, labels.astype(np.int64)


def _mean_knn_distance(
    members: np.ndarray, reference: np.ndarray, self_in_reference: np.ndarray, k: int
) -> np.ndarray:
    """Mean Euclidean distance of each member to its k nearest rows of ``reference``, excluding
    itself (``self_in_reference[i]`` = its row in reference, or -1). Chunked over members."""
    out = np.zeros(len(members), dtype=np.float64)
    if k <= 0:
        return out
    ref_sq = np.einsum("ij,ij->i", reference, reference)
    for start in range(0, len(members), CHUNK_ROWS):
        block = members[start : start + CHUNK_ROWS]
        d = ref_sq[None, :] - 2.0 * (block @ reference.T)
        d += np.einsum("ij,ij->i", block, block)[:, None]
        np.maximum(d, 0.0, out=d)
        own = self_in_reference[start : start + CHUNK_ROWS]
        rows = np.nonzero(own >= 0)[0]
        d[rows, own[rows]] = np.inf
        nearest = np.partition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else d
        out[start : start + CHUNK_ROWS] = np.sqrt(nearest).mean(axis=1)
    return out


def _typicality(
    x: np.ndarray, labels: np.ndarray, n_clusters: int, k_neighbors: int, rng: np.random.Generator
) -> np.ndarray:
    typicality = np.zeros(len(x), dtype=np.float64)
    for c in range(n_clusters):
        idx = np.nonzero(labels == c)[0]
        if len(idx) == 0:
            continue
        if len(idx) > TYPICALITY_SAMPLE:
            sample = np.sort(rng.choice(len(idx), TYPICALITY_SAMPLE, replace=False))
        else:
            sample = np.arange(len(idx))
        position = np.full(len(idx), -1, dtype=np.int64)
        position[sample] = np.arange(len(sample))
        k = min(k_neighbors, len(sample) - 1)
        mean_distance = _mean_knn_distance(x[idx], x[idx[sample]], position, k)
        typicality[idx] = 1.0 / (mean_distance + _EPS)
    return typicality


def _typiclust_once(
    x: np.ndarray, labeled: np.ndarray | None, n_clusters: int, seed: int, k_neighbors: int, pick: str
) -> tuple[TypiClustResult, Any]:
    """One clustering of the pool (x float32 (N, D), N >= 1) and its round-robin order; each
    cluster's members most typical first (``pick`` "typical") or in a seeded random order
    ("stratified")."""
    n = len(x)
    rng = np.random.default_rng(seed)
    model, labels = _kmeans(x, n_clusters, seed)
    # the neighbour search is the costly part on a big pool: only the typical pick needs it
    typicality = (
        _typicality(x, labels, n_clusters, k_neighbors, rng)
        if pick == "typical"
        else np.zeros(n, dtype=np.float64)
    )
    covered_count: np.ndarray = np.zeros(n_clusters, dtype=np.int64)
    if labeled is not None and len(labeled):
        covered_count = np.bincount(model.predict(labeled), minlength=n_clusters)[:n_clusters]
    sizes = np.bincount(labels, minlength=n_clusters)
    # uncovered clusters first, then those with the fewest labeled items; larger clusters first;
    # the cluster id breaks remaining ties (deterministic)
    cluster_order = np.lexsort((np.arange(n_clusters), -sizes, covered_count))
    cluster_order = cluster_order[sizes[cluster_order] > 0]

    members = []
    for c in cluster_order:
        idx = np.nonzero(labels == c)[0]
        if pick == "stratified":
            members.append(rng.permutation(idx))
        else:  # most typical first; ties keep pool order
            members.append(idx[np.argsort(-typicality[idx], kind="stable")])
    # round-robin: position r of every cluster (in cluster order) before position r + 1 of any
    rank_in_cluster = np.empty(n, dtype=np.int64)
    cluster_rank = np.empty(n, dtype=np.int64)
    for position, idx in enumerate(members):
        rank_in_cluster[idx] = np.arange(len(idx))
        cluster_rank[idx] = position
    order = np.lexsort((cluster_rank, rank_in_cluster)).astype(np.int64)
    return TypiClustResult(order, labels, typicality, covered_count > 0, pick), model


def _pool_and_labeled(
    x: np.ndarray, labeled_embedding: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The pool (N, D) float32 and the labeled items in its space (None without any); a pool
    without features (D = 0, e.g. one image) becomes one constant feature: every item is alike."""
    n, dim = x.shape
    labeled = None
    if labeled_embedding is not None and len(labeled_embedding):
        labeled = np.asarray(labeled_embedding, dtype=np.float32)
        if labeled.ndim != 2 or labeled.shape[1] != dim:
            raise ValueError(f"labeled_embedding must be (L, {dim}), got {labeled.shape}")
    if dim == 0:
        x = np.zeros((n, 1), dtype=np.float32)
        labeled = None if labeled is None else np.zeros((len(labeled), 1), dtype=np.float32)
    return x, labeled


def _coarse_picks(
    x: np.ndarray,
    labeled: np.ndarray | None,
    n_clusters: int,
    start_clusters: int | None,
    seed: int,
    k_neighbors: int,
    pick: str,
) -> list[int]:
    """The coarse-to-fine picks before the final clustering (``typiclust``'s start_clusters):
    ``k`` from a clustering into k, then up to 2k from one into 2k with the earlier picks
    covered, ... while k < n_clusters. Empty without start_clusters."""
    picked: list[int] = []
    k = n_clusters if start_clusters is None else max(1, int(start_clusters))
    while k < n_clusters:
        covered_by = x[picked] if labeled is None else np.concatenate([labeled, x[picked]])
        result, _ = _typiclust_once(x, covered_by if len(covered_by) else None, k, seed, k_neighbors, pick)
        first_round = result.order[: len(np.unique(result.cluster))]  # one item per cluster
        chosen = set(picked)
        fresh = [
            int(i) for i in first_round if not result.covered[result.cluster[i]] and int(i) not in chosen
        ]
        picked += fresh[: k - len(picked)]
        k *= 2
    return picked


def typiclust(
    embedding: np.ndarray,
    labeled_embedding: np.ndarray | None = None,
    n_clusters: int = 10,
    seed: int = 0,
    k_neighbors: int = 20,
    start_clusters: int | None = None,
    pick: str = "typical",
) -> TypiClustResult:
    """TypiClust ranking of the whole pool with its clusters and typicality (see module doc).

    ``start_clusters`` (optional, < n_clusters): coarse to fine. One ranking is read from the
    top, and its first k items should be a good batch for every k, not only for k = n_clusters
    (with 50 clusters the first 10 picks are the 10 largest clusters, which on digits cover no
    more classes than 10 random images; benchmarks/results/coldstart-coverage.md). So the first
    ``start_clusters`` picks come from a clustering into ``start_clusters``, the picks up to
    2 x ``start_clusters`` from one into twice as many clusters with the earlier picks counted as
    covered, and so on up to ``n_clusters`` — TypiClust as if each batch had been labeled before
    the next; then the rest by the round-robin of the final ``n_clusters`` clustering (earlier
    picks covered). ``cluster``, ``typicality`` and ``covered`` (by labeled items only) describe
    that final clustering.

    ``pick``: "typical" (TypiClust: each cluster's most typical member first), "stratified" (a
    random member of each cluster first) or "auto" (the first where ``cluster_structure`` with
    ``n_clusters`` is at most TYPICAL_MAX_INERTIA_RATIO, else the second; see module doc).
    """
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
    x = np.asarray(embedding, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embedding must be (N, D), got {x.shape}")
    n = len(x)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return TypiClustResult(empty, empty.copy(), np.zeros(0), np.zeros(0, dtype=bool))
    if k_neighbors < 1:
        raise ValueError(f"k_neighbors must be >= 1, got {k_neighbors}")
    x, labeled = _pool_and_labeled(x, labeled_embedding)
    n_clusters = max(1, min(int(n_clusters), n))
    structure = None
    if pick == "auto":
        structure = cluster_structure(x, n_clusters, seed)
        pick = "typical" if structure <= TYPICAL_MAX_INERTIA_RATIO else "stratified"

    picked = _coarse_picks(x, labeled, n_clusters, start_clusters, seed, k_neighbors, pick)
    covered_by = labeled
    if picked:
        covered_by = x[picked] if labeled is None else np.concatenate([labeled, x[picked]])
    result, model = _typiclust_once(x, covered_by, n_clusters, seed, k_neighbors, pick)
    result.structure = structure
    if not picked:
        return result
    is_picked = np.zeros(n, dtype=bool)
    is_picked[picked] = True
    order = np.concatenate([np.asarray(picked, dtype=np.int64), result.order[~is_picked[result.order]]])
    covered = np.zeros(n_clusters, dtype=bool)
    if labeled is not None:
        covered[model.predict(labeled)] = True
    return TypiClustResult(order, result.cluster, result.typicality, covered, pick, structure)


def typiclust_order(
    embedding: np.ndarray,
    labeled_embedding: np.ndarray | None = None,
    n_clusters: int = 10,
    seed: int = 0,
    k_neighbors: int = 20,
    start_clusters: int | None = None,
    pick: str = "typical",
) -> np.ndarray:
    """TypiClust permutation of the pool (N,) int64, most useful first; empty pool -> empty.

    ``labeled_embedding`` (L, D): items already labeled, in the same space; the clusters they
    fall in are covered and come after the uncovered ones. ``n_clusters`` is capped at N.
    ``start_clusters``: coarse to fine; ``pick``: how each cluster's members are ordered (see
    ``typiclust``).
    """
    return typiclust(embedding, labeled_embedding, n_clusters, seed, k_neighbors, start_clusters, pick).order
