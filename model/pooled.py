"""Pooled features of a fixed backbone: what the head and the Loss Prediction Module read.

``extract_pooled`` runs the backbone once per image and keeps, per image, the global average pool
of each LPM tap and the classifier-head input (``PooledFeatures``; the rows can be kept in a
``model.feature_cache.FeatureCache``). ``score_pooled`` gives ``model.score``'s outputs from those
rows without running the backbone: the pool of an already pooled vector is the identity, so the
LPM's own Linear layers are applied to the cached rows directly (``lpm_from_pooled``). Training on
them is model/frozen.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from model.config import ModelConfig
from model.data import images_to_uint8, normalize
from model.networks import LossLearningNet, LossPredictionModule
from model.runtime import amp_dtype, autocast, memory_format, resolve_device
from model.scoring import ScoreOutputs, mc_dropout_probs

# Rows per forward pass when scoring pooled features (tiny matrices: memory is rows x widths).
SCORE_BATCH_ROWS = 8192


@dataclass
class PooledFeatures:
    """Per-image pooled features of a backbone: what the head and the LPM read.

    ``taps[i]`` is (N, C_i) float32, the global average pool of tap i (``LossPredictionModule.pool``);
    ``embedding`` is (N, D) float32, the classifier-head input. One row = one image.
    """

    taps: list[np.ndarray]
    embedding: np.ndarray

    def __post_init__(self) -> None:
        self.taps = [np.asarray(tap, dtype=np.float32) for tap in self.taps]
        self.embedding = np.asarray(self.embedding, dtype=np.float32)
        if not self.taps:
            raise ValueError("PooledFeatures needs at least one tap")
        n = self.embedding.shape[0] if self.embedding.ndim == 2 else -1
        if n < 0 or any(tap.ndim != 2 or tap.shape[0] != n for tap in self.taps):
            shapes = [tuple(t.shape) for t in self.taps]
            raise ValueError(
                f"taps {shapes} and embedding {tuple(self.embedding.shape)} must be 2-D with equal rows"
            )

    def __len__(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def tap_widths(self) -> list[int]:
        return [int(tap.shape[1]) for tap in self.taps]

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding.shape[1])

    @property
    def row_width(self) -> int:
        """Floats per row (sum of the tap widths + D); 4 bytes each."""
        return sum(self.tap_widths) + self.embedding_dim

    def subset(self, index) -> PooledFeatures:
        """Rows ``index`` (an index array, a boolean mask or a slice), as a new object."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype != bool:
                index = index.astype(np.int64, copy=False)
        return PooledFeatures([tap[index] for tap in self.taps], self.embedding[index])

    __getitem__ = subset

    @staticmethod
    def concatenate(parts: Sequence[PooledFeatures]) -> PooledFeatures:
        """Rows of ``parts`` one after the other; all must have the same widths."""
        if not parts:
            raise ValueError("concatenate needs at least one PooledFeatures")
        widths, dim = parts[0].tap_widths, parts[0].embedding_dim
        for part in parts[1:]:
            if part.tap_widths != widths or part.embedding_dim != dim:
                raise ValueError(
                    f"cannot concatenate features of widths {part.tap_widths}+{part.embedding_dim} "
                    f"to {widths}+{dim}"
                )
        taps = [np.concatenate([part.taps[i] for part in parts]) for i in range(len(widths))]
        return PooledFeatures(taps, np.concatenate([part.embedding for part in parts]))

    @staticmethod
    def empty(tap_widths: Sequence[int], embedding_dim: int) -> PooledFeatures:
        return PooledFeatures(
            [np.zeros((0, int(w)), np.float32) for w in tap_widths],
            np.zeros((0, int(embedding_dim)), np.float32),
        )

    def to_matrix(self) -> np.ndarray:
        """One (N, row_width) float32 matrix: the taps then the embedding, column-wise."""
        return np.concatenate([*self.taps, self.embedding], axis=1).astype(np.float32, copy=False)

    @staticmethod
    def from_matrix(matrix: np.ndarray, tap_widths: Sequence[int], embedding_dim: int) -> PooledFeatures:
        """Inverse of ``to_matrix``."""
        matrix = np.asarray(matrix, dtype=np.float32)
        expected = sum(tap_widths) + embedding_dim
        if matrix.ndim != 2 or matrix.shape[1] != expected:
            raise ValueError(f"matrix of shape {matrix.shape} does not hold rows of width {expected}")
        bounds = np.cumsum([0, *tap_widths])
        taps = [matrix[:, bounds[i] : bounds[i + 1]] for i in range(len(tap_widths))]
        return PooledFeatures(taps, matrix[:, bounds[-1] :])


