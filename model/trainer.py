"""Joint training of the classifier and its Loss Prediction Module.

Objective per mini-batch: L = CE_weighted(logits, y) + lpm_weight * L_lpm(predicted_loss, CE),
where CE is the unweighted per-sample cross-entropy, detached (the LPM learns to predict it, it
does not change it). The classifier's CE sees dropout (regularisation); the LPM's target CE is
the head's output WITHOUT dropout, the loss inference actually has (``lpm_target``). After
``detach_fraction`` of the epochs the LPM's input features are detached so only the classifier
shapes the backbone (Yoo & Kweon 2019).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from model.config import ModelConfig, TrainConfig
from model.data import images_to_uint8, train_batch
from model.losses import lpm_loss
from model.metrics import spearman
from model.networks import LossLearningNet, build_network
from model.runtime import amp_dtype, autocast, memory_format, resolve_device
from model.scoring import forward_uint8


class TrainingError(RuntimeError):
    """Training could not produce a usable model (e.g. the loss became NaN / infinite)."""


@dataclass
class TrainResult:
    model: LossLearningNet
    labels: list[str]
    model_config: ModelConfig
    train_config: TrainConfig
    metrics: dict = field(default_factory=dict)


def auto_epochs(n_train: int, cfg: TrainConfig) -> int:
    """Epochs for ``n_train`` images: cfg.epochs if set, else about cfg.auto_target_steps
    optimizer steps, clamped to [auto_min_epochs, auto_max_epochs].

    Examples with the defaults (600 steps, 10..100 epochs, batch 64): 30 images -> 100 epochs
    (100 steps, seconds on a CPU); 1,000 images -> 38 epochs; 50,000 images -> 10 epochs.
    """
    if cfg.epochs > 0:
        return cfg.epochs
    batches = len(batch_index_lists(max(n_train, 1), cfg.batch_size, torch.arange(max(n_train, 1))))
    epochs = math.ceil(cfg.auto_target_steps / batches)
    return int(min(max(epochs, cfg.auto_min_epochs), cfg.auto_max_epochs))


def lr_at(cfg: TrainConfig, step_schedule_lr: float, step: int, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total_steps``.

    "step" schedule: ``step_schedule_lr`` (cfg.lr, times lr_gamma after the milestone epoch).
    "cosine": linear warm-up over warmup_fraction of the steps, then cosine decay to 0.
    """
    if cfg.lr_schedule == "step":
        return step_schedule_lr
    warmup = int(cfg.warmup_fraction * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(total_steps - warmup, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def batch_index_lists(n: int, batch_size: int, permutation: torch.Tensor) -> list[torch.Tensor]:
    """Split a permutation of range(n) into mini-batches.

    A trailing batch of one joins the previous batch (BatchNorm cannot train on one sample and
    it would have no ranking pair); a set of one image is repeated to form a pair (its two
    augmented views still give the classifier a usable step).
    """
    if n == 1:
        return [torch.zeros(2, dtype=torch.long)]
    batches = list(torch.split(permutation, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def class_weights(targets: torch.Tensor, num_classes: int, max_weight: float) -> torch.Tensor:
    """Inverse class frequency, normalised so a balanced set gets weight 1 everywhere and clipped
    to [1/max_weight, max_weight] so one lone example cannot dominate. Absent classes get 1."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    present = counts > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.clamp(1.0 / max_weight, max_weight).float()


def lpm_target(model: LossLearningNet, embedding: torch.Tensor, logits: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
    """The per-sample loss the LPM learns to predict: cross-entropy of the head WITHOUT dropout,
    as the model computes it at inference (scoring runs in eval mode), detached. ``logits`` (the
    training forward's, with dropout) are reused when dropout is off: they are the same then.
    MC-dropout scoring (bald) keeps sampling the dropout; only this target leaves it out."""
    with torch.no_grad():
        if model.dropout.p > 0 and model.dropout.training:
            logits = model.head(embedding.float())
        return F.cross_entropy(logits.float(), y, reduction="none")


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers (BatchNorm
    running statistics included); integer buffers (BatchNorm's step count) follow the model.
    With few labels the last weights of a run depend on its last mini-batches; their average over
    the final steps does not, and generalises more steadily."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            average = self.state[name]
            if average.is_floating_point():
                average.mul_(self.decay).add_(value.detach(), alpha=1.0 - self.decay)
            else:
                average.copy_(value)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.state)


def split_validation(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, held-out) index split; no held-out rows when fewer than 2 would remain."""
    permutation = torch.randperm(n, generator=generator)
    n_val = int(math.floor(n * fraction))
    if n_val < 1 or n - n_val < 2:
        return permutation, permutation[:0]
    return permutation[n_val:], permutation[:n_val]


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _validate_inputs(images: Sequence[Image.Image], targets: Sequence[int], labels: list[str]) -> None:
    if len(images) == 0:
        raise ValueError("train needs at least one labeled image")
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    if len(labels) == 0:
        raise ValueError("labels must name at least one class")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    bad = [t for t in targets if not 0 <= int(t) < len(labels)]
    if bad:
        raise ValueError(f"targets must be class indices in [0, {len(labels)}), got e.g. {bad[0]}")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate(
    model: LossLearningNet,
    data_uint8: torch.Tensor,
    targets: torch.Tensor,
    model_config: ModelConfig,
    device: torch.device,
    batch_size: int = 256,
) -> dict:
    """Accuracy, mean CE and LPM ranking quality (Spearman of predicted vs true loss)."""
    model.eval()
    correct, ce_all, predicted_all = 0, [], []
    with torch.inference_mode():
        for start in range(0, len(data_uint8), batch_size):
            out = forward_uint8(model, data_uint8[start : start + batch_size], model_config, device)
            y = targets[start : start + batch_size].to(device)
            correct += int((out.logits.argmax(1) == y).sum())
            ce_all.append(F.cross_entropy(out.logits, y, reduction="none").cpu())
            predicted_all.append(out.predicted_loss.cpu())
    ce = torch.cat(ce_all).numpy()
    predicted = torch.cat(predicted_all).numpy()
    return {
        "val_acc": correct / max(len(data_uint8), 1),
        "val_loss": float(ce.mean()),
        # None when undefined (e.g. all held-out losses equal), so metrics stay JSON-clean.
        "lpm_spearman": _finite_or_none(spearman(predicted, ce)),
    }


def train(
    images: list[Image.Image],
    targets: Sequence[int],
    labels: list[str],
    model_config: ModelConfig,
    train_config: TrainConfig,
    progress: Callable[[dict], None] | None = None,
    initial_state: dict | None = None,
) -> TrainResult:
    """Train a fresh LossLearningNet on the labeled images (targets index into ``labels``).

    ``initial_state``: a state_dict of the same network (model_config and number of labels) to
    start from instead of a fresh initialisation (warm start, e.g. the previous round's model).

    ``progress`` is called after every epoch with a dict (epoch, epochs, step, train_loss,
    train_ce, train_acc, lpm_loss, lr, lpm_input_detached, seconds); an exception raised from it aborts training (cancellation).
    Deterministic on CPU for a given seed; the global torch RNG state is left untouched.
    """
    _validate_inputs(images, targets, labels)
    device = resolve_device(train_config.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(train_config.seed)
        return _train(images, targets, labels, model_config, train_config, progress, device,
                      initial_state)


def _train(images, targets, labels, model_config, train_config, progress, device,
           initial_state=None) -> TrainResult:
    started = time.monotonic()
    generator = torch.Generator().manual_seed(train_config.seed)
    all_targets = torch.as_tensor([int(t) for t in targets], dtype=torch.long)
    train_index, val_index = split_validation(len(images), train_config.val_fraction, generator)

    model = build_network(model_config, num_classes=len(labels))
    if initial_state is not None:
        model.load_state_dict(initial_state)
    fmt = memory_format(device)
    model.to(device).to(memory_format=fmt)

    data = images_to_uint8(images, model_config)
    train_data, train_targets = data[train_index].to(device), all_targets[train_index].to(device)
    n_train = len(train_index)
    epochs = auto_epochs(n_train, train_config)
    milestone_epoch = round(train_config.lr_milestone_fraction * epochs)
    detach_epoch = round(train_config.detach_fraction * epochs)
    weights = (
        class_weights(all_targets[train_index], len(labels), train_config.max_class_weight)
        if train_config.class_balance
        else torch.ones(len(labels))
    ).to(device)

    optimizer = _optimizer(model, train_config)
    total_steps = epochs * len(batch_index_lists(n_train, train_config.batch_size, torch.arange(n_train)))
    dtype = amp_dtype(device, train_config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    average = WeightAverage(model, train_config.ema_decay) if train_config.ema_decay > 0 else None
    step, history = 0, {}
    for epoch in range(epochs):
        model.train()
        model.detach_lpm_input = epoch >= detach_epoch
        lr = train_config.lr * (train_config.lr_gamma if epoch >= milestone_epoch else 1.0)
        sums = {"loss": 0.0, "ce": 0.0, "lpm": 0.0, "correct": 0, "seen": 0}
        for batch in batch_index_lists(n_train, train_config.batch_size, torch.randperm(n_train, generator=generator)):
            batch = batch.to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(train_config, lr, step, total_steps)
            x = train_batch(train_data[batch], model_config, generator).contiguous(memory_format=fmt)
            y = train_targets[batch]
            with autocast(device, dtype):
                out = model(x)
            per_sample_ce = F.cross_entropy(out.logits.float(), y, reduction="none")
            sample_weights = weights[y]
            target_loss = (sample_weights * per_sample_ce).sum() / sample_weights.sum()
            ranking_loss = lpm_loss(
                train_config.lpm_loss, out.predicted_loss.float(), lpm_target(model, out.embedding, out.logits, y),
                train_config.margin,
            )
            loss = target_loss + train_config.lpm_weight * ranking_loss
            if not torch.isfinite(loss.detach()):
                raise TrainingError(
                    f"loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}; "
                    f"try a lower lr (now {lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update(model)
            step += 1
            count = len(batch)
            sums["loss"] += float(loss.detach()) * count
            sums["ce"] += float(per_sample_ce.detach().mean()) * count
            sums["lpm"] += float(ranking_loss.detach()) * count
            sums["correct"] += int((out.logits.argmax(1) == y).sum())
            sums["seen"] += count
        history = {
            "epoch": epoch + 1,
            "epochs": epochs,
            "step": step,
            "train_loss": sums["loss"] / sums["seen"],
            "train_ce": sums["ce"] / sums["seen"],
            "lpm_loss": sums["lpm"] / sums["seen"],
            "train_acc": sums["correct"] / sums["seen"],
            "lr": optimizer.param_groups[0]["lr"],
            "lpm_input_detached": model.detach_lpm_input,
            "seconds": time.monotonic() - started,
        }
        if progress is not None:
            progress(dict(history))

    if average is not None:
        average.copy_to(model)
    model.eval()
    model.detach_lpm_input = False
    metrics = {
        "train_loss": history["train_loss"],
        "train_ce": history["train_ce"],
        "train_acc": history["train_acc"],
        "lpm_loss": history["lpm_loss"],
        "epochs": epochs,
        "steps": step,
        "n_train": n_train,
        "n_val": len(val_index),
        "device": str(device),
    }
    if len(val_index):
        val_data = data[val_index]
        metrics.update(evaluate(model, val_data, all_targets[val_index], model_config, device))
    metrics["seconds"] = time.monotonic() - started
    return TrainResult(model, list(labels), model_config, train_config, metrics)
