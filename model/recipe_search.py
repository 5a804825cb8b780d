"""Choose the training recipe of a round by k-fold cross-validation on the labeled set.

Which recipe generalises best from a few dozen labels depends on the images (model/README.md,
'Measured (2 CPU cores)'), so a round that has the labels and the time tries a short list of
candidate recipes on stratified folds of its own labeled set and trains the final model with the
winner.

Cost: one candidate on one fold is one training on (k-1)/k of the labels, about as long as the
round's own training. The search runs fold by fold (every candidate on fold 1, then fold 2, ...)
and stops before a training that would overrun ``budget_s``, judging by the slowest training so
far; only folds that every candidate finished are compared (paired), and fewer than
``min_folds`` of them keep the default recipe. Deterministic for a given seed on CPU.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from model.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class Candidate:
    """A recipe as overrides of the round's ModelConfig / TrainConfig fields."""

    name: str
    doc: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


# The one list of candidates. The first is the round's own configuration and wins ties.
# Each one is a lever the few-label benchmark showed to move accuracy in different directions on
# different domains (benchmarks/results/domains/): how long to train on a small set (memorisation
# on shapes vs under-fitting on textures) and how strong the augmentation is (digits and text lose
# from inversion / heavy crops that textures and shapes need).
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("configured", "the round's configuration (settings)"),
    Candidate(
        "half_steps",
        "half the optimizer steps (less memorisation of a small set)",
        train={"auto_target_steps_scale": 0.5},
    ),
    Candidate(
        "mild_augment",
        "paper-style crop + flip augmentation instead of the strong policy",
        model={"augment_policy": "crop_flip"},
    ),
)


def resolve(
    candidate: Candidate, model_config: ModelConfig, train_config: TrainConfig
) -> tuple[ModelConfig, TrainConfig]:
    """The configs a candidate trains with. ``auto_target_steps_scale`` scales the configured step
    target (so the candidate follows TRAIN_STEPS) instead of fixing a number."""
    train = dict(candidate.train)
    scale = train.pop("auto_target_steps_scale", None)
    if scale is not None:
        train["auto_target_steps"] = max(1, round(train_config.auto_target_steps * scale))
    return dataclasses.replace(model_config, **candidate.model), dataclasses.replace(train_config, **train)