def _lpm_tap_widths(model: LossLearningNet) -> list[int]:
    """The pooled tap width each LPM branch reads: the in_features of its one Linear layer."""
    return [layer.in_features for layer in model.lpm.branches.modules() if isinstance(layer, torch.nn.Linear)]


def _check_fits(model: LossLearningNet, features: PooledFeatures) -> None:
    widths = _lpm_tap_widths(model)
    if features.tap_widths != widths or features.embedding_dim != model.embedding_dim:
        raise ValueError(
            f"pooled features of widths {features.tap_widths} + embedding {features.embedding_dim} "
            f"do not fit this model (taps {widths}, embedding {model.embedding_dim}): "
            f"extracted with another backbone or taps?"
        )


def extract_pooled(
    model: LossLearningNet,
    images: torch.Tensor | Sequence[Image.Image],
    model_config: ModelConfig,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    use_amp: bool = True,
) -> PooledFeatures:
    """Run the backbone once over ``images`` (a uint8 (N, C, H, W) tensor already at image_size,
    or PIL images) and return each image's pooled taps and embedding.

    Preprocessing is the scorer's (``images_to_uint8`` + ``normalize``); eval mode, inference_mode,
    autocast on CUDA when ``use_amp``. The model is moved to ``device`` and left there in eval
    mode (as ``model.score`` does). PIL images are converted batch by batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(target).to(memory_format=memory_format(target))
    model.eval()
    layouts = model.lpm.tap_layouts
    taps: list[list[np.ndarray]] = [[] for _ in model.taps]
    embeddings: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = chunk if isinstance(chunk, torch.Tensor) else images_to_uint8(list(chunk), model_config)
            x = normalize(batch.to(target), model_config).contiguous(memory_format=memory_format(target))
            with autocast(target, amp_dtype(target, use_amp)):
                outputs = model.features(x)
            for i, (name, layout) in enumerate(zip(model.taps, layouts, strict=False)):
                pooled = LossPredictionModule.pool(outputs[name], layout).flatten(1).float()
                taps[i].append(pooled.cpu().numpy())
            embeddings.append(outputs["embedding"].flatten(1).float().cpu().numpy())
    if not embeddings:
        return PooledFeatures.empty(_lpm_tap_widths(model), model.embedding_dim)
    return PooledFeatures([np.concatenate(parts) for parts in taps], np.concatenate(embeddings))


def lpm_from_pooled(lpm: LossPredictionModule, taps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The LPM's output for already pooled taps: its own branches (FC -> ReLU) and output FC.

    Equal to ``lpm(feature_maps)`` for the maps the rows were pooled from (pooling is done)."""
    hidden = [branch(tap.float()) for branch, tap in zip(lpm.branches, taps, strict=False)]
    return lpm.out(torch.cat(hidden, dim=1)).squeeze(1)


def _to_tensors(features: PooledFeatures, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    taps = [torch.from_numpy(np.ascontiguousarray(tap)).to(device) for tap in features.taps]
    return taps, torch.from_numpy(np.ascontiguousarray(features.embedding)).to(device)


def _model_device(model: LossLearningNet) -> torch.device:
    return model.head.weight.device


def score_pooled(
    model: LossLearningNet,
    features: PooledFeatures,
    mc_samples: int = 0,
    seed: int = 0,
    batch_rows: int = SCORE_BATCH_ROWS,
) -> ScoreOutputs:
    """``model.score``'s outputs (probs, predicted_loss, embedding, optional MC-dropout samples)
    for images whose pooled features are ``features``, without running the backbone.

    Runs on the device the model is on, in eval mode, under inference_mode.
    """
    _check_fits(model, features)
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
    if mc_samples > 0 and model.dropout.p <= 0:
        raise ValueError("mc_samples > 0 needs a model trained with model_config.dropout > 0")
    model.eval()
    device = _model_device(model)
    generator = torch.Generator().manual_seed(seed)
    probs, losses, mc = [], [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch_rows):
            taps, embedding = _to_tensors(features.subset(slice(start, start + batch_rows)), device)
            probs.append(torch.softmax(model.head(embedding).float(), dim=1).cpu())
            losses.append(lpm_from_pooled(model.lpm, taps).float().cpu())
            if mc_samples:
                mc.append(mc_dropout_probs(model, embedding, mc_samples, generator).cpu())
    classes = model.num_classes

    def cat(parts, empty_shape, dim=0):
        if not parts:
            return np.zeros(empty_shape, dtype=np.float32)
        return torch.cat(parts, dim=dim).numpy().astype(np.float32, copy=False)

    return ScoreOutputs(
        probs=cat(probs, (0, classes)),
        predicted_loss=cat(losses, (0,)),
        embedding=np.array(features.embedding, dtype=np.float32, copy=True),
        mc_probs=cat(mc, (mc_samples, 0, classes), dim=1) if mc_samples else None,
    )
