"""One training round for one project: fetch, train target + LPM, score the pool, push, publish.

Runs in an RQ worker, never in the web process. A round is a sequence of named phases, each a
function of its own (``run_training_round`` shows the order): collect the project's tasks and the
labeled images, train and score the pool, save the version, rank, push and publish, update the
views. Every phase is logged with counts and durations and mirrored into the project's status in
Redis (``RoundRun.phase``), so progress is visible at /status.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from backend import converters, reconcile, self_supervised, task_index, training_state
from backend.converters import TaskError, TaskPrediction
from backend.defaults import PROGRESS_STATUS_INTERVAL_S, RoundPhase, RoundState
from backend.feature_round import feature_cache_for, pooled_features
from backend.feature_shards import sharding_for_round
from backend.images import FetchReport, ImageFetcher
from backend.ls_client import LabelStudioClient
from backend.model_store import (ModelStore, is_own_version, new_coldstart_version, new_version,
                                 version_sort_key)
from backend.prediction_push import push_predictions
from backend.scoring_setup import image_fetcher, mc_samples_for, score_images
from backend.settings import Settings
from backend.task_types import TaskType, schema_change, task_type_for
from model import checkpoint as model_checkpoint
from model import recipe_search, strategies, trainer
from model.config import ModelConfig, TrainConfig
from model.frozen import score_pooled, train_frozen
from model.modes import choose_train_mode, fine_tunes_like_scratch
from model.networks import build_network
from model.selfsup import SelfSupConfig, for_colour
from model.outputs import ScoreOutputs
from model.runtime import resolve_device
from model.trainer import TrainResult

log = logging.getLogger(__name__)
StatusCallback = Callable[..., None]
SCORE_CHUNK_IMAGES = 1024   # images held in memory at once while scoring the pool
COLDSTART_THUMBNAIL_PX = 16  # side of the thumbnails a cold-start round embeds (pixel PCA)
# A cold-start ranking is coarse to fine: its first 10 picks come from 10 clusters, the next 10
# from 20, ... up to QUERY_BATCH_SIZE clusters, so the top of the tab is a good batch whatever
# its length (benchmarks/results/coldstart-coverage.md).
COLDSTART_FIRST_CLUSTERS = 10


def model_config_from(settings: Settings) -> ModelConfig:
    config = ModelConfig(backbone=settings.backbone, image_size=settings.image_size,
                         pretrained_weights=(str(settings.pretrained_weights)
                                             if settings.pretrained_weights else None),
                         weights=settings.backbone_weights or None,
                         augment_policy=settings.augment_policy,
                         input_norm=settings.input_norm, keep_colour=settings.keep_colour)
    if config.weights is None:
        return config
    from model.pretrained import with_weights_preprocessing
    # The weights' own input size, mean and std; an IMAGE_SIZE other than the default wins.
    default_size = Settings.__dataclass_fields__["image_size"].default
    return with_weights_preprocessing(config, keep_image_size=settings.image_size != default_size)


def train_config_from(settings: Settings) -> TrainConfig:
    steps = {"auto_target_steps": settings.train_steps} if settings.train_steps else {}
    return TrainConfig(epochs=settings.train_epochs, batch_size=settings.train_batch_size,
                       lpm_loss=settings.lpm_loss, seed=settings.seed, device=settings.device, **steps)


class RoundRun:
    """One round's progress: the status callback it reports to and the seconds its steps took."""

    def __init__(self, status: StatusCallback):
        self.status = status
        self.timings: dict[str, float] = {}
        self.started = time.monotonic()

    @contextmanager
    def phase(self, timing: str | None = None, phase: RoundPhase | None = None,
              **fields) -> Iterator[None]:
        """Announce ``phase`` (with ``fields``) in the status, then time the block as
        ``timings[timing]`` (a block that raises ends the round: nothing is recorded)."""
        if phase is not None:
            self.status(phase=phase, **fields)
        started = time.monotonic()
        yield
        if timing is not None:
            self.timings[timing] = time.monotonic() - started

    def training_progress(self) -> Callable[[dict], None]:
        return self.throttled_progress(RoundPhase.TRAINING, "training_progress")

    def throttled_progress(self, phase: RoundPhase, field_name: str) -> Callable[[dict], None]:
        """A progress callback that shows its latest ``info`` as ``field_name`` in the status."""
        last = [0.0]

        def report_progress(info: dict) -> None:
            if time.monotonic() - last[0] >= PROGRESS_STATUS_INTERVAL_S:   # throttle Redis writes
                last[0] = time.monotonic()
                self.status(phase=phase, **{field_name: info})
        return report_progress

    def scoring_progress(self, phase: RoundPhase = RoundPhase.SCORING
                         ) -> Callable[[int, int], None]:
        def report_progress(done: int, total: int) -> None:
            self.status(phase=phase, scoring_progress={"done": done, "total": total})
        return report_progress

    def timings_summary(self) -> dict[str, float]:
        """Every timing so far and the round's total, in seconds (for the round's summary)."""
        self.timings["total_s"] = time.monotonic() - self.started
        return {k: round(v, 2) for k, v in self.timings.items()}


