"""One batched inference pass over a pool: class probabilities, predicted loss, embeddings and,
optionally, MC-dropout samples for BALD."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from model.config import ModelConfig
from model.data import images_to_uint8, normalize
from model.networks import LossLearningNet
from model.outputs import ScoreOutputs
from model.runtime import amp_dtype, autocast, memory_format, resolve_device


@dataclass
class _BatchOutputs:
    logits: torch.Tensor
    predicted_loss: torch.Tensor
    embedding: torch.Tensor


def forward_uint8(
    model: LossLearningNet,
    batch_uint8: torch.Tensor,
    model_config: ModelConfig,
    device: torch.device,
    use_amp: bool = True,
) -> _BatchOutputs:
    """Eval-mode forward of one uint8 batch (N, C, H, W); float32 outputs on ``device``."""
    x = normalize(batch_uint8.to(device), model_config)
    x = x.contiguous(memory_format=memory_format(device))
    with autocast(device, amp_dtype(device, use_amp)):
        out = model(x)
    return _BatchOutputs(out.logits.float(), out.predicted_loss.float(), out.embedding.float())


def mc_dropout_probs(
    model: LossLearningNet, embedding: torch.Tensor, samples: int, generator: torch.Generator
) -> torch.Tensor:
    """(T, N, C) softmax samples with dropout on the classifier-head input.

    Last-layer MC dropout: the backbone runs once and only the head is resampled, which makes T
    samples nearly free. The masks come from ``generator`` (CPU) so results are reproducible.
    """
    p = model.dropout.p
    keep = 1.0 - p
    out = []
    for _ in range(samples):
        mask = (torch.rand(embedding.shape, generator=generator) < keep).to(embedding.device)
        dropped = embedding * mask / keep
        out.append(torch.softmax(model.head(dropped).float(), dim=1))
    return torch.stack(out)


def score(
    model: LossLearningNet,
    images: list[Image.Image | np.ndarray],
    model_config: ModelConfig,
    batch_size: int = 64,
    mc_samples: int = 0,
    device: str = "auto",
    seed: int = 0,
) -> ScoreOutputs:
    """Score ``images`` in batches of ``batch_size`` under torch.inference_mode.

    An image may be a PIL image or its ``model.data.model_ready_array`` (a cached one): both give
    the same outputs, bit for bit.

    The model is moved to ``device`` ("auto" = CUDA when available) and left there in eval mode.
    ``mc_samples`` > 0 adds MC-dropout samples (needs model_config.dropout > 0); ``seed`` fixes
    their masks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
    if mc_samples > 0 and model.dropout.p <= 0:
        raise ValueError("mc_samples > 0 needs a model trained with model_config.dropout > 0")
    target = resolve_device(device)
    model.to(target).to(memory_format=memory_format(target))
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    probs, losses, embeddings, mc = [], [], [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images_to_uint8(images[start : start + batch_size], model_config)
            out = forward_uint8(model, batch, model_config, target)
            probs.append(torch.softmax(out.logits, dim=1).cpu())
            losses.append(out.predicted_loss.cpu())
            embeddings.append(out.embedding.cpu())
            if mc_samples:
                mc.append(mc_dropout_probs(model, out.embedding, mc_samples, generator).cpu())
    classes, dim = model.num_classes, model.embedding_dim
    return ScoreOutputs(
        probs=_cat(probs, (0, classes), dim=0),
        predicted_loss=_cat(losses, (0,), dim=0),
        embedding=_cat(embeddings, (0, dim), dim=0),
        mc_probs=_cat(mc, (mc_samples, 0, classes), dim=1) if mc_samples else None,
    )


def _cat(parts: list[torch.Tensor], empty_shape: tuple[int, ...], dim: int) -> np.ndarray:
    if not parts:
        return np.zeros(empty_shape, dtype=np.float32)
    return torch.cat(parts, dim=dim).numpy().astype(np.float32, copy=False)
