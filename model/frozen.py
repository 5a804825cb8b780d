"""Training mode "frozen": a fixed backbone, and a light head + Loss Prediction Module trained on
cached pooled features.

With few labels and a good backbone (pretrained, or self-supervised on the project's images), a
light head on frozen features beats fine-tuning, and it is cheap: the backbone runs once per image
(``extract_pooled``; the rows can be kept in a ``model.feature_cache.FeatureCache``) and a round
of training is a few hundred AdamW steps on small matrices (``train_frozen``).

The result stays an ordinary ``LossLearningNet``: only ``model.head`` and ``model.lpm`` change,
so checkpoints, ``model.score`` and the strategies work unchanged. What the LPM reads is what it
reads in the full network: the global average pool of each tap, exactly as
``LossPredictionModule.pool`` computes it. The pool of an already pooled vector is the identity,
so the LPM's own Linear layers are applied to the cached rows directly (``lpm_from_pooled``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model.config import ModelConfig, TrainConfig
from model.data import images_to_uint8, normalize
from model.losses import lpm_loss
from model.metrics import spearman
from model.networks import LossLearningNet, LossPredictionModule
from model.runtime import amp_dtype, autocast, memory_format, resolve_device
from model.scoring import ScoreOutputs, mc_dropout_probs
from model.trainer import TrainingError, TrainResult, batch_index_lists, class_weights, split_validation

MODE = "frozen"
# Rows per forward pass when scoring pooled features (tiny matrices: memory is rows x widths).
SCORE_BATCH_ROWS = 8192
# Intra-op threads while training on CPU: the matrices are tiny (a mini-batch of rows times the
# feature widths), where thread synchronisation costs more than it brings, and on a busy machine
# far more (measured: 10x slower with 2 threads on 2 shared cores). Restored afterwards.
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

    # Optimizer steps (AdamW). 300 steps on a linear head + LPM take 1-3 s on one CPU thread,
    # whatever the number of rows; one step is full-batch when the rows fit in batch_size.
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


@dataclass
class PooledFeatures:
    """Per-image pooled features of a backbone: what the head and the LPM read.

    ``taps[i]`` is (N, C_i) float32, the global average pool of tap i (``LossPredictionModule.pool``);
    ``embedding`` is (N, D) float32, the classifier-head input. One row = one image.
    """

    taps: list[np.ndarray]
    embedding: np.ndarray

    def __post_init__(self) -> None:
        self.taps = [np.asarray(tap, dtype=np.float32) for tap in self.taps]
        self.embedding = np.asarray(self.embedding, dtype=np.float32)
        if not self.taps:
            raise ValueError("PooledFeatures needs at least one tap")
        n = self.embedding.shape[0] if self.embedding.ndim == 2 else -1
        if n < 0 or any(tap.ndim != 2 or tap.shape[0] != n for tap in self.taps):
            shapes = [tuple(t.shape) for t in self.taps]
            raise ValueError(f"taps {shapes} and embedding {tuple(self.embedding.shape)} must be 2-D with equal rows")

    def __len__(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def tap_widths(self) -> list[int]:
        return [int(tap.shape[1]) for tap in self.taps]

    @property
    def embedding_dim(self) -> int:
        return int(self.embedding.shape[1])

    @property
    def row_width(self) -> int:
        """Floats per row (sum of the tap widths + D); 4 bytes each."""
        return sum(self.tap_widths) + self.embedding_dim

    def subset(self, index) -> PooledFeatures:
        """Rows ``index`` (an index array, a boolean mask or a slice), as a new object."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype != bool:
                index = index.astype(np.int64, copy=False)
        return PooledFeatures([tap[index] for tap in self.taps], self.embedding[index])

    __getitem__ = subset

    @staticmethod
    def concatenate(parts: Sequence[PooledFeatures]) -> PooledFeatures:
        """Rows of ``parts`` one after the other; all must have the same widths."""
        if not parts:
            raise ValueError("concatenate needs at least one PooledFeatures")
        widths, dim = parts[0].tap_widths, parts[0].embedding_dim
        for part in parts[1:]:
            if part.tap_widths != widths or part.embedding_dim != dim:
                raise ValueError(
                    f"cannot concatenate features of widths {part.tap_widths}+{part.embedding_dim} "
                    f"to {widths}+{dim}"
                )
        taps = [np.concatenate([part.taps[i] for part in parts]) for i in range(len(widths))]
        return PooledFeatures(taps, np.concatenate([part.embedding for part in parts]))

    @staticmethod
    def empty(tap_widths: Sequence[int], embedding_dim: int) -> PooledFeatures:
        return PooledFeatures(
            [np.zeros((0, int(w)), np.float32) for w in tap_widths], np.zeros((0, int(embedding_dim)), np.float32)
        )

    def to_matrix(self) -> np.ndarray:
        """One (N, row_width) float32 matrix: the taps then the embedding, column-wise."""
        return np.concatenate([*self.taps, self.embedding], axis=1).astype(np.float32, copy=False)

    @staticmethod
    def from_matrix(matrix: np.ndarray, tap_widths: Sequence[int], embedding_dim: int) -> PooledFeatures:
        """Inverse of ``to_matrix``."""
        matrix = np.asarray(matrix, dtype=np.float32)
        expected = sum(tap_widths) + embedding_dim
        if matrix.ndim != 2 or matrix.shape[1] != expected:
            raise ValueError(f"matrix of shape {matrix.shape} does not hold rows of width {expected}")
        bounds = np.cumsum([0, *tap_widths])
        taps = [matrix[:, bounds[i] : bounds[i + 1]] for i in range(len(tap_widths))]
        return PooledFeatures(taps, matrix[:, bounds[-1] :])