@dataclass
class LabeledSplit:
    labeled: list[tuple[int, str, str]]      # (task id, image url, label)
    unlabeled: list[tuple[int, str]]         # (task id, image url)
    labels: dict = field(default_factory=dict)   # converters.label_report of the round

    @property
    def all_items(self) -> list[tuple[int, str]]:
        """(task id, image url) of every task: the unlabeled ones first, then the labeled."""
        return self.unlabeled + [(tid, url) for tid, url, _ in self.labeled]


def split_tasks(tasks: list[dict], schema: TaskType, report: FetchReport
                ) -> LabeledSplit:
    """Labeled (under the task type's decide_label) and unlabeled tasks; tasks whose annotations
    give no training label (a tie, empty, ...) stay in the pool and are counted in ``labels``."""
    labeled, unlabeled, decisions = [], [], []
    for task in tasks:
        task_id = task.get("id")
        if not isinstance(task_id, int):
            continue
        try:
            url = schema.task_input(task)
        except TaskError as exc:
            report.add(task_id, f"TaskError: {exc}")
            continue
        decision = schema.decide_label(task)
        decisions.append(decision)
        if decision.label is None:
            unlabeled.append((task_id, url))
        else:
            labeled.append((task_id, url, decision.label))
    return LabeledSplit(labeled, unlabeled, converters.label_report(decisions))


def array_chunks(fetcher: ImageFetcher, items: list[tuple[int, str]], report: FetchReport,
                 model_config: ModelConfig) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
    """(offset, [(task id, model-ready array)]) per SCORE_CHUNK_IMAGES of ``items``, so memory
    stays bounded; each image is decoded and resized once across rounds (the fetcher's cache)."""
    for start in range(0, len(items), SCORE_CHUNK_IMAGES):
        yield start, fetcher.fetch_arrays(items[start:start + SCORE_CHUNK_IMAGES], report,
                                          image_size=model_config.image_size,
                                          channels=model_config.channels)


def score_pool(model, model_config: ModelConfig, fetcher: ImageFetcher,
               items: list[tuple[int, str]], report: FetchReport, settings: Settings,
               on_progress: Callable[[int, int], None]):
    """Score every (task id, url) in chunks so memory stays bounded; return ids + outputs.
    Images come as cached model-ready arrays: each is decoded and resized once across rounds."""
    ids, parts = [], []
    for start, chunk in array_chunks(fetcher, items, report, model_config):
        if chunk:
            outputs = score_images(model, [array for _, array in chunk], model_config, settings,
                                   settings.strategy)
            ids.extend(task_id for task_id, _ in chunk)
            parts.append(outputs)
        on_progress(min(start + SCORE_CHUNK_IMAGES, len(items)), len(items))
    return ids, ScoreOutputs.concat(parts) if parts else None


def rank_for_label_studio(strategy: str, outputs, n_unlabeled: int, seed: int, budget: int):
    """Scores for all scored tasks: unlabeled ones ranked by the strategy, labeled ones after them.

    Returns (scores, clusters) aligned with the outputs' rows (unlabeled rows first).
    """
    n_total = len(outputs.predicted_loss)
    pool = outputs.subset(np.arange(n_unlabeled))
    labeled_embedding = outputs.embedding[n_unlabeled:] if n_total > n_unlabeled else None
    ranking = strategies.rank(strategy, pool, seed=seed, budget=min(budget, n_unlabeled) or None,
                              labeled_embedding=labeled_embedding)
    # labeled tasks follow the pool, most uncertain first, so the tab's top is always work to do
    labeled_order = n_unlabeled + np.argsort(-outputs.predicted_loss[n_unlabeled:], kind="stable")
    full_order = np.concatenate([np.asarray(ranking.order, dtype=np.int64), labeled_order])
    scores = strategies.ranking_to_scores(full_order)
    clusters = None
    if ranking.cluster is not None:
        clusters = np.full(n_total, -1, dtype=np.int64)
        clusters[:n_unlabeled] = ranking.cluster
    return scores, clusters


def run_training_round(settings: Settings, project_id: int, status: StatusCallback,
                       client: LabelStudioClient | None = None,
                       store: ModelStore | None = None) -> dict:
    """Train, score, push and publish one new version. Returns the job summary."""
    client = client or LabelStudioClient.from_settings(settings)
    store = store or ModelStore(settings.model_dir, settings.keep_model_versions)
    run = RoundRun(status)
    collected = collect(settings, client, store, project_id, run)
    reason = cold_start_reason(len(collected.train_images), len(set(collected.targets)), settings)
    if reason is not None:
        return run_cold_start_round(settings, project_id, client, store, collected, reason, run)
    trained = train_and_score(settings, store, project_id, collected, run)
    save_version(store, project_id, collected, trained, run)
    predictions = rank_pool(settings, project_id, collected, trained, run)
    pushed = push_version(settings, client, store, project_id, collected, trained, predictions,
                          run)
    with run.phase(phase=RoundPhase.UPDATING_VIEWS):
        update_views(settings, client, project_id, trained.version)
    # states as plain strings (.value): RQ pickles a job's result, and a reader without this
    # package (rq-dashboard) must be able to load it
    return {"state": RoundState.DONE.value, "model_version": trained.version,
            "tasks": collected.n_tasks, "annotated_tasks": len(collected.split.labeled),
            "labels": collected.split.labels, "annotations_used": len(collected.train_images),
            **pushed, "strategy": settings.strategy, "metrics": _plain(trained.result.metrics),
            **({"recipe_search": trained.recipe_search} if trained.recipe_search else {}),
            **({"self_supervised": trained.self_supervised} if trained.self_supervised else {}),
            "images": collected.report.summary(), "timings_s": run.timings_summary()}


