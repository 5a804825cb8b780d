"""The target network with its Loss Prediction Module (LPM), built from a ModelConfig.

Any torchvision classification model is used as is (built by name, never copied): its final Linear
layer becomes our classifier head, everything before it yields the embedding, and
``torchvision.models.feature_extraction.create_feature_extractor`` exposes the intermediate
feature maps ("taps") that the LPM reads, as in Yoo & Kweon (2019).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from model.config import ModelConfig
from model.pretrained import load_weights_state_dict, qualified_name, resolve_weights

SMALL_CNN = "small_cnn"
CIFAR_RESNET18 = "cifar_resnet18"

# Containers whose children are the network's stages, searched in this order for default taps.
_STAGE_CONTAINERS = ("features", "layers", "trunk_output", "encoder.layers")
# Families whose feature maps are channels-last (N, H, W, C).
_CHANNELS_LAST_FAMILIES = ("swin",)
# Resolution used to discover stage boundaries for default taps: big enough that a stride-32
# network still has distinct resolutions in every stage, small enough to be instant.
_TAP_PROBE_SIZE = 64
_MAX_DEFAULT_TAPS = 4
# Pretrained keys of modules we build without (auxiliary classifiers) that may be ignored.
_DROPPED_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")


class NetOutput(NamedTuple):
    logits: torch.Tensor  # (N, num_classes)
    predicted_loss: torch.Tensor  # (N,)
    embedding: torch.Tensor  # (N, D), penultimate features (input of the classifier head)


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
        ends = [c for c, nxt in zip(seen, seen[1:] + [None]) if nxt is None or shapes[nxt] != shapes[c]]
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
                for branch, feature, layout in zip(self.branches, features, self.tap_layouts)
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
    return {key[len(prefix):]: value.detach().to("cpu", copy=True).contiguous()
            for key, value in net.state_dict().items() if key.startswith(prefix)}


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
        for tap, layout in zip(taps, layouts)
    ]
    return LossLearningNet(features, taps, channels, layouts, head, cfg.dropout, cfg.lpm_width)
