"""Atomic checkpoint files that are safe to load (torch.load(weights_only=True)).

A checkpoint is a plain dict: format marker and version, the LossLearningNet state_dict, the
labels, both configs as plain dicts, the training metrics, the caller's ``extra`` dict and a
SHA-256 of all of it (so modified weights are detected, not silently used). The network
is rebuilt from the stored ModelConfig (without re-reading pretrained_weights) and the state_dict
is loaded strictly. Keeping the newest N versions is the caller's job.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.atomic import atomic_write_bytes
from model.config import LEGACY_MODEL_DEFAULTS, ModelConfig, TrainConfig
from model.networks import LossLearningNet, build_network
from model.runtime import resolve_device
from model.trainer import TrainResult

FORMAT = "learning-loss-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint file is missing, unreadable, corrupt, tampered with or of another format."""


@dataclass
class LoadedModel:
    model: LossLearningNet  # in eval mode, on the requested device
    labels: list[str]
    model_config: ModelConfig
    train_config: TrainConfig
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_train_result(self) -> TrainResult:
        return TrainResult(self.model, self.labels, self.model_config, self.train_config, self.metrics)


def plain(value: Any) -> Any:
    """Convert metrics / extra into the types weights_only loading accepts (and JSON can hold):
    numpy scalars and arrays become Python numbers and lists, tuples become lists, NaN -> None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint; use plain data")


def content_digest(payload: dict) -> str:
    """SHA-256 over everything in the payload except the digest itself: the metadata as
    canonical JSON, then each tensor's name, dtype, shape and raw bytes. The zip container does
    not check tensor data, so without this a flipped byte in the weights would load silently."""
    digest = hashlib.sha256()
    metadata = {k: v for k, v in payload.items() if k not in ("state_dict", "sha256")}
    digest.update(json.dumps(metadata, sort_keys=True, allow_nan=False).encode())
    for name in sorted(payload["state_dict"]):
        tensor = payload["state_dict"][name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, result: TrainResult, extra: dict | None = None) -> None:
    """Write atomically: a temp file in the same directory, flushed and fsynced, then
    os.replace onto ``path`` and an fsync of the directory. Readers see the old or the new file,
    never a partial one."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()},
        "labels": [str(label) for label in result.labels],
        "model_config": plain(result.model_config.to_dict()),
        "train_config": plain(result.train_config.to_dict()),
        "metrics": plain(result.metrics or {}),
        "extra": plain(extra or {}),
    }
    payload["sha256"] = content_digest(payload)
    atomic_torch_save(path, payload)


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` of ``obj`` into ``path`` atomically (model.atomic). Serialised in memory
    first: torch's file writer turns a failed write (a full disk) into an opaque RuntimeError
    ("unexpected pos ..."), while the bytes' own write raises the OSError that names it
    (ENOSPC), and so does the round's status."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _require(payload: dict, key: str, kind: type, path: Path) -> Any:
    value = payload.get(key)
    if not isinstance(value, kind):
        raise CheckpointError(f"checkpoint {path} has no valid {key!r} ({kind.__name__} expected)")
    return value


def load_checkpoint(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Load a checkpoint written by save_checkpoint; the model comes back in eval mode.

    Raises CheckpointError with the reason for a missing, truncated, corrupt or foreign file,
    or one whose weights do not match its stored configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle / zip / EOF errors all mean a bad file
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a safe checkpoint: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this code reads up to {FORMAT_VERSION}"
        )
    state_dict = _require(payload, "state_dict", dict, path)
    if not all(isinstance(t, torch.Tensor) for t in state_dict.values()):
        raise CheckpointError(f"checkpoint {path} has a state_dict with non-tensor values")
    try:
        digest = content_digest(payload)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has malformed metadata: {error}") from error
    if payload.get("sha256") != digest:
        raise CheckpointError(f"checkpoint {path} failed its integrity check (content was modified)")
    labels = _require(payload, "labels", list, path)
    if not labels or not all(isinstance(label, str) for label in labels):
        raise CheckpointError(f"checkpoint {path} has invalid labels")
    try:
        stored_model_config = _require(payload, "model_config", dict, path)
        model_config = ModelConfig.from_dict({**LEGACY_MODEL_DEFAULTS, **stored_model_config})
        train_config = TrainConfig.from_dict(_require(payload, "train_config", dict, path))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has an invalid configuration: {error}") from error
    try:
        model = build_network(model_config, num_classes=len(labels), load_weights=False)
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {path} weights do not match its configuration: {str(error)[:500]}"
        ) from error
    model.to(resolve_device(device)).eval()  # "auto" -> CUDA when present, else CPU
    return LoadedModel(
        model=model,
        labels=list(labels),
        model_config=model_config,
        train_config=train_config,
        metrics=dict(payload.get("metrics") or {}),
        extra=dict(payload.get("extra") or {}),
    )
