"""KEEP_COLOUR=auto: a trained round decides from its labels whether colour tells the classes
apart (model/colour_choice.py), on the features of the project's colour-invariant
self-supervised backbone, before the round's own backbone is chosen."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from backend.constants import RoundPhase
from backend.model_store import ModelStore
from backend.rounds.representation import has_configured_weights, self_supervised_start
from backend.settings import Settings
from model.colour_choice import choose_colour, colour_histograms
from model.config import ModelConfig
from model.frozen import extract_pooled
from model.networks import build_network

if TYPE_CHECKING:
    from backend.rounds.train import RoundInputs

log = logging.getLogger(__name__)


def colour_for_round(
    settings: Settings, store: ModelStore, inputs: RoundInputs
) -> tuple[ModelConfig, dict, dict | None]:
    """The round's model config with its colour choice, the choice with its evidence (for
    /status and the round summary), and the self-supervised step's report when that config
    already starts from the weights to train from (the colour-invariant ones the choice was made
    on); None when the round's backbone is still to be chosen (colour kept, or KEEP_COLOUR set).
    KEEP_COLOUR true or false is taken as it is; auto compares the labeled images' features from
    the colour-invariant weights (learned now if the cold start did not) with and without their
    colour histograms."""
    model_config = inputs.model_config
    if settings.keep_colour != "auto":
        return (
            model_config,
            {"keep_colour": model_config.keep_colour, "reason": f"KEEP_COLOUR={settings.keep_colour}"},
            None,
        )
    invariant = dataclasses.replace(model_config, keep_colour=False)
    start, learned = self_supervised_start(
        settings, store, inputs.project_id, invariant, inputs.fetcher, inputs.pool_items, inputs.run
    )
    if not has_configured_weights(start):
        return (
            start,
            {"keep_colour": False, "reason": "no self-supervised weights to decide on: colour-invariant"},
            learned,
        )
    inputs.run.status(phase=RoundPhase.CHOOSING_COLOUR)
    images = [image for _, image in inputs.train_images]
    network = build_network(start, num_classes=len(inputs.labels))
    features = extract_pooled(
        network, images, start, device=settings.device, batch_size=settings.score_batch_size
    ).embedding
    choice = choose_colour(
        features, colour_histograms(images, side=start.image_size), inputs.targets, seed=settings.seed
    )
    log.info("project %s: colour %s", inputs.project_id, choice.reason)
    inputs.run.status(colour=choice.to_dict())
    if choice.keep_colour:
        return dataclasses.replace(model_config, keep_colour=True), choice.to_dict(), None
    return start, choice.to_dict(), learned
