"""Placing new items: a task the published round did not rank (created since) is placed by its
nearest already-ranked task in embedding space and gets that task's pushed score.

The one mapping for value-based and batch-aware strategies alike, on the scale of the push
(unlabeled and labeled tasks), so an exact or near duplicate of a ranked task gets its twin's score
(a diversity pick's included). numpy only.
"""

from __future__ import annotations

import numpy as np

from model.strategies.geometry import CHUNK_ROWS

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
        raise ValueError(
            f"ranked embeddings {ranked_embedding.shape} do not match new ones "
            f"{projected.shape} (another backbone?)"
        )
    return nearest_rows(projected, ranked_embedding)