# ----------------------------------------------------------------------------- collect


@dataclass
class CollectedRound:
    """What the collect phase gathers: the project's labeling config and tasks, and the images
    of the tasks with a training label."""
    schema: TaskType
    n_tasks: int
    split: LabeledSplit
    model_config: ModelConfig
    fetcher: ImageFetcher
    report: FetchReport
    train_images: list[tuple[int, Image.Image]]   # (task id, image) of the usable labeled tasks
    targets: list[int]                            # class index of each train image

    @property
    def labels(self) -> list[str]:
        return list(self.schema.labels)


def collect(settings: Settings, client: LabelStudioClient, store: ModelStore, project_id: int,
            run: RoundRun) -> CollectedRound:
    """The project's config and tasks from Label Studio, split by the label rule, and the images
    of the tasks with a training label."""
    with run.phase("list_tasks_s", RoundPhase.FETCHING_TASKS):
        project = client.get_project(project_id)
        # Label Studio's own count as the round starts: the reconciler's reference (like with like)
        run.status(**{training_state.LS_COUNT_IN_ROUND: reconcile.label_studio_count(project)})
        schema = task_type_for(project.get("label_config"))
        previous = store.published(project_id)
        run.status(labeling_config_change=schema_change(previous.info if previous else None,
                                                        schema))
        tasks = task_index.tasks_for_round(settings, client, project_id, project, schema,
                                           run.status)
        report = FetchReport()
        split = split_tasks(tasks, schema, report)
    log.info("project %s: %d tasks, %d annotated, %d unlabeled (%.1fs); labels: %s", project_id,
             len(tasks), len(split.labeled), len(split.unlabeled), run.timings["list_tasks_s"],
             json.dumps(split.labels))

    model_config = model_config_from(settings)
    # images are held at the model's input size (pretrained weights set their own, e.g. 224 px)
    fetcher = image_fetcher(settings, client, model_config.image_size)
    with run.phase("download_train_s", RoundPhase.DOWNLOADING_TRAINING_IMAGES,
                   annotated_tasks_in_round=len(split.labeled), labels=split.labels):
        train_images = fetcher.fetch_many([(tid, url) for tid, url, _ in split.labeled], report)
    label_of = {task_id: label for task_id, _, label in split.labeled}
    targets = [schema.training_target(label_of[tid]) for tid, _ in train_images]
    return CollectedRound(schema, len(tasks), split, model_config, fetcher, report, train_images,
                          targets)


# ----------------------------------------------------------------------------- train and score


@dataclass
class RoundInputs:
    """What both training modes of a round work from."""
    project_id: int
    labels: list[str]
    train_images: list[tuple[int, Image.Image]]   # (task id, image) of the usable labeled tasks
    targets: list[int]                            # class index of each train image
    pool_items: list[tuple[int, str]]             # (task id, url): unlabeled first, then labeled
    fetcher: ImageFetcher
    report: FetchReport
    model_config: ModelConfig
    train_config: TrainConfig
    run: RoundRun
    recipe_search: dict | None = None   # what the recipe search did (full mode), for the summary
    self_supervised: dict | None = None  # where full training started from (for the summary)


@dataclass
class TrainedRound:
    """A trained model and its scores of the pool (not yet saved, ranked or pushed)."""
    version: str
    mode: str                        # "full" or "frozen" (model.modes)
    result: TrainResult
    ids: list[int]                   # task ids scored, in pool order (unlabeled first)
    outputs: ScoreOutputs | None     # their outputs; None when no image could be scored
    recipe_search: dict | None
    self_supervised: dict | None


def train_and_score(settings: Settings, store: ModelStore, project_id: int,
                    collected: CollectedRound, run: RoundRun) -> TrainedRound:
    """Train the round's model in the mode the labels and hardware call for, and score every
    pool task with it (the frozen mode scores from the very features it trained on)."""
    model_config = collected.model_config
    train_config = train_config_from(settings)
    configured = has_configured_weights(model_config)
    learns_own = learns_own_weights(settings, model_config)
    mode = choose_train_mode(
        settings.train_mode, n_labeled=len(collected.train_images),
        has_representation=configured or learns_own, learned_on_project=learns_own,
        finetune_min_labels=settings.finetune_min_labels,
        cuda_available=resolve_device(settings.device).type == "cuda",
        input_size=model_config.image_size,
        full_max_input_size=settings.full_training_max_image_size,
        frozen_max_labels=settings.frozen_max_labels)
    inputs = RoundInputs(project_id, collected.labels, collected.train_images, collected.targets,
                         collected.split.all_items, collected.fetcher, collected.report, model_config,
                         train_config, run)
    version = new_version()
    run.status(version_in_progress=version)
    # A full round starts from the self-supervised weights (adapting a configured file); a frozen
    # round keeps a configured backbone as it is (measured so) and needs the project's own otherwise.
    if mode == "full" or learns_own:
        with run.phase("self_supervised_s"):
            inputs.model_config, inputs.self_supervised = self_supervised_start(
                settings, store, project_id, inputs.model_config, inputs.fetcher,
                inputs.pool_items, run)
    if mode == "frozen" and not has_configured_weights(inputs.model_config):
        mode = "full"  # the project's weights could not be learned (too few loadable images)
    if mode == "frozen":
        result, ids, outputs = _train_and_score_frozen(settings, store, inputs)
    else:
        result, ids, outputs = _train_and_score_full(settings, inputs)
    return TrainedRound(version, mode, result, ids, outputs, inputs.recipe_search,
                        inputs.self_supervised)