def _lpm_tap_widths(model: LossLearningNet) -> list[int]:
    """The pooled tap width each LPM branch reads: the in_features of its one Linear layer."""
    return [layer.in_features for layer in model.lpm.branches.modules() if isinstance(layer, torch.nn.Linear)]


def _check_fits(model: LossLearningNet, features: PooledFeatures) -> None:
    widths = _lpm_tap_widths(model)
    if features.tap_widths != widths or features.embedding_dim != model.embedding_dim:
        raise ValueError(
            f"pooled features of widths {features.tap_widths} + embedding {features.embedding_dim} "
            f"do not fit this model (taps {widths}, embedding {model.embedding_dim}): "
            f"extracted with another backbone or taps?"
        )


def extract_pooled(
    model: LossLearningNet,
    images: torch.Tensor | Sequence[Image.Image],
    model_config: ModelConfig,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    use_amp: bool = True,
) -> PooledFeatures:
    """Run the backbone once over ``images`` (a uint8 (N, C, H, W) tensor already at image_size,
    or PIL images) and return each image's pooled taps and embedding.

    Preprocessing is the scorer's (``images_to_uint8`` + ``normalize``); eval mode, inference_mode,
    autocast on CUDA when ``use_amp``. The model is moved to ``device`` and left there in eval
    mode (as ``model.score`` does). PIL images are converted batch by batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = device if isinstance(device, torch.device) else resolve_device(device)
    model.to(target).to(memory_format=memory_format(target))
    model.eval()
    layouts = model.lpm.tap_layouts
    taps: list[list[np.ndarray]] = [[] for _ in model.taps]
    embeddings: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = chunk if isinstance(chunk, torch.Tensor) else images_to_uint8(list(chunk), model_config)
            x = normalize(batch.to(target), model_config).contiguous(memory_format=memory_format(target))
            with autocast(target, amp_dtype(target, use_amp)):
                outputs = model.features(x)
            for i, (name, layout) in enumerate(zip(model.taps, layouts)):
                pooled = LossPredictionModule.pool(outputs[name], layout).flatten(1).float()
                taps[i].append(pooled.cpu().numpy())
            embeddings.append(outputs["embedding"].flatten(1).float().cpu().numpy())
    if not embeddings:
        return PooledFeatures.empty(_lpm_tap_widths(model), model.embedding_dim)
    return PooledFeatures([np.concatenate(parts) for parts in taps], np.concatenate(embeddings))


def lpm_from_pooled(lpm: LossPredictionModule, taps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The LPM's output for already pooled taps: its own branches (FC -> ReLU) and output FC.

    Equal to ``lpm(feature_maps)`` for the maps the rows were pooled from (pooling is done)."""
    hidden = [branch(tap.float()) for branch, tap in zip(lpm.branches, taps)]
    return lpm.out(torch.cat(hidden, dim=1)).squeeze(1)