def stratified_folds(targets: Sequence[int], k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index arrays covering every row; each class is dealt round-robin over the
    folds from a seeded shuffle, so every fold holds about 1/k of each class."""
    if k < 2:
        raise ValueError(f"k-fold cross-validation needs k >= 2, got {k}")
    classes = np.asarray(targets)
    if len(classes) < k:
        raise ValueError(f"{len(classes)} labeled rows cannot make {k} folds")
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for cls in np.unique(classes):
        rows = rng.permutation(np.flatnonzero(classes == cls))
        for i, row in enumerate(rows):
            folds[(offset + i) % k].append(int(row))
        offset += len(rows)  # the next class starts where this one stopped: balanced fold sizes
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


@dataclass
class SearchResult:
    chosen: str
    reason: str
    folds_compared: int
    seconds: float
    # candidate -> {"cv_acc": mean held-out accuracy over the compared folds, "fold_acc": [...]}
    table: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "folds_compared": self.folds_compared,
            "seconds": round(self.seconds, 1),
            "cv_acc": {name: row["cv_acc"] for name, row in self.table.items()},
            # each candidate's accuracy on each compared fold: the spread of its cv_acc
            "fold_acc": {name: row["fold_acc"][: self.folds_compared] for name, row in self.table.items()},
        }


# (images, targets, labels, model_config, train_config) -> trained model's accuracy on the
# held-out (images, targets); the pipeline passes the real trainer, tests a cheap one.
FoldScorer = Callable[[list, list, list, list, list[str], ModelConfig, TrainConfig], float]


def train_and_evaluate(
    train_images,
    train_targets,
    val_images,
    val_targets,
    labels,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> float:
    """Held-out accuracy of a model trained with the backend's own trainer."""
    # imported here: the candidates and the search itself need no torch (tests pass a cheap scorer)
    from model.scoring import score
    from model.trainer import train

    result = train(train_images, train_targets, labels, model_config, train_config)
    probs = score(result.model, val_images, model_config, device=train_config.device).probs
    return float((probs.argmax(1) == np.asarray(val_targets)).mean())


def search(
    images: Sequence[Image.Image],
    targets: Sequence[int],
    labels: list[str],
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    folds: int,
    budget_s: float,
    min_folds: int = 2,
    candidates: Sequence[Candidate] = CANDIDATES,
    scorer: FoldScorer = train_and_evaluate,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[dict], None] | None = None,
) -> SearchResult:
    """Cross-validate ``candidates`` within ``budget_s`` seconds and name the winner (the
    highest mean held-out accuracy over the folds every candidate finished; ties go to the
    first candidate). Fewer than ``min_folds`` compared folds keeps the first candidate."""
    if not candidates:
        raise ValueError("recipe search needs at least one candidate")
    started = clock()
    split = stratified_folds(targets, folds, train_config.seed)
    accuracies: dict[str, list[float]] = {c.name: [] for c in candidates}
    slowest = 0.0
    stopped_early = False
    for fold, held_out in enumerate(split):
        for candidate in candidates:
            if clock() - started + slowest > budget_s:
                stopped_early = True
                break
            t = clock()
            model_cfg, train_cfg = resolve(candidate, model_config, train_config)
            acc = scorer(*_fold_data(images, targets, held_out), labels, model_cfg, train_cfg)
            slowest = max(slowest, clock() - t)
            accuracies[candidate.name].append(acc)
            if progress is not None:
                progress(
                    {
                        "fold": fold + 1,
                        "folds": folds,
                        "candidate": candidate.name,
                        "accuracy": round(acc, 4),
                        "seconds": round(clock() - started, 1),
                    }
                )
        if stopped_early:
            break
    compared, table = _compare(accuracies)
    chosen, reason = _winner(candidates, table, compared, min_folds, budget_s)
    return SearchResult(chosen, reason, compared, clock() - started, table)


def _fold_data(
    images: Sequence[Image.Image], targets: Sequence[int], held_out: np.ndarray
) -> tuple[list[Image.Image], list[int], list[Image.Image], list[int]]:
    """(training images, their targets, held-out images, their targets) of one fold."""
    keep = np.setdiff1d(np.arange(len(targets)), held_out)
    return (
        [images[i] for i in keep],
        [int(targets[i]) for i in keep],
        [images[i] for i in held_out],
        [int(targets[i]) for i in held_out],
    )


def _compare(accuracies: dict[str, list[float]]) -> tuple[int, dict[str, dict]]:
    """(folds every candidate finished, the candidates' table: mean accuracy over those folds and
    the accuracy of each fold)."""
    compared = min(len(a) for a in accuracies.values())
    table = {
        name: {
            "cv_acc": round(float(np.mean(a[:compared])), 4) if compared else None,
            "fold_acc": [round(x, 4) for x in a],
        }
        for name, a in accuracies.items()
    }
    return compared, table


def _winner(
    candidates: Sequence[Candidate], table: dict[str, dict], compared: int, min_folds: int, budget_s: float
) -> tuple[str, str]:
    """(the chosen candidate's name, why): the best mean accuracy (ties to the first candidate),
    or the first candidate when fewer than ``min_folds`` folds were compared."""
    first = candidates[0].name
    if compared < min_folds:
        reason = (
            f"budget of {budget_s:.0f} s allowed {compared} complete fold(s) of {len(candidates)} "
            f"candidates, fewer than {min_folds}: kept {first!r}"
        )
        return first, reason
    best = max(candidates, key=lambda c: (table[c.name]["cv_acc"], c.name == first))
    return best.name, f"highest mean accuracy over {compared} paired fold(s)"


def candidate_named(name: str, candidates: Sequence[Candidate] = CANDIDATES) -> Candidate:
    for candidate in candidates:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown recipe candidate {name!r}; known: {[c.name for c in candidates]}")