def self_supervised_skip_reason(settings: Settings, model_config: ModelConfig) -> str | None:
    """Why a round starts from its configured initialisation, or None to start from (or, up to
    FROZEN_MAX_LABELS labels without configured weights, train a head on) the project's
    self-supervised weights (pre-trained from PRETRAINED_WEIGHTS when set: adapting
    a file was measured at 32 px; torchvision's weights and large inputs were not)."""
    if settings.self_supervised_steps == 0:
        return "SELF_SUPERVISED_STEPS is 0"
    if model_config.weights:
        return "the backbone starts from torchvision's pretrained weights, not adapted"
    if model_config.pretrained_weights and not fine_tunes_like_scratch(
            model_config.image_size, settings.full_training_max_image_size):
        return (f"the backbone starts from the configured pretrained weights, not adapted at "
                f"{model_config.image_size} px (above FULL_TRAINING_MAX_IMAGE_SIZE)")
    return None


def has_configured_weights(model_config: ModelConfig) -> bool:
    """Whether the backbone starts from weights (torchvision's, or a file; the project's own
    self-supervised file once a round has set it as ``pretrained_weights``)."""
    return bool(model_config.weights or model_config.pretrained_weights)


def learns_own_weights(settings: Settings, model_config: ModelConfig) -> bool:
    """Whether the project's own self-supervised weights are the round's representation: no
    configured weights, and self-supervision on."""
    return (not has_configured_weights(model_config)
            and self_supervised_skip_reason(settings, model_config) is None)


def self_supervised_config(settings: Settings) -> SelfSupConfig:
    return for_colour(SelfSupConfig(steps=settings.self_supervised_steps, seed=settings.seed,
                                    device=settings.device), settings.keep_colour)


def self_supervised_dir(store: ModelStore, project_id: int) -> Path:
    return store.project_dir(project_id) / self_supervised.DIR_NAME


def self_supervised_start(settings: Settings, store: ModelStore, project_id: int,
                          model_config: ModelConfig, fetcher: ImageFetcher,
                          pool_items: list[tuple[int, str]],
                          run: RoundRun) -> tuple[ModelConfig, dict]:
    """``model_config`` with the project's self-supervised weights (learned from ``pool_items``
    now when ``backend.self_supervised`` says so) as ``pretrained_weights``, and what happened,
    for the round summary; ``model_config`` as it is when they do not apply."""
    skip = self_supervised_skip_reason(settings, model_config)
    if skip is not None:
        return model_config, {"weights": None, "why": skip}

    def load_images(items: list[tuple[int, str]]) -> list[np.ndarray]:
        # a report of its own: scoring reports the pool's failures once, later in the round
        arrays: list[np.ndarray] = []
        for _, chunk in array_chunks(fetcher, items, FetchReport(), model_config):
            arrays += [array for _, array in chunk]
            run.status(phase=RoundPhase.SELF_SUPERVISED_PRETRAINING,
                       self_supervised_progress={"images_loaded": len(arrays),
                                                 "images": len(items)})
        return arrays

    path, summary = self_supervised.ensure_weights(
        self_supervised_dir(store, project_id), model_config, self_supervised_config(settings),
        pool_items, load_images, growth=settings.self_supervised_refresh_growth,
        max_images=settings.self_supervised_max_images,
        progress=run.throttled_progress(RoundPhase.SELF_SUPERVISED_PRETRAINING,
                                        "self_supervised_progress"))
    log.info("project %s: self-supervised weights %s", project_id, json.dumps(summary))
    if path is None:
        return model_config, summary
    return dataclasses.replace(model_config, pretrained_weights=str(path)), summary


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
        [img for _, img in inputs.train_images], inputs.targets, inputs.labels, inputs.model_config,
        inputs.train_config, folds=settings.recipe_search_folds, budget_s=settings.recipe_search_budget_s,
        progress=lambda info: inputs.run.status(phase=RoundPhase.RECIPE_SEARCH,
                                                recipe_search_progress=info))
    model_config, train_config = recipe_search.resolve(
        recipe_search.candidate_named(found.chosen), inputs.model_config, inputs.train_config)
    return model_config, train_config, found.summary()


