"""Shared fixtures of the model unit tests: real digits images and small synthetic pools."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model import ModelConfig, ScoreOutputs, TrainConfig

torch.set_num_threads(2)

DIGIT_LABELS = [str(d) for d in range(10)]


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8x8 digits (offline) as grayscale PIL images (0..16 scaled to 0..255) + targets."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = [Image.fromarray(np.clip(x * 16, 0, 255).astype(np.uint8), mode="L") for x in data.images]
    return images, np.asarray(data.target, dtype=np.int64)


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """The fastest sensible network: small_cnn at 8 px with 4 base channels."""
    return ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8)


@pytest.fixture
def quick_train_config() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=8)


def make_outputs(n: int, classes: int = 4, dim: int = 6, mc: int = 3, seed: int = 0) -> ScoreOutputs:
    """A synthetic scored pool with valid probabilities, embeddings and MC samples."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 2

    def softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    mc_logits = logits[None] + rng.normal(size=(mc, n, classes))
    return ScoreOutputs(
        probs=softmax(logits),
        predicted_loss=rng.normal(size=n).astype(np.float32),
        embedding=rng.normal(size=(n, dim)).astype(np.float32),
        mc_probs=softmax(mc_logits),
    )


@pytest.fixture
def outputs_factory():
    return make_outputs


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices and small convolutions run fastest on one intra-op thread (and do not fight
    other jobs for the cores); the previous count is restored after the module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
