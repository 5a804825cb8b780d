"""The recipe search in a real full-mode round: when it runs, what it reports, and that the model
the round publishes is trained with the chosen recipe. Label Studio is the in-process fake of
test_cold_start_round (the real one is covered in tests/e2e)."""

from __future__ import annotations

import pytest

from backend.round_history import entry_from_summary
from backend.rounds.train import recipe_search_skip_reason
from backend.settings import Settings, SettingsError
from model import load_checkpoint
from model.recipe_search import CANDIDATES, candidate_named, resolve
from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient, run

# 12 labeled tasks; the fake's images come in 4 kinds by task id % 4, the label follows the kind
# (kind 3 stays unlabeled: the config has 3 choices)
LABELS = {i: ["0", "1", "two"][i % 4] for i in range(1, 17) if i % 4 != 3}


@pytest.fixture
def settings(tmp_path):
    return Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=20,
        recipe_search_budget_s=3600,
        recipe_search_min_labels=8,
        recipe_search_folds=2,
        self_supervised_steps=0,
    )


def test_skip_reasons():
    assert "RECIPE_SEARCH_BUDGET_S is 0" in recipe_search_skip_reason(Settings(), 500)
    on = Settings(recipe_search_budget_s=60, recipe_search_min_labels=40)
    assert "fewer than RECIPE_SEARCH_MIN_LABELS=40" in recipe_search_skip_reason(on, 39)
    assert recipe_search_skip_reason(on, 40) is None


def test_settings_are_read_and_checked():
    settings = Settings.from_env(
        {"RECIPE_SEARCH_BUDGET_S": "120", "RECIPE_SEARCH_FOLDS": "5", "RECIPE_SEARCH_MIN_LABELS": "60"}
    )
    assert (
        settings.recipe_search_budget_s,
        settings.recipe_search_folds,
        settings.recipe_search_min_labels,
    ) == (120.0, 5, 60)
    for env in ({"RECIPE_SEARCH_FOLDS": "1"}, {"RECIPE_SEARCH_BUDGET_S": "-1"}):
        with pytest.raises(SettingsError, match=next(iter(env))):
            Settings.from_env(env)


def test_a_round_searches_reports_and_trains_with_the_winner(settings):
    client = FakeClient(20, LABELS)
    summary, store, events = run(settings, client)
    assert summary["state"] == "done"
    search = summary["recipe_search"]
    assert set(search["cv_acc"]) == {c.name for c in CANDIDATES}
    assert search["folds_compared"] == 2 and search["chosen"] in search["cv_acc"]
    assert summary["metrics"]["recipe"] == search["chosen"]
    assert summary["metrics"]["recipe_cv_acc"] == search["cv_acc"][search["chosen"]]
    assert "recipe_search_s" in summary["timings_s"]
    # the round history keeps the chosen recipe's accuracy per fold: the estimate's spread
    estimate = entry_from_summary(summary, job_id="j", duration_s=1.0)["accuracy"]
    assert estimate["folds"] == search["fold_acc"][search["chosen"]] and len(estimate["folds"]) == 2
    assert estimate["mean"] == pytest.approx(summary["metrics"]["recipe_cv_acc"], abs=1e-4)
    assert estimate["kind"] == "2-fold cross-validated" and estimate["std"] is not None
    progress = [e["recipe_search_progress"] for e in events if "recipe_search_progress" in e]
    assert len(progress) == 2 * len(CANDIDATES)
    # the published checkpoint holds the chosen recipe's configuration
    loaded = load_checkpoint(store.checkpoint_path(PROJECT, summary["model_version"]))
    model_config, train_config = resolve(
        candidate_named(search["chosen"]), loaded.model_config, loaded.train_config
    )
    assert (model_config, train_config) == (loaded.model_config, loaded.train_config)
    assert summary["predictions_pushed"] == 20


def test_below_the_minimum_the_round_trains_the_configured_recipe(settings):
    import dataclasses

    settings = dataclasses.replace(settings, recipe_search_min_labels=50)
    summary, _, events = run(settings, FakeClient(20, LABELS))
    assert summary["recipe_search"]["chosen"] == "configured"
    assert "fewer than RECIPE_SEARCH_MIN_LABELS=50" in summary["recipe_search"]["reason"]
    assert summary["metrics"]["recipe"] == "configured" and "recipe_cv_acc" not in summary["metrics"]
    assert not any(e.get("phase") == "recipe_search" for e in events)
