"""What one scoring pass yields, as plain numpy arrays: no torch here, so the strategies (and the
settings check that names them) can be imported by processes that never load a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ScoreOutputs:
    probs: np.ndarray  # (N, C) float32, softmax of the logits
    predicted_loss: np.ndarray  # (N,) float32, LPM output (higher = more informative)
    embedding: np.ndarray  # (N, D) float32, penultimate features (classifier-head input)
    mc_probs: np.ndarray | None = None  # (T, N, C) float32 MC-dropout samples, or None

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[ScoreOutputs]) -> ScoreOutputs:
        """The outputs of chunks scored one after another, as one pass over their rows in order
        (MC-dropout samples only when every chunk has them)."""
        mc = [p.mc_probs for p in parts if p.mc_probs is not None]
        return cls(
            probs=np.concatenate([p.probs for p in parts]),
            predicted_loss=np.concatenate([p.predicted_loss for p in parts]),
            embedding=np.concatenate([p.embedding for p in parts]),
            mc_probs=np.concatenate(mc, axis=1) if mc and len(mc) == len(parts) else None,
        )

    def subset(self, rows: np.ndarray) -> ScoreOutputs:
        """The outputs of ``rows`` only (indices or a boolean mask), in that order."""
        return ScoreOutputs(
            probs=self.probs[rows],
            predicted_loss=self.predicted_loss[rows],
            embedding=self.embedding[rows],
            mc_probs=None if self.mc_probs is None else self.mc_probs[:, rows],
        )
