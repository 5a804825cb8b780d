"""Image classifier + Loss Prediction Module (Learning Loss for Active Learning) and the
acquisition strategies that rank an unlabeled pool. Knows torch, torchvision, numpy and PIL only.

The names below are imported on first use (PEP 562), not when the package is imported: importing
``model.strategies`` (numpy only) must not load torch, so that the settings check can name the
strategies in processes that never load a model.
"""

from __future__ import annotations

import importlib

# public name -> (submodule, attribute)
_EXPORTS = {
    "CheckpointError": ("checkpoint", "CheckpointError"),
    "LoadedModel": ("checkpoint", "LoadedModel"),
    "load_checkpoint": ("checkpoint", "load_checkpoint"),
    "save_checkpoint": ("checkpoint", "save_checkpoint"),
    "ModelConfig": ("config", "ModelConfig"),
    "TrainConfig": ("config", "TrainConfig"),
    "ImageError": ("data", "ImageError"),
    "images_to_tensor": ("data", "images_to_tensor"),
    "load_image_bytes": ("data", "load_image_bytes"),
    "to_rgb_image": ("data", "to_rgb_image"),
    "FeatureCache": ("feature_cache", "FeatureCache"),
    "backbone_fingerprint": ("feature_keys", "backbone_fingerprint"),
    "backbone_key": ("feature_keys", "backbone_key"),
    "FrozenConfig": ("frozen", "FrozenConfig"),
    "PooledFeatures": ("pooled", "PooledFeatures"),
    "extract_pooled": ("pooled", "extract_pooled"),
    "score_pooled": ("pooled", "score_pooled"),
    "train_frozen": ("frozen", "train_frozen"),
    "LossLearningNet": ("networks", "LossLearningNet"),
    "NetOutput": ("networks", "NetOutput"),
    "build_network": ("networks", "build_network"),
    "ScoreOutputs": ("outputs", "ScoreOutputs"),
    "score": ("scoring", "score"),
    "STRATEGIES": ("strategies", "STRATEGIES"),
    "Ranking": ("strategies", "Ranking"),
    "StrategySpec": ("strategies", "StrategySpec"),
    "informativeness_values": ("strategies", "informativeness_values"),
    "needs_mc_samples": ("strategies", "needs_mc_samples"),
    "rank": ("strategies", "rank"),
    "ranking_to_scores": ("strategies", "ranking_to_scores"),
    "spec": ("strategies", "spec"),
    "place_by_nearest": ("strategies", "place_by_nearest"),
    "TrainingError": ("objective", "TrainingError"),
    "TrainResult": ("trainer", "TrainResult"),
    "train": ("trainer", "train"),
    "SelfSupervisedConfig": ("self_supervised", "SelfSupervisedConfig"),
    "pretrain_self_supervised": ("self_supervised", "pretrain"),
    "save_pretrained": ("self_supervised", "save_pretrained"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'model' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"model.{module}"), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
