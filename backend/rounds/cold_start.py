"""The cold-start round: too few labels (or classes) to train a useful classifier, so the pool is
ranked by TypiClust on a label-free embedding and pushed without a pre-selected choice, as a
``coldstart-<timestamp>`` version (no model, so /predict answers from the stored scores)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend import self_supervised
from backend.constants import RoundPhase, RoundState
from backend.converters import TaskPrediction
from backend.feature_round import feature_cache_for, pooled_features
from backend.feature_shards import sharding_for_round
from backend.images import FetchReport, ImageFetcher
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore, new_cold_start_version
from backend.rounds.collect import CollectedRound, task_counts
from backend.rounds.configs import model_config_from
from backend.rounds.predictions import ranking_predictions
from backend.rounds.progress import RoundRun, StatusCallback
from backend.rounds.publish import push_and_publish, update_views
from backend.rounds.representation import (
    has_configured_weights,
    learns_own_weights,
    self_supervised_config,
    self_supervised_dir,
    self_supervised_start,
)
from backend.rounds.score import SCORE_CHUNK_IMAGES, NothingScored, held_back, unscored_reason
from backend.rounds.summary import ClusterRanking, PushReport, RoundSummary
from backend.settings import Settings
from model import strategies
from model.config import ModelConfig
from model.networks import build_network

log = logging.getLogger(__name__)
COLD_START_THUMBNAIL_PX = 16  # side of the thumbnails a cold-start round embeds (pixel PCA)
# A cold-start ranking is coarse to fine: its first 10 picks come from 10 clusters, the next 10
# from 20, ... up to QUERY_BATCH_SIZE clusters, so the top of the tab is a good batch whatever
# its length (benchmarks/results/coldstart-coverage.md).
COLD_START_FIRST_CLUSTERS = 10
# (pool task ids, labeled task ids, their embeddings: pool rows first)
Embedded = tuple[list[int], list[int], np.ndarray]


def cold_start_reason(n_usable: int, n_classes: int, settings: Settings) -> str | None:
    """Why no useful classifier can be trained from these labels, or None when one can."""
    if n_usable < settings.min_annotations_to_train:
        return (
            f"{n_usable} usable annotated image(s); MIN_ANNOTATIONS_TO_TRAIN is "
            f"{settings.min_annotations_to_train}"
        )
    if n_classes < settings.min_classes_to_train:
        return (
            f"{n_classes} distinct class(es) among the annotations; MIN_CLASSES_TO_TRAIN is "
            f"{settings.min_classes_to_train}"
        )
    return None


def pool_thumbnails(
    fetcher: ImageFetcher,
    items: list[tuple[int, str]],
    report: FetchReport,
    on_progress: Callable[[int, int], None],
) -> tuple[list[int], np.ndarray]:
    """Fetch images in chunks, keeping only small uint8 thumbnails (bounded memory)."""
    from model import pixel_pca

    ids: list[int] = []
    parts = []
    for start in range(0, len(items), SCORE_CHUNK_IMAGES):
        chunk = fetcher.fetch_many(items[start : start + SCORE_CHUNK_IMAGES], report)
        if chunk:
            ids.extend(task_id for task_id, _ in chunk)
            parts.append(pixel_pca.thumbnails([img for _, img in chunk], COLD_START_THUMBNAIL_PX))
        on_progress(min(start + SCORE_CHUNK_IMAGES, len(items)), len(items))
    side = COLD_START_THUMBNAIL_PX
    return ids, (np.concatenate(parts) if parts else np.zeros((0, side, side, 3), np.uint8))


def _pixel_embedding(
    settings: Settings, collected: CollectedRound, on_progress: Callable[[int, int], None]
) -> Embedded:
    """Pool ids, labeled ids and a label-free pixel embedding (pool rows first)."""
    from model import pixel_pca

    pool_ids, pool_thumbs = pool_thumbnails(
        collected.fetcher, collected.split.unlabeled, collected.report, on_progress
    )
    labeled_ids = [tid for tid, _ in collected.train_images]
    labeled_thumbs = pixel_pca.thumbnails([img for _, img in collected.train_images], COLD_START_THUMBNAIL_PX)
    embedding = pixel_pca.pixel_embedding(
        np.concatenate([pool_thumbs, labeled_thumbs]), size=COLD_START_THUMBNAIL_PX, seed=settings.seed
    )
    return pool_ids, labeled_ids, embedding


def _learned_embedding(
    settings: Settings,
    store: ModelStore,
    project_id: int,
    model_config: ModelConfig,
    collected: CollectedRound,
    on_progress: Callable[[int, int], None],
    status: StatusCallback,
) -> Embedded:
    """Pool ids, labeled ids and the pretrained backbone's embeddings (pool rows first), through
    the project's feature cache."""
    model = build_network(model_config, num_classes=max(len(collected.schema.labels), 1))
    cache = feature_cache_for(store.project_dir(project_id) / "features", model, model_config)
    ids, features, _ = pooled_features(
        model,
        model_config,
        collected.split.all_items,
        collected.fetcher,
        cache,
        collected.report,
        device=settings.device,
        batch_size=settings.score_batch_size,
        on_progress=on_progress,
        sharding=sharding_for_round(settings, project_id, status),
        whole_pool=True,
    )
    if features is None:
        return [], [], np.zeros((0, 0), np.float32)
    unlabeled = {tid for tid, _ in collected.split.unlabeled}
    usable_labeled = {tid for tid, _ in collected.train_images}
    pool_rows = [row for row, tid in enumerate(ids) if tid in unlabeled]
    labeled_rows = [row for row, tid in enumerate(ids) if tid in usable_labeled]
    embedding = np.asarray(features.embedding, dtype=np.float32)[pool_rows + labeled_rows]
    return [ids[r] for r in pool_rows], [ids[r] for r in labeled_rows], embedding