def _train_and_score_full(settings: Settings, inputs: RoundInputs):
    """Mode "full": train the whole network with the module (with the recipe the search chose),
    then score every pool image."""
    run = inputs.run
    with run.phase("recipe_search_s"):
        model_config, train_config, inputs.recipe_search = choose_recipe(settings, inputs)
    with run.phase("train_s", RoundPhase.TRAINING, annotations_used=len(inputs.train_images),
                   train_mode="full", recipe=inputs.recipe_search):
        result = trainer.train([img for _, img in inputs.train_images], inputs.targets,
                               inputs.labels, model_config, train_config,
                               progress=run.training_progress())
        result.metrics["mode"] = "full"
        result.metrics["recipe"] = inputs.recipe_search["chosen"]
        cv_acc = inputs.recipe_search.get("cv_acc", {}).get(inputs.recipe_search["chosen"])
        if cv_acc is not None:
            result.metrics["recipe_cv_acc"] = cv_acc
    with run.phase("score_s", RoundPhase.SCORING):
        ids, outputs = score_pool(result.model, result.model_config, inputs.fetcher,
                                  inputs.pool_items, inputs.report, settings,
                                  run.scoring_progress())
    return result, ids, outputs


def _train_and_score_frozen(settings: Settings, store: ModelStore, inputs: RoundInputs):
    """Mode "frozen": pooled features of every pool image (cached: only new images run the
    backbone), a head + the module trained on the labeled rows, the pool scored from the rows."""
    run = inputs.run
    with run.phase("features_s"):
        model = build_network(inputs.model_config, num_classes=len(inputs.labels))
        cache = feature_cache_for(store.project_dir(inputs.project_id) / "features", model,
                                  inputs.model_config)
        run.status(phase=RoundPhase.EXTRACTING_FEATURES, train_mode="frozen")
        ids, features, extracted = pooled_features(
            model, inputs.model_config, inputs.pool_items, inputs.fetcher, cache, inputs.report,
            device=settings.device, batch_size=settings.score_batch_size,
            on_progress=run.scoring_progress(RoundPhase.EXTRACTING_FEATURES),
            sharding=sharding_for_round(settings, inputs.project_id, run.status))
    if features is None:
        raise RuntimeError("no task image of the project could be scored: "
                           + json.dumps(inputs.report.summary()))
    target_of = {tid: target for (tid, _), target in zip(inputs.train_images, inputs.targets)}
    rows = np.array([row for row, tid in enumerate(ids) if tid in target_of], dtype=np.int64)
    log.info("project %s: pooled features of %d images (%d new, %d from the cache) in %.1fs",
             inputs.project_id, len(ids), extracted, len(ids) - extracted,
             run.timings["features_s"])
    with run.phase("train_s", RoundPhase.TRAINING, annotations_used=len(rows),
                   train_mode="frozen"):
        result = train_frozen(model, features.subset(rows), [target_of[ids[r]] for r in rows],
                              inputs.labels, inputs.model_config, inputs.train_config,
                              progress=run.training_progress())
        result.metrics.update(mode="frozen", features_extracted=extracted)
    with run.phase("score_s"):
        outputs = score_pooled(result.model, features,
                               mc_samples=mc_samples_for(settings, settings.strategy),
                               seed=settings.seed)
    return result, ids, outputs


# ----------------------------------------------------------------------------- save and rank


def save_version(store: ModelStore, project_id: int, collected: CollectedRound,
                 trained: TrainedRound, run: RoundRun) -> None:
    """The trained model's checkpoint, with the labeling config it was trained for."""
    model_checkpoint.save_checkpoint(
        store.checkpoint_path(project_id, trained.version), trained.result,
        extra={"project_id": project_id, "version": trained.version,
               "schema": collected.schema.to_dict(), "schema_hash": collected.schema.hash})
    log.info("project %s: trained %s (%s mode) on %d images in %.1fs: %s", project_id,
             trained.version, trained.mode, len(collected.train_images), run.timings["train_s"],
             _short_metrics(trained.result.metrics))


def rank_pool(settings: Settings, project_id: int, collected: CollectedRound,
              trained: TrainedRound, run: RoundRun) -> list[tuple[int, TaskPrediction]]:
    """Every scored task's prediction: the model's label and the strategy's ranking as score."""
    unlabeled_ids = {tid for tid, _ in collected.split.unlabeled}
    # fetch_many keeps input order, and the pool lists unlabeled tasks first
    n_unlabeled = sum(1 for tid in trained.ids if tid in unlabeled_ids)
    if trained.outputs is None:
        raise RuntimeError("no task image of the project could be scored: "
                           + json.dumps(collected.report.summary()))
    scores, clusters = rank_for_label_studio(settings.strategy, trained.outputs, n_unlabeled,
                                             settings.seed, settings.query_batch_size)
    if not settings.push_clusters:
        clusters = None
    predictions = build_predictions(trained.ids,
                                    collected.schema.model_answers(trained.outputs.probs,
                                                                   collected.labels),
                                    scores, clusters)
    log.info("project %s: scored %d tasks (%d unlabeled of %d) with %s in %.1fs", project_id,
             len(trained.ids), n_unlabeled, len(collected.split.unlabeled), settings.strategy,
             run.timings["score_s"])
    return predictions


# ----------------------------------------------------------------------------- push and publish


