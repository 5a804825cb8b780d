"""The train phase: the round's model trained in the mode the labels and hardware call for
("full": the whole network with the recipe search's recipe; "frozen": a head on cached pooled
features), and every pool task scored with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from backend.constants import RoundPhase
from backend.feature_round import feature_cache_for, pooled_features
from backend.feature_shards import sharding_for_round
from backend.image_scoring import mc_samples_for
from backend.images import FetchReport, ImageFetcher
from backend.model_store import ModelStore, new_version
from backend.rounds.collect import CollectedRound
from backend.rounds.colour import colour_for_round
from backend.rounds.configs import train_config_from
from backend.rounds.pool_consistency import load_consistency_pool
from backend.rounds.progress import RoundRun
from backend.rounds.representation import has_configured_weights, learns_own_weights, self_supervised_start
from backend.rounds.score import NothingScored, score_pool
from backend.settings import Settings
from model import recipe_search, trainer
from model.config import ModelConfig, TrainConfig
from model.frozen import score_pooled, train_frozen
from model.modes import choose_train_mode
from model.networks import build_network
from model.outputs import ScoreOutputs
from model.runtime import resolve_device
from model.trainer import TrainResult

log = logging.getLogger(__name__)


@dataclass
class RoundInputs:
    """What both training modes of a round work from."""

    project_id: int
    labels: list[str]
    train_images: list[tuple[int, Image.Image]]  # (task id, image) of the usable labeled tasks
    targets: list[int]  # class index of each train image
    pool_items: list[tuple[int, str]]  # (task id, url): unlabeled first, then labeled
    fetcher: ImageFetcher
    report: FetchReport
    model_config: ModelConfig
    train_config: TrainConfig
    run: RoundRun
    recipe_search: dict | None = None  # what the recipe search did (full mode), for the summary
    self_supervised: dict | None = None  # where full training started from (for the summary)


@dataclass
class TrainedRound:
    """A trained model and its scores of the pool (not yet saved, ranked or pushed)."""

    version: str
    mode: str  # "full" or "frozen" (model.modes)
    result: TrainResult
    ids: list[int]  # task ids scored, in pool order (unlabeled first)
    outputs: ScoreOutputs | None  # their outputs; None when no image could be scored
    recipe_search: dict | None
    self_supervised: dict | None


def choose_mode(settings: Settings, collected: CollectedRound) -> str:
    """ "full" or "frozen", as model.modes decides for these labels, weights and hardware."""
    model_config = collected.model_config
    configured = has_configured_weights(model_config)
    learns_own = learns_own_weights(settings, model_config)
    return choose_train_mode(
        settings.train_mode,
        n_labeled=len(collected.train_images),
        has_representation=configured or learns_own,
        learned_on_project=learns_own,
        finetune_min_labels=settings.finetune_min_labels,
        cuda_available=resolve_device(settings.device).type == "cuda",
        input_size=model_config.image_size,
        full_max_input_size=settings.full_training_max_image_size,
        frozen_max_labels=settings.frozen_max_labels,
    )


def train_and_score(
    settings: Settings, store: ModelStore, project_id: int, collected: CollectedRound, run: RoundRun
) -> TrainedRound:
    """Train the round's model in the mode the labels and hardware call for, and score every
    pool task with it (the frozen mode scores from the very features it trained on)."""
    learns_own = learns_own_weights(settings, collected.model_config)
    mode = choose_mode(settings, collected)
    inputs = RoundInputs(
        project_id,
        collected.labels,
        collected.train_images,
        collected.targets,
        collected.split.all_items,
        collected.fetcher,
        collected.report,
        collected.model_config,
        train_config_from(settings),
        run,
    )
    version = new_version()
    run.status(version_in_progress=version)
    # A full round starts from the self-supervised weights (adapting a configured file); a frozen
    # round keeps a configured backbone as it is and needs the project's own otherwise.
    if mode == "full" or learns_own:
        colour, started = None, None
        with run.phase("self_supervised_s"):
            if learns_own:
                inputs.model_config, colour, started = colour_for_round(settings, store, inputs)
            if started is None:  # the backbone is not chosen yet (colour kept, or set)
                started_config, started = self_supervised_start(
                    settings, store, project_id, inputs.model_config, inputs.fetcher, inputs.pool_items, run
                )
                inputs.model_config = started_config
        inputs.self_supervised = started if colour is None else {**(started or {}), "colour": colour}
    if mode == "frozen" and not has_configured_weights(inputs.model_config):
        mode = "full"  # the project's weights could not be learned (too few loadable images)
    outputs: ScoreOutputs | None
    if mode == "frozen":
        result, ids, outputs = _train_and_score_frozen(settings, store, inputs)
    else:
        result, ids, outputs = _train_and_score_full(settings, inputs)
    return TrainedRound(version, mode, result, ids, outputs, inputs.recipe_search, inputs.self_supervised)


def recipe_search_skip_reason(settings: Settings, n_labeled: int) -> str | None:
    """Why a round trains with the configured recipe without cross-validating, or None."""
    if settings.recipe_search_budget_s <= 0:
        return "RECIPE_SEARCH_BUDGET_S is 0"
    if n_labeled < settings.recipe_search_min_labels:
        return f"{n_labeled} labels, fewer than RECIPE_SEARCH_MIN_LABELS={settings.recipe_search_min_labels}"
    return None


def choose_recipe(settings: Settings, inputs: RoundInputs) -> tuple[ModelConfig, TrainConfig, dict]:
    """The configs the round's model trains with, and what the recipe search did (for the
    round summary): k-fold cross-validation of model/recipe_search.CANDIDATES within the budget."""
    skip = recipe_search_skip_reason(settings, len(inputs.train_images))
    if skip is not None:
        return inputs.model_config, inputs.train_config, {"chosen": "configured", "reason": skip}
    inputs.run.status(phase=RoundPhase.RECIPE_SEARCH)
    found = recipe_search.search(
        [img for _, img in inputs.train_images],
        inputs.targets,
        inputs.labels,
        inputs.model_config,
        inputs.train_config,
        folds=settings.recipe_search_folds,
        budget_s=settings.recipe_search_budget_s,
        progress=lambda info: inputs.run.status(phase=RoundPhase.RECIPE_SEARCH, recipe_search_progress=info),
    )
    model_config, train_config = recipe_search.resolve(
        recipe_search.candidate_named(found.chosen), inputs.model_config, inputs.train_config
    )
    return model_config, train_config, found.summary()


def _train_and_score_full(
    settings: Settings, inputs: RoundInputs
) -> tuple[TrainResult, list[int], ScoreOutputs | None]:
    """Mode "full": train the whole network with the module (with the recipe the search chose),
    then score every pool image."""
    run = inputs.run
    with run.phase("recipe_search_s"):
        model_config, train_config, searched = choose_recipe(settings, inputs)
        inputs.recipe_search = searched
    with run.phase(
        "train_s",
        RoundPhase.TRAINING,
        annotations_used=len(inputs.train_images),
        train_mode="full",
        recipe=searched,
    ):
        unlabeled = load_consistency_pool(
            settings,
            inputs.pool_items,
            {tid for tid, _ in inputs.train_images},
            inputs.fetcher,
            model_config,
            run,
        )
        result = trainer.train(
            [img for _, img in inputs.train_images],
            inputs.targets,
            inputs.labels,
            model_config,
            train_config,
            progress=run.training_progress(),
            unlabeled=unlabeled,
        )
        result.metrics["mode"] = "full"
        result.metrics["recipe"] = searched["chosen"]
        cv_acc = searched.get("cv_acc", {}).get(searched["chosen"])
        if cv_acc is not None:
            result.metrics["recipe_cv_acc"] = cv_acc
    with run.phase("score_s", RoundPhase.SCORING):
        ids, outputs = score_pool(
            result.model,
            result.model_config,
            inputs.fetcher,
            inputs.pool_items,
            inputs.report,
            settings,
            run.scoring_progress(),
        )
    return result, ids, outputs


def _train_and_score_frozen(
    settings: Settings, store: ModelStore, inputs: RoundInputs
) -> tuple[TrainResult, list[int], ScoreOutputs]:
    """Mode "frozen": pooled features of every pool image (cached: only new images run the
    backbone), a head + the module trained on the labeled rows, the pool scored from the rows."""
    run = inputs.run
    with run.phase("features_s"):
        model = build_network(inputs.model_config, num_classes=len(inputs.labels))
        cache = feature_cache_for(
            store.project_dir(inputs.project_id) / "features", model, inputs.model_config
        )
        run.status(phase=RoundPhase.EXTRACTING_FEATURES, train_mode="frozen")
        ids, features, extracted = pooled_features(
            model,
            inputs.model_config,
            inputs.pool_items,
            inputs.fetcher,
            cache,
            inputs.report,
            device=settings.device,
            batch_size=settings.score_batch_size,
            on_progress=run.scoring_progress(RoundPhase.EXTRACTING_FEATURES),
            sharding=sharding_for_round(settings, inputs.project_id, run.status),
            whole_pool=True,
        )
    if features is None:
        raise NothingScored(inputs.report, len(inputs.pool_items))
    target_of = {tid: target for (tid, _), target in zip(inputs.train_images, inputs.targets, strict=False)}
    rows = np.array([row for row, tid in enumerate(ids) if tid in target_of], dtype=np.int64)
    log.info(
        "project %s: pooled features of %d images (%d new, %d from the cache) in %.1fs",
        inputs.project_id,
        len(ids),
        extracted,
        len(ids) - extracted,
        run.timings["features_s"],
    )
    with run.phase("train_s", RoundPhase.TRAINING, annotations_used=len(rows), train_mode="frozen"):
        result = train_frozen(
            model,
            features.subset(rows),
            [target_of[ids[r]] for r in rows],
            inputs.labels,
            inputs.model_config,
            inputs.train_config,
            progress=run.training_progress(),
        )
        result.metrics.update(mode="frozen", features_extracted=extracted)
    with run.phase("score_s"):
        outputs = score_pooled(
            result.model, features, mc_samples=mc_samples_for(settings, settings.strategy), seed=settings.seed
        )
    return result, ids, outputs
