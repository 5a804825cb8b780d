"""scripts/export_backbone.py: a project's published model becomes a pretrained file another
project loads with PRETRAINED_WEIGHTS (a real checkpoint, a real model store)."""

from __future__ import annotations

import torch

from backend.model_store import ModelStore, new_cold_start_version, new_version
from model import ModelConfig, TrainConfig, build_network
from model.checkpoint import save_checkpoint
from model.trainer import TrainResult
from scripts import export_backbone


def test_a_published_model_exports_its_backbone_for_another_project(tmp_path, capsys):
    store = ModelStore(tmp_path / "models")
    version = new_version()
    config = ModelConfig(image_size=16)
    torch.manual_seed(3)
    trained = build_network(config, num_classes=5)
    path = store.checkpoint_path(7, version)
    path.parent.mkdir(parents=True)
    save_checkpoint(path, TrainResult(trained, list("abcde"), config, TrainConfig(), {}))
    store.publish(7, version)

    out = tmp_path / "exported" / "backbone.pt"
    assert (
        export_backbone.main(["--project", "7", "--model-dir", str(store.model_dir), "--out", str(out)]) == 0
    )
    assert f"BACKBONE=small_cnn PRETRAINED_WEIGHTS={out.resolve()}" in capsys.readouterr().out
    reused = build_network(ModelConfig(image_size=16, pretrained_weights=str(out)), num_classes=2)
    for key, value in trained.features.state_dict().items():
        torch.testing.assert_close(reused.features.state_dict()[key], value)


def test_no_trained_model_is_a_clear_error(tmp_path, capsys):
    store = ModelStore(tmp_path / "models")
    out = tmp_path / "backbone.pt"
    assert (
        export_backbone.main(["--project", "7", "--model-dir", str(store.model_dir), "--out", str(out)]) == 1
    )
    assert "no published model" in capsys.readouterr().err
    version = new_cold_start_version()
    predictions = store.predictions_path(7, version)
    predictions.parent.mkdir(parents=True)
    predictions.write_text('{"tasks": {}}')
    store.publish(7, version)
    assert (
        export_backbone.main(["--project", "7", "--model-dir", str(store.model_dir), "--out", str(out)]) == 1
    )
    assert "cold-start ranking" in capsys.readouterr().err and not out.exists()


def test_a_frozen_version_exports_with_a_note_that_its_backbone_saw_no_labels(tmp_path, capsys):
    config = ModelConfig(image_size=16)
    path = tmp_path / "frozen.pt"
    save_checkpoint(
        path,
        TrainResult(
            build_network(config, num_classes=2), ["a", "b"], config, TrainConfig(), {"mode": "frozen"}
        ),
    )
    out = tmp_path / "backbone.pt"
    assert export_backbone.main(["--checkpoint", str(path), "--out", str(out)]) == 0
    assert "frozen mode" in capsys.readouterr().err and out.exists()