def push_version(settings: Settings, client: LabelStudioClient, store: ModelStore,
                 project_id: int, collected: CollectedRound, trained: TrainedRound,
                 predictions: list[tuple[int, TaskPrediction]], run: RoundRun) -> dict:
    """A trained version's predictions into Label Studio, then the version published."""
    # rank_pool refused a round without outputs; this states it for the type checker
    assert trained.outputs is not None
    with run.phase("push_s", RoundPhase.PUSHING_PREDICTIONS):
        # /predict places tasks created after this round by their nearest ranked task (its score)
        store.save_neighbours(project_id, trained.version, trained.ids, trained.outputs.embedding)
        pushed = push_and_publish(settings, client, store, project_id, trained.version,
                                  collected.schema, predictions,
                                  about={"strategy": settings.strategy},
                                  info={"metrics": _plain(trained.result.metrics),
                                        "annotations_used": len(collected.train_images)},
                                  status=run.status)
    log.info("project %s: pushed %d predictions of %s (%d pre-selecting a choice) in %.1fs",
             project_id, pushed["predictions_pushed"], trained.version, pushed["preselected"],
             run.timings["push_s"])
    return pushed


def push_and_publish(settings: Settings, client: LabelStudioClient, store: ModelStore,
                     project_id: int, version: str, schema: TaskType,
                     predictions: list[tuple[int, TaskPrediction]], about: dict, info: dict,
                     status: StatusCallback = lambda **_: None) -> dict:
    """Bulk-push a version's predictions, store them for /predict, publish, point LS at them.

    Order matters: Label Studio refuses a project model_version without predictions, and the
    pointer is published only once every prediction is in Label Studio. ``about`` (how the
    version ranked) is stored with the predictions, ``info`` with the published pointer.
    """
    payload = [converters.import_payload(tid, pred, schema, version,
                                         settings.preselect_min_confidence)
               for tid, pred in predictions]
    # chunked, each chunk checked rather than blindly re-posted; tasks deleted meanwhile dropped
    push = push_predictions(client, project_id, payload, version, settings.prediction_chunk_size)
    # the config a version was made for: a later change of the project's config retrains
    info = {**info, "schema": schema.to_dict(), "schema_hash": schema.hash}
    store.save_predictions(project_id, version, predictions, **about)
    # the job's status callback refuses this phase once its run lock is lost (backend.jobs):
    # a round another worker may have taken over never publishes
    status(phase=RoundPhase.PUBLISHING)
    store.publish(project_id, version, info=info)
    client.patch_project(project_id, {"model_version": version})
    return {"predictions_pushed": push.created,
            "tasks_deleted_during_round": len(push.deleted_tasks),
            "preselected": sum(1 for item in payload if item["result"])}


# ----------------------------------------------------------------------------- update views


def update_views(settings: Settings, client: LabelStudioClient, project_id: int,
                 version: str) -> None:
    """The "Most informative first" tab, optional uncertainty sampling, old versions' cleanup."""
    from backend import ls_project   # local import: keeps this module's import graph small
    ls_project.ensure_informative_view(client, project_id, settings.informative_view_title)
    if settings.set_uncertainty_sampling:
        ls_project.set_uncertainty_sampling(client, project_id)
    # Label Studio deletes a version's predictions one by one: in a job of its own, the round
    # ends (and the next one may start) without waiting for it.
    from backend import queueing
    if not queueing.enqueue_prune(settings, project_id, version):   # no queue: do it here
        prune_old_predictions(settings, client, project_id, version)


def prune_old_predictions(settings: Settings, client: LabelStudioClient, project_id: int,
                          version: str) -> list[str]:
    """Delete older versions' predictions, keeping ``version`` and the project's live version."""
    from backend import ls_project
    try:
        live = client.get_project(project_id).get("model_version")
        return ls_project.prune_prediction_versions(
            client, project_id, version, settings.keep_prediction_versions, is_own_version,
            sort_key=version_sort_key, also_keep={live} if live else set())
    except Exception as exc:   # housekeeping: never fails a round that already published
        log.warning("project %s: could not delete old predictions: %s", project_id, exc)
        return []


# ----------------------------------------------------------------------------- cold start


def cold_start_reason(n_usable: int, n_classes: int, settings: Settings) -> str | None:
    """Why no useful classifier can be trained from these labels, or None when one can."""
    if n_usable < settings.min_annotations_to_train:
        return (f"{n_usable} usable annotated image(s); MIN_ANNOTATIONS_TO_TRAIN is "
                f"{settings.min_annotations_to_train}")
    if n_classes < settings.min_classes_to_train:
        return (f"{n_classes} distinct class(es) among the annotations; MIN_CLASSES_TO_TRAIN is "
                f"{settings.min_classes_to_train}")
    return None


