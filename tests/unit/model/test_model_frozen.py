"""Frozen-backbone training on pooled features, and the on-disk feature cache."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from model import ModelConfig, TrainConfig, build_network, load_checkpoint, save_checkpoint, score
from model.feature_cache import FeatureCache
from model.feature_keys import backbone_fingerprint, backbone_key, item_key
from model.frozen import FrozenConfig, PooledFeatures, extract_pooled, score_pooled, train_frozen
from model.trainer import TrainingError

LABELS = ["red", "blue"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return ModelConfig(backbone="small_cnn", image_size=16, small_cnn_width=8, lpm_width=16)


def coloured_squares(n: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    """Noisy images with a square whose colour is the class: red (0) or blue (1)."""
    rng = np.random.default_rng(seed)
    images, targets = [], rng.integers(0, 2, n)
    for target in targets:
        array = rng.integers(0, 90, (16, 16, 3)).astype(np.uint8)
        x, y, side = rng.integers(0, 6), rng.integers(0, 6), rng.integers(7, 11)
        colour = (230, 30, 30) if target == 0 else (30, 30, 230)
        array[y : y + side, x : x + side] = colour
        images.append(Image.fromarray(array))
    return images, targets


@pytest.fixture(scope="module")
def data(cfg):
    torch.manual_seed(0)
    model = build_network(cfg, num_classes=len(LABELS))
    train_images, train_targets = coloured_squares(40, seed=1)
    test_images, test_targets = coloured_squares(40, seed=2)
    return {
        "model": model,
        "train_images": train_images,
        "train_targets": train_targets,
        "train": extract_pooled(model, train_images, cfg, device="cpu", batch_size=16),
        "test_images": test_images,
        "test_targets": test_targets,
        "test": extract_pooled(model, test_images, cfg, device="cpu", batch_size=16),
    }


def quick_train_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"seed": 0, "device": "cpu", "batch_size": 32, **overrides})


def fresh(data):
    return copy.deepcopy(data["model"])


def backbone_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.features.state_dict().items()}


def test_pooled_features_shapes_subset_concat_and_matrix(data, cfg):
    feats, model = data["train"], data["model"]
    assert len(feats) == 40
    assert feats.tap_widths == [8, 16, 32] and feats.embedding_dim == model.embedding_dim == 32
    assert all(t.dtype == np.float32 for t in feats.taps) and feats.embedding.dtype == np.float32
    both = PooledFeatures.concatenate([feats.subset([0, 1]), feats[np.arange(2, 40)]])
    np.testing.assert_array_equal(both.to_matrix(), feats.to_matrix())
    back = PooledFeatures.from_matrix(feats.to_matrix(), feats.tap_widths, feats.embedding_dim)
    np.testing.assert_array_equal(back.taps[1], feats.taps[1])
    # A uint8 tensor gives the same rows as the PIL images.
    from model.data import images_to_uint8

    again = extract_pooled(
        model, images_to_uint8(data["train_images"], cfg), cfg, device="cpu", batch_size=40
    )
    np.testing.assert_allclose(again.to_matrix(), feats.to_matrix(), atol=1e-6)
    assert len(extract_pooled(model, [], cfg, device="cpu")) == 0


def test_score_pooled_equals_score(data, cfg):
    model = fresh(data)
    result = train_frozen(model, data["train"], data["train_targets"], LABELS, cfg, quick_train_config())
    images = data["test_images"]
    expected = score(result.model, images, cfg, device="cpu", mc_samples=3, seed=5)
    got = score_pooled(
        result.model, extract_pooled(result.model, images, cfg, device="cpu"), mc_samples=3, seed=5
    )
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-5)
    np.testing.assert_allclose(got.predicted_loss, expected.predicted_loss, atol=1e-5)
    np.testing.assert_allclose(got.embedding, expected.embedding, atol=1e-5)
    np.testing.assert_allclose(got.mc_probs, expected.mc_probs, atol=1e-5)
    # Also for the untrained network, and with row batches smaller than the pool.
    untrained = data["model"]
    np.testing.assert_allclose(
        score_pooled(untrained, data["test"], batch_rows=7).predicted_loss,
        score(untrained, images, cfg, device="cpu").predicted_loss,
        atol=1e-5,
    )


def test_only_head_and_lpm_train_and_backbone_stays_bit_identical(data, cfg):
    model = fresh(data)
    before_backbone = backbone_state(model)
    before_head = copy.deepcopy(model.head.state_dict())
    before_lpm = copy.deepcopy(model.lpm.state_dict())
    train_frozen(
        model,
        data["train"],
        data["train_targets"],
        LABELS,
        cfg,
        quick_train_config(),
        frozen_config=FrozenConfig(reinit=False),
    )
    after = backbone_state(model)
    assert before_backbone.keys() == after.keys()
    assert all(torch.equal(before_backbone[k], after[k]) for k in after)  # weights and BN buffers
    assert any(not torch.equal(v, model.head.state_dict()[k]) for k, v in before_head.items())
    assert all(not torch.equal(v, model.lpm.state_dict()[k]) for k, v in before_lpm.items())
    assert not model.training


def test_learns_a_separable_problem_and_reports_metrics(data, cfg):
    seen = []
    result = train_frozen(
        fresh(data),
        data["train"],
        data["train_targets"],
        LABELS,
        cfg,
        quick_train_config(),
        progress=seen.append,
    )
    metrics = result.metrics
    assert metrics["mode"] == "frozen" and metrics["train_acc"] == 1.0
    assert metrics["steps"] == FrozenConfig().steps and metrics["n_train"] == 40
    for name in ("train_ce", "lpm_loss", "train_loss", "seconds", "epochs"):
        assert np.isfinite(metrics[name])
    json.dumps(metrics)
    assert seen and seen[-1]["step"] == metrics["steps"]
    held_out = score_pooled(result.model, data["test"])
    assert (held_out.probs.argmax(1) == data["test_targets"]).mean() > 0.9


def test_deterministic_for_a_seed_and_independent_of_the_incoming_head(data, cfg):
    def run(seed, scramble_head):
        model = fresh(data)
        if scramble_head:
            torch.nn.init.normal_(model.head.weight)
        result = train_frozen(
            model, data["train"], data["train_targets"], LABELS, cfg, quick_train_config(seed=seed)
        )
        return {k: v.clone() for k, v in result.model.state_dict().items()}

    first, second, other = run(0, False), run(0, True), run(1, False)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if k.startswith("lpm."))


def test_augmented_views_validation_and_cancel(data, cfg):
    feats, targets = data["train"], data["train_targets"]
    rng = np.random.default_rng(0)
    noisy = PooledFeatures([t + rng.normal(0, 0.01, t.shape) for t in feats.taps], feats.embedding * 1.01)
    result = train_frozen(
        fresh(data),
        feats,
        targets,
        LABELS,
        cfg,
        quick_train_config(val_fraction=0.25),
        augmented=[noisy, noisy],
    )
    assert (
        result.metrics["n_train"] == 30 and result.metrics["n_rows"] == 90 and result.metrics["n_val"] == 10
    )
    assert 0.0 <= result.metrics["val_acc"] <= 1.0
    with pytest.raises(ValueError, match="augmented view"):
        train_frozen(
            fresh(data), feats, targets, LABELS, cfg, quick_train_config(), augmented=[feats.subset([0])]
        )
    with pytest.raises(ValueError, match="do not fit"):
        wrong = PooledFeatures(feats.taps[:2], feats.embedding)
        train_frozen(fresh(data), wrong, targets, LABELS, cfg, quick_train_config())
    with pytest.raises(ValueError, match="targets"):
        train_frozen(fresh(data), feats, targets[:5], LABELS, cfg, quick_train_config())

    def cancel(_):
        raise KeyboardInterrupt

    cancelled = fresh(data)
    with pytest.raises(KeyboardInterrupt):
        train_frozen(cancelled, feats, targets, LABELS, cfg, quick_train_config(), progress=cancel)
    # Cancelled mid-way, the network still computes on raw features what score_pooled says.
    np.testing.assert_allclose(
        score_pooled(cancelled, data["test"]).probs,
        score(cancelled, data["test_images"], cfg, device="cpu").probs,
        atol=1e-5,
    )
    with pytest.raises(TrainingError):
        bad = PooledFeatures(feats.taps, np.full_like(feats.embedding, np.nan))
        train_frozen(fresh(data), bad, targets, LABELS, cfg, quick_train_config())


def test_checkpoint_of_a_frozen_model_reloads_and_scores_identically(data, cfg, tmp_path):
    result = train_frozen(
        fresh(data), data["train"], data["train_targets"], LABELS, cfg, quick_train_config()
    )
    save_checkpoint(tmp_path / "frozen.pt", result)
    loaded = load_checkpoint(tmp_path / "frozen.pt")
    assert loaded.metrics["mode"] == "frozen"
    expected = score_pooled(result.model, data["test"])
    got = score(loaded.model, data["test_images"], loaded.model_config, device="cpu")
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-5)
    np.testing.assert_allclose(got.predicted_loss, expected.predicted_loss, atol=1e-5)


# ---------------------------------------------------------------------------- feature cache


def test_cache_round_trip_hits_misses_and_get_or_compute(data, tmp_path):
    feats = data["train"]
    keys = [item_key(i, f"http://host/{i}.png") for i in range(40)]
    cache = FeatureCache(tmp_path, "small_cnn-0123456789abcdef")
    assert cache.get_many(keys[:3]) == (None, keys[:3])
    cache.put_many(keys[:30], feats.subset(np.arange(30)))
    found, missing = cache.get_many([keys[35], keys[5], keys[29], keys[5]])
    assert missing == [keys[35]]
    np.testing.assert_array_equal(found.to_matrix(), feats.subset([5, 29, 5]).to_matrix())
    assert found.tap_widths == feats.tap_widths and len(cache) == 30

    calls = []

    def compute(missing_keys):
        calls.append(missing_keys)
        return feats.subset([keys.index(k) for k in missing_keys])

    order = [keys[39], keys[0], keys[31], keys[10]]
    got = FeatureCache(tmp_path, cache.key).get_or_compute(order, compute)  # a second instance reads the disk
    assert calls == [[keys[39], keys[31]]]
    np.testing.assert_array_equal(got.to_matrix(), feats.subset([39, 0, 31, 10]).to_matrix())
    assert len(cache) == 32 and keys[31] in cache
    # Re-putting keys replaces rows; the shard count stays bounded by compaction.
    for _ in range(5):
        cache.put_many(keys[:30], feats.subset(np.arange(30)))
    assert len(list((cache.directory / "shards").glob("*.npy"))) <= 3
    found, missing = cache.get_many(keys)
    cached = [*range(30), 31, 39]
    assert missing == [key for i, key in enumerate(keys) if i not in cached]
    np.testing.assert_array_equal(found.to_matrix(), feats.subset(cached).to_matrix())
    with pytest.raises(ValueError, match="do not match"):
        cache.put_many(["x"], PooledFeatures(feats.taps[:2], feats.embedding).subset([0]))


def test_cache_compacts_partly_replaced_and_many_shards(data, tmp_path, monkeypatch):
    import model.feature_cache as feature_cache

    feats = data["train"]
    keys = [f"k{i}" for i in range(10)]
    cache = FeatureCache(tmp_path, "k")
    cache.put_many(keys, feats.subset(np.arange(10)))
    for _ in range(3):  # rows 0..5 replaced again and again: old copies are compacted away
        cache.put_many(keys[:6], feats.subset(np.arange(10, 16)))
    assert FeatureCache(tmp_path, "k").stored_rows() <= 2 * len(keys)
    expected = feats.subset([*range(10, 16), *range(6, 10)]).to_matrix()
    np.testing.assert_array_equal(cache.get_many(keys)[0].to_matrix(), expected)
    monkeypatch.setattr(feature_cache, "MAX_SHARDS", 3)
    for i in range(5):
        cache.put_many([f"single{i}"], feats.subset([i]))
    assert len(list((cache.directory / "shards").glob("*.npy"))) <= 3 + 1
    assert len(cache) == 15 and cache.get_many([f"single{i}" for i in range(5)])[1] == []


def test_cache_keys_invalidate_and_prune(data, cfg, tmp_path):
    model = data["model"]
    fingerprint = backbone_fingerprint(model)
    key = backbone_key(cfg, fingerprint, model.taps)
    assert key.startswith("small_cnn-") and key == backbone_key(cfg, fingerprint, model.taps)
    bigger = ModelConfig(backbone="small_cnn", image_size=24, small_cnn_width=8, lpm_width=16)
    other_head = ModelConfig(
        backbone="small_cnn", image_size=16, small_cnn_width=8, lpm_width=64, dropout=0.5
    )
    assert backbone_key(bigger, fingerprint, model.taps) != key
    assert backbone_key(cfg, "another-weights", model.taps) != key
    assert backbone_key(other_head, fingerprint, model.taps) == key  # head/LPM settings do not matter
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.features.parameters()).add_(1e-3)
    assert backbone_fingerprint(changed) != fingerprint

    feats = data["train"].subset(np.arange(4))
    keys = ["a", "b", "c", "d"]
    old = FeatureCache(tmp_path, backbone_key(bigger, fingerprint))
    old.put_many(keys, feats)
    new = FeatureCache(tmp_path, key)
    assert new.get_many(keys) == (None, keys)  # another backbone key is another directory
    new.put_many(keys[:1], feats.subset([0]))
    (tmp_path / "not-a-cache").mkdir()
    assert new.prune_other_keys() == [old.key]
    assert not old.directory.exists() and (tmp_path / "not-a-cache").exists()
    assert new.get_many(keys[:1])[1] == []
    with pytest.raises(ValueError):
        FeatureCache(tmp_path, "../escape")


def test_cache_corrupt_shard_or_index_is_a_miss(data, tmp_path, caplog):
    feats = data["train"]
    cache = FeatureCache(tmp_path, "k")
    cache.put_many(["a", "b"], feats.subset([0, 1]))
    cache.put_many(["c"], feats.subset([2]))
    header, first = (tmp_path / "k" / "index.jsonl").read_text().splitlines()[:2]
    shard_of_a = tmp_path / "k" / "shards" / json.loads(first)["shard"]
    data_bytes = shard_of_a.read_bytes()
    shard_of_a.write_bytes(data_bytes[: len(data_bytes) - 16])  # truncated
    found, missing = FeatureCache(tmp_path, "k").get_many(["a", "c", "b"])
    assert missing == ["a", "b"]
    np.testing.assert_array_equal(found.to_matrix(), feats.subset([2]).to_matrix())
    assert "corrupt" in caplog.text
    shard_of_a.write_bytes(b"\x93NUMPY garbage")
    assert FeatureCache(tmp_path, "k").get_many(["a"]) == (None, ["a"])

    (tmp_path / "k" / "index.jsonl").write_text("{not json\n")
    fresh_cache = FeatureCache(tmp_path, "k")
    assert fresh_cache.get_many(["a", "c"]) == (None, ["a", "c"])
    for old in (tmp_path / "k" / "shards").iterdir():  # a put in flight names its shard sooner
        os.utime(old, (0, 0))
    fresh_cache.put_many(["c"], feats.subset([2]))  # a new index; unreferenced shards are removed
    assert len(list((tmp_path / "k" / "shards").iterdir())) == 1
    np.testing.assert_array_equal(fresh_cache.get_many(["c"])[0].to_matrix(), feats.subset([2]).to_matrix())
