"""The feature cache's keys (``model.feature_cache``): the directory of one backbone's features
(``backbone_key``, with ``backbone_fingerprint`` for the weights' identity) and one image's row
(``item_key``)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

import torch

from model.config import ModelConfig

# Bump when what is stored per row changes meaning (pooling, dtype): old directories then miss.
FEATURES_VERSION = 1


def backbone_key(
    model_config: ModelConfig, weights_fingerprint: str, taps: Sequence[str] | None = None
) -> str:
    """Short directory name for the features of this backbone: ``<backbone>-<16 hex>``.

    Hashes the backbone name and architecture settings, ``weights_fingerprint`` (the identity of
    the weights: ``backbone_fingerprint(model)``, a checkpoint's SHA-256, a torchvision weights
    name + version...), image_size, channels, input normalisation (input_norm, mean, std) and the
    taps (``taps`` = the built model's ``model.taps``, else the config's). Head, dropout and LPM
    settings do not change the features and are not part of it.
    """
    identity = {
        "features_version": FEATURES_VERSION,
        "backbone": model_config.backbone,
        "small_cnn_width": model_config.small_cnn_width if model_config.backbone == "small_cnn" else None,
        "weights": getattr(model_config, "weights", None),
        "weights_fingerprint": str(weights_fingerprint),
        "image_size": model_config.image_size,
        "channels": model_config.channels,
        "input_norm": getattr(model_config, "input_norm", "dataset"),
        "mean": list(model_config.mean),
        "std": list(model_config.std),
        "taps": list(taps) if taps is not None else (list(model_config.taps) if model_config.taps else None),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", model_config.backbone).strip("._")[:40] or "backbone"
    return f"{name}-{digest}"


def backbone_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex) of the backbone's parameters and buffers: names, dtypes, shapes, bytes.

    ``model`` is a LossLearningNet (its ``features``) or the feature extractor itself. Any change
    to the backbone's weights (fine-tuning, another pretrained file) changes it.
    """
    features = getattr(model, "features", model)
    digest = hashlib.sha256()
    for name, tensor in sorted(features.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def item_key(task_id: int | str, image_url: str) -> str:
    """``"<task_id>:<16 hex of sha256(image_url)>"``: a changed image URL is a new item."""
    return f"{task_id}:{hashlib.sha256(image_url.encode()).hexdigest()[:16]}"
