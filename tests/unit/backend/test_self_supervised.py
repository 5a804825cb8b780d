"""A project's self-supervised weights (backend/self_supervised.py): when they are learned, kept,
reused and learned again, and that a full-mode round trains from them. Label Studio is the
in-process fake of test_cold_start_round (the real one is covered in tests/e2e)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from backend import self_supervised as ssl
from backend.rounds.configs import model_config_from
from backend.rounds.representation import self_supervised_config, self_supervised_skip_reason
from backend.settings import Settings, SettingsError
from model import ModelConfig, load_checkpoint
from model.self_supervised import SelfSupervisedConfig
from model.trainer import TrainingError
from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient, run
from tests.unit.backend.test_recipe_round import LABELS

CONFIG = ModelConfig(image_size=16)
FEW_STEPS = SelfSupervisedConfig(steps=3, batch_size=8, device="cpu", log_every=1)


def _arrays(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(count)]


class Loader:
    """load_images for ensure_weights: the same random arrays, and what it was asked for."""

    def __init__(self):
        self.calls: list[list] = []

    def __call__(self, items):
        self.calls.append(list(items))
        return _arrays(len(items))


def ensure(directory, pool, loader, growth=0.5, max_images=1000, cfg=FEW_STEPS):
    return ssl.ensure_weights(directory, CONFIG, cfg, pool, loader, growth=growth, max_images=max_images)


# ----------------------------------------------------------------------------- pure parts


def test_the_key_follows_the_backbone_and_its_input_not_the_head():
    key = ssl.weights_key(CONFIG, FEW_STEPS)
    assert key == ssl.weights_key(ModelConfig(image_size=16), FEW_STEPS)
    for changed in (
        dict(image_size=32),
        dict(small_cnn_width=8),
        dict(input_norm="dataset"),
        dict(backbone="cifar_resnet18"),
        dict(hflip=True),
    ):
        assert ssl.weights_key(dataclasses.replace(CONFIG, **changed), FEW_STEPS) != key, changed
    for same in (dict(dropout=0.5), dict(lpm_width=64), dict(augment_policy="crop_flip")):
        assert ssl.weights_key(dataclasses.replace(CONFIG, **same), FEW_STEPS) == key, same
    assert ssl.weights_key(CONFIG, dataclasses.replace(FEW_STEPS, steps=4)) != key
    # where it runs and how often it logs do not change the weights' fit
    assert ssl.weights_key(CONFIG, dataclasses.replace(FEW_STEPS, device="cuda", log_every=7)) == key


def test_refresh_reasons():
    stored = ssl.StoredWeights(
        file="w.pt", key="k", pool_size=100, images=100, steps=3, seconds=1.0, created="2026-01-01T00:00:00Z"
    )
    assert "no self-supervised weights" in ssl.refresh_reason(None, "k", 100, 0.5)
    assert "missing" in ssl.refresh_reason(stored, "k", 100, 0.5, weights_exist=False)
    assert "digest" in ssl.refresh_reason(stored, "k", 100, 0.5, weights_intact=False)
    assert "changed" in ssl.refresh_reason(stored, "other", 100, 0.5)
    assert ssl.refresh_reason(stored, "k", 149, 0.5) is None
    assert "grew from 100 to 150" in ssl.refresh_reason(stored, "k", 150, 0.5)
    assert ssl.refresh_reason(stored, "k", 60, 0.5) is None  # tasks deleted: still fits


def test_a_large_pool_is_sampled_seeded_and_in_order():
    items = list(range(100))
    sample = ssl.sample_pool(items, 10, seed=3)
    assert len(sample) == 10 == len(set(sample)) and sample == sorted(sample)
    assert sample == ssl.sample_pool(items, 10, seed=3) != ssl.sample_pool(items, 10, seed=4)
    assert ssl.sample_pool(items, 1000, seed=3) == items


# ----------------------------------------------------------------------------- kept and reused


def test_weights_are_learned_once_then_reused(tmp_path):
    directory, loader = tmp_path / "ssl", Loader()
    path, summary = ensure(directory, list(range(20)), loader)
    assert summary["learned_now"] and summary["why"] == "no self-supervised weights yet"
    assert summary["images"] == 20 and summary["learned_from_tasks"] == 20
    assert path.is_file() and path.parent == directory
    stored = json.loads((directory / ssl.CURRENT_FILE).read_text())
    assert stored["file"] == path.name and stored["key"] == ssl.weights_key(CONFIG, FEW_STEPS)
    state = torch.load(path, weights_only=True)
    assert state and not any(name.startswith("fc") for name in state)  # the backbone only
    again, summary = ensure(directory, list(range(25)), loader)
    assert again == path and not summary["learned_now"] and len(loader.calls) == 1


def test_a_grown_pool_relearns_and_the_old_file_goes(tmp_path):
    directory, loader = tmp_path / "ssl", Loader()
    first, _ = ensure(directory, list(range(20)), loader)
    second, summary = ensure(directory, list(range(30)), loader)
    assert summary["learned_now"] and "grew from 20 to 30" in summary["why"]
    assert second != first and second.is_file() and not first.exists()
    assert sorted(p.name for p in directory.glob("*.pt")) == [second.name]


def test_another_backbone_or_a_lost_record_relearns(tmp_path):
    directory, loader = tmp_path / "ssl", Loader()
    ensure(directory, list(range(20)), loader)
    _, summary = ensure(directory, list(range(20)), loader, cfg=dataclasses.replace(FEW_STEPS, steps=4))
    assert summary["learned_now"] and "changed" in summary["why"]
    (directory / ssl.CURRENT_FILE).write_text("{not json")
    _, summary = ensure(directory, list(range(20)), loader)
    assert summary["learned_now"] and summary["why"] == "no self-supervised weights yet"
    assert len(loader.calls) == 3


def test_a_sample_bounds_what_is_read(tmp_path):
    loader = Loader()
    _, summary = ensure(tmp_path / "ssl", list(range(50)), loader, max_images=12)
    assert len(loader.calls[0]) == 12 and summary["images"] == 12
    assert summary["learned_from_tasks"] == 50


def test_without_two_loadable_images_the_round_trains_from_scratch(tmp_path):
    path, summary = ssl.ensure_weights(
        tmp_path / "ssl", CONFIG, FEW_STEPS, [1, 2, 3], lambda items: _arrays(1), growth=0.5, max_images=100
    )
    assert path is None and "needs at least 2" in summary["why"]
    assert not (tmp_path / "ssl" / ssl.CURRENT_FILE).exists()


def test_a_diverging_pretraining_trains_from_scratch_and_stores_nothing(tmp_path, monkeypatch):
    def diverge(*args, **kwargs):
        raise TrainingError("self-supervised loss became nan at step 3; try a lower lr")

    monkeypatch.setattr(ssl, "pretrain", diverge)
    path, summary = ensure(tmp_path / "ssl", list(range(20)), Loader())
    assert path is None and "pre-training failed" in summary["why"] and "nan" in summary["why"]
    assert not (tmp_path / "ssl" / ssl.CURRENT_FILE).exists()


# ----------------------------------------------------------------------------- settings


def test_settings_are_read_and_checked():
    settings = Settings.from_env(
        {
            "SELF_SUPERVISED_STEPS": "50",
            "SELF_SUPERVISED_REFRESH_GROWTH": "0.25",
            "SELF_SUPERVISED_MAX_IMAGES": "500",
        }
    )
    assert (
        settings.self_supervised_steps,
        settings.self_supervised_refresh_growth,
        settings.self_supervised_max_images,
    ) == (50, 0.25, 500)
    for env in (
        {"SELF_SUPERVISED_STEPS": "-1"},
        {"SELF_SUPERVISED_REFRESH_GROWTH": "0"},
        {"SELF_SUPERVISED_MAX_IMAGES": "1"},
    ):
        with pytest.raises(SettingsError, match=next(iter(env))):
            Settings.from_env(env)


def test_keep_colour_changes_only_the_views_colour_and_learns_the_weights_again():
    settings = Settings.from_env({"KEEP_COLOUR": "true"})
    # KEEP_COLOUR=true gives the round a config that keeps colour; its views keep colour too
    assert model_config_from(settings).keep_colour
    invariant = self_supervised_config(Settings())
    kept = self_supervised_config(settings, model_config_from(settings).keep_colour)
    assert invariant == SelfSupervisedConfig(device=invariant.device)  # the default: the library's own
    assert invariant.hue > 0 and invariant.augment.grayscale_p > 0 and invariant.augment.invert_p > 0
    assert (kept.hue, kept.augment.grayscale_p, kept.augment.invert_p) == (0.0, 0.0, 0.0)
    # nothing else moves: the crop, the jitter, the steps
    assert dataclasses.replace(kept, hue=invariant.hue, augment=invariant.augment) == invariant
    assert kept.augment.saturation == invariant.augment.saturation > 0
    # stored weights carry the key: weights learned with the other setting are not reused
    assert ssl.weights_key(CONFIG, kept) != ssl.weights_key(CONFIG, invariant)
    # the training augmentation follows the same setting
    assert model_config_from(settings).keep_colour and not model_config_from(Settings()).keep_colour


def test_the_setting_defaults_to_the_library_default():
    assert Settings().self_supervised_steps == SelfSupervisedConfig().steps


def test_skip_reasons():
    assert self_supervised_skip_reason(Settings(), ModelConfig()) is None
    assert "SELF_SUPERVISED_STEPS is 0" in self_supervised_skip_reason(
        Settings(self_supervised_steps=0), ModelConfig()
    )
    # a local file at a small input is adapted (measured); torchvision's weights and large
    # inputs are not
    assert self_supervised_skip_reason(Settings(), ModelConfig(pretrained_weights="/w.pt")) is None
    assert "not adapted at 224 px" in self_supervised_skip_reason(
        Settings(), ModelConfig(pretrained_weights="/w.pt", image_size=224)
    )
    assert "torchvision's pretrained weights" in self_supervised_skip_reason(
        Settings(), ModelConfig(backbone="resnet18", weights="DEFAULT", image_size=224)
    )


def test_the_key_follows_the_bytes_of_the_pretrained_file_it_starts_from(tmp_path):
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"weights one")
    second.write_bytes(b"weights two")
    key = ssl.weights_key(dataclasses.replace(CONFIG, pretrained_weights=str(first)), FEW_STEPS)
    assert key != ssl.weights_key(CONFIG, FEW_STEPS)
    assert key != ssl.weights_key(dataclasses.replace(CONFIG, pretrained_weights=str(second)), FEW_STEPS)
    second.write_bytes(b"weights one")  # same bytes, another path: same
    assert key == ssl.weights_key(dataclasses.replace(CONFIG, pretrained_weights=str(second)), FEW_STEPS)
    with pytest.raises(ValueError, match="cannot read pretrained weights"):
        ssl.weights_key(dataclasses.replace(CONFIG, pretrained_weights=str(tmp_path / "no.pt")), FEW_STEPS)


# ----------------------------------------------------------------------------- in a round


@pytest.fixture
def settings(tmp_path):
    # FROZEN_MAX_LABELS 0: the full mode from the first label (test_frozen_round covers the head
    # trained on the self-supervised backbone at a few labels)
    return Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=10,
        self_supervised_steps=4,
        frozen_max_labels=0,
    )


def test_a_full_round_trains_from_the_projects_weights_and_the_next_reuses_them(settings):
    summary, store, events = run(settings, FakeClient(20, LABELS))
    assert summary["state"] == "done"
    learned = summary["self_supervised"]
    assert learned["learned_now"] and learned["images"] == 20 and learned["steps"] == 4
    assert "self_supervised_s" in summary["timings_s"]
    weights = store.project_dir(PROJECT) / ssl.DIR_NAME / learned["weights"]
    assert weights.is_file()
    # the published model was trained from them
    loaded = load_checkpoint(store.checkpoint_path(PROJECT, summary["model_version"]))
    assert loaded.model_config.pretrained_weights == str(weights)
    phases = [e for e in events if e.get("phase") == "self_supervised_pretraining"]
    assert any("self_supervised_progress" in e and "step" in e["self_supervised_progress"] for e in phases)
    assert any(e.get("self_supervised_progress", {}).get("images_loaded") == 20 for e in phases)

    again, _, events = run(settings, FakeClient(20, LABELS))
    reused = {k: v for k, v in again["self_supervised"].items() if k != "colour"}
    assert reused == {
        "weights": learned["weights"],
        "learned_now": False,
        "learned_from_tasks": 20,
        "images": 20,
    }
    assert not any("step" in e.get("self_supervised_progress", {}) for e in events)


def test_off_the_round_trains_from_a_random_initialisation(settings):
    settings = dataclasses.replace(settings, self_supervised_steps=0)
    summary, store, _ = run(settings, FakeClient(20, LABELS))
    assert summary["self_supervised"] == {"weights": None, "why": "SELF_SUPERVISED_STEPS is 0"}
    assert not (store.project_dir(PROJECT) / ssl.DIR_NAME).exists()
    loaded = load_checkpoint(store.checkpoint_path(PROJECT, summary["model_version"]))
    assert loaded.model_config.pretrained_weights is None


def test_damaged_weights_are_learned_again_not_reused(tmp_path):
    """A weights file whose bytes changed after it was stored (disk damage, a partial copy) would
    fail every later round: its digest is checked before reuse and the weights learned again."""
    directory, loader = tmp_path / "ssl", Loader()
    first, _ = ensure(directory, list(range(20)), loader)
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    first.write_bytes(bytes(data))
    assert ssl.reusable_weights(directory, CONFIG, FEW_STEPS, 20, 0.5) is None
    second, summary = ensure(directory, list(range(20)), loader)
    assert summary["learned_now"] and "does not match its recorded digest" in summary["why"]
    assert len(loader.calls) == 2
    torch.load(second, weights_only=True)  # the new file is whole
    again, summary = ensure(directory, list(range(20)), loader)
    assert again == second and not summary["learned_now"]
    stored = json.loads((directory / ssl.CURRENT_FILE).read_text())
    assert stored["sha256"] == ssl.fingerprint(second)


def test_a_record_without_a_digest_is_learned_again(tmp_path):
    directory, loader = tmp_path / "ssl", Loader()
    ensure(directory, list(range(20)), loader)
    record = json.loads((directory / ssl.CURRENT_FILE).read_text())
    del record["sha256"]  # written before digests were kept
    (directory / ssl.CURRENT_FILE).write_text(json.dumps(record))
    _, summary = ensure(directory, list(range(20)), loader)
    assert summary["learned_now"] and "no digest" in summary["why"]