def _to_tensors(features: PooledFeatures, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    taps = [torch.from_numpy(np.ascontiguousarray(tap)).to(device) for tap in features.taps]
    return taps, torch.from_numpy(np.ascontiguousarray(features.embedding)).to(device)


def _model_device(model: LossLearningNet) -> torch.device:
    return model.head.weight.device


def score_pooled(
    model: LossLearningNet,
    features: PooledFeatures,
    mc_samples: int = 0,
    seed: int = 0,
    batch_rows: int = SCORE_BATCH_ROWS,
) -> ScoreOutputs:
    """``model.score``'s outputs (probs, predicted_loss, embedding, optional MC-dropout samples)
    for images whose pooled features are ``features``, without running the backbone.

    Runs on the device the model is on, in eval mode, under inference_mode.
    """
    _check_fits(model, features)
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples}")
    if mc_samples > 0 and model.dropout.p <= 0:
        raise ValueError("mc_samples > 0 needs a model trained with model_config.dropout > 0")
    model.eval()
    device = _model_device(model)
    generator = torch.Generator().manual_seed(seed)
    probs, losses, mc = [], [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch_rows):
            taps, embedding = _to_tensors(features.subset(slice(start, start + batch_rows)), device)
            probs.append(torch.softmax(model.head(embedding).float(), dim=1).cpu())
            losses.append(lpm_from_pooled(model.lpm, taps).float().cpu())
            if mc_samples:
                mc.append(mc_dropout_probs(model, embedding, mc_samples, generator).cpu())
    classes = model.num_classes

    def cat(parts, empty_shape, dim=0):
        if not parts:
            return np.zeros(empty_shape, dtype=np.float32)
        return torch.cat(parts, dim=dim).numpy().astype(np.float32, copy=False)

    return ScoreOutputs(
        probs=cat(probs, (0, classes)),
        predicted_loss=cat(losses, (0,)),
        embedding=np.array(features.embedding, dtype=np.float32, copy=True),
        mc_probs=cat(mc, (mc_samples, 0, classes), dim=1) if mc_samples else None,
    )


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
            model, features, targets, labels, model_config, train_config, progress, augmented or [],
            frozen_config, device,
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


