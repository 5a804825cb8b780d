"""Distances in embedding space for the batch-aware strategies: chunked nearest-center distances and
greedy k-center selection (Sener & Savarese 2018). numpy only."""

from __future__ import annotations

import numpy as np

from model.strategies.registry import order_by_value

# Labeled embeddings used as initial k-center centers are subsampled to this many (bounded time).
MAX_LABELED_CENTERS = 5_000
# Rows per block in pairwise distance computations: bounds memory to CHUNK_ROWS x centers floats.
CHUNK_ROWS = 4_096


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
