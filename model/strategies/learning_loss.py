"""Learning-loss strategies (Yoo & Kweon 2019): rank by the loss prediction module's predicted loss."""

from __future__ import annotations

import numpy as np

from model.outputs import ScoreOutputs
from model.strategies.registry import register


def _predicted_loss(
    outputs: ScoreOutputs, rng: np.random.Generator, labeled_embedding: np.ndarray | None
) -> np.ndarray:
    return outputs.predicted_loss.astype(np.float64)


# ----------------------------------------------------------------------------- the entries


register("learning_loss", "highest predicted loss first (Yoo & Kweon 2019)", _predicted_loss)
# Not a second ranking: the same ranking as learning_loss of a module trained with the ranking
# BCE objective (TA-VAAL). The name stands for that training setting (LPM_LOSS=v2).
register(
    "learning_loss_v2",
    "learning_loss's ranking, module trained with lpm_loss=v2",
    _predicted_loss,
    train_overrides={"lpm_loss": "v2"},
)
