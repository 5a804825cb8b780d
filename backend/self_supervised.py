"""A project's self-supervised backbone weights: learned from its own images, kept, reused.

Before a project's first trained round, the backbone is pre-trained on the project's images,
labeled or not, with the contrastive objective of ``model/self_supervised.py``. Without configured weights,
rounds up to FROZEN_MAX_LABELS labels train a head on those weights and every full-mode training
starts from them instead of a random initialisation; with a PRETRAINED_WEIGHTS file, the
pre-training starts from it and adapts it to the project's images. What each gains:
docs/results.md, 'Learning from a few labels' (the domain suite's `selfsup_init` and
`transfer_selfsup_init` rows).

The weights live in ``MODEL_DIR/project-<id>/self-supervised/``: one weights file and
``current.json``, which says what they were learned from and the file's SHA-256. A round reuses
them and pre-trains again only when they are missing or their bytes no longer match that digest
(a damaged file would otherwise fail every later round of the project), when the backbone or its
input changed (another key), or when the pool has grown by SELF_SUPERVISED_REFRESH_GROWTH since
(new images the weights never saw). A
newer file replaces the older one only once it is complete; a trained model's checkpoint holds its
own weights, so deleting the old file never breaks a published version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.atomic import atomic_write_text
from model.config import ModelConfig
from model.self_supervised import SelfSupervisedConfig, fingerprint, pretrain, save_pretrained
from model.trainer import TrainingError

log = logging.getLogger(__name__)

DIR_NAME = "self-supervised"
CURRENT_FILE = "current.json"
# What of a ModelConfig shapes the backbone's weights and the inputs it learned from; the head,
# the loss prediction module and the supervised augmentation do not.
_BACKBONE_FIELDS = (
    "backbone",
    "small_cnn_width",
    "image_size",
    "channels",
    "input_norm",
    "mean",
    "std",
    "hflip",
)


@dataclass(frozen=True)
class StoredWeights:
    """``current.json``: the weights file and what it was learned from."""

    file: str  # the weights' file name in the project's self-supervised directory
    key: str  # weights_key of the backbone and pre-training config
    pool_size: int  # tasks in the project when they were learned
    images: int  # images they were learned from (a sample of a large pool)
    steps: int
    seconds: float
    created: str  # UTC, ISO 8601
    sha256: str = ""  # the weights file's SHA-256 (model.self_supervised.fingerprint); "" in records
    #                    written before digests were kept: such weights are learned again


def weights_key(model_config: ModelConfig, cfg: SelfSupervisedConfig) -> str:
    """A short hash of everything that makes stored weights fit this round's backbone: its
    architecture and input, the pre-training settings, and the bytes of the pretrained file the
    pre-training started from, if any (another file: learned again)."""
    backbone = {name: getattr(model_config, name) for name in _BACKBONE_FIELDS}
    pretraining = dataclasses.asdict(dataclasses.replace(cfg, device="", log_every=1))
    described: dict[str, object] = {"backbone": backbone, "pretraining": pretraining}
    if model_config.pretrained_weights:  # absent otherwise: the keys stored before stay valid
        try:
            described["start"] = fingerprint(model_config.pretrained_weights)
        except OSError as error:
            raise ValueError(
                f"cannot read pretrained weights {model_config.pretrained_weights}: {error}"
            ) from error
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def refresh_reason(
    current: StoredWeights | None,
    key: str,
    pool_size: int,
    growth: float,
    weights_exist: bool = True,
    weights_intact: bool = True,
) -> str | None:
    """Why the round must pre-train again, or None to reuse ``current``."""
    if current is None:
        return "no self-supervised weights yet"
    if not weights_exist:
        return f"the weights file {current.file} is missing"
    if not weights_intact:
        if not current.sha256:
            return f"no digest was recorded for the weights file {current.file}"
        return f"the weights file {current.file} does not match its recorded digest (damaged)"
    if current.key != key:
        return "the backbone, its input or the pre-training settings changed"
    if pool_size >= current.pool_size * (1.0 + growth):
        return (
            f"the project grew from {current.pool_size} to {pool_size} tasks "
            f"(SELF_SUPERVISED_REFRESH_GROWTH={growth})"
        )
    return None


def sample_pool(items: Sequence, max_images: int, seed: int) -> list:
    """At most ``max_images`` of ``items``, a seeded uniform sample kept in the items' order."""
    if max_images <= 0 or len(items) <= max_images:
        return list(items)
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=max_images, replace=False))
    return [items[i] for i in chosen]


