"""Self-supervised (SimCLR-style) pre-training: the NT-Xent loss, learning, determinism, and the
round trip of its weights through ModelConfig(pretrained_weights=...)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from model import ModelConfig, build_network, score
from model.self_supervised import (
    SelfSupervisedConfig,
    fingerprint,
    hue_rotate,
    nt_xent,
    pretrain,
    pretrained_file,
    save_pretrained,
)

# Small enough for seconds on one core, big enough that contrastive learning has something to do.
SSL_MODEL = ModelConfig(image_size=16, small_cnn_width=8, lpm_width=8)


def quick_cfg(**overrides) -> SelfSupervisedConfig:
    values = dict(steps=8, batch_size=32, device="cpu", log_every=1)
    values.update(overrides)
    return SelfSupervisedConfig(**values)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pool(digits):
    images, _ = digits
    return images[:64]


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out anchor by anchor with plain floats."""
    z = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in (z1.tolist() + z2.tolist())]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = {
            j: sum(a * b for a, b in zip(z[i], z[j], strict=False)) / temperature
            for j in range(2 * n)
            if j != i
        }
        total += -(sims[positive] - math.log(sum(math.exp(s) for s in sims.values())))
    return total / (2 * n)


def test_nt_xent_matches_hand_computation():
    # Orthogonal unit vectors, identical views, temperature 1: every anchor has similarity 1 to its
    # positive and 0 to its 2 negatives, so the loss is -log(e / (e + 2)).
    eye = torch.eye(2)
    assert float(nt_xent(eye, eye.clone(), 1.0)) == pytest.approx(-math.log(math.e / (math.e + 2)), abs=1e-6)
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    assert float(nt_xent(z1, z2, 0.5)) == pytest.approx(reference_nt_xent(z1, z2, 0.5), abs=1e-5)


def test_nt_xent_identical_views_beat_random_pairs():
    generator = torch.Generator().manual_seed(1)
    z1 = torch.randn(32, 16, generator=generator)
    same = nt_xent(z1, z1 + 0.01 * torch.randn(32, 16, generator=generator), 0.2)
    unrelated = nt_xent(z1, torch.randn(32, 16, generator=generator), 0.2)
    assert float(same) + 2.0 < float(unrelated)
    with pytest.raises(ValueError):
        nt_xent(z1[:1], z1[:1], 0.2)


def test_config_is_validated():
    with pytest.raises(ValueError):
        SelfSupervisedConfig(temperature=0)
    with pytest.raises(ValueError):
        SelfSupervisedConfig(batch_size=1)
    with pytest.raises(ValueError):
        SelfSupervisedConfig(steps=0)


def test_loss_decreases(pool):
    history = []
    pretrain(pool, SSL_MODEL, quick_cfg(steps=60, lr=3e-3), progress=history.append)
    assert [h["step"] for h in history] == list(range(1, 61))
    losses = [h["loss"] for h in history]
    # Chance level is log(2N - 1) = log(63) = 4.1; the views' noise needs a few steps' average.
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < first - 0.3, (first, last)


def test_weights_load_through_model_config(pool, tmp_path):
    state = pretrain(pool, SSL_MODEL, quick_cfg(steps=2))
    assert not any(key.startswith("fc.") for key in state)  # the head is left to the classes
    path = tmp_path / "ssl" / "weights.pt"
    digest = save_pretrained(state, path)
    assert digest == fingerprint(path) and len(digest) == 64
    assert not [p for p in path.parent.iterdir() if p.name != "weights.pt"]  # no temp file left
    config = ModelConfig(image_size=16, small_cnn_width=8, lpm_width=8, pretrained_weights=str(path))
    net = build_network(config, num_classes=3)
    for key, value in state.items():
        assert torch.equal(net.features.state_dict()[key], value), key
    assert net.head.out_features == 3
    out = score(net, pool[:5], config, device="cpu")
    assert out.embedding.shape == (5, 32) and np.isfinite(out.embedding).all()
    # A different architecture is refused loudly, as for any weights file.
    with pytest.raises(ValueError, match="do not fit"):
        build_network(ModelConfig(image_size=16, small_cnn_width=4, pretrained_weights=str(path)), 3)


def test_deterministic_for_a_seed(pool):
    first = pretrain(pool[:16], SSL_MODEL, quick_cfg(steps=3, batch_size=8))
    state_before = torch.random.get_rng_state()
    second = pretrain(pool[:16], SSL_MODEL, quick_cfg(steps=3, batch_size=8))
    assert torch.equal(torch.random.get_rng_state(), state_before)  # global RNG untouched
    other = pretrain(pool[:16], SSL_MODEL, quick_cfg(steps=3, batch_size=8, seed=1))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_progress_exception_cancels(pool):
    calls = []

    def stop(info):
        calls.append(info)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(pool[:8], SSL_MODEL, quick_cfg(steps=50, batch_size=4), progress=stop)
    assert len(calls) == 1


def test_needs_two_images(pool):
    with pytest.raises(ValueError, match="at least 2"):
        pretrain(pool[:1], SSL_MODEL, quick_cfg())


def test_hue_rotation_changes_colour_not_luma():
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(6, 3, 5, 5, generator=generator) * 0.2 + 0.4  # no clipping at 0 or 1
    rotated = hue_rotate(batch, 0.5, torch.Generator().manual_seed(1))
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    assert not torch.allclose(rotated, batch, atol=1e-3)
    assert torch.allclose((rotated * luma).sum(1), (batch * luma).sum(1), atol=1e-4)
    gray = batch[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(hue_rotate(gray, 0.5, generator), gray, atol=1e-5)
    assert torch.equal(hue_rotate(batch, 0.0, generator), batch)


def test_a_weights_file_is_learned_once(pool, tmp_path):
    path = tmp_path / "cache" / "selfsup.pt"
    seconds = pretrained_file(path, pool[:40], SSL_MODEL, quick_cfg(steps=2))
    assert seconds is not None and seconds > 0 and path.is_file()
    learned = fingerprint(path)
    assert pretrained_file(path, pool[:40], SSL_MODEL, quick_cfg(steps=2)) is None
    assert fingerprint(path) == learned
    build_network(
        dataclasses.replace(SSL_MODEL, pretrained_weights=str(path)), num_classes=3
    )  # loads strictly
