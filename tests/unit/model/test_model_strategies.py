"""Contract every acquisition strategy must meet, plus strategy-specific behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from model import STRATEGIES, Ranking, ScoreOutputs, needs_mc_samples, rank
from model.strategies import (
    bald_values,
    entropy_values,
    k_center_greedy,
    margin_values,
    min_squared_distances,
)

ALL = sorted(STRATEGIES)


def is_permutation(order: np.ndarray, n: int) -> bool:
    return order.shape == (n,) and np.array_equal(np.sort(order), np.arange(n))


def test_registry_has_the_documented_strategies():
    assert set(ALL) >= {
        "random",
        "least_confidence",
        "margin",
        "entropy",
        "bald",
        "coreset",
        "badge",
        "learning_loss",
        "learning_loss_v2",
        "hybrid",
    }


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("n,budget", [(50, 10), (50, None), (7, 20), (1, 5), (30, 0)])
def test_contract_whole_pool_permutation(strategy, n, budget, outputs_factory):
    ranking = rank(strategy, outputs_factory(n), seed=3, budget=budget)
    assert isinstance(ranking, Ranking)
    assert ranking.order.dtype == np.int64
    assert is_permutation(ranking.order, n), "every pool item exactly once"
    if ranking.cluster is not None:
        assert ranking.cluster.shape == (n,)
        picks = min(n, 100 if budget is None else budget)
        assert ranking.cluster.max() < max(picks, 1)


@pytest.mark.parametrize("strategy", ALL)
def test_contract_deterministic_under_seed(strategy, outputs_factory):
    outputs = outputs_factory(40)
    first = rank(strategy, outputs, seed=7, budget=5)
    second = rank(strategy, outputs, seed=7, budget=5)
    np.testing.assert_array_equal(first.order, second.order)


@pytest.mark.parametrize("strategy", ALL)
def test_contract_empty_pool(strategy, outputs_factory):
    ranking = rank(strategy, outputs_factory(0), budget=5)
    assert ranking.order.shape == (0,)


@pytest.mark.parametrize("strategy", ALL)
def test_contract_with_labeled_embedding(strategy, outputs_factory):
    outputs = outputs_factory(30)
    labeled = np.random.default_rng(1).normal(size=(12, outputs.embedding.shape[1])).astype(np.float32)
    assert is_permutation(rank(strategy, outputs, budget=4, labeled_embedding=labeled).order, 30)


@pytest.mark.parametrize("strategy", ["coreset", "badge", "hybrid"])
def test_batch_strategies_pick_exactly_budget_before_the_rest(strategy, outputs_factory):
    # The budget's picks are a joint selection; with a larger budget, picks can change, but the
    # first `budget` positions of a ranking are always the jointly picked set (distinct items).
    outputs = outputs_factory(60)
    for budget in (1, 5, 20):
        order = rank(strategy, outputs, seed=0, budget=budget).order
        assert len(set(order[:budget].tolist())) == budget


def test_random_depends_on_seed(outputs_factory):
    outputs = outputs_factory(30)
    assert not np.array_equal(rank("random", outputs, seed=0).order, rank("random", outputs, seed=1).order)


def test_unknown_strategy_lists_known_names(outputs_factory):
    with pytest.raises(ValueError, match="learning_loss"):
        rank("no_such_strategy", outputs_factory(3))


def test_bald_without_mc_samples_is_a_clear_error(outputs_factory):
    outputs = outputs_factory(5)
    outputs.mc_probs = None
    assert needs_mc_samples("bald") and not needs_mc_samples("entropy")
    with pytest.raises(ValueError, match="mc_samples"):
        rank("bald", outputs)


def test_uncertainty_values_on_hand_examples():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(entropy_values(probs), [0.0, np.log(2), np.log(3)], atol=1e-9)
    np.testing.assert_allclose(margin_values(probs), [-1.0, 0.0, 0.0], atol=1e-9)
    # Two confident but disagreeing samples: high mutual information; agreeing ones: none.
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    agree = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])
    assert bald_values(disagree)[0] == pytest.approx(np.log(2))
    assert bald_values(agree)[0] == pytest.approx(0.0, abs=1e-9)


def test_score_based_strategies_rank_by_their_value():
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]], dtype=np.float32)
    outputs = ScoreOutputs(probs, np.array([0.1, 3.0, 2.0], np.float32), np.zeros((3, 2), np.float32))
    for name in ("least_confidence", "margin", "entropy"):
        assert rank(name, outputs).order.tolist() == [1, 2, 0]
    assert rank("learning_loss", outputs).order.tolist() == [1, 2, 0]
    np.testing.assert_array_equal(
        rank("learning_loss_v2", outputs).order, rank("learning_loss", outputs).order
    )


def test_ties_keep_pool_order():
    outputs = ScoreOutputs(
        np.full((4, 2), 0.5, np.float32), np.zeros(4, np.float32), np.zeros((4, 2), np.float32)
    )
    assert rank("entropy", outputs).order.tolist() == [0, 1, 2, 3]


def test_coreset_spreads_over_clusters_instead_of_duplicates():
    # Three tight, far-apart clusters; top-3 by any single score could come from one cluster.
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [100, 0], [0, 100]], dtype=np.float32)
    embedding = np.concatenate([c + rng.normal(scale=0.1, size=(20, 2)) for c in centers]).astype(np.float32)
    outputs = ScoreOutputs(np.full((60, 2), 0.5, np.float32), np.zeros(60, np.float32), embedding)
    ranking = rank("coreset", outputs, budget=3)
    assert sorted(ranking.order[:3] // 20) == [0, 1, 2]
    assert sorted(set(ranking.cluster.tolist())) == [0, 1, 2]


def test_coreset_avoids_already_labeled_regions():
    embedding = np.array([[0, 0], [0.1, 0], [10, 10]], dtype=np.float32)
    outputs = ScoreOutputs(np.full((3, 2), 0.5, np.float32), np.zeros(3, np.float32), embedding)
    ranking = rank("coreset", outputs, budget=1, labeled_embedding=np.array([[10, 10]], np.float32))
    assert ranking.order[0] in (0, 1)


def test_hybrid_picks_high_loss_items_that_are_diverse():
    # Items 0-19 have the highest predicted loss; 0-18 are near-duplicates, 19 is elsewhere.
    # Items 20-39 are far apart but low-loss: outside the 10 x budget preselection.
    rng = np.random.default_rng(0)
    embedding = np.zeros((40, 2), np.float32)
    embedding[:19] = rng.normal(scale=0.01, size=(19, 2))
    embedding[19] = [50, 50]
    embedding[20:] = rng.normal(size=(20, 2)) * 1000
    loss = np.r_[np.linspace(10, 9, 20), np.zeros(20)].astype(np.float32)
    outputs = ScoreOutputs(np.full((40, 2), 0.5, np.float32), loss, embedding)
    ranking = rank("hybrid", outputs, budget=2, seed=0)
    picked = set(ranking.order[:2].tolist())
    assert 19 in picked and len(picked & set(range(19))) == 1
    assert ranking.cluster[19] != ranking.cluster[0]
    # After the picks, the remaining candidates follow by predicted loss.
    assert set(ranking.order[2:20].tolist()) == set(range(20)) - picked


def test_badge_prefers_uncertain_items():
    rng = np.random.default_rng(0)
    probs = np.tile(np.array([[0.99, 0.01]], np.float32), (30, 1))
    probs[:5] = [0.5, 0.5]
    outputs = ScoreOutputs(probs, np.zeros(30, np.float32), rng.normal(size=(30, 4)).astype(np.float32))
    ranking = rank("badge", outputs, budget=3, seed=0)
    assert ranking.order[0] < 5


def test_k_center_memory_is_bounded_on_a_large_pool():
    # 100k x 32 pool with 20k labeled centers: chunked, subsampled; finishes quickly.
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(100_000, 32)).astype(np.float32)
    labeled = rng.normal(size=(20_000, 32)).astype(np.float32)
    picked, distance = k_center_greedy(pool, 5, rng, labeled)
    assert len(set(picked.tolist())) == 5 and distance.shape == (100_000,)


def test_min_squared_distances_matches_brute_force():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(50, 3)), rng.normal(size=(7, 3))
    brute = ((x[:, None, :] - c[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(min_squared_distances(x, c), brute, atol=1e-9)


@pytest.mark.parametrize("strategy", ALL)
def test_informativeness_values_for_single_items(strategy, outputs_factory):
    from model import informativeness_values

    outputs = outputs_factory(12)
    labeled = np.zeros((3, outputs.embedding.shape[1]), np.float32)
    values = informativeness_values(strategy, outputs, labeled_embedding=labeled)
    assert values.shape == (12,) and np.isfinite(values).all()
    assert informativeness_values(strategy, outputs_factory(0), labeled_embedding=labeled).shape == (0,)
    if strategy in ("learning_loss", "entropy", "margin", "least_confidence", "bald"):
        # The per-item value orders items exactly like the strategy's ranking.
        from model.strategies import order_by_value

        np.testing.assert_array_equal(order_by_value(values), rank(strategy, outputs).order)
