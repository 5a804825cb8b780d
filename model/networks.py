"""The target network with its Loss Prediction Module (LPM), built from a ModelConfig.

Any torchvision classification model is used as is (built by name, never copied): its final Linear
layer becomes our classifier head, everything before it yields the embedding, and
``torchvision.models.feature_extraction.create_feature_extractor`` exposes the intermediate
feature maps ("taps") that the LPM reads, as in Yoo & Kweon (2019). Building the classifier
itself (and loading pretrained weights into it) is model/classifiers.py, whose names this module
re-exports.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from model.classifiers import CIFAR_RESNET18 as CIFAR_RESNET18  # re-exported
from model.classifiers import SMALL_CNN as SMALL_CNN  # re-exported
from model.classifiers import SmallCNN as SmallCNN  # re-exported
from model.classifiers import build_classifier as build_classifier  # re-exported
from model.classifiers import is_torchvision_name as is_torchvision_name  # re-exported
from model.classifiers import load_matching_state_dict as load_matching_state_dict  # re-exported
from model.classifiers import load_pretrained as load_pretrained  # re-exported
from model.classifiers import split_head as split_head  # re-exported
from model.config import ModelConfig

# Containers whose children are the network's stages, searched in this order for default taps.
_STAGE_CONTAINERS = ("features", "layers", "trunk_output", "encoder.layers")
# Families whose feature maps are channels-last (N, H, W, C).
_CHANNELS_LAST_FAMILIES = ("swin",)
# Resolution used to discover stage boundaries for default taps: big enough that a stride-32
# network still has distinct resolutions in every stage, small enough to be instant.
_TAP_PROBE_SIZE = 64
_MAX_DEFAULT_TAPS = 4


class NetOutput(NamedTuple):
    logits: torch.Tensor  # (N, num_classes)
    predicted_loss: torch.Tensor  # (N,)
    embedding: torch.Tensor  # (N, D), penultimate features (input of the classifier head)


def _tap_layout(backbone: str, shape: torch.Size) -> str:
    """How a tap's tensor is pooled: 'nchw', 'nhwc', 'tokens' (N, L, C) or 'flat' (N, C)."""
    if len(shape) == 4:
        return "nhwc" if backbone.startswith(_CHANNELS_LAST_FAMILIES) else "nchw"
    if len(shape) == 3:
        return "tokens"
    if len(shape) == 2:
        return "flat"
    raise ValueError(f"cannot pool a feature tap of shape {tuple(shape)}")


def _spatial_shape(backbone: str, output: torch.Tensor) -> tuple[int, ...]:
    layout = _tap_layout(backbone, output.shape)
    if layout == "nchw":
        return tuple(output.shape[-2:])
    if layout == "nhwc":
        return tuple(output.shape[1:3])
    return ()


def _stage_children(net: nn.Module) -> tuple[str, list[str]]:
    for container in _STAGE_CONTAINERS:
        try:
            module = net.get_submodule(container)
        except AttributeError:
            continue
        children = [name for name, _ in module.named_children()]
        if len(children) >= 2:
            return container, children
    # No stage container: top-level modules, minus those that are no stage (identity, dropout).
    children = [name for name, m in net.named_children() if not isinstance(m, (nn.Identity, nn.Dropout))]
    return "", children


def _probe_forward(net: nn.Module, cfg: ModelConfig, size: int, batch: int = 1):
    """One no-grad eval-mode forward on zeros; a network that cannot take this input size fails
    here with a ValueError naming the setting to change."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(torch.zeros(batch, cfg.channels, size, size))
    except RuntimeError as error:
        raise ValueError(
            f"backbone {cfg.backbone!r} cannot run on {size}x{size} px inputs "
            f"(change image_size): {str(error).splitlines()[0]}"
        ) from error
    finally:
        net.train(was_training)


def default_taps(cfg: ModelConfig, net: nn.Module) -> tuple[str, ...]:
    """Default LPM taps: the output of each of the network's last (up to 4) stages.

    ResNets: layer1..layer4 (the paper). small_cnn: its 3 blocks. Otherwise the stage ends are
    found by resolution: within the stage container (``features`` for MobileNet / EfficientNet /
    ConvNeXt / VGG / DenseNet, ``trunk_output`` for RegNet, ...) the last child at each spatial
    resolution; token models (ViT) get evenly spaced encoder layers. ``net`` has its head split.
    """
    if cfg.backbone == SMALL_CNN:
        return ("block1", "block2", "block3")
    if all(hasattr(net, f"layer{i}") for i in range(1, 5)):
        return ("layer1", "layer2", "layer3", "layer4")
    container, children = _stage_children(net)
    prefix = f"{container}." if container else ""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for child in children:
        module = net.get_submodule(prefix + child)

        def record(_module, _inputs, output, name=child):
            if isinstance(output, torch.Tensor):
                shapes[name] = _spatial_shape(cfg.backbone, output)

        hooks.append(module.register_forward_hook(record))
    # ViT is built for exactly image_size; others are probed at >= 64 px so stages stay distinct.
    probe_size = cfg.image_size
    if not cfg.backbone.startswith("vit_"):
        probe_size = max(cfg.image_size, _TAP_PROBE_SIZE)
    try:
        _probe_forward(net, cfg, probe_size)
    finally:
        for hook in hooks:
            hook.remove()
    seen = [child for child in children if child in shapes]
    if seen and all(shapes[c] for c in seen):
        ends = [
            c
            for c, nxt in zip(seen, seen[1:] + [None], strict=False)
            if nxt is None or shapes[nxt] != shapes[c]
        ]
        if len(ends) > _MAX_DEFAULT_TAPS:
            ends = ends[-_MAX_DEFAULT_TAPS:]
    else:
        # No spatial structure (token models): evenly spaced children, always including the last.
        count = min(_MAX_DEFAULT_TAPS, len(seen))
        step = len(seen) / count if count else 1
        ends = [seen[int(round((k + 1) * step)) - 1] for k in range(count)]
    return tuple(prefix + child for child in ends)


def _embedding_node(net: nn.Module) -> str:
    train_nodes, eval_nodes = get_graph_node_names(net)
    node = eval_nodes[-1]
    if node not in train_nodes:
        raise ValueError(f"cannot find the embedding node of {type(net).__name__} in both modes")
    return node


def _full_precision(reference: torch.Tensor):
    """Autocast switched off on ``reference``'s device type for the block it guards."""
    return torch.autocast(device_type=reference.device.type, enabled=False)


