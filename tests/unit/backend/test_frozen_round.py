"""Training mode "frozen" in a real round: a pretrained backbone's pooled features are computed once
per image and cached per backbone version; only the head and the loss prediction module train.
Label Studio is the in-process fake of test_cold_start_round (the real one is covered in tests/e2e)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from backend.model_store import ModelStore
from backend.settings import Settings, SettingsError
from model import load_checkpoint
from model.config import ModelConfig
from model.modes import choose_train_mode
from model.networks import build_classifier
from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient, run

LABELS = {1: "0", 2: "1", 3: "two", 5: "0", 6: "1", 7: "two", 9: "0", 10: "1", 11: "two"}


def pretrained_file(path, seed):
    torch.manual_seed(seed)
    net = build_classifier(ModelConfig(backbone="small_cnn", image_size=16), num_classes=3)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def settings(tmp_path):
    # an input above FULL_TRAINING_MAX_IMAGE_SIZE, as the 224 px of torchvision's weights are
    return Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        pretrained_weights=pretrained_file(tmp_path / "backbone.pt", seed=1),
        device="cpu",
        full_training_max_image_size=8,
    )


def test_auto_picks_frozen_with_pretrained_weights_and_caches_features(settings, tmp_path):
    client = FakeClient(24, LABELS)
    summary, store, events = run(settings, client)
    assert summary["state"] == "done" and summary["metrics"]["mode"] == "frozen"
    assert summary["metrics"]["features_extracted"] == 24
    assert summary["predictions_pushed"] == 24
    assert {p["task"] for p in client.imported} == set(range(1, 25))
    assert any(e.get("phase") == "extracting_features" for e in events)
    # the backbone in the checkpoint is the pretrained file's, untouched by training
    loaded = load_checkpoint(store.checkpoint_path(PROJECT, summary["model_version"]))
    pretrained = torch.load(settings.pretrained_weights, weights_only=True)
    state = loaded.model.features.state_dict()
    assert torch.equal(state["block1.0.weight"], pretrained["block1.0.weight"])

    # a second round on the same images runs the backbone on none of them
    client.imported.clear()
    again, _, _ = run(settings, client)
    assert again["metrics"]["features_extracted"] == 0 and again["predictions_pushed"] == 24

    # one new task: only its image goes through the backbone
    client.tasks.append({"id": 25, "data": {"image": f"/data/upload/{PROJECT}/25.png"}, "annotations": []})
    third, _, _ = run(settings, client)
    assert third["metrics"]["features_extracted"] == 1 and third["predictions_pushed"] == 25


def test_another_backbone_version_recomputes_and_drops_the_old_features(settings, tmp_path):
    client = FakeClient(12, LABELS)
    run(settings, client)
    features_dir = ModelStore(settings.model_dir).project_dir(PROJECT) / "features"
    first_dirs = {p.name for p in features_dir.iterdir() if p.is_dir()}
    other = Settings(
        **{**settings.__dict__, "pretrained_weights": pretrained_file(tmp_path / "other.pt", seed=2)}
    )
    summary, _, _ = run(other, client)
    assert summary["metrics"]["features_extracted"] == 12
    second_dirs = {p.name for p in features_dir.iterdir() if p.is_dir()}
    assert len(second_dirs) == 1 and not (second_dirs & first_dirs)


def test_full_mode_is_used_without_a_representation_and_frozen_is_refused(tmp_path):
    def auto(**kw):
        args = dict(
            has_representation=True,
            n_labeled=50,
            finetune_min_labels=1000,
            cuda_available=False,
            input_size=224,
            full_max_input_size=64,
            frozen_max_labels=20,
        )
        return choose_train_mode("auto", **{**args, **kw})

    assert auto(has_representation=False, input_size=224) == "full"
    assert auto() == "frozen"  # a large input on a CPU
    assert auto(cuda_available=True) == "frozen"  # a GPU, few labels
    assert auto(cuda_available=True, n_labeled=5000) == "full"
    assert auto(n_labeled=5000) == "frozen"
    assert auto(input_size=64) == auto(input_size=32, n_labeled=21) == "full"  # small: as scratch
    assert auto(input_size=32, n_labeled=20) == "frozen"  # few labels: the head first
    assert auto(input_size=32, n_labeled=5, frozen_max_labels=0) == "full"
    assert auto(input_size=32, full_max_input_size=0) == "frozen"
    # the project's own self-supervised weights: the head first, then the network it would train
    # from scratch anyway, at any input size and on any device
    own = dict(learned_on_project=True, input_size=224, full_max_input_size=0)
    assert auto(**own, n_labeled=20) == "frozen" and auto(**own, n_labeled=21) == "full"
    assert auto(**own, n_labeled=5, frozen_max_labels=0) == "full"
    assert (
        choose_train_mode(
            "full",
            has_representation=True,
            n_labeled=5,
            finetune_min_labels=1000,
            cuda_available=False,
            input_size=224,
            full_max_input_size=0,
            frozen_max_labels=0,
        )
        == "full"
    )
    with pytest.raises(ValueError, match="needs pretrained"):
        choose_train_mode(
            "frozen",
            has_representation=False,
            n_labeled=5,
            finetune_min_labels=1,
            cuda_available=False,
            input_size=16,
            full_max_input_size=64,
            frozen_max_labels=0,
        )
    with pytest.raises(SettingsError, match="TRAIN_MODE=frozen needs"):
        Settings.from_env({"TRAIN_MODE": "frozen"})
    with pytest.raises(SettingsError, match="AUGMENT_POLICY"):
        Settings.from_env({"AUGMENT_POLICY": "heavy"})


def test_full_mode_round_trains_the_whole_network(tmp_path):
    settings = Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=20,
        self_supervised_steps=0,
    )
    client = FakeClient(12, LABELS)
    summary, store, _ = run(settings, client)
    assert summary["state"] == "done" and summary["metrics"]["mode"] == "full"
    assert summary["metrics"]["steps"] >= 20 and summary["predictions_pushed"] == 12


def test_auto_fine_tunes_pretrained_weights_at_a_small_input_from_the_file_after_a_few_labels(settings):
    small = dataclasses.replace(
        settings,
        full_training_max_image_size=64,
        train_steps=20,
        frozen_max_labels=len(LABELS) - 1,
        self_supervised_steps=0,
    )
    client = FakeClient(12, LABELS)
    few, _, _ = run(dataclasses.replace(small, frozen_max_labels=len(LABELS)), client)
    assert few["state"] == "done" and few["metrics"]["mode"] == "frozen"
    summary, store, _ = run(small, client)
    assert summary["state"] == "done" and summary["metrics"]["mode"] == "full"
    loaded = load_checkpoint(store.checkpoint_path(PROJECT, summary["model_version"]))
    assert loaded.model_config.pretrained_weights == str(settings.pretrained_weights)
    pretrained = torch.load(settings.pretrained_weights, weights_only=True)
    trained = loaded.model.features.state_dict()["block1.0.weight"]
    assert trained.shape == pretrained["block1.0.weight"].shape
    assert not torch.equal(trained, pretrained["block1.0.weight"])  # the backbone was trained


def test_a_full_round_adapts_the_pretrained_file_to_the_projects_images_first(settings):
    small = dataclasses.replace(
        settings,
        full_training_max_image_size=64,
        train_steps=10,
        frozen_max_labels=0,
        self_supervised_steps=4,
    )
    summary, store, _ = run(small, FakeClient(12, LABELS))
    assert summary["state"] == "done" and summary["metrics"]["mode"] == "full"
    adapted = summary["self_supervised"]
    assert adapted["learned_now"] and adapted["steps"] == 4
    loaded = load_checkpoint(store.checkpoint_path(PROJECT, summary["model_version"]))
    assert loaded.model_config.pretrained_weights.endswith(adapted["weights"])
    # another pretrained file: the adaptation is learned again, from that file
    other = dataclasses.replace(
        small, pretrained_weights=pretrained_file(small.model_dir.parent / "other.pt", seed=2)
    )
    again, _, _ = run(other, FakeClient(12, LABELS))
    assert again["self_supervised"]["learned_now"]
    assert again["self_supervised"]["why"] == "the backbone, its input or the pre-training settings changed"


def test_cold_start_with_a_pretrained_backbone_ranks_on_its_cached_embeddings(settings):
    client = FakeClient(16, {})
    summary, _, _ = run(settings, client)
    assert summary["state"] == "cold_start" and summary["embedding"] == "backbone"
    assert summary["predictions_pushed"] == 16 and all(p["result"] == [] for p in client.imported)
    # the labels arrive: the first trained round finds every image's features already cached
    for task in client.tasks:
        if task["id"] in LABELS:
            task["annotations"] = [
                {
                    "id": task["id"],
                    "result": [
                        {
                            "from_name": "digit",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [LABELS[task["id"]]]},
                        }
                    ],
                }
            ]
    trained, _, _ = run(settings, client)
    assert trained["state"] == "done" and trained["metrics"]["features_extracted"] == 0


def test_without_weights_a_few_labels_train_a_head_on_the_projects_self_supervised_backbone(tmp_path):
    settings = Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=10,
        self_supervised_steps=4,
        frozen_max_labels=len(LABELS),
    )
    client = FakeClient(12, LABELS)
    few, store, _ = run(settings, client)
    assert few["state"] == "done" and few["metrics"]["mode"] == "frozen"
    learned = few["self_supervised"]
    assert learned["learned_now"] and learned["steps"] == 4
    assert few["metrics"]["features_extracted"] == 12 and few["predictions_pushed"] == 12
    # the head was trained on the self-supervised backbone, which it left as it was learned
    loaded = load_checkpoint(store.checkpoint_path(PROJECT, few["model_version"]))
    assert loaded.model_config.pretrained_weights.endswith(learned["weights"])
    own = torch.load(loaded.model_config.pretrained_weights, weights_only=True)
    assert torch.equal(loaded.model.features.state_dict()["block1.0.weight"], own["block1.0.weight"])

    # one more label than FROZEN_MAX_LABELS: the whole network fine-tunes from the same weights
    more, _, _ = run(dataclasses.replace(settings, frozen_max_labels=len(LABELS) - 1), client)
    assert more["state"] == "done" and more["metrics"]["mode"] == "full"
    assert more["self_supervised"]["weights"] == learned["weights"]
    assert not more["self_supervised"]["learned_now"]
    # with self-supervision off, nothing to keep frozen: the few labels train the whole network
    off, _, _ = run(dataclasses.replace(settings, self_supervised_steps=0), client)
    assert off["metrics"]["mode"] == "full"
