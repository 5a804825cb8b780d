"""The checks of a ``Settings`` object and the parsing of its environment variables.

backend/settings.py holds the fields (the one source of truth: name, default, text, unit);
this module says which values are usable. numpy only, never torch: every entry point validates
STRATEGY before it starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from model.cold_start import PICKS as COLD_START_PICKS
from model.strategies import STRATEGIES

if TYPE_CHECKING:
    from backend.settings import Settings


class SettingsError(ValueError):
    """A setting is present but unusable; the message names the variable."""


KEEP_COLOUR_CHOICES = ("auto", "true", "false")
# Settings that must be > 0.
_POSITIVE = (
    "label_studio_timeout_s",
    "label_studio_bulk_timeout_s",
    "keep_model_versions",
    "max_request_bytes",
    "predict_cache_projects",
    "prediction_chunk_size",
    "image_max_bytes",
    "image_max_pixels",
    "image_fetch_timeout_s",
    "image_size",
    "train_batch_size",
    "score_batch_size",
    "job_timeout_s",
    "predict_max_tasks",
    "query_batch_size",
    "mc_dropout_samples",
    "keep_prediction_versions",
    "run_lock_ttl_s",
)


def validate(settings: Settings) -> None:
    """Raise SettingsError naming the first unusable setting."""
    _check_limits(settings)
    _check_choices(settings)
    _check_training(settings)
    check_strategy(settings)
    _check_weights_and_auth(settings)


def _check_limits(s: Settings) -> None:
    if not s.label_studio_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"LABEL_STUDIO_URL must start with http:// or https://, got {s.label_studio_url!r}"
        )
    for name in _POSITIVE:
        if getattr(s, name) <= 0:
            raise SettingsError(f"{name.upper()} must be > 0, got {getattr(s, name)}")
    if s.label_studio_retries < 0 or s.label_studio_retry_after_max_s < 0:
        raise SettingsError("LABEL_STUDIO_RETRIES and LABEL_STUDIO_RETRY_AFTER_MAX_S must be >= 0")
    if s.image_fetch_retries < 0 or s.image_fetch_backoff_s < 0:
        raise SettingsError("IMAGE_FETCH_RETRIES and IMAGE_FETCH_BACKOFF_S must be >= 0")
    if s.held_back_retry_s < 0:
        raise SettingsError(f"HELD_BACK_RETRY_S must be >= 0 seconds, got {s.held_back_retry_s}")
    if not 0.0 <= s.publish_max_unscored_share <= 1.0:
        raise SettingsError(
            f"PUBLISH_MAX_UNSCORED_SHARE must be a fraction in [0, 1], got {s.publish_max_unscored_share}"
        )
    if s.image_cache_max_bytes < 0:
        raise SettingsError("IMAGE_CACHE_MAX_BYTES must be >= 0 (0: no bound)")
    if s.reconcile_interval_s < 0:
        raise SettingsError("RECONCILE_INTERVAL_S must be >= 0")
    if s.min_annotations_to_train < 1:
        raise SettingsError("MIN_ANNOTATIONS_TO_TRAIN must be >= 1")
    if s.min_classes_to_train < 1:
        raise SettingsError("MIN_CLASSES_TO_TRAIN must be >= 1")
    if not 0.0 <= s.preselect_min_confidence <= 1.0:
        raise SettingsError(
            f"PRESELECT_MIN_CONFIDENCE must be a probability in [0, 1], got {s.preselect_min_confidence}"
        )
    if s.retrain_after_annotations < 0:
        raise SettingsError("RETRAIN_AFTER_ANNOTATIONS must be >= 0")
    if s.retrain_min_interval_s < 0 or s.retrain_duration_factor < 0:
        raise SettingsError("RETRAIN_MIN_INTERVAL_S and RETRAIN_DURATION_FACTOR must be >= 0")


def _check_choices(s: Settings) -> None:
    choices = {
        "train_mode": ("auto", "full", "frozen"),
        "augment_policy": ("strong", "crop_flip"),
        "input_norm": ("per_image", "dataset"),
        "coldstart_pick": COLD_START_PICKS,
        "keep_colour": KEEP_COLOUR_CHOICES,
    }
    for name, allowed in choices.items():
        if getattr(s, name) not in allowed:
            raise SettingsError(
                f"{name.upper()} must be one of {', '.join(allowed)}, got {getattr(s, name)!r}"
            )
    if s.train_mode == "frozen" and not (s.backbone_weights or s.pretrained_weights):
        raise SettingsError(
            "TRAIN_MODE=frozen needs a learned backbone: set BACKBONE_WEIGHTS or "
            "PRETRAINED_WEIGHTS, or use TRAIN_MODE=auto or full"
        )


def _check_training(s: Settings) -> None:
    if s.feature_shard_images < 0:
        raise SettingsError(
            f"FEATURE_SHARD_IMAGES must be >= 0 (0: never split), got {s.feature_shard_images}"
        )
    if min(s.train_steps, s.finetune_min_labels, s.full_training_max_image_size, s.frozen_max_labels) < 0:
        raise SettingsError(
            "TRAIN_STEPS, FINETUNE_MIN_LABELS, FULL_TRAINING_MAX_IMAGE_SIZE and "
            "FROZEN_MAX_LABELS must be >= 0"
        )
    if s.recipe_search_budget_s < 0 or s.recipe_search_min_labels < 0:
        raise SettingsError("RECIPE_SEARCH_BUDGET_S and RECIPE_SEARCH_MIN_LABELS must be >= 0")
    if s.self_supervised_steps < 0:
        raise SettingsError(f"SELF_SUPERVISED_STEPS must be >= 0 (0: off), got {s.self_supervised_steps}")
    if s.self_supervised_refresh_growth <= 0:
        raise SettingsError(
            f"SELF_SUPERVISED_REFRESH_GROWTH must be > 0 (a fraction of the "
            f"tasks), got {s.self_supervised_refresh_growth}"
        )
    if s.pool_consistency_weight < 0:
        raise SettingsError(f"POOL_CONSISTENCY_WEIGHT must be >= 0, got {s.pool_consistency_weight}")
    if s.pool_consistency_max_images < 1:
        raise SettingsError(
            f"POOL_CONSISTENCY_MAX_IMAGES must be >= 1 image, got {s.pool_consistency_max_images}"
        )
    if s.self_supervised_max_images < 2:
        raise SettingsError(f"SELF_SUPERVISED_MAX_IMAGES must be >= 2, got {s.self_supervised_max_images}")
    if s.recipe_search_folds < 2:
        raise SettingsError(f"RECIPE_SEARCH_FOLDS must be >= 2, got {s.recipe_search_folds}")
    if s.lpm_loss not in ("v1", "v2", "mse"):
        raise SettingsError(f"LPM_LOSS must be v1, v2 or mse, got {s.lpm_loss!r}")


def check_strategy(s: Settings) -> None:
    """STRATEGY must be a registered strategy, and the training settings its name stands for
    must be the ones set (learning_loss_v2 ranks like learning_loss; what differs is
    LPM_LOSS=v2, so the name alone must not pretend to be something else)."""
    entry = STRATEGIES.get(s.strategy)
    if entry is None:
        raise SettingsError(f"STRATEGY={s.strategy!r} is unknown; known: {', '.join(sorted(STRATEGIES))}")
    for name, wanted in entry.train_overrides.items():
        if hasattr(s, name) and getattr(s, name) != wanted:
            raise SettingsError(
                f"STRATEGY={s.strategy} is {entry.summary}: set "
                f"{name.upper()}={wanted} (now {getattr(s, name)!r})"
            )


def _check_weights_and_auth(s: Settings) -> None:
    if s.backbone_weights:
        if s.pretrained_weights:
            raise SettingsError(
                "set BACKBONE_WEIGHTS (torchvision's) or PRETRAINED_WEIGHTS (a local file), not both"
            )
        if s.backbone in ("small_cnn", "cifar_resnet18"):
            raise SettingsError(
                f"BACKBONE_WEIGHTS needs a torchvision BACKBONE (e.g. resnet50), "
                f"not {s.backbone}; use PRETRAINED_WEIGHTS for a local file"
            )
    if bool(s.basic_auth_user) != bool(s.basic_auth_pass):
        raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")


def parse_value(f: dataclasses.Field, raw: str):
    """The value of field ``f`` from its environment variable's text ``raw`` (stripped)."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw).expanduser()
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if f.name == "label_studio_url":
            return raw.rstrip("/")
        if f.name == "keep_colour":  # true/false spelled as for a boolean, or auto
            lowered = raw.lower()
            return {
                "1": "true",
                "yes": "true",
                "on": "true",
                "0": "false",
                "no": "false",
                "off": "false",
            }.get(lowered, lowered)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{f.name.upper()}={raw!r} is not a valid {kind}: {exc}") from None
