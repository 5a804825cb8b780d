"""A strategy is one registry entry: every entry is complete, and its flags say what its
functions really do (a new strategy with a wrong or missing flag fails here)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model import STRATEGIES, TrainConfig, informativeness_values, needs_mc_samples, rank
from model.strategies import StrategySpec, order_by_value, register, spec

from .conftest import make_outputs

ALL = sorted(STRATEGIES)
# The one value-based entry with its own ranking function: random keeps its original seeded
# permutation (rng.permutation), so benchmark runs of earlier seeds stay comparable.
OWN_RANKING_NOT_BATCH_AWARE = {"random"}


@pytest.mark.parametrize("name", ALL)
def test_entry_is_complete(name):
    entry = STRATEGIES[name]
    assert isinstance(entry, StrategySpec) and entry.name == name
    assert entry.summary.strip(), "a one-line summary for docs and errors"
    assert callable(entry.values)
    if entry.batch_aware:
        assert callable(entry.ranking), "a batch-aware strategy brings its own ranking"
    elif entry.ranking is not None:
        assert name in OWN_RANKING_NOT_BATCH_AWARE
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(entry.train_overrides) <= fields, "train_overrides name TrainConfig fields"


@pytest.mark.parametrize("name", ALL)
def test_values_have_one_value_per_item(name):
    outputs = make_outputs(15)
    values = informativeness_values(name, outputs, labeled_embedding=make_outputs(4).embedding)
    assert values.shape == (15,) and values.dtype == np.float64 and np.isfinite(values).all()


@pytest.mark.parametrize("name", ALL)
def test_value_based_entries_rank_by_their_values(name):
    entry = STRATEGIES[name]
    if entry.ranking is not None:
        pytest.skip("ranks with its own function")
    outputs = make_outputs(40)
    np.testing.assert_array_equal(
        rank(name, outputs, seed=2).order, order_by_value(informativeness_values(name, outputs, seed=2))
    )


@pytest.mark.parametrize("name", ALL)
def test_needs_mc_samples_flag_is_honest(name):
    outputs = make_outputs(20)
    outputs.mc_probs = None
    if STRATEGIES[name].needs_mc_samples:
        assert needs_mc_samples(name)
        with pytest.raises(ValueError, match="mc_samples"):
            rank(name, outputs)
        with pytest.raises(ValueError, match="mc_samples"):
            informativeness_values(name, outputs)
    else:
        assert not needs_mc_samples(name)
        assert len(rank(name, outputs, budget=5).order) == 20


@pytest.mark.parametrize("name", ALL)
def test_uses_labeled_embedding_flag_is_honest(name):
    # Labeled items placed on the pool's first two picks: a strategy that uses the labeled
    # set must pick elsewhere; one that does not must rank exactly as without it.
    outputs = make_outputs(60, seed=4)
    without = rank(name, outputs, seed=1, budget=5)
    labeled = outputs.embedding[without.order[:2]] + 1e-3
    with_labeled = rank(name, outputs, seed=1, budget=5, labeled_embedding=labeled)
    changed = not np.array_equal(without.order, with_labeled.order)
    assert changed == STRATEGIES[name].uses_labeled_embedding


@pytest.mark.parametrize("name", ALL)
def test_batch_aware_flag_is_honest(name):
    # Many classes, so per-class caps bind; a few pools, so one lucky pool proves nothing.
    depends_on_budget = False
    for pool_seed in range(3):
        outputs = make_outputs(80, classes=10, seed=pool_seed)
        orders = [rank(name, outputs, seed=0, budget=budget).order for budget in (1, 8, 30)]
        depends_on_budget |= any(not np.array_equal(orders[0], other) for other in orders[1:])
    assert depends_on_budget == STRATEGIES[name].batch_aware


@pytest.mark.parametrize("name", ALL)
def test_clusters_flag_is_honest(name):
    ranking = rank(name, make_outputs(30), seed=0, budget=4)
    assert (ranking.cluster is not None) == STRATEGIES[name].clusters
    empty = rank(name, make_outputs(0), budget=4)
    assert (empty.cluster is not None) == STRATEGIES[name].clusters


def test_unknown_names_are_refused_everywhere_with_the_known_ones():
    outputs = make_outputs(3)
    for call in (
        lambda: rank("nope", outputs),
        lambda: informativeness_values("nope", outputs),
        lambda: needs_mc_samples("nope"),
        lambda: spec("nope"),
    ):
        with pytest.raises(ValueError, match="unknown strategy 'nope'.*margin_diverse"):
            call()


def test_register_refuses_incomplete_or_duplicate_entries():
    with pytest.raises(ValueError, match="twice"):
        register("margin", "again", STRATEGIES["margin"].values)
    with pytest.raises(ValueError, match="own ranking"):
        register("a_batch_strategy_without_ranking", "x", STRATEGIES["margin"].values, batch_aware=True)
    assert "a_batch_strategy_without_ranking" not in STRATEGIES


def test_learning_loss_v2_is_learning_loss_ranking_with_v2_training():
    v1, v2 = STRATEGIES["learning_loss"], STRATEGIES["learning_loss_v2"]
    assert dict(v2.train_overrides) == {"lpm_loss": "v2"} and not v1.train_overrides
    same = ("values", "ranking", "batch_aware", "needs_mc_samples", "uses_labeled_embedding", "clusters")
    assert all(getattr(v1, f) == getattr(v2, f) for f in same)
    outputs = make_outputs(50)
    np.testing.assert_array_equal(
        rank("learning_loss", outputs).order, rank("learning_loss_v2", outputs).order
    )
