"""One batched pass: probabilities, predicted loss, embeddings, MC-dropout samples."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model import ModelConfig, build_network, rank, score


@pytest.fixture
def model_and_images(tiny_model_config):
    import torch

    torch.manual_seed(0)
    model = build_network(tiny_model_config, num_classes=3)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)) for _ in range(11)]
    return model, images


def test_shapes_dtypes_and_batching_do_not_change_results(model_and_images, tiny_model_config):
    model, images = model_and_images
    whole = score(model, images, tiny_model_config, batch_size=64)
    batched = score(model, images, tiny_model_config, batch_size=4)
    assert whole.probs.shape == (11, 3) and whole.probs.dtype == np.float32
    assert whole.predicted_loss.shape == (11,)
    assert whole.embedding.shape == (11, model.embedding_dim)
    assert whole.mc_probs is None
    np.testing.assert_allclose(whole.probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(whole.probs, batched.probs, atol=1e-5)
    np.testing.assert_allclose(whole.predicted_loss, batched.predicted_loss, atol=1e-5)


def test_empty_pool_gives_zero_rows(model_and_images, tiny_model_config):
    model, _ = model_and_images
    out = score(model, [], tiny_model_config, mc_samples=4)
    assert out.probs.shape == (0, 3) and out.predicted_loss.shape == (0,)
    assert out.embedding.shape == (0, model.embedding_dim) and out.mc_probs.shape == (4, 0, 3)
    assert rank("bald", out).order.shape == (0,)


def test_mc_dropout_samples_vary_and_are_reproducible(model_and_images, tiny_model_config):
    model, images = model_and_images
    first = score(model, images, tiny_model_config, mc_samples=5, seed=1)
    second = score(model, images, tiny_model_config, mc_samples=5, seed=1)
    assert first.mc_probs.shape == (5, 11, 3)
    np.testing.assert_array_equal(first.mc_probs, second.mc_probs)
    assert np.ptp(first.mc_probs, axis=0).max() > 0  # the samples differ
    assert not model.training


def test_mc_samples_need_dropout(tiny_model_config):
    model = build_network(ModelConfig(image_size=8, small_cnn_width=4, dropout=0.0), num_classes=2)
    with pytest.raises(ValueError, match="dropout"):
        score(model, [Image.new("RGB", (8, 8))], tiny_model_config, mc_samples=3)
