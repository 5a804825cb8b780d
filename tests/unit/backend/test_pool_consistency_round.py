"""Full training that also learns from the unlabeled pool (POOL_CONSISTENCY_WEIGHT) in a real
round. Label Studio is the in-process fake of test_cold_start_round (the real one is covered in
tests/e2e)."""

from __future__ import annotations

import pytest

from backend.rounds.pool_consistency import consistency_items
from backend.settings import Settings, SettingsError
from tests.unit.backend.test_cold_start_round import FakeClient, run

LABELS = {1: "0", 2: "1", 3: "two", 5: "0", 6: "1", 7: "two", 9: "0", 10: "1", 11: "two"}


def test_consistency_items_are_the_unlabeled_ones_or_a_seeded_sample_of_them():
    pool = [(tid, f"/img/{tid}.png") for tid in range(1, 21)]
    labeled = {1, 2, 3}
    assert consistency_items(pool, labeled, 100, seed=0) == pool[3:]
    sample = consistency_items(pool, labeled, 5, seed=0)
    assert len(sample) == 5 and not {tid for tid, _ in sample} & labeled
    assert sample == sorted(sample)  # pool order kept
    assert sample == consistency_items(pool, labeled, 5, seed=0)
    assert sample != consistency_items(pool, labeled, 5, seed=1)


@pytest.mark.parametrize("env", [{"POOL_CONSISTENCY_WEIGHT": "-1"}, {"POOL_CONSISTENCY_MAX_IMAGES": "0"}])
def test_unusable_pool_consistency_settings_are_refused(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env)


def _settings(tmp_path, **changes) -> Settings:
    return Settings(
        model_dir=tmp_path / "models",
        query_batch_size=4,
        seed=0,
        train_mode="full",
        self_supervised_steps=0,
        train_steps=20,
        **changes,
    )


def test_a_full_round_learns_from_the_unlabeled_images_when_the_weight_is_set(tmp_path):
    summary, _, events = run(_settings(tmp_path, pool_consistency_weight=1.0), FakeClient(24, LABELS))
    assert summary["state"] == "done" and summary["metrics"]["mode"] == "full"
    assert summary["metrics"]["unlabeled_images"] == 24 - len(LABELS)
    assert 0.0 <= summary["metrics"]["pseudo_label_share"] <= 1.0
    loaded = [e["pool_consistency_progress"] for e in events if "pool_consistency_progress" in e]
    assert loaded and loaded[-1] == {"images_loaded": 15, "images": 15}


def test_the_sample_is_bounded_and_off_means_labels_only(tmp_path):
    bounded, _, _ = run(
        _settings(tmp_path / "a", pool_consistency_weight=1.0, pool_consistency_max_images=4),
        FakeClient(24, LABELS),
    )
    assert bounded["metrics"]["unlabeled_images"] == 4
    off, _, _ = run(_settings(tmp_path / "b"), FakeClient(24, LABELS))
    assert off["state"] == "done" and "unlabeled_images" not in off["metrics"]
