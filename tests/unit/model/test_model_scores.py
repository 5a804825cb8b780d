"""ranking_to_scores: [0, 1], lower = more informative, stable; new items placed by their nearest
ranked item (place_by_nearest)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import place_by_nearest, ranking_to_scores
from model.strategies import nearest_rows, neighbour_embedding, order_by_value


def test_positions_become_evenly_spaced_scores():
    scores = ranking_to_scores(np.array([2, 0, 1]))
    np.testing.assert_allclose(scores, [0.5, 1.0, 0.0])  # item 2 ranked first -> 0.0


def test_single_and_empty_pool():
    assert ranking_to_scores(np.array([0])).tolist() == [0.0]
    assert ranking_to_scores(np.array([], dtype=np.int64)).shape == (0,)


def test_rejects_non_permutations():
    with pytest.raises(ValueError):
        ranking_to_scores(np.array([0, 0, 1]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=50))
def test_scores_are_in_range_and_lower_means_more_informative(values):
    values = np.asarray(values)
    scores = ranking_to_scores(order_by_value(values))
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    # A strictly more informative value never gets a higher (worse) score.
    for i in range(len(values)):
        for j in range(len(values)):
            if values[i] > values[j]:
                assert scores[i] < scores[j]


def test_ties_are_stable():
    scores = ranking_to_scores(order_by_value(np.array([1.0, 1.0, 1.0])))
    np.testing.assert_allclose(scores, [0.0, 0.5, 1.0])


def test_nearest_rows_matches_brute_force_across_chunks(monkeypatch):
    from model.strategies import placement

    monkeypatch.setattr(placement, "CHUNK_ROWS", 7)  # several reference chunks
    monkeypatch.setattr(placement, "NEAREST_BLOCK_ROWS", 5)
    rng = np.random.default_rng(0)
    x, reference = rng.normal(size=(23, 4)), rng.normal(size=(31, 4))
    brute = ((x[:, None, :] - reference[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(nearest_rows(x, reference), brute)
    with pytest.raises(ValueError, match="at least one"):
        nearest_rows(x, reference[:0])


@pytest.mark.parametrize("dim", [6, 2048])
def test_duplicates_and_near_duplicates_are_placed_on_their_twin(dim):
    # A pool of near-identical items (as images of one class are), wide or narrow embeddings:
    # a twin with a tiny perturbation must still find its own row, not a neighbour's.
    rng = np.random.default_rng(1)
    ranked = (rng.normal(size=(500, dim)) * 0.01 + 5.0).astype(np.float32)
    kept = neighbour_embedding(ranked)
    assert kept.shape == (500, min(dim, 64)) and kept.dtype == np.float32
    twins = np.array([0, 17, 250, 499])
    exact = ranked[twins]
    near = exact + rng.normal(size=exact.shape).astype(np.float32) * 1e-4
    np.testing.assert_array_equal(place_by_nearest(exact, kept), twins)
    np.testing.assert_array_equal(place_by_nearest(near, kept), twins)


def test_placement_refuses_embeddings_of_another_width():
    with pytest.raises(ValueError, match="do not match"):
        place_by_nearest(np.zeros((2, 8)), neighbour_embedding(np.zeros((3, 6))))
