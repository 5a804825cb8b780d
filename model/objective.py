"""The training objective both modes share (full: model/trainer.py, frozen: model/frozen.py), its
optimizer step, and the running means of its parts that ``progress`` reports.

Objective per mini-batch: L = CE_weighted(logits, y) + lpm_weight * L_lpm(predicted_loss, target),
where the target is the unweighted per-sample cross-entropy of the head WITHOUT dropout, detached
(the loss prediction module learns to predict the loss inference has; it does not change it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.config import TrainConfig
from model.losses import lpm_loss


class TrainingError(RuntimeError):
    """Training could not produce a usable model (e.g. the loss became NaN / infinite)."""


def class_weights(targets: torch.Tensor, num_classes: int, max_weight: float) -> torch.Tensor:
    """Inverse class frequency, normalised so a balanced set gets weight 1 everywhere and clipped
    to [1/max_weight, max_weight] so one lone example cannot dominate. Absent classes get 1."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    present = counts > 0
    weights = torch.ones(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.clamp(1.0 / max_weight, max_weight).float()


def sample_weights_of(targets: torch.Tensor, num_classes: int, cfg: TrainConfig) -> torch.Tensor:
    """The per-class weights of the classifier's loss: ``class_weights`` with cfg.class_balance,
    otherwise 1 for every class."""
    if cfg.class_balance:
        return class_weights(targets, num_classes, cfg.max_class_weight)
    return torch.ones(num_classes)


@dataclass
class Objective:
    """One mini-batch's objective and its parts."""

    loss: torch.Tensor  # the scalar minimised: class-weighted CE + lpm_weight * ranking
    per_sample_ce: torch.Tensor  # (B,) unweighted cross-entropy of the training logits
    ranking: torch.Tensor  # the loss prediction module's loss (scalar)


def joint_objective(
    logits: torch.Tensor,
    predicted_loss: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    cfg: TrainConfig,
    lpm_target: torch.Tensor | None = None,
) -> Objective:
    """Class-weighted CE of ``logits`` + cfg.lpm_weight * lpm_loss(predicted_loss, target).

    ``weights``: one per class (``sample_weights_of``). ``lpm_target``: the per-sample loss the
    module learns, i.e. the CE of the head without dropout; None when the logits already are that
    (no dropout), then the logits' own CE is the target. The target is detached either way."""
    per_sample_ce = F.cross_entropy(logits, y, reduction="none")
    sample_weights = weights[y]
    target_loss = (sample_weights * per_sample_ce).sum() / sample_weights.sum()
    target = per_sample_ce if lpm_target is None else lpm_target
    ranking = lpm_loss(cfg.lpm_loss, predicted_loss.float(), target.detach(), cfg.margin)
    return Objective(target_loss + cfg.lpm_weight * ranking, per_sample_ce, ranking)


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    where: str,
    lr: float,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """One optimizer step on ``objective.loss`` (through ``scaler`` when given, for float16).

    Raises TrainingError naming ``where`` (e.g. "step 12") and ``lr`` when the loss is not
    finite, before any gradient is applied."""
    loss = objective.loss
    if not torch.isfinite(loss.detach()):
        raise TrainingError(f"loss became {float(loss.detach())} at {where}; try a lower lr (now {lr})")
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


class RunningMeans:
    """Row-weighted sums of the objective's parts over the steps since the last report."""

    def __init__(self) -> None:
        self.loss = self.ce = self.lpm = 0.0
        self.correct = self.seen = 0

    def add(self, objective: Objective, logits: torch.Tensor, y: torch.Tensor) -> None:
        count = len(y)
        self.loss += float(objective.loss.detach()) * count
        self.ce += float(objective.per_sample_ce.detach().mean()) * count
        self.lpm += float(objective.ranking.detach()) * count
        self.correct += int((logits.argmax(1) == y).sum())
        self.seen += count

    def means(self) -> dict:
        """train_loss, train_ce, lpm_loss and train_acc: means over the rows added."""
        seen = max(self.seen, 1)
        return {
            "train_loss": self.loss / seen,
            "train_ce": self.ce / seen,
            "lpm_loss": self.lpm / seen,
            "train_acc": self.correct / seen,
        }