def pool_thumbnails(fetcher: ImageFetcher, items: list[tuple[int, str]], report: FetchReport,
                    on_progress: Callable[[int, int], None]) -> tuple[list[int], np.ndarray]:
    """Fetch images in chunks, keeping only small uint8 thumbnails (bounded memory)."""
    from model import coldstart
    ids, parts = [], []
    for start in range(0, len(items), SCORE_CHUNK_IMAGES):
        chunk = fetcher.fetch_many(items[start:start + SCORE_CHUNK_IMAGES], report)
        if chunk:
            ids.extend(task_id for task_id, _ in chunk)
            parts.append(coldstart.thumbnails([img for _, img in chunk], COLDSTART_THUMBNAIL_PX))
        on_progress(min(start + SCORE_CHUNK_IMAGES, len(items)), len(items))
    side = COLDSTART_THUMBNAIL_PX
    return ids, (np.concatenate(parts) if parts else np.zeros((0, side, side, 3), np.uint8))


def _pixel_cold_start_embedding(settings: Settings, collected: CollectedRound,
                                on_progress: Callable[[int, int], None]):
    """Pool ids, labeled ids and a label-free pixel embedding (pool rows first)."""
    from model import coldstart
    pool_ids, pool_thumbs = pool_thumbnails(collected.fetcher, collected.split.unlabeled,
                                            collected.report, on_progress)
    labeled_ids = [tid for tid, _ in collected.train_images]
    labeled_thumbs = coldstart.thumbnails([img for _, img in collected.train_images],
                                          COLDSTART_THUMBNAIL_PX)
    embedding = coldstart.pixel_embedding(np.concatenate([pool_thumbs, labeled_thumbs]),
                                          size=COLDSTART_THUMBNAIL_PX, seed=settings.seed)
    return pool_ids, labeled_ids, embedding


def _learned_cold_start_embedding(settings: Settings, store: ModelStore, project_id: int,
                                  model_config: ModelConfig, collected: CollectedRound,
                                  on_progress: Callable[[int, int], None],
                                  status: StatusCallback):
    """Pool ids, labeled ids and the pretrained backbone's embeddings (pool rows first), through
    the project's feature cache."""
    model = build_network(model_config, num_classes=max(len(collected.schema.labels), 1))
    cache = feature_cache_for(store.project_dir(project_id) / "features", model, model_config)
    ids, features, _ = pooled_features(model, model_config, collected.split.all_items,
                                       collected.fetcher, cache, collected.report,
                                       device=settings.device,
                                       batch_size=settings.score_batch_size,
                                       on_progress=on_progress,
                                       sharding=sharding_for_round(settings, project_id, status))
    if features is None:
        return [], [], np.zeros((0, 0), np.float32)
    unlabeled = {tid for tid, _ in collected.split.unlabeled}
    usable_labeled = {tid for tid, _ in collected.train_images}
    pool_rows = [row for row, tid in enumerate(ids) if tid in unlabeled]
    labeled_rows = [row for row, tid in enumerate(ids) if tid in usable_labeled]
    embedding = np.asarray(features.embedding, dtype=np.float32)[pool_rows + labeled_rows]
    return [ids[r] for r in pool_rows], [ids[r] for r in labeled_rows], embedding


def run_cold_start_round(settings: Settings, project_id: int, client: LabelStudioClient,
                         store: ModelStore, collected: CollectedRound, reason: str,
                         run: RoundRun) -> dict:
    """Too few labels (or classes) to train: rank the pool by TypiClust (QUERY_BATCH_SIZE
    clusters, coarse to fine, each cluster's member picked as ``model.coldstart.pick_for`` says) and
    push it with no pre-selected choice, as version ``coldstart-<timestamp>``.

    What it ranks on: configured weights' embedding when there are weights; otherwise the
    project's self-supervised backbone (SELF_SUPERVISED_STEPS > 0). When those weights are not
    learned yet, the round pushes a pixel ranking at once, learns them (the first trained round
    would have to: it then reuses them), ranks again on them and pushes that ranking too. With
    self-supervision off it ranks on pixels. The labeled tasks' embeddings mark their clusters
    as covered; labeled tasks follow the pool.
    """
    log.info("project %s: cold-start round: %s", project_id, reason)
    summary = {"reason": reason, "tasks": collected.n_tasks,
               "annotated_tasks": len(collected.split.labeled), "labels": collected.split.labels,
               "annotations_used": len(collected.train_images)}
    model_config = model_config_from(settings)
    if has_configured_weights(model_config):
        return _cold_start_push(settings, project_id, client, store, collected, reason, run,
                                model_config, "backbone", summary)
    if not learns_own_weights(settings, model_config):
        return _cold_start_push(settings, project_id, client, store, collected, reason, run,
                                model_config, "pixels", summary)
    pool_items = collected.split.all_items
    stored = self_supervised.reusable_weights(
        self_supervised_dir(store, project_id), model_config, self_supervised_config(settings),
        len(pool_items), settings.self_supervised_refresh_growth)
    first: dict | None = None
    if stored is None:
        # learning the weights takes minutes on a CPU: annotators get a ranking meanwhile
        first = _cold_start_push(settings, project_id, client, store, collected, reason, run,
                                 model_config, "pixels", summary)
        if first["state"] != RoundState.COLD_START.value:
            return first
        with run.phase("self_supervised_s"):
            learned_config, learned = self_supervised_start(
                settings, store, project_id, model_config, collected.fetcher, pool_items, run)
        if not learned_config.pretrained_weights:
            return {**first, "self_supervised": learned}
    else:
        learned_config = dataclasses.replace(model_config, pretrained_weights=str(stored))
        learned = {"weights": stored.name, "learned_now": False}
    final = _cold_start_push(settings, project_id, client, store, collected, reason, run,
                             learned_config, "self_supervised", summary)
    final["self_supervised"] = learned
    if first is not None:
        final["first_push"] = {key: first[key] for key in
                               ("model_version", "embedding", "pick", "predictions_pushed")}
    return final


