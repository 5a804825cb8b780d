"""Settings of the network and of its training, as plain frozen dataclasses.

Both are JSON-serialisable with ``dataclasses.asdict`` and are rebuilt with ``from_dict``, which
ignores unknown keys (so a checkpoint written by a newer version with extra fields still loads) and
turns JSON lists back into tuples. Every tunable is a documented field; units are in the comment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_Config = TypeVar("_Config", bound="_FromDict")

LPM_LOSSES = ("v1", "v2", "mse")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "step")
AUGMENT_POLICIES = ("strong", "crop_flip")
INPUT_NORMS = ("per_image", "dataset")
# Values that checkpoints written before a field existed were trained with: a stored config that
# lacks the key gets these instead of today's defaults, so an old model keeps predicting as trained.
LEGACY_MODEL_DEFAULTS = {"augment_policy": "crop_flip", "input_norm": "dataset"}


class _FromDict:
    """``from_dict`` shared by both configs: unknown keys are ignored, lists become tuples."""

    @classmethod
    def from_dict(cls: type[_Config], data: Mapping[str, Any]) -> _Config:
        known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                continue
            # JSON has no tuples; the frozen configs hold tuples so that they stay hashable.
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ModelConfig(_FromDict):
    # "small_cnn" (our own 3-block CNN, fast on CPU), "cifar_resnet18" (the paper's network:
    # torchvision resnet18 with a 3x3 stride-1 stem and no max-pool), or any torchvision
    # classification model name (resnet18, mobilenet_v3_small, efficientnet_b0, convnext_tiny, ...).
    backbone: str = "small_cnn"
    # Side of the square the images are resized to, in pixels.
    image_size: int = 32
    # 3: images are converted to RGB; 1: to grayscale (small_cnn only, torchvision nets expect RGB).
    channels: int = 3
    # Per-channel normalisation applied after scaling pixels to [0, 1].
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    # Training-time augmentation on or off; which one is augment_policy.
    augment: bool = True
    # "strong": generic few-label policy (random resized crop, rotation, colour jitter, random
    # grayscale and inversion; model/augment.py), the default because it is what makes 20-200
    # labels of an unknown domain learnable. "crop_flip": the paper's random crop after zero
    # padding + optional flip (its CIFAR recipe with 1,000+ labels).
    augment_policy: str = "strong"
    # How pixels are standardised after scaling to [0, 1]. "per_image": each image by its own
    # mean and std over all pixels and channels, so brightness and contrast differences between
    # images (or domains) do not have to be learned from a few labels. "dataset": the fixed
    # mean / std below (what pretrained weights expect).
    input_norm: str = "per_image"
    # Smallest share of the image area the strong policy's random resized crop keeps (the largest
    # is the whole image). Lower crops harder; too low cuts a small object out of its own image,
    # which then trains on a wrong label: 0.7 did better than 0.45 on every domain of the suite
    # (model/README.md, 'Measured (2 CPU cores)').
    crop_scale_min: float = 0.7
    # Horizontal flip during augmentation. Off by default: it is wrong for digits, text, arrows.
    hflip: bool = False
    # Colour tells the classes apart (the KEEP_COLOUR setting): the strong policy makes no view
    # grey or inverted (model.augment.KEEP_COLOUR). Off by default: where colours are random,
    # those views are what teach the network to look past them.
    keep_colour: bool = False
    # Zero padding before the random crop, in pixels at image_size 32; scaled with image_size
    # (the paper pads CIFAR's 32 px images by 4).
    crop_padding: int = 4
    # Feature-extraction node names (torchvision.models.feature_extraction) fed to the loss
    # prediction module. None = the backbone family's default (see networks.default_taps).
    taps: tuple[str, ...] | None = None
    # Width of each tap's FC layer inside the loss prediction module, in units (paper: 128).
    lpm_width: int = 128
    # Local file with a state_dict (torch.save) to start from; loaded with weights_only=True, the
    # classifier head is re-initialised when its shape differs. Never downloaded.
    pretrained_weights: str | None = None
    # torchvision's own pretrained weights for a torchvision backbone: "DEFAULT", a member of the
    # backbone's weights enum ("IMAGENET1K_V2") or a qualified name ("ResNet50_Weights.IMAGENET1K_V2").
    # Read from torch's hub cache (TORCH_HOME/hub/checkpoints), downloaded once when missing and
    # online (model/pretrained.py). Use pretrained.with_weights_preprocessing(cfg) to take the
    # weights' input size, mean and std. Not with pretrained_weights; not for small_cnn /
    # cifar_resnet18. None = random init.
    weights: str | None = None
    # Dropout probability before the classifier head. It regularises tiny labeled sets and is
    # what MC-dropout (BALD) samples; 0 disables both.
    dropout: float = 0.2
    # Channels of small_cnn's first block, doubled in each following block (16-32-64). 16 trains
    # faster on CPU than 32 for a small loss in LPM ranking quality (model/README.md, 'Measured
    # (2 CPU cores)'). Ignored by others.
    small_cnn_width: int = 16

    def __post_init__(self) -> None:
        if not self.backbone:
            raise ValueError("backbone must be a non-empty name")
        if self.image_size < 4:
            raise ValueError(f"image_size must be >= 4 pixels, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need one value per channel ({self.channels}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        if self.augment_policy not in AUGMENT_POLICIES:
            raise ValueError(f"augment_policy must be one of {AUGMENT_POLICIES}, got {self.augment_policy!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ValueError(
                f"crop_scale_min must be in (0, 1] (a share of the image area), got {self.crop_scale_min}"
            )
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0 pixels, got {self.crop_padding}")
        if self.taps is not None and len(self.taps) == 0:
            raise ValueError("taps must name at least one node, or be None for the default")
        if self.lpm_width < 1:
            raise ValueError(f"lpm_width must be >= 1, got {self.lpm_width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.small_cnn_width < 1:
            raise ValueError(f"small_cnn_width must be >= 1, got {self.small_cnn_width}")
        if self.weights is not None:
            if not self.weights.strip():
                raise ValueError("weights must name torchvision weights (e.g. DEFAULT) or be None")
            if self.pretrained_weights:
                raise ValueError("set weights (torchvision's) or pretrained_weights (a local file), not both")
            # The names of networks.SMALL_CNN / networks.CIFAR_RESNET18 (networks imports this module).
            if self.backbone in ("small_cnn", "cifar_resnet18"):
                raise ValueError(
                    f"weights are torchvision's pretrained weights and need a torchvision backbone "
                    f"(e.g. resnet18), not {self.backbone!r}; use pretrained_weights for a local file"
                )


@dataclass(frozen=True)
class TrainConfig(_FromDict):
    # Passes over the labeled set. 0 = auto (see trainer.auto_epochs):
    # epochs = clamp(ceil(auto_target_steps / batches_per_epoch), auto_min_epochs, auto_max_epochs),
    # i.e. roughly a fixed number of optimizer steps, so large sets still see every image at least
    # auto_min_epochs times. 2,000 steps: with the strong augmentation, 600 left a non-digit domain
    # near chance (model/README.md, 'Training (defaults and why)').
    epochs: int = 0
    auto_target_steps: int = 2000
    auto_min_epochs: int = 10
    auto_max_epochs: int = 2000
    # Images per optimizer step (the paper: 128; 64 keeps tiny sets at several steps per epoch).
    batch_size: int = 64
    # "adamw" (the few-label default) or "sgd" (momentum, the paper's: lr 0.1 with batch 128,
    # weight_decay 5e-4, lr_schedule "step"; it trained to chance on 20-200 non-digit labels).
    optimizer: str = "adamw"
    # Peak learning rate (AdamW: ~1e-3..3e-3; SGD: 0.05..0.1).
    lr: float = 2e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.05  # decoupled (AdamW); 5e-4 for SGD
    # "cosine": the learning rate decays from lr to 0 along a cosine over all steps (after a
    # warm-up of warmup_fraction of them): steadier than a step on tiny sets. "step": the paper's,
    # lr is multiplied by lr_gamma once lr_milestone_fraction of the epochs is done.
    lr_schedule: str = "cosine"
    warmup_fraction: float = 0.05
    # The learning rate is multiplied by lr_gamma once this fraction of epochs is done
    # (paper: epoch 160 of 200 = 0.8).
    lr_milestone_fraction: float = 0.8
    lr_gamma: float = 0.1
    # Loss prediction objective: "v1" pairwise margin ranking (paper), "v2" pairwise ranking BCE
    # (TA-VAAL), "mse" regression on the per-sample loss (worse in the paper; kept as an option).
    lpm_loss: str = "v1"
    lpm_weight: float = 1.0  # lambda: weight of the LPM loss in the joint objective
    margin: float = 1.0  # xi: margin of the v1 ranking hinge
    # After this fraction of epochs the features fed to the LPM are detached, so the LPM stops
    # shaping the backbone (paper: epoch 120 of 200 = 0.6). 1.0 = never detach.
    detach_fraction: float = 0.6
    seed: int = 0
    # "auto" -> "cuda" when available, else "cpu"; or any torch device string.
    device: str = "auto"
    # Weight the classification loss by inverse class frequency (clipped to max_class_weight) so
    # rare classes are not ignored. The LPM's target stays the unweighted per-sample loss.
    class_balance: bool = True
    max_class_weight: float = 10.0
    # Mixed precision and channels_last memory format; only applied on CUDA.
    amp: bool = True
    # Fraction of the labeled images held out (stratification-free random split) to report
    # val_acc and lpm_spearman in the metrics; 0 trains on everything. Skipped when fewer than
    # 2 images would remain for training.
    val_fraction: float = 0.0
    # Exponential moving average of the weights (and BatchNorm statistics), updated after every
    # optimizer step with this decay; the averaged weights are the trained model. 0 = off.
    ema_decay: float = 0.0
    # Learning from the unlabeled pool while training (model/consistency.py, FixMatch-style):
    # the weight of the consistency loss next to the labeled loss; 0 = off. Used only when the
    # caller passes unlabeled images to trainer.train.
    unlabeled_weight: float = 0.0
    # Unlabeled pool images drawn per optimizer step (each is seen as a weak and a strong view).
    unlabeled_batch_size: int = 64
    # Max softmax a weak view's prediction needs to become a pseudo-label, in [0, 1].
    pseudo_label_threshold: float = 0.95

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0 (0 = auto), got {self.epochs}")
        if self.auto_target_steps < 1 or self.auto_min_epochs < 1:
            raise ValueError("auto_target_steps and auto_min_epochs must be >= 1")
        if self.auto_max_epochs < self.auto_min_epochs:
            raise ValueError("auto_max_epochs must be >= auto_min_epochs")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (ranking pairs), got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.lpm_loss not in LPM_LOSSES:
            raise ValueError(f"lpm_loss must be one of {LPM_LOSSES}, got {self.lpm_loss!r}")
        if self.lpm_weight < 0 or self.margin < 0 or self.weight_decay < 0:
            raise ValueError("lpm_weight, margin and weight_decay must be >= 0")
        for name in ("lr_milestone_fraction", "detach_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.unlabeled_weight < 0:
            raise ValueError(f"unlabeled_weight must be >= 0, got {self.unlabeled_weight}")
        if self.unlabeled_batch_size < 1:
            raise ValueError(f"unlabeled_batch_size must be >= 1 image, got {self.unlabeled_batch_size}")
        if not 0.0 <= self.pseudo_label_threshold <= 1.0:
            raise ValueError(f"pseudo_label_threshold must be in [0, 1], got {self.pseudo_label_threshold}")
        if self.max_class_weight < 1.0:
            raise ValueError(f"max_class_weight must be >= 1, got {self.max_class_weight}")
