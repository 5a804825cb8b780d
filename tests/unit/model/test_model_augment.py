"""The generic few-label augmentation: shapes, ranges, determinism, and each operation doing what it says."""

from __future__ import annotations

import pytest
import torch

from model.augment import StrongAugment, strong_augment

IDENTITY = StrongAugment(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    rotation_deg=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    grayscale_p=0.0,
    invert_p=0.0,
)


def _batch(n=6, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_shape_range_and_determinism():
    x = _batch()
    a = strong_augment(x, StrongAugment(hflip=True), torch.Generator().manual_seed(1))
    b = strong_augment(x, StrongAugment(hflip=True), torch.Generator().manual_seed(1))
    c = strong_augment(x, StrongAugment(hflip=True), torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every image gets its own parameters: no two augmented images are the same transform of x
    diffs = (a - x).flatten(1).abs().mean(1)
    assert len(set(diffs.round(decimals=4).tolist())) == len(x)


def test_identity_parameters_return_the_input():
    x = _batch()
    assert torch.allclose(strong_augment(x, IDENTITY, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_invert_grayscale_and_flip():
    x = _batch(n=3)
    gen = torch.Generator().manual_seed(0)
    inverted = strong_augment(x, StrongAugment(**{**IDENTITY.__dict__, "invert_p": 1.0}), gen)
    assert torch.allclose(inverted, 1.0 - x, atol=1e-5)
    gray = strong_augment(x, StrongAugment(**{**IDENTITY.__dict__, "grayscale_p": 1.0}), gen)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    # hflip=True flips about half of a large batch, exactly mirrored
    many = _batch(n=200, size=8, seed=3)
    flipped = strong_augment(many, StrongAugment(**{**IDENTITY.__dict__, "hflip": True}), gen)
    is_flip = torch.tensor(
        [torch.allclose(f, m.flip(-1), atol=1e-5) for f, m in zip(flipped, many, strict=False)]
    )
    is_same = torch.tensor([torch.allclose(f, m, atol=1e-5) for f, m in zip(flipped, many, strict=False)])
    assert bool((is_flip | is_same).all()) and 60 < int(is_flip.sum()) < 140


def test_crop_zooms_in():
    """A crop of a quarter of the area shows a structure twice as large: a thin centred line widens."""
    x = torch.zeros(1, 3, 32, 32)
    x[..., 15:17] = 1.0  # a 2-px vertical stripe in the middle
    policy = StrongAugment(**{**IDENTITY.__dict__, "crop_scale": (0.25, 0.25)})
    out = strong_augment(x, policy, torch.Generator().manual_seed(0))
    assert float(out[0, 0].mean()) > 1.5 * float(x[0, 0].mean())


def test_empty_batch():
    x = torch.zeros(0, 3, 8, 8)
    assert strong_augment(x, StrongAugment()).shape == x.shape


def test_crop_scale_min_setting_reaches_the_policy():
    from model import ModelConfig
    from model.data import train_batch

    batch = (torch.arange(2 * 3 * 16 * 16) % 251).to(torch.uint8).reshape(2, 3, 16, 16)
    whole = ModelConfig(image_size=16, crop_scale_min=1.0)
    cropped = ModelConfig(image_size=16, crop_scale_min=0.2)
    first = train_batch(batch, whole, torch.Generator().manual_seed(0))
    second = train_batch(batch, cropped, torch.Generator().manual_seed(0))
    assert first.shape == second.shape and not torch.allclose(first, second)
    with pytest.raises(ValueError, match="crop_scale_min"):
        ModelConfig(crop_scale_min=0.0)


def test_keep_colour_makes_no_training_view_grey_or_inverted():
    from model import ModelConfig
    from model.data import train_batch

    red = torch.zeros(200, 3, 16, 16, dtype=torch.uint8)
    red[:, 0], red[:, 1], red[:, 2] = 200, 40, 30

    def red_stays_dominant(cfg: ModelConfig) -> torch.Tensor:
        views = train_batch(red, cfg, torch.Generator().manual_seed(0))
        centre = views[:, :, 6:10, 6:10].mean((2, 3))  # away from rotation's filled corners
        return (centre[:, 0] > centre[:, 1] + 0.1) & (centre[:, 0] > centre[:, 2] + 0.1)

    assert red_stays_dominant(ModelConfig(image_size=16, keep_colour=True)).all()
    # the default makes about a fifth grey and a fifth inverted: red is no longer on top there
    lost = (~red_stays_dominant(ModelConfig(image_size=16))).float().mean().item()
    assert 0.2 < lost < 0.6