def read_current(directory: Path) -> StoredWeights | None:
    """The stored record, or None when there is none or it cannot be read (pre-train again)."""
    path = directory / CURRENT_FILE
    try:
        return StoredWeights(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("unreadable %s (%s): the weights are learned again", path, exc)
        return None


def _stored(
    directory: Path, model_config: ModelConfig, cfg: SelfSupervisedConfig, pool_size: int, growth: float
) -> tuple[StoredWeights | None, str, str | None]:
    """The stored record, the key weights for this config have, and why the record cannot be
    reused (None: it can)."""
    current = read_current(directory)
    key = weights_key(model_config, cfg)
    exists = current is not None and (directory / current.file).is_file()
    reason = refresh_reason(
        current,
        key,
        pool_size,
        growth,
        weights_exist=exists,
        weights_intact=exists
        and current is not None
        and weights_intact(directory / current.file, current.sha256),
    )
    if reason is not None and current is not None and "digest" in reason:
        log.warning("self-supervised weights in %s: %s; they are learned again", directory, reason)
    return current, key, reason


def weights_intact(path: Path, sha256: str) -> bool:
    """Whether the file's bytes have the recorded SHA-256 (False: none recorded, or unreadable)."""
    if not sha256:
        return False
    try:
        return fingerprint(path) == sha256
    except OSError:
        return False


def reusable_weights(
    directory: Path, model_config: ModelConfig, cfg: SelfSupervisedConfig, pool_size: int, growth: float
) -> Path | None:
    """The stored weights ``ensure_weights`` would reuse for a pool of ``pool_size`` tasks, or
    None when it would learn them (reads only; learns nothing)."""
    current, _, reason = _stored(directory, model_config, cfg, pool_size, growth)
    return None if reason is not None or current is None else directory / current.file


def _no_weights(why: str) -> tuple[None, dict]:
    """What ``ensure_weights`` answers when the round trains from scratch, and why."""
    return None, {"weights": None, "learned_now": False, "why": why}


def _store_weights(
    directory: Path, state: dict, key: str, pool_size: int, images: int, steps: int, seconds: float
) -> str:
    """Saves freshly pre-trained ``state`` in ``directory``, makes it the current weights and
    deletes the previous files; returns the new file's name."""
    directory.mkdir(parents=True, exist_ok=True)
    # unique even within a second: the previous file is deleted once this one is current
    name = f"weights-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{key}-{uuid.uuid4().hex[:8]}.pt"
    digest = save_pretrained(state, directory / name)
    stored = StoredWeights(
        file=name,
        key=key,
        pool_size=pool_size,
        images=images,
        steps=steps,
        seconds=seconds,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        sha256=digest,
    )
    atomic_write_text(directory / CURRENT_FILE, json.dumps(dataclasses.asdict(stored), indent=1))
    for old in directory.glob("weights-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return name


def ensure_weights(
    directory: Path,
    model_config: ModelConfig,
    cfg: SelfSupervisedConfig,
    pool_items: Sequence,
    load_images: Callable[[list], list],
    *,
    growth: float,
    max_images: int,
    progress: Callable[[dict], None] | None = None,
) -> tuple[Path | None, dict]:
    """The weights file this round's training starts from, and what happened (for the summary).

    Reuses the stored weights unless ``refresh_reason`` says otherwise; then pre-trains on
    ``load_images(sample)`` (a sample of at most ``max_images`` of ``pool_items``) and stores the
    result. Fewer than 2 loadable images: (None, why), and the round trains from scratch.
    """
    current, key, reason = _stored(directory, model_config, cfg, len(pool_items), growth)
    if reason is None:
        assert current is not None
        return directory / current.file, {
            "weights": current.file,
            "learned_now": False,
            "learned_from_tasks": current.pool_size,
            "images": current.images,
        }
    images = load_images(sample_pool(pool_items, max_images, cfg.seed))
    if len(images) < 2:
        return _no_weights(f"{len(images)} loadable images: self-supervised pre-training needs at least 2")
    log.info("self-supervised pre-training on %d images, %d steps: %s", len(images), cfg.steps, reason)
    started = time.monotonic()
    try:
        state = pretrain(images, model_config, cfg, progress=progress)
    except TrainingError as exc:
        # a diverging pre-training must not stop every round of the project: train from a
        # random initialisation and say why (the next round tries again)
        log.warning("self-supervised pre-training failed, training from scratch: %s", exc)
        return _no_weights(f"self-supervised pre-training failed: {exc}")
    seconds = round(time.monotonic() - started, 1)
    name = _store_weights(directory, state, key, len(pool_items), len(images), cfg.steps, seconds)
    return directory / name, {
        "weights": name,
        "learned_now": True,
        "why": reason,
        "learned_from_tasks": len(pool_items),
        "images": len(images),
        "steps": cfg.steps,
        "seconds": seconds,
    }
