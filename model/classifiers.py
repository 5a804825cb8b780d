"""The plain classifier a LossLearningNet is made of, built from a ModelConfig: our SmallCNN, the
CIFAR ResNet-18, or any torchvision classification model by name (built by name, never copied),
optionally with pretrained weights (a local state_dict file or torchvision's named weights).
``split_head`` takes its final Linear layer off, which makes the rest the embedding
(model/networks.py builds the LossLearningNet on it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from model.config import ModelConfig
from model.pretrained import load_weights_state_dict, qualified_name, resolve_weights

SMALL_CNN = "small_cnn"
CIFAR_RESNET18 = "cifar_resnet18"
# Pretrained keys of modules we build without (auxiliary classifiers) that may be ignored.
_DROPPED_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


class SmallCNN(nn.Module):
    """Our own small CPU-friendly classifier: 3 blocks of (conv-BN-ReLU) x2 + max-pool, GAP, FC."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        widths = (width, width * 2, width * 4)
        self.block1 = self._block(in_channels, widths[0])
        self.block2 = self._block(widths[0], widths[1])
        self.block3 = self._block(widths[1], widths[2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    @staticmethod
    def _block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def is_torchvision_name(name: str) -> bool:
    return name in torchvision.models.list_models(module=torchvision.models)


def _torchvision_classifier(cfg: ModelConfig, num_classes: int) -> nn.Module:
    name = cfg.backbone
    if name == CIFAR_RESNET18:
        net = torchvision.models.get_model("resnet18", weights=None, num_classes=num_classes)
        # The paper's CIFAR variant keeps 32 px inputs at full resolution in the stem:
        # a 3x3 stride-1 first convolution and no max-pool.
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
        return net
    if not is_torchvision_name(name):
        raise ValueError(
            f"unknown backbone {name!r}: use {SMALL_CNN!r}, {CIFAR_RESNET18!r} or a torchvision "
            f"classification model name, e.g. resnet18, mobilenet_v3_small, efficientnet_b0"
        )
    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        # Auxiliary classifiers change the training-mode output type; we do not use them.
        kwargs.update(aux_logits=False, init_weights=True)
        if cfg.weights:
            # As torchvision builds them for their pretrained weights: inputs normalised with
            # ImageNet's mean / std are mapped to the normalisation those weights were trained on.
            kwargs["transform_input"] = True
    if name.startswith("vit_"):
        kwargs["image_size"] = cfg.image_size
    return torchvision.models.get_model(name, **kwargs)


def _last_linear_name(net: nn.Module) -> str:
    names = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(net).__name__} has no Linear classifier head; not supported")
    return names[-1]


def _get_submodule_parent(net: nn.Module, qualified_name: str) -> tuple[nn.Module, str]:
    parent_name, _, child_name = qualified_name.rpartition(".")
    return (net.get_submodule(parent_name) if parent_name else net), child_name


def _unwrap_state_dict(loaded: object, source: str) -> dict[str, torch.Tensor]:
    state = loaded
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {source} do not hold a state_dict of tensors")
    # Weights saved from DataParallel / DistributedDataParallel carry a "module." prefix.
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(net: nn.Module, path: str | Path, head_name: str) -> None:
    """Load a local state_dict file into ``net`` (see ``load_matching_state_dict``)."""
    source = str(path)
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"cannot load pretrained weights {source}: {error}") from error
    load_matching_state_dict(net, _unwrap_state_dict(loaded, source), head_name, source)


def load_matching_state_dict(
    net: nn.Module, state: dict[str, torch.Tensor], head_name: str, source: str
) -> None:
    """Load pretrained ``state`` into ``net``; the head is kept at random init if its shape differs.

    Every non-head key must be present with the same shape and no others may be left over (a
    wrong architecture fails loudly instead of silently training from scratch); only the weights
    of the auxiliary classifiers we build without (GoogLeNet / Inception) are ignored. ``source``
    names the weights in errors.
    """
    own = net.state_dict()
    head_prefix = head_name + "."
    usable, problems = {}, []
    for key, tensor in own.items():
        if key not in state:
            if not key.startswith(head_prefix) and not key.endswith("num_batches_tracked"):
                problems.append(f"missing {key}")
        elif state[key].shape == tensor.shape:
            usable[key] = state[key]
        elif not key.startswith(head_prefix):
            problems.append(f"{key}: {tuple(state[key].shape)} vs {tuple(tensor.shape)}")
    for key in state:
        if key not in own and not key.startswith(_DROPPED_AUX_PREFIXES):
            problems.append(f"unexpected {key}")
    if problems or not usable:
        shown = "; ".join(problems[:5]) or "no matching keys"
        raise ValueError(
            f"pretrained weights {source} do not fit backbone: {shown}"
            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    net.load_state_dict(usable, strict=False)


def build_classifier(cfg: ModelConfig, num_classes: int, load_weights: bool = True) -> nn.Module:
    """The plain classifier (before splitting off its head), optionally with pretrained weights."""
    if cfg.backbone == SMALL_CNN:
        net: nn.Module = SmallCNN(num_classes, cfg.channels, cfg.small_cnn_width)
    else:
        if cfg.channels != 3:
            raise ValueError(f"backbone {cfg.backbone!r} needs channels=3, got {cfg.channels}")
        net = _torchvision_classifier(cfg, num_classes)
    if load_weights and cfg.pretrained_weights:
        load_pretrained(net, cfg.pretrained_weights, _last_linear_name(net))
    if load_weights and cfg.weights:
        weights = resolve_weights(cfg.backbone, cfg.weights)
        state = load_weights_state_dict(cfg.backbone, weights)
        load_matching_state_dict(net, state, _last_linear_name(net), qualified_name(weights))
    return net


def split_head(net: nn.Module) -> nn.Linear:
    """Replace the final Linear (and any dropout right before it) by Identity; return the Linear.

    The network's output then is the embedding; our own dropout + head follow it, so the dropout
    used by MC sampling is one configurable layer for every family.
    """
    head_name = _last_linear_name(net)
    parent, child = _get_submodule_parent(net, head_name)
    head = getattr(parent, child)
    setattr(parent, child, nn.Identity())
    if isinstance(parent, nn.Sequential):
        names = [name for name, _ in parent.named_children()]
        for name in reversed(names[: names.index(child)]):
            if not isinstance(getattr(parent, name), nn.Dropout):
                break
            setattr(parent, name, nn.Identity())
    return head
