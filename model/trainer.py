"""Joint training of the classifier and its Loss Prediction Module.

Objective per mini-batch (model/objective.py, shared with the frozen mode): L = CE_weighted(logits,
y) + lpm_weight * L_lpm(predicted_loss, CE), where CE is the unweighted per-sample cross-entropy,
detached (the LPM learns to predict it, it does not change it). The classifier's CE sees dropout
(regularisation); the LPM's target CE is the head's output WITHOUT dropout, the loss inference
actually has (``lpm_target``). After ``detach_fraction`` of the epochs the LPM's input features
are detached so only the classifier shapes the backbone (Yoo & Kweon 2019).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model import consistency
from model.config import ModelConfig, TrainConfig
from model.data import images_to_uint8, train_batch
from model.metrics import spearman
from model.networks import LossLearningNet, NetOutput, build_network
from model.objective import Objective, RunningMeans, joint_objective, optimizer_step, sample_weights_of
from model.objective import TrainingError as TrainingError  # re-exported: callers catch it here
from model.objective import class_weights as class_weights  # re-exported
from model.runtime import amp_dtype, autocast, memory_format, resolve_device
from model.scoring import forward_uint8


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


def lpm_target(
    model: LossLearningNet, embedding: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
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


def split_validation(
    n: int, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
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
    unlabeled: Sequence[Image.Image | np.ndarray] | None = None,
) -> TrainResult:
    """Train a fresh LossLearningNet on the labeled images (targets index into ``labels``).

    ``initial_state``: a state_dict of the same network (model_config and number of labels) to
    start from instead of a fresh initialisation (warm start, e.g. the previous round's model).
    ``unlabeled``: pool images (PIL, or ready ``model_ready_array``s) the classifier also learns
    from by consistency (model/consistency.py) when train_config.unlabeled_weight > 0.

    ``progress`` is called after every epoch with a dict (epoch, epochs, step, train_loss,
    train_ce, train_acc, lpm_loss, lr, lpm_input_detached, seconds); an exception raised from it aborts training (cancellation).
    Deterministic on CPU for a given seed; the global torch RNG state is left untouched.
    """
    _validate_inputs(images, targets, labels)
    device = resolve_device(train_config.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(train_config.seed)
        return _train(
            images, targets, labels, model_config, train_config, progress, device, initial_state, unlabeled
        )


class _FullRun:
    """The state of one full training run between its epochs: network, optimizer, schedule."""

    def __init__(self, model, model_config, cfg, device, generator, data, targets, weights) -> None:
        self.model, self.model_config, self.cfg, self.device = model, model_config, cfg, device
        self.generator, self.data, self.targets, self.weights = generator, data, targets, weights
        self.n_train = len(data)
        self.epochs = auto_epochs(self.n_train, cfg)
        self.milestone_epoch = round(cfg.lr_milestone_fraction * self.epochs)
        self.detach_epoch = round(cfg.detach_fraction * self.epochs)
        self.optimizer = _optimizer(model, cfg)
        batches = len(batch_index_lists(self.n_train, cfg.batch_size, torch.arange(self.n_train)))
        self.total_steps = self.epochs * batches
        self.dtype = amp_dtype(device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.fmt = memory_format(device)
        self.average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step = 0
        # uint8 unlabeled pool images on the device (consistency on), or None
        self.unlabeled: torch.Tensor | None = None
        self.pseudo_labeled = self.unlabeled_seen = 0

    def forward(self, x: torch.Tensor) -> tuple[NetOutput, torch.Tensor | None]:
        """The network on the labeled batch ``x`` and, with consistency on, the consistency loss
        of an unlabeled batch drawn from the pool; the strong views share the labeled batch's
        forward pass (and its BatchNorm statistics), as in FixMatch."""
        model, cfg = self.model, self.cfg
        if self.unlabeled is None:
            with autocast(self.device, self.dtype):
                return model(x), None
        rows = torch.randint(0, len(self.unlabeled), (cfg.unlabeled_batch_size,), generator=self.generator)
        batch = self.unlabeled[rows.to(self.device)]
        weak = consistency.weak_view(batch, self.model_config, self.generator).contiguous(
            memory_format=self.fmt
        )
        strong = consistency.strong_view(batch, self.model_config, self.generator).contiguous(
            memory_format=self.fmt
        )
        with torch.no_grad(), autocast(self.device, self.dtype):
            # the head without dropout, as at inference: the pseudo-label is the model's answer
            pseudo = consistency.pseudo_labels(model.head(model(weak).embedding), cfg.pseudo_label_threshold)
        with autocast(self.device, self.dtype):
            out = model(torch.cat([x, strong]))
        n = len(x)
        self.pseudo_labeled += int(pseudo.mask.sum())
        self.unlabeled_seen += len(rows)
        return (
            NetOutput(out.logits[:n], out.predicted_loss[:n], out.embedding[:n]),
            consistency.consistency_loss(out.logits[n:], pseudo),
        )

    def epoch(self, epoch: int) -> RunningMeans:
        """Train one epoch (0-based); the running means of its objective."""
        model, cfg = self.model, self.cfg
        model.train()
        model.detach_lpm_input = epoch >= self.detach_epoch
        lr = cfg.lr * (cfg.lr_gamma if epoch >= self.milestone_epoch else 1.0)
        sums = RunningMeans()
        permutation = torch.randperm(self.n_train, generator=self.generator)
        for batch in batch_index_lists(self.n_train, cfg.batch_size, permutation):
            batch = batch.to(self.device)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(cfg, lr, self.step, self.total_steps)
            x = train_batch(self.data[batch], self.model_config, self.generator).contiguous(
                memory_format=self.fmt
            )
            y = self.targets[batch]
            out, unlabeled_loss = self.forward(x)
            objective = joint_objective(
                out.logits.float(),
                out.predicted_loss,
                y,
                self.weights,
                cfg,
                lpm_target(model, out.embedding, out.logits, y),
            )
            if unlabeled_loss is not None:
                objective = with_unlabeled_loss(objective, unlabeled_loss, cfg.unlabeled_weight)
            optimizer_step(
                self.optimizer, objective, f"epoch {epoch + 1}, step {self.step + 1}", lr, self.scaler
            )
            if self.average is not None:
                self.average.update(model)
            self.step += 1
            sums.add(objective, out.logits, y)
        return sums

    def finish(self) -> None:
        """The averaged weights (with ema_decay), eval mode, the LPM input attached again."""
        if self.average is not None:
            self.average.copy_to(self.model)
        self.model.eval()
        self.model.detach_lpm_input = False


def _network(
    model_config: ModelConfig, num_classes: int, initial_state: dict | None, device: torch.device
) -> LossLearningNet:
    model = build_network(model_config, num_classes=num_classes)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    model.to(device).to(memory_format=memory_format(device))
    return model


def with_unlabeled_loss(objective: Objective, unlabeled_loss: torch.Tensor, weight: float) -> Objective:
    """``objective`` with ``weight`` * the consistency loss added to the loss it minimises."""
    return dataclasses.replace(objective, loss=objective.loss + weight * unlabeled_loss)


def _train(
    images, targets, labels, model_config, train_config, progress, device, initial_state=None, unlabeled=None
) -> TrainResult:
    started = time.monotonic()
    generator = torch.Generator().manual_seed(train_config.seed)
    all_targets = torch.as_tensor([int(t) for t in targets], dtype=torch.long)
    train_index, val_index = split_validation(len(images), train_config.val_fraction, generator)
    model = _network(model_config, len(labels), initial_state, device)
    data = images_to_uint8(images, model_config)
    weights = sample_weights_of(all_targets[train_index], len(labels), train_config).to(device)
    run = _FullRun(
        model,
        model_config,
        train_config,
        device,
        generator,
        data[train_index].to(device),
        all_targets[train_index].to(device),
        weights,
    )
    if unlabeled is not None and len(unlabeled) and train_config.unlabeled_weight > 0:
        run.unlabeled = images_to_uint8(unlabeled, model_config).to(device)
    history: dict = {}
    for epoch in range(run.epochs):
        sums = run.epoch(epoch)
        history = {
            "epoch": epoch + 1,
            "epochs": run.epochs,
            "step": run.step,
            **sums.means(),
            "lr": run.optimizer.param_groups[0]["lr"],
            "lpm_input_detached": model.detach_lpm_input,
            "seconds": time.monotonic() - started,
        }
        if run.unlabeled is not None:
            # share of the unlabeled views drawn so far that were confident enough to learn from
            history["pseudo_label_share"] = run.pseudo_labeled / max(run.unlabeled_seen, 1)
        if progress is not None:
            progress(dict(history))
    run.finish()
    metrics = {key: history[key] for key in ("train_loss", "train_ce", "train_acc", "lpm_loss")}
    if run.unlabeled is not None:
        metrics.update(unlabeled_images=len(run.unlabeled), pseudo_label_share=history["pseudo_label_share"])
    metrics.update(
        epochs=run.epochs, steps=run.step, n_train=run.n_train, n_val=len(val_index), device=str(device)
    )
    if len(val_index):
        metrics.update(evaluate(model, data[val_index], all_targets[val_index], model_config, device))
    metrics["seconds"] = time.monotonic() - started
    return TrainResult(model, list(labels), model_config, train_config, metrics)
