"""Writes checkpoint_v1.pt, the compatibility fixture of test_model_checkpoint.py.

Run once per checkpoint format version, from the repository root:
    scripts/python.sh -m tests.unit.model.data.make_checkpoint_fixture
Never regenerate an existing version's file: it stands for checkpoints already on users' disks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model import ModelConfig, TrainConfig, save_checkpoint, score, train
from tests.unit.model.test_model_checkpoint import fixture_images

HERE = Path(__file__).parent


def main() -> None:
    torch.set_num_threads(1)
    images = fixture_images()
    config = ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8)
    result = train(images, [0, 0, 1, 1, 2], ["a", "b", "c"], config, TrainConfig(epochs=3, batch_size=4))
    probs = score(result.model, images, config).probs
    save_checkpoint(HERE / "checkpoint_v1.pt", result, extra={"expected_probs": np.asarray(probs).tolist()})


if __name__ == "__main__":
    main()
