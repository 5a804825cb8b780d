"""Which of the two training modes a round uses.

- ``"frozen"``: the backbone is fixed; a light head and the loss prediction module are trained on
  its cached pooled multi-level features (model/frozen.py). Right when the backbone already knows
  how to see (pretrained weights, or self-supervised weights from the project's own images) and
  labels are few: a few dozen labels cannot improve millions of backbone weights, and a round costs
  seconds instead of a full training.
- ``"full"``: the whole network is trained jointly with the module (model/trainer.py). Right when
  there is no representation to start from (from scratch), or when labels are many and a GPU makes
  fine-tuning affordable.
"""
from __future__ import annotations

TRAIN_MODES = ("auto", "frozen", "full")


def choose_train_mode(requested: str, *, has_representation: bool, n_labeled: int,
                      finetune_min_labels: int, cuda_available: bool) -> str:
    """The mode for this round: ``requested`` unless it is "auto".

    auto: "frozen" when a learned representation exists and fine-tuning is not yet worth it
    (fewer than ``finetune_min_labels`` labels, or no GPU to fine-tune on); "full" otherwise.
    "frozen" without a representation is refused: a frozen random network ranks nothing useful.
    """
    if requested not in TRAIN_MODES:
        raise ValueError(f"train mode must be one of {TRAIN_MODES}, got {requested!r}")
    if requested == "frozen" and not has_representation:
        raise ValueError("train mode 'frozen' needs pretrained or self-supervised backbone weights "
                         "(BACKBONE_WEIGHTS or PRETRAINED_WEIGHTS); use 'full' or 'auto'")
    if requested != "auto":
        return requested
    if not has_representation:
        return "full"
    if cuda_available and n_labeled >= finetune_min_labels:
        return "full"
    return "frozen"
