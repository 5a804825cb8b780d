"""Which of the two training modes a round uses.

- ``"frozen"``: the backbone is fixed; a light head and the loss prediction module are trained on
  its cached pooled multi-level features (model/frozen.py). A round costs seconds instead of a
  full training. Right when the backbone already knows how to see (pretrained weights, or the
  project's own self-supervised weights) and either labels are very few (where it was measured
  level with fine-tuning or above it) or the input is too large to fine-tune without a GPU (the
  224 px of ImageNet weights).
- ``"full"``: the whole network is trained jointly with the module (model/trainer.py). Right when
  there is no representation to start from (from scratch), when labels are many and a GPU makes
  fine-tuning affordable, and when the network's input is small: then a full round costs what a
  round without pretrained weights costs on any device, and fine-tuning was measured far above the
  frozen mode from a few dozen labels on.

The measurements: docs/results.md, 'Measured: the domain suite' (``transfer_init`` vs
``transfer_frozen``, ``selfsup_init`` vs ``selfsup_frozen``).
"""

from __future__ import annotations

TRAIN_MODES = ("auto", "frozen", "full")


def fine_tunes_like_scratch(input_size: int, full_max_input_size: int) -> bool:
    """Whether a network of ``input_size`` pixels a side is small enough that training all of it
    from pretrained weights (and adapting them by self-supervision first) costs what a round
    without weights costs: at most ``full_max_input_size`` (0: never)."""
    return input_size <= full_max_input_size


def choose_train_mode(
    requested: str,
    *,
    has_representation: bool,
    n_labeled: int,
    finetune_min_labels: int,
    cuda_available: bool,
    input_size: int,
    full_max_input_size: int,
    frozen_max_labels: int,
    learned_on_project: bool = False,
) -> str:
    """The mode for this round: ``requested`` unless it is "auto".

    auto: "full" without a learned representation. With one, "frozen" up to
    ``frozen_max_labels`` labels, where the frozen head was measured level with fine-tuning or
    above it, in seconds. Past that, "full" when the representation was ``learned_on_project``
    (the project's own self-supervised weights: the network is the one it would train from
    scratch, at any input size) or its input (``input_size`` pixels a side) is at most
    ``full_max_input_size`` (0: never): fine-tuning then costs what training from scratch costs.
    A larger pretrained input keeps the backbone "frozen" until fine-tuning is worth its cost: a
    GPU and ``finetune_min_labels`` labels.
    "frozen" without a representation is refused: a frozen random network ranks nothing useful.
    """
    if requested not in TRAIN_MODES:
        raise ValueError(f"train mode must be one of {TRAIN_MODES}, got {requested!r}")
    if requested == "frozen" and not has_representation:
        raise ValueError(
            "train mode 'frozen' needs pretrained or self-supervised backbone weights "
            "(BACKBONE_WEIGHTS or PRETRAINED_WEIGHTS); use 'full' or 'auto'"
        )
    if requested != "auto":
        return requested
    if not has_representation:
        return "full"
    if learned_on_project:
        return "frozen" if n_labeled <= frozen_max_labels else "full"
    if fine_tunes_like_scratch(input_size, full_max_input_size) and n_labeled > frozen_max_labels:
        return "full"
    if cuda_available and n_labeled >= finetune_min_labels:
        return "full"
    return "frozen"
