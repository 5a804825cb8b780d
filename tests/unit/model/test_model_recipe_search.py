"""The recipe search: stratified folds, the budget, paired comparison, ties, and one real search
with the backend's trainer on real digits."""

from __future__ import annotations

import numpy as np
import pytest

from model import ModelConfig, TrainConfig, recipe_search
from model.recipe_search import CANDIDATES, resolve, search, stratified_folds
from tests.unit.model.conftest import DIGIT_LABELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- folds


def test_stratified_folds_partition_the_rows_with_every_class_spread():
    targets = np.array([0] * 9 + [1] * 6 + [2] * 3)
    folds = stratified_folds(targets, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(targets)))  # a partition
    for fold in folds:
        assert np.bincount(targets[fold], minlength=3).tolist() == [3, 2, 1]  # 1/3 of each class
    assert [f.tolist() for f in folds] == [f.tolist() for f in stratified_folds(targets, 3, seed=0)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in stratified_folds(targets, 3, seed=1)]


def test_stratified_folds_balance_sizes_when_classes_are_smaller_than_k():
    targets = np.array([0, 1, 2, 3, 4, 5, 6])  # one row per class
    sizes = sorted(len(f) for f in stratified_folds(targets, 3, seed=0))
    assert sizes == [2, 2, 3]


@pytest.mark.parametrize("k, n", [(1, 10), (4, 3)])
def test_stratified_folds_refuse_impossible_splits(k, n):
    with pytest.raises(ValueError):
        stratified_folds(np.zeros(n, dtype=int), k, seed=0)


# ----------------------------------------------------------------------------- candidates


def test_candidates_resolve_to_valid_configs_and_the_first_is_the_configuration():
    model_config, train_config = ModelConfig(), TrainConfig(auto_target_steps=800)
    assert CANDIDATES[0].model == {} and CANDIDATES[0].train == {}
    assert len({c.name for c in CANDIDATES}) == len(CANDIDATES)
    for candidate in CANDIDATES:
        m, t = resolve(candidate, model_config, train_config)  # validates the dataclasses
        assert isinstance(m, ModelConfig) and isinstance(t, TrainConfig)
    _, half = resolve(recipe_search.candidate_named("half_steps"), model_config, train_config)
    assert half.auto_target_steps == 400  # follows the configured step target
    with pytest.raises(ValueError, match="unknown recipe candidate"):
        recipe_search.candidate_named("nope")


# ----------------------------------------------------------------------------- the search


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def scripted_scorer(accuracy_of: dict[str, list[float]], clock: Clock, seconds: float, calls: list):
    """Accuracy by candidate (told apart by the step target the candidate resolves to) and fold
    (call order); every training 'takes' ``seconds`` of the fake clock."""
    by_steps = {resolve(c, ModelConfig(), TrainConfig())[1].auto_target_steps: c.name for c in CANDIDATES[:2]}

    def scorer(train_images, train_targets, val_images, val_targets, labels, model_config, train_config):
        name = by_steps[train_config.auto_target_steps]
        calls.append((name, len(train_images), len(val_images)))
        clock.now += seconds
        return accuracy_of[name][sum(1 for c in calls if c[0] == name) - 1]

    return scorer


TWO = CANDIDATES[:2]  # configured, half_steps


def test_search_picks_the_best_mean_over_paired_folds():
    clock, calls = Clock(), []
    scorer = scripted_scorer(
        {"configured": [0.5, 0.6, 0.7], "half_steps": [0.7, 0.7, 0.8]}, clock, 1.0, calls
    )
    targets = [0, 1] * 15
    found = search(
        [None] * 30,
        targets,
        ["a", "b"],
        ModelConfig(),
        TrainConfig(),
        folds=3,
        budget_s=100,
        candidates=TWO,
        scorer=scorer,
        clock=clock,
    )
    assert found.chosen == "half_steps" and found.folds_compared == 3
    assert found.table["half_steps"]["cv_acc"] == pytest.approx(0.7333, abs=1e-4)
    assert [c[0] for c in calls] == ["configured", "half_steps"] * 3  # fold by fold
    assert all(n_train == 20 and n_val == 10 for _, n_train, n_val in calls)
    assert found.summary()["cv_acc"] == {"configured": 0.6, "half_steps": 0.7333}
    assert found.summary()["fold_acc"] == {
        "configured": [0.5, 0.6, 0.7],
        "half_steps": [0.7, 0.7, 0.8],
    }  # the spread


def test_ties_keep_the_configured_recipe():
    clock, calls = Clock(), []
    scorer = scripted_scorer({"configured": [0.5, 0.5], "half_steps": [0.5, 0.5]}, clock, 1.0, calls)
    found = search(
        [None] * 10,
        [0, 1] * 5,
        ["a", "b"],
        ModelConfig(),
        TrainConfig(),
        folds=2,
        budget_s=100,
        candidates=TWO,
        scorer=scorer,
        clock=clock,
    )
    assert found.chosen == "configured"


def test_the_budget_stops_before_a_training_that_would_overrun_and_compares_paired_folds_only():
    clock, calls = Clock(), []
    # 10 s per training, 35 s budget: trainings start at 0, 10, 20; at 30 the next would end at 40.
    scorer = scripted_scorer(
        {"configured": [0.1, 0.9, 0.9], "half_steps": [0.2, 0.2, 0.2]}, clock, 10.0, calls
    )
    found = search(
        [None] * 30,
        [0, 1, 2] * 10,
        ["a", "b", "c"],
        ModelConfig(),
        TrainConfig(),
        folds=3,
        budget_s=35,
        min_folds=1,
        candidates=TWO,
        scorer=scorer,
        clock=clock,
    )
    assert len(calls) == 3
    assert found.folds_compared == 1  # configured's 2nd fold has no pair
    assert found.chosen == "half_steps"  # 0.2 > 0.1 on the one paired fold
    assert found.table["configured"]["fold_acc"] == [0.1, 0.9]
    assert found.summary()["fold_acc"]["configured"] == [0.1]  # the compared folds only


def test_too_small_a_budget_keeps_the_configured_recipe_and_says_why():
    clock, calls = Clock(), []
    scorer = scripted_scorer({"configured": [0.1] * 3, "half_steps": [0.9] * 3}, clock, 10.0, calls)
    found = search(
        [None] * 30,
        [0, 1] * 15,
        ["a", "b"],
        ModelConfig(),
        TrainConfig(),
        folds=3,
        budget_s=25,
        candidates=TWO,
        scorer=scorer,
        clock=clock,
    )
    assert found.chosen == "configured" and found.folds_compared == 1
    assert "fewer than 2" in found.reason


def test_a_real_search_on_digits_trains_every_candidate_on_every_fold(digits, tiny_model_config):
    images, targets = digits
    rows = np.random.default_rng(0).choice(len(images), 80, replace=False)
    events = []
    found = search(
        [images[i] for i in rows],
        targets[rows].tolist(),
        DIGIT_LABELS,
        tiny_model_config,
        TrainConfig(auto_target_steps=120, batch_size=16, device="cpu"),
        folds=2,
        budget_s=600,
        progress=events.append,
    )
    assert found.folds_compared == 2
    assert [e["candidate"] for e in events] == [c.name for c in CANDIDATES] * 2
    for row in found.table.values():
        assert len(row["fold_acc"]) == 2 and all(0.0 <= a <= 1.0 for a in row["fold_acc"])
    # a trained recipe beats chance (10 classes) on held-out digits
    assert max(row["cv_acc"] for row in found.table.values()) > 0.3
    assert found.chosen == max(found.table, key=lambda n: (found.table[n]["cv_acc"], n == "configured"))
