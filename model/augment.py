"""Generic strong augmentation for few labels: one batched pass, per-sample random parameters.

With 20-200 labeled images the paper's crop + flip is far too weak (the network memorises the set
and stays near chance on new images of a domain it has not seen). This policy applies, per image:
a random resized crop, a small rotation and an optional horizontal flip as ONE affine warp
(``affine_grid`` + ``grid_sample`` over the whole batch, reflection padding so rotated corners look
like image content, not black wedges), then colour jitter (brightness, contrast, saturation),
random grayscale and random inversion. Nothing here assumes a domain: no class-specific flips,
no ImageNet statistics.

Works on float batches in [0, 1] (N, C, H, W) on any device; every random number is drawn on the
CPU from the caller's ``generator`` so a seed reproduces a training run exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Rec. 601 luma weights: the grayscale used by torchvision's rgb_to_grayscale too.
_LUMA = (0.299, 0.587, 0.114)


# What keeping colour (ModelConfig.keep_colour, the KEEP_COLOUR setting) changes in a policy: no
# view made grey or inverted, so a class told apart by its colour keeps it in every view (the
# brightness, contrast and saturation jitter stay).
KEEP_COLOUR: dict[str, Any] = {"grayscale_p": 0.0, "invert_p": 0.0}


@dataclass(frozen=True)
class StrongAugment:
    """Parameters of the generic policy; the defaults are the measured ones (docs/results.md,
    'Measured: the domain suite')."""

    # Random resized crop: share of the image area kept, and aspect-ratio range of the crop.
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # Uniform rotation in [-rotation_deg, +rotation_deg], in degrees.
    rotation_deg: float = 20.0
    hflip: bool = False
    # Colour jitter: each factor is drawn uniformly in [1 - x, 1 + x].
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    # Probabilities per image.
    grayscale_p: float = 0.2
    invert_p: float = 0.2

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return strong_augment(batch, self, generator)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _affine_theta(n: int, policy: StrongAugment, generator: torch.Generator | None) -> torch.Tensor:
    """(N, 2, 3) sampling matrices in normalised coordinates: crop (scale + aspect + offset),
    rotation and flip in one warp."""
    area = _uniform(n, policy.crop_scale[0], policy.crop_scale[1], generator)
    log_ratio = _uniform(n, math.log(policy.crop_ratio[0]), math.log(policy.crop_ratio[1]), generator)
    ratio = torch.exp(log_ratio)
    # Crop width / height as a fraction of the image side; clipped to the image.
    crop_w = torch.sqrt(area * ratio).clamp(max=1.0)
    crop_h = torch.sqrt(area / ratio).clamp(max=1.0)
    # The crop centre may move as far as keeps the crop inside the image (in [-1, 1] coordinates).
    shift_x = (1.0 - crop_w) * (2 * torch.rand(n, generator=generator) - 1)
    shift_y = (1.0 - crop_h) * (2 * torch.rand(n, generator=generator) - 1)
    angle = torch.deg2rad(_uniform(n, -policy.rotation_deg, policy.rotation_deg, generator))
    flip = torch.ones(n)
    if policy.hflip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * crop_w * flip
    theta[:, 0, 1] = -sin * crop_h
    theta[:, 1, 0] = sin * crop_w * flip
    theta[:, 1, 1] = cos * crop_h
    theta[:, 0, 2] = shift_x
    theta[:, 1, 2] = shift_y
    return theta


def _grayscale(batch: torch.Tensor) -> torch.Tensor:
    if batch.shape[1] == 1:
        return batch
    weights = torch.tensor(_LUMA, dtype=batch.dtype, device=batch.device)[None, :, None, None]
    return (batch * weights).sum(dim=1, keepdim=True).expand_as(batch)


def _per_image(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    return values.to(device)[:, None, None, None]


def strong_augment(
    batch: torch.Tensor, policy: StrongAugment, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augment a float batch in [0, 1] of shape (N, C, H, W); returns a new tensor in [0, 1]."""
    n = batch.shape[0]
    if n == 0:
        return batch
    device = batch.device
    theta = _affine_theta(n, policy, generator).to(device=device, dtype=batch.dtype)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    brightness = _uniform(n, 1 - policy.brightness, 1 + policy.brightness, generator)
    contrast = _uniform(n, 1 - policy.contrast, 1 + policy.contrast, generator)
    saturation = _uniform(n, 1 - policy.saturation, 1 + policy.saturation, generator)
    gray_mask = torch.rand(n, generator=generator) < policy.grayscale_p
    invert_mask = torch.rand(n, generator=generator) < policy.invert_p

    out = (out * _per_image(brightness, device)).clamp(0, 1)
    mean = _grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (mean + (out - mean) * _per_image(contrast, device)).clamp(0, 1)
    gray = _grayscale(out)
    out = (gray + (out - gray) * _per_image(saturation, device)).clamp(0, 1)
    out = torch.where(_per_image(gray_mask, device), _grayscale(out), out)
    out = torch.where(_per_image(invert_mask, device), 1.0 - out, out)
    return out
