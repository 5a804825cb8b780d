"""What one scoring pass yields, as plain numpy arrays: no torch here, so the strategies (and the
settings check that names them) can be imported by processes that never load a model."""

from __future__ import annotations

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