class LossPredictionModule(nn.Module):
    """Per tap: global average pooling -> FC(width) -> ReLU; concatenated -> FC -> one scalar."""

    def __init__(self, tap_channels: list[int], tap_layouts: list[str], width: int) -> None:
        super().__init__()
        self.tap_layouts = list(tap_layouts)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, width), nn.ReLU(inplace=True)) for channels in tap_channels
        )
        self.out = nn.Linear(width * len(tap_channels), 1)

    @staticmethod
    def pool(feature: torch.Tensor, layout: str) -> torch.Tensor:
        if layout == "nchw":
            return feature.mean(dim=(2, 3))
        if layout == "nhwc":
            return feature.mean(dim=(1, 2))
        if layout == "tokens":
            return feature.mean(dim=1)
        return feature

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # Always fp32, also under autocast: in bf16 the predicted losses of a large pool collapse
        # to ~1,000 distinct values (8 mantissa bits) and the ranking breaks ties by task order.
        # Pooling first in fp32, then small Linear layers: negligible cost next to the backbone.
        with _full_precision(features[0]):
            pooled = [
                branch(self.pool(feature.float(), layout).flatten(1))
                for branch, feature, layout in zip(self.branches, features, self.tap_layouts, strict=False)
            ]
            return self.out(torch.cat(pooled, dim=1)).squeeze(1)


class LossLearningNet(nn.Module):
    """Target classifier + LPM. forward(x) -> NetOutput(logits, predicted_loss, embedding).

    ``detach_lpm_input`` (set by the trainer late in training) stops the LPM's gradients from
    reaching the backbone; the classifier keeps training the backbone as usual.
    """

    def __init__(
        self,
        features: nn.Module,
        taps: tuple[str, ...],
        tap_channels: list[int],
        tap_layouts: list[str],
        head: nn.Linear,
        dropout: float,
        lpm_width: int,
    ) -> None:
        super().__init__()
        self.features = features
        self.taps = tuple(taps)
        self.dropout = nn.Dropout(dropout)
        self.head = head
        self.lpm = LossPredictionModule(tap_channels, tap_layouts, lpm_width)
        self.detach_lpm_input = False

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features

    def forward(self, x: torch.Tensor) -> NetOutput:
        outputs = self.features(x)
        # The backbone may run under autocast; the embedding, head and LPM are fp32, so margins,
        # probabilities and predicted losses (what the strategies rank by) are not bf16-coarse.
        embedding = outputs["embedding"].flatten(1).float()
        with _full_precision(embedding):
            logits = self.head(self.dropout(embedding))
        taps = [outputs[name] for name in self.taps]
        if self.detach_lpm_input:
            taps = [t.detach() for t in taps]
        return NetOutput(logits, self.lpm(taps), embedding)


def backbone_state_dict(net: LossLearningNet) -> dict[str, torch.Tensor]:
    """The trained backbone of ``net`` in the key layout of ``build_classifier`` (no head, no loss
    prediction module, CPU copies): what ``ModelConfig(pretrained_weights=...)`` loads back, so a
    model trained on one image set can be the pretrained start of another."""
    prefix = "features."
    return {
        key[len(prefix) :]: value.detach().to("cpu", copy=True).contiguous()
        for key, value in net.state_dict().items()
        if key.startswith(prefix)
    }


def build_network(cfg: ModelConfig, num_classes: int, load_weights: bool = True) -> LossLearningNet:
    """Build the LossLearningNet for ``cfg``; ``load_weights=False`` skips pretrained_weights and
    torchvision ``weights`` without touching their files or the hub cache (used when a
    checkpoint's own weights follow)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    net = build_classifier(cfg, num_classes, load_weights)
    head = split_head(net)
    taps = tuple(cfg.taps) if cfg.taps is not None else default_taps(cfg, net)
    if not taps:
        raise ValueError(f"no feature taps found for backbone {cfg.backbone!r}; set taps")
    return_nodes = {tap: tap for tap in taps}
    return_nodes[_embedding_node(net)] = "embedding"
    try:
        features = create_feature_extractor(net, return_nodes=return_nodes)
    except ValueError as error:
        _, eval_nodes = get_graph_node_names(net)
        raise ValueError(
            f"bad taps {taps} for {cfg.backbone!r}: {error}. Module names such as "
            f"{sorted({n.split('.')[0] for n in eval_nodes})} or node names such as "
            f"{eval_nodes[len(eval_nodes) // 2]!r} work"
        ) from error
    # One tiny forward tells us each tap's channel count and memory layout.
    probe = _probe_forward(features, cfg, cfg.image_size, batch=2)
    layouts = [_tap_layout(cfg.backbone, probe[tap].shape) for tap in taps]
    channels = [
        probe[tap].shape[-1] if layout in ("nhwc", "tokens") else probe[tap].shape[1]
        for tap, layout in zip(taps, layouts, strict=False)
    ]
    return LossLearningNet(features, taps, channels, layouts, head, cfg.dropout, cfg.lpm_width)
