"""ranking_to_scores and value_to_score: [0, 1], lower = more informative, stable, consistent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import ranking_to_scores, value_to_score
from model.strategies import order_by_value


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


def test_value_to_score_agrees_with_the_pool_ranking():
    reference = np.array([0.3, 2.0, -1.0, 0.9, 5.0])
    pool_scores = ranking_to_scores(order_by_value(reference))
    np.testing.assert_allclose(value_to_score(reference, reference), pool_scores)


def test_value_to_score_range_and_direction():
    reference = np.linspace(0, 1, 11)
    scores = value_to_score(np.array([-5.0, 0.5, 1.0, 7.0, np.nan]), reference)
    assert scores[0] == 1.0  # below everything: least informative
    assert scores[1] == pytest.approx(0.5)
    assert scores[2] == 0.0 and scores[3] == 0.0  # at or above the max: most informative
    assert scores[4] == 1.0  # NaN: never first
    assert value_to_score(np.array([1.0]), np.array([])).tolist() == [0.5]
    assert value_to_score(np.array([1.0, 0.0]), np.array([0.5])).tolist() == [0.0, 1.0]