def _train_frozen(
    model, features, targets, labels, model_config, train_config, progress, augmented, frozen_config, device
) -> TrainResult:
    started = time.monotonic()
    generator = torch.Generator().manual_seed(train_config.seed)
    all_targets = torch.as_tensor([int(t) for t in targets], dtype=torch.long)
    train_index, val_index = split_validation(len(features), train_config.val_fraction, generator)
    train_index = train_index.sort().values  # keeps the rows in their given order
    n_train = len(train_index)

    views = [features, *augmented]
    rows = PooledFeatures.concatenate([view.subset(train_index) for view in views])
    row_targets = all_targets[train_index].repeat(len(views)).to(device)
    n_rows = len(rows)

    model.to(device)
    if frozen_config.reinit:
        _reinit(model)  # a fresh init is already one for unit-scale (standardised) inputs
    model.eval()  # the backbone is never run; only the dropout before the head trains
    weights = (
        class_weights(all_targets[train_index], len(labels), train_config.max_class_weight)
        if train_config.class_balance
        else torch.ones(len(labels))
    ).to(device)
    raw_taps, embedding = _to_tensors(rows, device)
    embedding_scale = _Standardizer(embedding)
    tap_scales = [_Standardizer(tap) for tap in raw_taps]
    taps = [scale.apply(tap) for scale, tap in zip(tap_scales, raw_taps)]
    layers = [(model.head, embedding_scale)] + [
        (branch[0], scale) for branch, scale in zip(model.lpm.branches, tap_scales)
    ]
    if not frozen_config.reinit:
        for linear, scale in layers:
            scale.to_standardized(linear)

    params = [p for module in _trainable_modules(model) for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=frozen_config.lr, weight_decay=frozen_config.weight_decay, fused=True)
    steps = frozen_config.steps
    batches_per_pass = len(batch_index_lists(n_rows, train_config.batch_size, torch.arange(n_rows)))
    step, passes, sums = 0, 0, _zero_sums()
    model.dropout.train()
    try:
        while step < steps:
            passes += 1
            permutation = torch.randperm(n_rows, generator=generator)
            for batch in batch_index_lists(n_rows, train_config.batch_size, permutation):
                if step >= steps:
                    break
                lr = frozen_config.lr
                if frozen_config.cosine:
                    lr *= 0.5 * (1.0 + math.cos(math.pi * step / steps))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = batch.to(device)
                y = row_targets[batch]
                # Dropout acts on the raw embedding, as in the network (and in MC-dropout scoring).
                logits = model.head(embedding_scale.apply(model.dropout(embedding[batch]))).float()
                predicted = lpm_from_pooled(model.lpm, [tap[batch] for tap in taps])
                # The module's target is the loss without dropout, as scoring computes it.
                clean = logits
                if model.dropout.p > 0:
                    with torch.no_grad():
                        clean = model.head(embedding_scale.apply(embedding[batch])).float()
                loss, per_sample_ce, ranking = _objective(logits, predicted, y, weights, train_config, clean)
                if not torch.isfinite(loss.detach()):
                    raise TrainingError(
                        f"loss became {float(loss.detach())} at step {step + 1}; try a lower lr (now {lr})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                count = len(batch)
                sums["loss"] += float(loss.detach()) * count
                sums["ce"] += float(per_sample_ce.detach().mean()) * count
                sums["lpm"] += float(ranking.detach()) * count
                sums["correct"] += int((logits.argmax(1) == y).sum())
                sums["seen"] += count
                if progress is not None and (step % PROGRESS_EVERY_STEPS == 0 or step == steps):
                    progress(_progress_report(step, steps, sums, lr, started))
                    sums = _zero_sums()
    finally:
        # Always back to raw-input weights, also when cancelled: the model stays consistent.
        for linear, scale in layers:
            scale.to_raw(linear)
        model.eval()

    # Final metrics in eval mode on the labeled rows themselves (not the augmented views),
    # through the folded network exactly as it will score.
    clean_taps, clean_embedding = _to_tensors(features.subset(train_index), device)
    y = all_targets[train_index].to(device)
    with torch.inference_mode():
        logits = model.head(clean_embedding).float()
        loss, per_sample_ce, ranking = _objective(
            logits, lpm_from_pooled(model.lpm, clean_taps), y, weights, train_config
        )
    metrics = {
        "train_loss": float(loss),
        "train_ce": float(per_sample_ce.mean()),
        "train_acc": float((logits.argmax(1) == y).float().mean()),
        "lpm_loss": float(ranking),
        "epochs": passes,
        "steps": step,
        "n_train": n_train,
        "n_rows": n_rows,
        "n_val": len(val_index),
        "augmented_views": len(augmented),
        "batches_per_epoch": batches_per_pass,
        "device": str(device),
        "mode": MODE,
    }
    if len(val_index):
        metrics.update(_evaluate(model, features.subset(val_index), all_targets[val_index]))
    metrics["seconds"] = time.monotonic() - started
    return TrainResult(model, list(labels), model_config, train_config, metrics)


def _objective(logits, predicted, y, weights, train_config, target_logits=None):
    """The trainer's joint objective: class-weighted CE + lpm_weight * LPM loss on the detached
    unweighted per-sample CE of ``target_logits`` (the head without dropout; default ``logits``).
    Returns (loss, per-sample CE, LPM loss)."""
    per_sample_ce = F.cross_entropy(logits, y, reduction="none")
    sample_weights = weights[y]
    target_loss = (sample_weights * per_sample_ce).sum() / sample_weights.sum()
    target = per_sample_ce if target_logits is None else F.cross_entropy(target_logits, y, reduction="none")
    ranking = lpm_loss(train_config.lpm_loss, predicted.float(), target.detach(), train_config.margin)
    return target_loss + train_config.lpm_weight * ranking, per_sample_ce, ranking


def _progress_report(step, steps, sums, lr, started) -> dict:
    seen = max(sums["seen"], 1)
    return {
        "step": step,
        "steps": steps,
        "train_loss": sums["loss"] / seen,
        "train_ce": sums["ce"] / seen,
        "lpm_loss": sums["lpm"] / seen,
        "train_acc": sums["correct"] / seen,
        "lr": lr,
        "seconds": time.monotonic() - started,
        "mode": MODE,
    }


def _zero_sums() -> dict:
    return {"loss": 0.0, "ce": 0.0, "lpm": 0.0, "correct": 0, "seen": 0}


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
