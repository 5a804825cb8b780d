"""Image classifier + Loss Prediction Module (Learning Loss for Active Learning) and the
acquisition strategies that rank an unlabeled pool. Knows torch, torchvision, numpy and PIL only."""

from model.checkpoint import CheckpointError, LoadedModel, load_checkpoint, save_checkpoint
from model.config import ModelConfig, TrainConfig
from model.data import ImageError, images_to_tensor, load_image_bytes, to_rgb_image
from model.feature_cache import FeatureCache, backbone_fingerprint, backbone_key
from model.frozen import FrozenConfig, PooledFeatures, extract_pooled, score_pooled, train_frozen
from model.networks import LossLearningNet, NetOutput, build_network
from model.scoring import ScoreOutputs, score
from model.strategies import (
    STRATEGIES,
    Ranking,
    informativeness_values,
    needs_mc_samples,
    rank,
    ranking_to_scores,
    value_to_score,
)
from model.trainer import TrainingError, TrainResult, train
from model.selfsup import SelfSupConfig, pretrain as pretrain_selfsup, save_pretrained  # noqa: F401

__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "FeatureCache",
    "FrozenConfig",
    "ImageError",
    "LoadedModel",
    "LossLearningNet",
    "ModelConfig",
    "NetOutput",
    "PooledFeatures",
    "Ranking",
    "ScoreOutputs",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "backbone_fingerprint",
    "backbone_key",
    "build_network",
    "extract_pooled",
    "images_to_tensor",
    "informativeness_values",
    "load_checkpoint",
    "load_image_bytes",
    "needs_mc_samples",
    "rank",
    "ranking_to_scores",
    "save_checkpoint",
    "score",
    "score_pooled",
    "to_rgb_image",
    "train",
    "train_frozen",
    "value_to_score",
]
