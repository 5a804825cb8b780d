"""Training mode "frozen": a fixed backbone, and a light head + Loss Prediction Module trained on
cached pooled features.

With few labels and a good backbone (pretrained, or self-supervised on the project's images), a
light head on frozen features beats fine-tuning, and it is cheap: the backbone runs once per image
(``extract_pooled``; the rows can be kept in a ``model.feature_cache.FeatureCache``) and a round
of training is a few hundred AdamW steps on small matrices (``train_frozen``).

The result stays an ordinary ``LossLearningNet``: only ``model.head`` and ``model.lpm`` change,
so checkpoints, ``model.score`` and the strategies work unchanged. What the LPM reads is what it
reads in the full network: the global average pool of each tap, exactly as
``LossPredictionModule.pool`` computes it (the rows, their extraction and scoring: model/pooled.py,
whose names this module re-exports). The objective is the full trainer's (model/objective.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.config import ModelConfig, TrainConfig
from model.metrics import spearman
from model.networks import LossLearningNet
from model.objective import RunningMeans, joint_objective, optimizer_step, sample_weights_of
from model.pooled import SCORE_BATCH_ROWS as SCORE_BATCH_ROWS  # re-exported
from model.pooled import PooledFeatures as PooledFeatures  # re-exported
from model.pooled import _check_fits, _model_device, _to_tensors
from model.pooled import extract_pooled as extract_pooled  # re-exported
from model.pooled import lpm_from_pooled as lpm_from_pooled  # re-exported
from model.pooled import score_pooled as score_pooled  # re-exported
from model.runtime import resolve_device
from model.trainer import TrainResult, batch_index_lists, split_validation

MODE = "frozen"
# Intra-op threads while training on CPU: the matrices are tiny (a mini-batch of rows times the
# feature widths), where thread synchronisation costs more than it brings, and on a busy machine
# far more (model/README.md, 'Measured (2 CPU cores)'). Restored afterwards.
TRAIN_CPU_THREADS = 1
# Floor of a feature column's std, as a fraction of the median column std of its block (see
# _Standardizer): near-constant columns are not amplified.
STD_FLOOR_OF_MEDIAN = 0.1
# How often (in optimizer steps) ``progress`` is called; it is also called after the last step.
PROGRESS_EVERY_STEPS = 50


@dataclass(frozen=True)
class FrozenConfig:
    """Optimiser settings of frozen-backbone training (the head and the LPM only).

    They are separate from TrainConfig, whose lr (0.05, SGD) is tuned for full training. The
    batch size, objective (lpm_loss, lpm_weight, margin), class balance, val_fraction, seed and
    device come from the TrainConfig passed next to it.
    """

    # Optimizer steps (AdamW). 300 steps on a linear head + LPM take seconds on one CPU thread,
    # whatever the number of rows (model/README.md, 'Training modes'); one step is full-batch
    # when the rows fit in batch_size.
    steps: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-4
    # Cosine decay of the learning rate from lr to 0 over the steps (no warm-up).
    cosine: bool = True
    # Re-initialise head and LPM (seeded by train_config.seed) before training: every round starts
    # from scratch (as the paper retrains per cycle) and the result depends on the seed only, not
    # on the head the passed model happened to carry. False continues from the current weights.
    reinit: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def _trainable_modules(model: LossLearningNet) -> list[torch.nn.Module]:
    return [model.head, model.lpm]


def _reinit(model: LossLearningNet) -> None:
    for module in _trainable_modules(model):
        for child in module.modules():
            if isinstance(child, torch.nn.Linear):
                child.reset_parameters()


def _validate(model, features, targets, labels, augmented) -> None:
    if len(features) == 0:
        raise ValueError("train_frozen needs at least one labeled row")
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} targets")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError("labels must be non-empty and unique")
    if model.num_classes != len(labels):
        raise ValueError(f"the model has {model.num_classes} classes but {len(labels)} labels were given")
    bad = [t for t in targets if not 0 <= int(t) < len(labels)]
    if bad:
        raise ValueError(f"targets must index into labels (0..{len(labels) - 1}), got {bad[:5]}")
    _check_fits(model, features)
    for view in augmented or []:
        _check_fits(model, view)
        if len(view) != len(features):
            raise ValueError(f"an augmented view has {len(view)} rows, the labeled features {len(features)}")


@contextlib.contextmanager
def _cpu_threads(device: torch.device, threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    if device.type == "cpu" and threads < previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def train_frozen(
    model: LossLearningNet,
    features: PooledFeatures,
    targets: Sequence[int],
    labels: list[str],
    model_config: ModelConfig,
    train_config: TrainConfig,
    progress: Callable[[dict], None] | None = None,
    augmented: list[PooledFeatures] | None = None,
    frozen_config: FrozenConfig | None = None,
) -> TrainResult:
    """Train only ``model.head`` (after ``model.dropout``) and ``model.lpm`` on pooled features.

    Objective per step, as the full trainer's: class-balanced CE + lpm_weight ·
    lpm_loss(predicted, per-sample CE detached, margin). AdamW over ``frozen_config.steps`` steps
    of mini-batches of train_config.batch_size rows (full batch when they fit). ``augmented``:
    pooled features of extra augmented views of the same labeled images (same order, so same
    targets), used as additional training rows. The backbone is not run and its parameters and
    buffers are left bit-identical. Deterministic on CPU for train_config.seed (the global RNG
    state is restored). ``progress(dict)`` is called every PROGRESS_EVERY_STEPS steps and after
    the last; raising from it cancels training.
    """
    frozen_config = frozen_config or FrozenConfig()
    _validate(model, features, targets, labels, augmented)
    device = resolve_device(train_config.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _cpu_threads(device, TRAIN_CPU_THREADS):
        torch.manual_seed(train_config.seed)
        return _train_frozen(
            model,
            features,
            targets,
            labels,
            model_config,
            train_config,
            progress,
            augmented or [],
            frozen_config,
            device,
        )


class _Standardizer:
    """Per-column mean / std of one input block of a Linear layer, folded into it after training.

    Training runs on z = (x - mean) / std, so the optimiser sees unit-scale inputs whatever the
    backbone's feature scale (a random small_cnn's pooled features are ~1e-3, a pretrained
    ResNet's ~1); afterwards W <- W / std, b <- b - (W / std) @ mean makes the layer compute
    the same function of the raw x, so the network stays an ordinary LossLearningNet. The std
    is floored at STD_FLOOR_OF_MEDIAN x the block's median column std: a column that hardly
    varies among the labeled rows is not blown up (it may vary more in the pool).
    """

    def __init__(self, x: torch.Tensor) -> None:
        x = x.double()
        self.mean = x.mean(0)
        std = x.std(0, unbiased=False) if len(x) > 1 else torch.zeros_like(self.mean)
        positive = std[std > 0]
        floor = STD_FLOOR_OF_MEDIAN * float(positive.median()) if len(positive) else 1.0
        self.std = std.clamp(min=floor)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean.to(x)) / self.std.to(x)).to(x.dtype)

    @torch.no_grad()
    def to_standardized(self, linear: torch.nn.Linear) -> None:
        """(W, b) on raw x -> the same function of z: W * std, b + W @ mean."""
        weight = linear.weight.double()
        linear.bias.copy_((linear.bias.double() + weight @ self.mean.to(weight)).to(linear.bias.dtype))
        linear.weight.copy_((weight * self.std.to(weight)).to(linear.weight.dtype))

    @torch.no_grad()
    def to_raw(self, linear: torch.nn.Linear) -> None:
        """(W, b) on z -> the same function of raw x: W / std, b - (W / std) @ mean."""
        weight = linear.weight.double() / self.std.to(linear.weight.device)
        linear.bias.copy_((linear.bias.double() - weight @ self.mean.to(weight)).to(linear.bias.dtype))
        linear.weight.copy_(weight.to(linear.weight.dtype))


def _first_linear(branch: torch.nn.Module) -> torch.nn.Linear:
    """The Linear layer an LPM branch opens with (FC -> ReLU)."""
    layer = next(iter(branch.children()))
    assert isinstance(layer, torch.nn.Linear)
    return layer


class _FrozenRun:
    """One run of frozen training: the training rows of every view, standardised (``_Standardizer``
    per input block of a Linear layer), and AdamW over the head and the LPM."""

    def __init__(
        self,
        model: LossLearningNet,
        rows: PooledFeatures,
        row_targets: torch.Tensor,
        weights: torch.Tensor,
        cfg: TrainConfig,
        frozen_config: FrozenConfig,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.model, self.row_targets, self.weights, self.cfg = model, row_targets, weights, cfg
        self.frozen_config, self.device, self.generator = frozen_config, device, generator
        self.n_rows = len(rows)
        raw_taps, self.embedding = _to_tensors(rows, device)
        self.embedding_scale = _Standardizer(self.embedding)
        tap_scales = [_Standardizer(tap) for tap in raw_taps]
        self.taps = [scale.apply(tap) for scale, tap in zip(tap_scales, raw_taps, strict=False)]
        self.layers = [(model.head, self.embedding_scale)] + [
            (_first_linear(branch), scale)
            for branch, scale in zip(model.lpm.branches, tap_scales, strict=False)
        ]
        if not frozen_config.reinit:
            for linear, scale in self.layers:
                scale.to_standardized(linear)
        params = [p for module in _trainable_modules(model) for p in module.parameters()]
        self.optimizer = torch.optim.AdamW(
            params, lr=frozen_config.lr, weight_decay=frozen_config.weight_decay, fused=True
        )
        self.batches_per_pass = len(batch_index_lists(self.n_rows, cfg.batch_size, torch.arange(self.n_rows)))
        self.step = self.passes = 0

    def _lr(self) -> float:
        lr = self.frozen_config.lr
        if self.frozen_config.cosine:
            lr *= 0.5 * (1.0 + math.cos(math.pi * self.step / self.frozen_config.steps))
        return lr

    def _objective(self, batch: torch.Tensor, y: torch.Tensor):
        """(training logits, joint objective) of the rows ``batch``."""
        model = self.model
        # Dropout acts on the raw embedding, as in the network (and in MC-dropout scoring).
        logits = model.head(self.embedding_scale.apply(model.dropout(self.embedding[batch]))).float()
        predicted = lpm_from_pooled(model.lpm, [tap[batch] for tap in self.taps])
        # The module's target is the loss without dropout, as scoring computes it.
        target = None
        if model.dropout.p > 0:
            with torch.no_grad():
                clean = model.head(self.embedding_scale.apply(self.embedding[batch])).float()
                target = F.cross_entropy(clean, y, reduction="none")
        return logits, joint_objective(logits, predicted, y, self.weights, self.cfg, target)

    def train(self, progress: Callable[[dict], None] | None, started: float) -> None:
        """All ``frozen_config.steps`` steps; ``progress`` every PROGRESS_EVERY_STEPS and after the last."""
        steps = self.frozen_config.steps
        sums = RunningMeans()
        self.model.dropout.train()  # the backbone is never run; only the dropout before the head trains
        while self.step < steps:
            self.passes += 1
            permutation = torch.randperm(self.n_rows, generator=self.generator)
            for batch in batch_index_lists(self.n_rows, self.cfg.batch_size, permutation):
                if self.step >= steps:
                    break
                lr = self._lr()
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batch = batch.to(self.device)
                y = self.row_targets[batch]
                logits, objective = self._objective(batch, y)
                optimizer_step(self.optimizer, objective, f"step {self.step + 1}", lr)
                self.step += 1
                sums.add(objective, logits, y)
                if progress is not None and (self.step % PROGRESS_EVERY_STEPS == 0 or self.step == steps):
                    progress(
                        {
                            "step": self.step,
                            "steps": steps,
                            **sums.means(),
                            "lr": lr,
                            "seconds": time.monotonic() - started,
                            "mode": MODE,
                        }
                    )
                    sums = RunningMeans()

    def fold_back(self) -> None:
        """Back to raw-input weights (the network computes the same function of the raw rows)."""
        for linear, scale in self.layers:
            scale.to_raw(linear)
        self.model.eval()


def _train_frozen(
    model, features, targets, labels, model_config, train_config, progress, augmented, frozen_config, device
) -> TrainResult:
    started = time.monotonic()
    generator = torch.Generator().manual_seed(train_config.seed)
    all_targets = torch.as_tensor([int(t) for t in targets], dtype=torch.long)
    train_index, val_index = split_validation(len(features), train_config.val_fraction, generator)
    train_index = train_index.sort().values  # keeps the rows in their given order
    views = [features, *augmented]
    rows = PooledFeatures.concatenate([view.subset(train_index) for view in views])
    row_targets = all_targets[train_index].repeat(len(views)).to(device)
    model.to(device)
    if frozen_config.reinit:
        _reinit(model)  # a fresh init is already one for unit-scale (standardised) inputs
    model.eval()
    weights = sample_weights_of(all_targets[train_index], len(labels), train_config).to(device)
    run = _FrozenRun(model, rows, row_targets, weights, train_config, frozen_config, device, generator)
    try:
        run.train(progress, started)
    finally:
        # Always back to raw-input weights, also when cancelled: the model stays consistent.
        run.fold_back()
    metrics = _fit_metrics(
        model, features.subset(train_index), all_targets[train_index], weights, train_config
    )
    metrics.update(
        epochs=run.passes,
        steps=run.step,
        n_train=len(train_index),
        n_rows=len(rows),
        n_val=len(val_index),
        augmented_views=len(augmented),
        batches_per_epoch=run.batches_per_pass,
        device=str(device),
        mode=MODE,
    )
    if len(val_index):
        metrics.update(_evaluate(model, features.subset(val_index), all_targets[val_index]))
    metrics["seconds"] = time.monotonic() - started
    return TrainResult(model, list(labels), model_config, train_config, metrics)


def _fit_metrics(
    model: LossLearningNet,
    features: PooledFeatures,
    targets: torch.Tensor,
    weights: torch.Tensor,
    train_config: TrainConfig,
) -> dict:
    """The objective in eval mode on the labeled rows themselves (not the augmented views),
    through the folded network exactly as it will score."""
    taps, embedding = _to_tensors(features, _model_device(model))
    y = targets.to(_model_device(model))
    with torch.inference_mode():
        logits = model.head(embedding).float()
        objective = joint_objective(logits, lpm_from_pooled(model.lpm, taps), y, weights, train_config)
    return {
        "train_loss": float(objective.loss),
        "train_ce": float(objective.per_sample_ce.mean()),
        "train_acc": float((logits.argmax(1) == y).float().mean()),
        "lpm_loss": float(objective.ranking),
    }


def _evaluate(model: LossLearningNet, features: PooledFeatures, targets: torch.Tensor) -> dict:
    """val_acc, val_loss and lpm_spearman on held-out rows, as the full trainer reports them."""
    model.eval()
    device = _model_device(model)
    with torch.inference_mode():
        taps, embedding = _to_tensors(features, device)
        logits = model.head(embedding).float()
        y = targets.to(device)
        ce = F.cross_entropy(logits, y, reduction="none").cpu().numpy()
        predicted = lpm_from_pooled(model.lpm, taps).float().cpu().numpy()
        accuracy = float((logits.argmax(1) == y).float().mean())
    value = spearman(predicted, ce)
    return {
        "val_acc": accuracy,
        "val_loss": float(ce.mean()),
        # None when undefined (e.g. all held-out losses equal), so metrics stay JSON-clean.
        "lpm_spearman": value if math.isfinite(value) else None,
    }
