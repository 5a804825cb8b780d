"""The loss prediction module learns to rank real held-out data by its true loss.

sklearn's digits (1,797 real 8x8 images, offline), upscaled to 16 px; 200 labeled images train
the classifier + LPM jointly, the other 1,597 are held out. Measured on 2 CPU cores (seed 0):
Spearman(predicted loss, true CE) ~0.8, error rate of the top-20% predicted-loss slice ~13%
vs ~1% in the bottom 20%; about 10 s.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from model import ModelConfig, TrainConfig, rank, score, train
from model.metrics import spearman

DIGIT_LABELS = [str(digit) for digit in range(10)]

N_LABELED = 200


@pytest.mark.slow  # ~10-15 s: trains a real model
def test_lpm_ranks_held_out_images_by_their_true_loss(digits):
    images, targets = digits
    permutation = np.random.default_rng(0).permutation(len(images))
    labeled, held_out = permutation[:N_LABELED], permutation[N_LABELED:]
    model_config = ModelConfig(image_size=16, small_cnn_width=16)
    train_config = TrainConfig(auto_target_steps=400, seed=0, device="cpu")

    started = time.monotonic()
    result = train(
        [images[i] for i in labeled], targets[labeled].tolist(), DIGIT_LABELS, model_config, train_config
    )
    seconds = time.monotonic() - started
    outputs = score(result.model, [images[i] for i in held_out], model_config, device="cpu")

    truth = targets[held_out]
    true_loss = -np.log(np.clip(outputs.probs[np.arange(len(truth)), truth], 1e-12, 1.0))
    wrong = outputs.probs.argmax(axis=1) != truth
    rho = spearman(outputs.predicted_loss, true_loss)
    order = rank("learning_loss", outputs).order
    slice_size = len(order) // 5
    top_error = wrong[order[:slice_size]].mean()
    bottom_error = wrong[order[-slice_size:]].mean()
    print(
        f"\nLPM on digits: train {seconds:.1f}s ({result.metrics['steps']} steps), held-out accuracy "
        f"{1 - wrong.mean():.3f}, Spearman {rho:.3f}, error top-20% {top_error:.3f} "
        f"vs bottom-20% {bottom_error:.3f}"
    )
    assert rho > 0.2
    assert top_error > bottom_error
    assert 1 - wrong.mean() > 0.8  # the classifier itself learned