def _cold_start_push(settings: Settings, project_id: int, client: LabelStudioClient,
                     store: ModelStore, collected: CollectedRound, reason: str, run: RoundRun,
                     model_config: ModelConfig, embedding_kind: str, summary: dict) -> dict:
    """Rank the pool on one embedding (``pixels``, or a learned backbone's in ``model_config``)
    and push that ranking as a new cold-start version; the round's summary so far."""
    from model import coldstart
    report = collected.report
    summary = {**summary, "embedding": embedding_kind}
    with run.phase("rank_s", RoundPhase.COLD_START_RANKING, cold_start_reason=reason):
        on_progress = run.scoring_progress(RoundPhase.COLD_START_RANKING)
        if embedding_kind == "pixels":
            pool_ids, labeled_ids, embedding = _pixel_cold_start_embedding(settings, collected,
                                                                           on_progress)
        else:
            # a learned backbone: TypiClust on its embeddings (cached; the first trained round
            # reuses them)
            pool_ids, labeled_ids, embedding = _learned_cold_start_embedding(
                settings, store, project_id, model_config, collected, on_progress, run.status)
        if not pool_ids:
            if collected.split.unlabeled:
                raise RuntimeError("no unlabeled task image of the project could be read: "
                                   + json.dumps(report.summary()))
            log.info("project %s: cold start: no unlabeled task to rank", project_id)
            return {"state": RoundState.SKIPPED.value, **summary,
                    "reason": reason + "; no unlabeled task", "images": report.summary()}
        n_pool = len(pool_ids)
        ranking = coldstart.typiclust(embedding[:n_pool],
                                      embedding[n_pool:] if labeled_ids else None,
                                      n_clusters=min(settings.query_batch_size, n_pool),
                                      seed=settings.seed, start_clusters=COLDSTART_FIRST_CLUSTERS,
                                      pick=coldstart.pick_for(settings.coldstart_pick,
                                                              embedding_kind))
        summary.update(pick=ranking.pick, cluster_structure=(
            None if ranking.structure is None else round(ranking.structure, 3)))
        # the pool in TypiClust order, then the labeled tasks: the tab's top is always work to do
        full_order = np.concatenate([ranking.order, n_pool + np.arange(len(labeled_ids))])
        scores = strategies.ranking_to_scores(full_order)
        clusters = np.concatenate([ranking.cluster, np.full(len(labeled_ids), -1, np.int64)])
        predictions = [(tid, TaskPrediction(
            label=None, probability=None, score=float(scores[row]),
            cluster=int(clusters[row]) if settings.push_clusters and clusters[row] >= 0 else None))
            for row, tid in enumerate(pool_ids + labeled_ids)]
    log.info("project %s: cold start ranked %d unlabeled tasks on %s in %d clusters (%d covered "
             "by labels; %s pick, structure %s) in %.1fs", project_id, n_pool, embedding_kind,
             len(ranking.covered), int(ranking.covered.sum()), ranking.pick,
             summary["cluster_structure"], run.timings["rank_s"])

    with run.phase("push_s", RoundPhase.PUSHING_PREDICTIONS):
        version = new_coldstart_version()
        pushed = push_and_publish(settings, client, store, project_id, version, collected.schema,
                                  predictions, about={"strategy": "typiclust", "cold_start": True,
                                                      "embedding": embedding_kind},
                                  info={"cold_start": True, "reason": reason,
                                        "embedding": embedding_kind,
                                        "annotations_used": len(collected.train_images)},
                                  status=run.status)
    with run.phase(phase=RoundPhase.UPDATING_VIEWS):
        update_views(settings, client, project_id, version)
    log.info("project %s: cold start pushed %d predictions of %s", project_id,
             pushed["predictions_pushed"], version)
    return {"state": RoundState.COLD_START.value, "model_version": version, **summary, **pushed,
            "strategy": "typiclust", "clusters": len(ranking.covered),
            "clusters_covered_by_labels": int(ranking.covered.sum()),
            "images": report.summary(), "timings_s": run.timings_summary()}


def build_predictions(ids: list[int], answers: list[tuple[str, float]], scores: np.ndarray,
                      clusters: np.ndarray | None) -> list[tuple[int, TaskPrediction]]:
    """Each scored task's prediction: the task type's answer (``TaskType.model_answers``) with
    its probability, the task's score and its cluster."""
    out = []
    for row, task_id in enumerate(ids):
        cluster = None if clusters is None or clusters[row] < 0 else int(clusters[row])
        label, probability = answers[row]
        out.append((task_id, TaskPrediction(label=label, probability=probability,
                                            score=float(scores[row]), cluster=cluster)))
    return out


def _plain(metrics: dict) -> dict:
    out = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float):
            value = round(value, 5)
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def _short_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in _plain(metrics).items())
