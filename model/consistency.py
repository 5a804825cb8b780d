"""Learning from the unlabeled pool while training: FixMatch-style consistency (Sohn et al. 2020).

Each optimizer step also draws a batch of unlabeled pool images. The network's prediction on a
weak view of each (a mild crop and rotation, colours untouched) becomes its pseudo-label when the
prediction is confident (max softmax >= ``TrainConfig.pseudo_label_threshold``); the network then
learns to give that label to a strong view of the same image (the training augmentation plus a
cut-out square). Images below the threshold add nothing, so early in training, when nothing is
confident, the labeled loss alone drives learning. The loss prediction module never sees these
images: its target needs the true label.

Measured against training on the labels alone: docs/results.md, "Learning from the unlabeled
pool".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.augment import StrongAugment
from model.config import ModelConfig
from model.data import standardize, to_unit_float, train_batch

# The weak view: a mild crop and rotation; no colour change, no grey or inverted image.
WEAK_VIEW = StrongAugment(
    crop_scale=(0.85, 1.0),
    rotation_deg=5.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    grayscale_p=0.0,
    invert_p=0.0,
)
# The cut-out square of the strong view, as a share of the image side (FixMatch: up to a half).
CUTOUT_SIDE = 0.4


def weak_view(batch_uint8: torch.Tensor, cfg: ModelConfig, generator: torch.Generator) -> torch.Tensor:
    """The network's input for pseudo-labelling: ``WEAK_VIEW`` (with cfg.hflip), standardised."""
    policy = dataclasses.replace(WEAK_VIEW, hflip=cfg.hflip)
    return standardize(policy(to_unit_float(batch_uint8), generator), cfg)


def cutout(batch: torch.Tensor, side_share: float, generator: torch.Generator) -> torch.Tensor:
    """``batch`` (N, C, H, W) with one square of ``side_share`` of the side per image set to 0
    (the mean of a standardised image); the square's centre is uniform over the image, so part
    of it may fall outside."""
    n, _, height, width = batch.shape
    side_h, side_w = max(1, round(side_share * height)), max(1, round(side_share * width))
    centre_y = torch.randint(0, height, (n,), generator=generator)
    centre_x = torch.randint(0, width, (n,), generator=generator)
    top = (centre_y - side_h // 2)[:, None, None]
    left = (centre_x - side_w // 2)[:, None, None]
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    inside = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    return batch.masked_fill(inside[:, None].to(batch.device), 0.0)


def strong_view(batch_uint8: torch.Tensor, cfg: ModelConfig, generator: torch.Generator) -> torch.Tensor:
    """The view that learns the pseudo-label: the training augmentation, then ``cutout``."""
    return cutout(train_batch(batch_uint8, cfg, generator), CUTOUT_SIDE, generator)


@dataclass
class PseudoLabels:
    targets: torch.Tensor  # (U,) the weak view's class
    mask: torch.Tensor  # (U,) float: 1 where the weak view's max softmax reached the threshold


def pseudo_labels(weak_logits: torch.Tensor, threshold: float) -> PseudoLabels:
    """The weak views' classes, and which of them are confident enough to learn from."""
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    confidence, targets = probs.max(dim=1)
    return PseudoLabels(targets, (confidence >= threshold).float())


def consistency_loss(strong_logits: torch.Tensor, labels: PseudoLabels) -> torch.Tensor:
    """Cross-entropy of the strong views against the confident pseudo-labels, averaged over the
    whole unlabeled batch (FixMatch's normalisation: few confident images give a small loss)."""
    per_image = F.cross_entropy(strong_logits.float(), labels.targets, reduction="none")
    return (per_image * labels.mask).mean()
