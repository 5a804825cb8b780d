"""Which torchvision pretrained weights are already in torch's hub cache, without importing torch.

The backend's settings check runs in every process before any model is loaded and must not pay for
torch, so the weights' file names are listed here; a unit test checks the list against
torchvision's weights enums (``model/pretrained.py`` loads the file that is found).
"""

from __future__ import annotations

import os
from pathlib import Path

# (torchvision model name, qualified weights name, file name in the hub cache), in the order they
# are preferred when several are cached: small, fast networks first (frozen features are computed
# on the CPU too), newer weights of a network before older ones.
CACHED_WEIGHTS: tuple[tuple[str, str, str], ...] = (
    ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "resnet18-f37072fd.pth"),
    ("resnet34", "ResNet34_Weights.IMAGENET1K_V1", "resnet34-b627a593.pth"),
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    ("resnet50", "ResNet50_Weights.IMAGENET1K_V1", "resnet50-0676ba61.pth"),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", "mobilenet_v3_large-5c1a4163.pth"),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth"),
    ("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth"),
    ("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "convnext_tiny-983f1562.pth"),
    ("regnet_y_400mf", "RegNet_Y_400MF_Weights.IMAGENET1K_V2", "regnet_y_400mf-e6988f5f.pth"),
    ("regnet_y_400mf", "RegNet_Y_400MF_Weights.IMAGENET1K_V1", "regnet_y_400mf-c65dace8.pth"),
)


def hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` by torch's own rule: $TORCH_HOME/hub, else
    $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.getenv("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def find_cached_weights(checkpoints: Path | None = None) -> tuple[str, str, Path] | None:
    """(model name, qualified weights name, file) of the first ``CACHED_WEIGHTS`` entry whose
    non-empty file is in ``checkpoints`` (default: the hub cache); None when there is none. Reads
    only the directory: nothing is loaded or downloaded."""
    folder = hub_checkpoints_dir() if checkpoints is None else checkpoints
    for backbone, weights, filename in CACHED_WEIGHTS:
        path = folder / filename
        if path.is_file() and path.stat().st_size > 0:
            return backbone, weights, path
    return None


def weights_for(backbone: str) -> str:
    """The qualified weights name ``CACHED_WEIGHTS`` prefers for ``backbone`` (ValueError naming
    the networks it knows otherwise)."""
    for name, weights, _ in CACHED_WEIGHTS:
        if name == backbone:
            return weights
    known = ", ".join(dict.fromkeys(name for name, _, _ in CACHED_WEIGHTS))
    raise ValueError(f"no pretrained weights are listed for {backbone!r}; choose one of {known}")


def main(argv: list[str] | None = None) -> int:
    """``python -m model.weights_cache --fetch resnet18``: download a network's preferred weights
    into the hub cache (the Docker image's build argument TORCHVISION_WEIGHTS runs this; it needs
    internet, and a running backend then finds the file without a setting)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--fetch", required=True, metavar="BACKBONE")
    args = parser.parse_args(argv)
    try:
        weights = weights_for(args.fetch)
    except ValueError as error:
        parser.error(str(error))
    from model.pretrained import load_weights_state_dict  # torch only when fetching

    load_weights_state_dict(args.fetch, weights)
    print(f"{weights} in {hub_checkpoints_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
