"""The few-label domain suite: paired draws, one real (tiny) training per recipe, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import domain_suite as ds


def tiny_recipe(**fields) -> ds.Recipe:
    """A recipe at 16 px and 4 optimizer steps (a frozen one trains its own few steps)."""
    return ds.Recipe(
        "test",
        model=dict(image_size=16),
        train=dict(auto_target_steps=4, auto_min_epochs=1, auto_max_epochs=4),
        **fields,
    )


def tiny_shapes(monkeypatch, pool_size: int = 60, test_size: int = 40, **recipes: ds.Recipe) -> ds.DomainData:
    """For one test: pools of a few images, ``recipes`` registered by name; the shapes data."""
    monkeypatch.setattr(ds, "POOL_SIZE", pool_size)
    monkeypatch.setattr(ds, "TEST_SIZE", test_size)
    for name, recipe in recipes.items():
        monkeypatch.setitem(ds.RECIPES, name, recipe)
    return ds.load_domain_data("shapes")


def test_labeled_draw_is_paired_across_recipes_and_differs_by_seed():
    a, b = ds.draw_labeled(1500, 50, seed=0), ds.draw_labeled(1500, 50, seed=0)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 50
    assert not np.array_equal(a, ds.draw_labeled(1500, 50, seed=1))


def test_a_tiny_run_trains_scores_and_resumes(tmp_path, monkeypatch):
    data = tiny_shapes(monkeypatch, tiny=tiny_recipe())
    assert len(data.pool_images) == 60 and len(data.test_images) == 40 and len(data.labels) == 4
    records = ds.run_suite(["tiny", "legacy"], ["shapes"], [8], [0], tmp_path, log=lambda m: None)
    assert [r["recipe"] for r in records] == ["tiny", "legacy"]
    tiny = records[0]
    assert 0.0 <= tiny["accuracy"] <= 1.0 and tiny["steps"] >= 4
    assert tiny["model_config"]["input_norm"] == "per_image"  # the new defaults
    assert records[1]["model_config"]["augment_policy"] == "crop_flip"  # the recipe before
    saved = json.loads(ds.run_path(tmp_path, "tiny", "shapes", 8, 0).read_text())
    assert saved["accuracy"] == tiny["accuracy"]
    # a rerun reads the saved runs instead of training again
    monkeypatch.setattr(ds, "run_one", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    assert ds.run_suite(["tiny"], ["shapes"], [8], [0], tmp_path, log=lambda m: None) == [saved]


def test_report_tables_every_recipe_with_mean_std_and_seed_counts():
    records = [
        {
            "recipe": r,
            "domain": "shapes",
            "labels": 100,
            "seed": s,
            "accuracy": acc,
            "lpm_spearman": 0.5,
            "train_s": 1.0,
        }
        for r, accs in (("legacy", (0.25, 0.27)), ("default", (0.5, 0.6, 0.55)))
        for s, acc in enumerate(accs)
    ]
    summary = ds.summarize(records)
    assert summary["default"]["shapes"][100]["acc_mean"] == np.mean([0.5, 0.6, 0.55])
    table = ds.markdown(summary, ["legacy", "default"])
    assert "| shapes | default | 55.0 ± 4.1 |" in table
    assert "26.0 ± 1.0 (n=2)" in table


def test_a_selfsup_recipe_trains_from_the_domains_weights_learned_once(tmp_path, monkeypatch):
    data = tiny_shapes(monkeypatch, tiny_ssl=tiny_recipe(selfsup_steps=2))
    records = ds.run_suite(["tiny_ssl"], ["shapes"], [8], [0, 1], tmp_path, log=lambda m: None)
    weights = tmp_path / "selfsup" / "shapes-2.pt"
    assert weights.is_file() and len(records) == 2
    # recorded relative to the results folder, so a record does not name a machine's path
    assert {r["model_config"]["pretrained_weights"] for r in records} == {"selfsup/shapes-2.pt"}
    learned = weights.stat().st_mtime_ns
    ds.run_one("tiny_ssl", "shapes", 8, 2, data, "cpu", tmp_path)
    assert weights.stat().st_mtime_ns == learned  # reused, not learned again


def test_a_selfsup_variant_learns_its_own_weights_with_its_changed_views(tmp_path, monkeypatch):
    overrides = dict(hue=0.0, augment=dict(grayscale_p=0.0, invert_p=0.0))
    config = ds.selfsup_config(2, "cpu", overrides)
    default = ds.selfsup_config(2, "cpu")
    assert (config.hue, config.augment.grayscale_p, config.augment.invert_p) == (0.0, 0.0, 0.0)
    assert default.hue > 0 and default.augment.grayscale_p > 0  # the backend's own, untouched
    assert config.augment.crop_scale == default.augment.crop_scale  # the rest of the policy kept
    tiny_shapes(
        monkeypatch,
        tiny_ssl=tiny_recipe(selfsup_steps=2),
        tiny_colour=tiny_recipe(selfsup_steps=2, selfsup_variant="colour", selfsup_overrides=overrides),
    )
    records = ds.run_suite(["tiny_ssl", "tiny_colour"], ["shapes"], [8], [0], tmp_path, log=lambda m: None)
    assert [r["model_config"]["pretrained_weights"] for r in records] == [
        "selfsup/shapes-2.pt",
        "selfsup/shapes-2-colour.pt",
    ]
    learned = [
        torch.load(tmp_path / w, weights_only=True)
        for w in ("selfsup/shapes-2.pt", "selfsup/shapes-2-colour.pt")
    ]
    assert any(not torch.equal(learned[0][k], learned[1][k]) for k in learned[0])
    with pytest.raises(ValueError, match="go together"):
        tiny_recipe(selfsup_steps=2, selfsup_overrides=overrides)


def test_a_frozen_recipe_trains_on_the_learned_backbones_features_and_needs_one(tmp_path, monkeypatch):
    data = tiny_shapes(monkeypatch, tiny_frozen=tiny_recipe(selfsup_steps=2, frozen=True))
    record = ds.run_one("tiny_frozen", "shapes", 8, 0, data, "cpu", tmp_path)
    assert record["train_acc"] is not None and 0.0 <= record["accuracy"] <= 1.0
    assert record["model_config"]["pretrained_weights"] == "selfsup/shapes-2.pt"
    with pytest.raises(ValueError, match="learned backbone"):
        ds.Recipe("test", model={}, train={}, frozen=True)


def test_transfer_sources_never_include_the_targets_own_family():
    assert ds.transfer_sources("shapes") == ("letters", "textures", "mnist")
    assert ds.transfer_sources("mnist") == ds.transfer_sources("digits") == ds.SYNTHETIC_DOMAINS
    assert ds.transfer_sources("photos") == ds.SYNTHETIC_DOMAINS + ("mnist",)


def test_a_transfer_recipe_starts_from_a_file_trained_on_other_domains_made_once(tmp_path, monkeypatch):
    data = tiny_shapes(
        monkeypatch,
        30,
        20,
        tiny_transfer=tiny_recipe(transfer_steps=2),
        tiny_transfer_frozen=tiny_recipe(transfer_steps=2, frozen=True),
        tiny_transfer_ssl=tiny_recipe(transfer_steps=2, selfsup_steps=2, frozen=True),
    )
    monkeypatch.setattr(ds, "transfer_sources", lambda domain: ("letters", "textures"))
    records = ds.run_suite(
        ["tiny_transfer", "tiny_transfer_frozen"], ["shapes"], [8], [0], tmp_path, log=lambda m: None
    )
    weights = tmp_path / "transfer" / "shapes-2.pt"
    assert {r["model_config"]["pretrained_weights"] for r in records} == {"transfer/shapes-2.pt"}
    state = torch.load(weights, weights_only=True)
    # a backbone only, in the layout PRETRAINED_WEIGHTS loads: no head, no loss prediction module
    assert state and not any(k.startswith(("head.", "lpm.", "features.")) for k in state)
    made = weights.stat().st_mtime_ns
    ds.run_one("tiny_transfer", "shapes", 8, 1, data, "cpu", tmp_path)
    assert weights.stat().st_mtime_ns == made  # reused, not trained again
    # with self-supervised steps too, the pre-training adapts the transferred file to the domain
    record = ds.run_one("tiny_transfer_ssl", "shapes", 8, 0, data, "cpu", tmp_path)
    assert record["model_config"]["pretrained_weights"] == "selfsup/shapes-2-from-transfer-shapes-2.pt"
    adapted = torch.load(tmp_path / record["model_config"]["pretrained_weights"], weights_only=True)
    assert adapted.keys() == state.keys()
    assert any(not torch.equal(adapted[k], state[k]) for k in state)  # pre-trained further
    assert weights.stat().st_mtime_ns == made
