"""Self-supervised pre-training on the project's own images (SimCLR-style contrastive learning).

When no pretrained weights are available (offline users, unusual domains), the backbone can learn
features from all of the project's images, labeled or not: two randomly augmented views of each
image are pulled together and pushed away from the views of the other images in the batch with the
NT-Xent (InfoNCE) loss (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"). A few labels then train a head on features that already separate the domain.

``pretrain`` returns the backbone's state_dict without the classifier head; ``save_pretrained``
writes it atomically and ``ModelConfig(pretrained_weights=path)`` loads it back through the same
strict key matching as any other local weights file (``networks.load_pretrained``): every non-head
key must match, the head is initialised for the project's classes.

The loss is written here (a dozen lines) rather than taken from the ``lightly`` package: lightly
requires pytorch_lightning and hydra-core, far too heavy for one loss function.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from model.augment import KEEP_COLOUR, StrongAugment
from model.checkpoint import atomic_torch_save
from model.config import ModelConfig
from model.data import images_to_uint8, standardize, to_unit_float
from model.networks import build_classifier, split_head
from model.runtime import amp_dtype, autocast, memory_format, resolve_device
from model.trainer import TrainingError

# Contrastive views need harder crops than supervised training (SimCLR's go down to 0.08 of the
# area at 224 px). At 32 px a crop of 0.35 of the area still shows the object, and it probed
# better than 0.2 (model/README.md, 'Measured (2 CPU cores)'). The rest is the generic policy.
SELF_SUPERVISED_AUGMENT = StrongAugment(crop_scale=(0.35, 1.0))
_RECALIBRATION_BATCHES = 32


@dataclass(frozen=True)
class SelfSupervisedConfig:
    # Optimizer steps. One step = batch_size images x 2 views; its cost does not depend on how
    # many images the project has. What 1,000 steps cost and gain as the start of a full training,
    # where 150 had shown nothing: model/README.md, 'Measured (2 CPU cores)'. The backend's
    # SELF_SUPERVISED_STEPS defaults to the same number (tests/unit/backend/test_self_supervised.py
    # holds them equal).
    steps: int = 1000
    # Images per step (each seen as 2 augmented views, so the network sees 2 x batch_size inputs,
    # and every pair has 2 x batch_size - 2 negatives). Capped at the number of images. 64 halves
    # the cost of a step against 128, so more steps fit in a minute of CPU; on a GPU, larger
    # batches (more negatives) are the usual SimCLR choice.
    batch_size: int = 64
    # AdamW learning rate (peak, after the warm-up; cosine decay to 0 over all steps).
    lr: float = 3e-3
    weight_decay: float = 1e-4
    # Fraction of the steps with a linear learning-rate warm-up from 0.
    warmup_fraction: float = 0.05
    # Softmax temperature of the NT-Xent loss (dimensionless); lower = harder negatives.
    temperature: float = 0.2
    # Projection head (trained, then thrown away): embedding -> Linear(projection_hidden) -> BN ->
    # ReLU -> Linear(projection_dim). Units = features.
    projection_hidden: int = 128
    projection_dim: int = 64
    # Augmentation of each view (model/augment.py); hflip is turned on as well when the
    # ModelConfig has hflip=True.
    augment: StrongAugment = field(default=SELF_SUPERVISED_AUGMENT)
    # Hue rotation of each view (RGB only): uniform in [-hue, +hue] of a full turn of the colour
    # wheel (0.5 = any hue). SimCLR found colour distortion essential: without it two views share
    # their colour histogram, which alone solves the task. (On the shapes domain, at 60 steps, the
    # linear probe showed no measurable difference.)
    hue: float = 0.5
    # After training, reset the BatchNorm running statistics and re-estimate them on the
    # un-augmented images, so eval-mode embeddings see the statistics of real images.
    recalibrate_bn: bool = True
    seed: int = 0
    # "auto" -> "cuda" when available, else "cpu"; or any torch device string.
    device: str = "auto"
    # Mixed precision on CUDA only (the loss is always computed in float32).
    amp: bool = True
    # progress(dict) every log_every steps (and after the last one).
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (negatives are the other images), got {self.batch_size}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.projection_hidden < 1 or self.projection_dim < 1:
            raise ValueError("projection_hidden and projection_dim must be >= 1")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (a fraction of a full turn), got {self.hue}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


# What keeping colour (the KEEP_COLOUR setting) changes in SelfSupervisedConfig: no hue rotation, and
# the policy's own change (model.augment.KEEP_COLOUR: no grey or inverted view). Measured in the
# domain suite (docs/results.md): where colour is the class it is what lets the pre-trained backbone see
# it; where colours are random it lets two views be matched by colour alone, and the backbone is
# then no better than none, or worse.
COLOUR_KEPT: dict[str, Any] = {"hue": 0.0, "augment": KEEP_COLOUR}


def with_overrides(cfg: SelfSupervisedConfig, overrides: dict[str, Any] | None) -> SelfSupervisedConfig:
    """``cfg`` with the fields of ``overrides`` changed; a dict under ``augment`` changes fields
    of its augmentation policy."""
    changes = dict(overrides or {})
    augment = changes.pop("augment", None)
    if augment:
        changes["augment"] = replace(cfg.augment, **augment)
    return replace(cfg, **changes)


def for_colour(cfg: SelfSupervisedConfig, keep_colour: bool) -> SelfSupervisedConfig:
    """``cfg`` as it is, or with views that keep their colours (COLOUR_KEPT)."""
    return with_overrides(cfg, COLOUR_KEPT) if keep_colour else cfg


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent / InfoNCE loss of N positive pairs (z1[i], z2[i]), each (N, D).

    The 2N projections are L2-normalised; for every one of them the positive is its pair and the
    2N - 2 other projections are the negatives: cross-entropy over cosine similarity / temperature,
    averaged over all 2N anchors.
    """
    if z1.shape != z2.shape or z1.dim() != 2 or z1.shape[0] < 2:
        raise ValueError(f"need two (N, D) batches with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # an anchor is never its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


# RGB -> YIQ (NTSC): Y is luma, I/Q the chroma plane in which a rotation is a hue shift.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def hue_rotate(
    batch: torch.Tensor, max_turn: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each image's hue by a uniform random angle in [-max_turn, max_turn] of a full turn
    (chroma rotated in YIQ space, luma kept); float (N, 3, H, W) in [0, 1] -> same. Grayscale
    batches (1 channel) are returned as they are."""
    n = batch.shape[0]
    angle = (2 * torch.rand(n, generator=generator) - 1) * max_turn * 2 * math.pi
    if batch.shape[1] != 3 or n == 0 or max_turn == 0:
        return batch
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(n, 3, 3)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    matrix = torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ
    matrix = matrix.to(device=batch.device, dtype=batch.dtype)
    return torch.einsum("nij,njhw->nihw", matrix, batch).clamp(0, 1)


def _projection_head(in_dim: int, cfg: SelfSupervisedConfig) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_dim, cfg.projection_hidden, bias=False),
        nn.BatchNorm1d(cfg.projection_hidden),
        nn.ReLU(inplace=True),
        nn.Linear(cfg.projection_hidden, cfg.projection_dim),
    )


def _lr_at(cfg: SelfSupervisedConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 0 at the last step."""
    warmup = int(cfg.warmup_fraction * cfg.steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(cfg.steps - warmup, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless stream of index batches: consecutive seeded permutations, cut into batch_size."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


@torch.no_grad()
def _recalibrate_bn(
    backbone: nn.Module, data: torch.Tensor, model_config: ModelConfig, batch_size: int
) -> None:
    """Re-estimate BatchNorm running statistics on clean images (cumulative average, no grads)."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    backbone.train()
    n = data.shape[0]
    # Batches of at least 2 (BatchNorm in train mode); a trailing single image joins the last one.
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for index, start in enumerate(starts):
        stop = starts[index + 1] if index + 1 < len(starts) else n
        backbone(standardize(to_unit_float(data[start:stop]), model_config))
    for m, momentum in zip(norms, saved, strict=False):
        m.momentum = momentum


def pretrain(
    images: Sequence[Image.Image | np.ndarray],
    model_config: ModelConfig,
    cfg: SelfSupervisedConfig = SelfSupervisedConfig(),
    progress: Callable[[dict], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Contrastive pre-training of ``model_config``'s backbone on ``images`` (labels not needed).

    The classifier is built exactly as ``build_network`` builds it (``networks.build_classifier``,
    so ``pretrained_weights`` / ``weights`` of ``model_config``, if set, are the starting point),
    its head is split off and a projection head is trained on top of the embedding with NT-Xent
    on two augmented views per image. Inputs are prepared as training prepares them: resized by
    ``images_to_uint8``, augmented in [0, 1], then ``standardize``d by ``model_config.input_norm``.

    Returns the backbone's state_dict (CPU tensors, no head, no projection head), ready for
    ``save_pretrained`` -> ``ModelConfig(pretrained_weights=path)``. Deterministic on CPU for
    ``cfg.seed`` (own generators; the global RNG state is restored). ``progress(dict(step, steps,
    loss, lr, seconds))`` every ``cfg.log_every`` steps, ``loss`` the mean since the last call;
    an exception raised by it cancels the pre-training. A non-finite loss raises TrainingError.
    The images are held resized as uint8 (N x C x image_size² bytes); pass a sample of a very
    large pool.
    """
    if len(images) < 2:
        raise ValueError(f"self-supervised pre-training needs at least 2 images, got {len(images)}")
    device = resolve_device(cfg.device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        return _pretrain(images, model_config, cfg, progress, device)


def _two_views(
    batch: torch.Tensor,
    policy: StrongAugment,
    cfg: SelfSupervisedConfig,
    model_config: ModelConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Two augmented, standardized views of ``batch``, stacked: the first view's rows, then the
    second's."""
    view1 = standardize(hue_rotate(policy(batch, generator), cfg.hue, generator), model_config)
    view2 = standardize(hue_rotate(policy(batch, generator), cfg.hue, generator), model_config)
    return torch.cat([view1, view2])


def _optimizer_step(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor, step: int, lr: float
) -> None:
    """One optimizer step on ``loss``; a non-finite loss raises TrainingError instead."""
    if not torch.isfinite(loss.detach()):
        raise TrainingError(
            f"self-supervised loss became {float(loss)} at step {step + 1}; try a lower lr (now {lr})"
        )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _pretrain(images, model_config, cfg, progress, device) -> dict[str, torch.Tensor]:
    started = time.monotonic()
    generator = torch.Generator().manual_seed(cfg.seed)
    backbone = build_classifier(model_config, num_classes=1)
    head = split_head(backbone)  # the backbone now outputs the embedding
    projector = _projection_head(head.in_features, cfg)
    fmt = memory_format(device)
    backbone.to(device).to(memory_format=fmt)
    projector.to(device)
    policy = replace(cfg.augment, hflip=cfg.augment.hflip or model_config.hflip)

    data = images_to_uint8(images, model_config).to(device)
    n = data.shape[0]
    batch_size = min(cfg.batch_size, n)
    params = list(backbone.parameters()) + list(projector.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    backbone.train()
    projector.train()
    batches = _batches(n, batch_size, generator)
    loss_sum, loss_count = 0.0, 0
    for step in range(cfg.steps):
        lr = _lr_at(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = to_unit_float(data[next(batches).to(device)])
        x = _two_views(batch, policy, cfg, model_config, generator).contiguous(memory_format=fmt)
        with autocast(device, dtype):
            z = projector(backbone(x).flatten(1))
        loss = nt_xent(z[:batch_size], z[batch_size:], cfg.temperature)
        _optimizer_step(optimizer, scaler, loss, step, lr)
        loss_sum += float(loss.detach())
        loss_count += 1
        if progress is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            progress(
                dict(
                    step=step + 1,
                    steps=cfg.steps,
                    loss=loss_sum / loss_count,
                    lr=lr,
                    seconds=time.monotonic() - started,
                )
            )
            loss_sum, loss_count = 0.0, 0

    if cfg.recalibrate_bn:
        # A seeded sample of at most _RECALIBRATION_BATCHES batches bounds the time on big pools.
        sample = torch.randperm(n, generator=generator)[: _RECALIBRATION_BATCHES * batch_size]
        _recalibrate_bn(backbone, data[sample.to(device)], model_config, batch_size)
    backbone.eval()
    return {
        key: value.detach().to("cpu", copy=True).contiguous() for key, value in backbone.state_dict().items()
    }


def save_pretrained(state_dict: dict[str, torch.Tensor], path: str | Path) -> str:
    """Write ``state_dict`` with torch.save, atomically (temp file in the same directory, fsync,
    os.replace, fsync of the directory); returns the file's ``fingerprint``."""
    path = Path(path)
    atomic_torch_save(path, dict(state_dict))
    return fingerprint(path)


def fingerprint(path: str | Path) -> str:
    """SHA-256 hex digest of the file's bytes: a version id for a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pretrained_file(
    path: str | Path,
    images: Sequence[Image.Image | np.ndarray],
    model_config: ModelConfig,
    cfg: SelfSupervisedConfig = SelfSupervisedConfig(),
) -> float | None:
    """Make sure ``path`` holds the backbone pre-trained on ``images``: pre-train and save it
    (creating its folder) unless the file exists. Returns the seconds pre-training took, None
    when the file was already there (a benchmark's cache of weights it reuses across runs)."""
    path = Path(path)
    if path.exists():
        return None
    started = time.monotonic()
    state = pretrain(images, model_config, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(state, path)
    return time.monotonic() - started