def run_cold_start_round(
    settings: Settings,
    project_id: int,
    client: LabelStudioClient,
    store: ModelStore,
    collected: CollectedRound,
    reason: str,
    run: RoundRun,
) -> RoundSummary:
    """Too few labels (or classes) to train: rank the pool by TypiClust (QUERY_BATCH_SIZE
    clusters, coarse to fine, each cluster's member picked as ``model.cold_start.pick_for`` says) and
    push it with no pre-selected choice, as version ``coldstart-<timestamp>``.

    What it ranks on: configured weights' embedding when there are weights; otherwise the
    project's self-supervised backbone (SELF_SUPERVISED_STEPS > 0). When those weights are not
    learned yet, the round pushes a pixel ranking at once, learns them (the first trained round
    would have to: it then reuses them), ranks again on them and pushes that ranking too. With
    self-supervision off it ranks on pixels. The labeled tasks' embeddings mark their clusters
    as covered; labeled tasks follow the pool.
    """
    log.info("project %s: cold-start round: %s", project_id, reason)
    model_config = model_config_from(settings)
    cold = _ColdStart(settings, project_id, client, store, collected, reason, run)
    if has_configured_weights(model_config):
        return cold.push(model_config, "backbone")
    if not learns_own_weights(settings, model_config):
        return cold.push(model_config, "pixels")
    pool_items = collected.split.all_items
    stored = self_supervised.reusable_weights(
        self_supervised_dir(store, project_id, model_config.keep_colour),
        model_config,
        self_supervised_config(settings, model_config.keep_colour),
        len(pool_items),
        settings.self_supervised_refresh_growth,
    )
    first: RoundSummary | None = None
    if stored is None:
        # learning the weights takes minutes on a CPU: annotators get a ranking meanwhile
        first = cold.push(model_config, "pixels")
        if first.state != RoundState.COLD_START:
            return first
        with run.phase("self_supervised_s"):
            learned_config, learned = self_supervised_start(
                settings, store, project_id, model_config, collected.fetcher, pool_items, run
            )
        if not learned_config.pretrained_weights:
            return dataclasses.replace(first, self_supervised=learned)
    else:
        learned_config = dataclasses.replace(model_config, pretrained_weights=str(stored))
        learned = {"weights": stored.name, "learned_now": False}
    final = cold.push(learned_config, "self_supervised")
    return dataclasses.replace(
        final, self_supervised=learned, first_push=first.first_push_view() if first else None
    )


@dataclass
class _Ranked:
    """A cold-start ranking of the pool, ready to push."""

    predictions: list[tuple[int, TaskPrediction]]
    ranking: ClusterRanking
    n_pool: int


