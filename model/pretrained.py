"""torchvision's own pretrained weights for a torchvision backbone (``ModelConfig.weights``).

A name ("DEFAULT", "IMAGENET1K_V2" or "ResNet50_Weights.IMAGENET1K_V2") is resolved through
torchvision's weights API. The state dict is read from torch's hub cache,
``torch.hub.get_dir()/checkpoints/<basename of weights.url>`` (``TORCH_HOME/hub/checkpoints`` unless
the hub dir is set otherwise), with ``weights_only=True`` and no network access. Only when that file
is missing is it downloaded once (hash-checked) through ``weights.get_state_dict``; when that fails
(an offline machine), the error names the file to place and the URL to fetch it from.

The weights' own transforms give the input they were trained on: ``preprocessing_for`` (pure) and
``with_weights_preprocessing`` (a ModelConfig using it).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import WeightsEnum

from model.config import ModelConfig

# Fields set to these values when a config takes pretrained weights' preprocessing, if the
# installed ModelConfig has them: the fixed mean / std normalisation the weights were trained with.
_PRETRAINED_INPUT_FIELDS = {"input_norm": "dataset"}


def weights_enum(backbone: str) -> type[WeightsEnum]:
    """The torchvision weights enum of ``backbone`` (ValueError if it has none)."""
    try:
        return torchvision.models.get_model_weights(backbone)
    except (ValueError, KeyError, AttributeError) as error:
        raise ValueError(
            f"backbone {backbone!r} has no torchvision pretrained weights: weights need a "
            f"torchvision classification model name (e.g. resnet18, resnet50, efficientnet_b0)"
        ) from error


def weight_names(backbone: str) -> list[str]:
    """Every name ``resolve_weights`` accepts for ``backbone``: DEFAULT and the enum's members."""
    members = list(weights_enum(backbone).__members__)
    return (["DEFAULT"] if "DEFAULT" in members else []) + [m for m in members if m != "DEFAULT"]


def resolve_weights(backbone: str, weights: str | WeightsEnum) -> WeightsEnum:
    """``weights`` as a member of ``backbone``'s weights enum.

    Accepts a member, "DEFAULT", a member name ("IMAGENET1K_V2", case-insensitive) or a qualified
    name ("ResNet50_Weights.IMAGENET1K_V2"). Unknown names, or weights of another model, raise a
    ValueError listing the valid names for ``backbone``.
    """
    enum = weights_enum(backbone)
    if isinstance(weights, WeightsEnum):
        if type(weights) is not enum:
            raise ValueError(
                f"{type(weights).__name__}.{weights.name} are not weights of {backbone!r} "
                f"({enum.__name__}); valid: {', '.join(weight_names(backbone))}"
            )
        return weights
    text = str(weights).strip()
    valid = weight_names(backbone)
    member = text
    if "." in text:
        enum_name, _, member = text.rpartition(".")
        if enum_name.rpartition(".")[2].lower() != enum.__name__.lower():
            raise ValueError(
                f"weights {text!r} are not weights of {backbone!r}, whose enum is "
                f"{enum.__name__}; valid: {', '.join(valid)}"
            )
    found = enum.__members__.get(member.upper())
    if found is None:
        raise ValueError(f"unknown weights {text!r} for backbone {backbone!r}; valid: {', '.join(valid)}")
    return found


def qualified_name(weights: WeightsEnum) -> str:
    """ "ResNet50_Weights.IMAGENET1K_V2": the exact weights, also when they were asked for as DEFAULT."""
    return f"{type(weights).__name__}.{weights.name}"


def weights_file(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps these weights (the file ``torch.hub`` downloads to)."""
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_weights_state_dict(backbone: str, weights: str | WeightsEnum) -> dict[str, torch.Tensor]:
    """The state dict of ``weights``: from the hub cache without network access when the file is
    there, else downloaded once into it; ValueError naming the file and URL when both fail."""
    resolved = resolve_weights(backbone, weights)
    path = weights_file(resolved)
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
            raise ValueError(
                f"cannot load {qualified_name(resolved)} from {path}: {error}. Delete the file to "
                f"download it again, or replace it with {resolved.url}"
            ) from error
    else:
        try:
            state = resolved.get_state_dict(progress=False, check_hash=True)
        except Exception as error:  # noqa: BLE001 - offline, proxy, HTTP or hash errors alike
            raise ValueError(
                f"pretrained weights {qualified_name(resolved)} are not in the torch hub cache and "
                f"could not be downloaded ({type(error).__name__}: {error}). On a machine with "
                f"internet, fetch {resolved.url} and place it at {path} (the hub cache follows "
                f"TORCH_HOME)"
            ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict of tensors")
    return state


def preprocessing_for(backbone: str, weights: str | WeightsEnum) -> dict:
    """The input ``weights`` were trained on, from their own transforms:
    ``{"image_size": crop size, "mean": (r, g, b), "std": (r, g, b)}``. Loads nothing.

    Our data pipeline resizes the whole image to image_size x image_size; the transforms'
    resize-then-center-crop (``resize_size``) is not reproduced.
    """
    resolved = resolve_weights(backbone, weights)
    transforms = resolved.transforms()
    try:
        crop = transforms.crop_size
        mean, std = transforms.mean, transforms.std
    except AttributeError as error:
        raise ValueError(f"{qualified_name(resolved)} have no image classification transforms") from error
    size = crop[0] if isinstance(crop, (list, tuple)) else crop
    return {
        "image_size": int(size),
        "mean": tuple(float(m) for m in mean),
        "std": tuple(float(s) for s in std),
    }


def with_weights_preprocessing(cfg: ModelConfig, *, keep_image_size: bool = False) -> ModelConfig:
    """``cfg`` with the input its ``weights`` expect: image_size = their crop size (unless
    ``keep_image_size``: an explicitly chosen size wins), their mean and std, fixed dataset
    normalisation; ``weights`` becomes the qualified name of the weights actually used (DEFAULT
    pinned), so a checkpoint records them. ``cfg`` without weights is returned unchanged."""
    if cfg.weights is None:
        return cfg
    resolved = resolve_weights(cfg.backbone, cfg.weights)
    changes = preprocessing_for(cfg.backbone, resolved)
    if keep_image_size:
        del changes["image_size"]
    changes["weights"] = qualified_name(resolved)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    changes.update({k: v for k, v in _PRETRAINED_INPUT_FIELDS.items() if k in known})
    return dataclasses.replace(cfg, **changes)