@dataclass
class _ColdStart:
    """One cold-start round's context: each ``push`` ranks the pool on one embedding and
    publishes that ranking as a new cold-start version."""

    settings: Settings
    project_id: int
    client: LabelStudioClient
    store: ModelStore
    collected: CollectedRound
    reason: str
    run: RoundRun

    def push(self, model_config: ModelConfig, embedding_kind: str) -> RoundSummary:
        """Rank the pool on one embedding (``pixels``, or a learned backbone's in
        ``model_config``) and push that ranking as a new cold-start version."""
        collected, run = self.collected, self.run
        try:
            ranked = self.rank(model_config, embedding_kind)
        except NothingScored as exc:
            return dataclasses.replace(
                held_back(self.project_id, collected, exc.reason, run), embedding=embedding_kind
            )
        if ranked is None:
            return RoundSummary(
                RoundState.SKIPPED,
                task_counts(collected),
                images=collected.report.summary(),
                embedding=embedding_kind,
                reason=self.reason + "; no unlabeled task",
            )
        unscored = unscored_reason(self.settings, collected, [tid for tid, _ in ranked.predictions])
        if unscored is not None:
            return dataclasses.replace(
                held_back(self.project_id, collected, unscored, run), embedding=embedding_kind
            )
        with run.phase("push_s", RoundPhase.PUSHING_PREDICTIONS):
            version = new_cold_start_version()
            pushed = self._publish(version, ranked, embedding_kind)
        with run.phase(phase=RoundPhase.UPDATING_VIEWS):
            warnings = update_views(self.settings, self.client, self.project_id, version)
        log.info(
            "project %s: cold start pushed %d predictions of %s",
            self.project_id,
            pushed.predictions_pushed,
            version,
        )
        return RoundSummary(
            RoundState.COLD_START,
            task_counts(collected),
            images=collected.report.summary(),
            model_version=version,
            reason=self.reason,
            strategy="typiclust",
            pushed=pushed,
            embedding=embedding_kind,
            ranking=ranked.ranking,
            timings_s=run.timings_summary(),
            warnings=tuple(warnings),
        )

    def _publish(self, version: str, ranked: _Ranked, embedding_kind: str) -> PushReport:
        """Push the ranking's predictions as cold-start ``version`` and publish it."""
        return push_and_publish(
            self.settings,
            self.client,
            self.store,
            self.project_id,
            version,
            self.collected.schema,
            ranked.predictions,
            about={"strategy": "typiclust", "cold_start": True, "embedding": embedding_kind},
            info={
                "cold_start": True,
                "reason": self.reason,
                "embedding": embedding_kind,
                "annotations_used": len(self.collected.train_images),
            },
            status=self.run.status,
        )

    def embed(self, model_config: ModelConfig, embedding_kind: str) -> Embedded:
        on_progress = self.run.scoring_progress(RoundPhase.COLD_START_RANKING)
        if embedding_kind == "pixels":
            return _pixel_embedding(self.settings, self.collected, on_progress)
        # a learned backbone: TypiClust on its embeddings (cached; the first trained round
        # reuses them)
        return _learned_embedding(
            self.settings,
            self.store,
            self.project_id,
            model_config,
            self.collected,
            on_progress,
            self.run.status,
        )

    def rank(self, model_config: ModelConfig, embedding_kind: str) -> _Ranked | None:
        """The pool in TypiClust order on one embedding, then the labeled tasks; None when
        there is no unlabeled task to rank."""
        from model import cold_start

        settings, collected = self.settings, self.collected
        with self.run.phase("rank_s", RoundPhase.COLD_START_RANKING, cold_start_reason=self.reason):
            pool_ids, labeled_ids, embedding = self.embed(model_config, embedding_kind)
            if not pool_ids:
                if collected.split.unlabeled:
                    raise NothingScored(collected.report, len(collected.split.all_items))
                log.info("project %s: cold start: no unlabeled task to rank", self.project_id)
                return None
            n_pool = len(pool_ids)
            found = cold_start.typiclust(
                embedding[:n_pool],
                embedding[n_pool:] if labeled_ids else None,
                n_clusters=min(settings.query_batch_size, n_pool),
                seed=settings.seed,
                start_clusters=COLD_START_FIRST_CLUSTERS,
                pick=cold_start.pick_for(settings.coldstart_pick, embedding_kind),
            )
            # the pool in TypiClust order, then the labeled tasks: the tab's top is always work
            full_order = np.concatenate([found.order, n_pool + np.arange(len(labeled_ids))])
            clusters = np.concatenate([found.cluster, np.full(len(labeled_ids), -1, np.int64)])
            predictions = ranking_predictions(
                pool_ids + labeled_ids,
                strategies.ranking_to_scores(full_order),
                clusters,
                settings.push_clusters,
            )
        ranking = ClusterRanking(
            pick=found.pick,
            cluster_structure=None if found.structure is None else round(found.structure, 3),
            clusters=len(found.covered),
            clusters_covered_by_labels=int(found.covered.sum()),
        )
        log.info(
            "project %s: cold start ranked %d unlabeled tasks on %s in %d clusters (%d "
            "covered by labels; %s pick, structure %s) in %.1fs",
            self.project_id,
            n_pool,
            embedding_kind,
            ranking.clusters,
            ranking.clusters_covered_by_labels,
            ranking.pick,
            ranking.cluster_structure,
            self.run.timings["rank_s"],
        )
        return _Ranked(predictions, ranking, n_pool)
