"""The score phase: every pool image scored in bounded chunks, and the pool ranked by the
strategy into the scores Label Studio sorts the tab by."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from backend.constants import RoundState
from backend.converters import TaskPrediction
from backend.image_scoring import score_images
from backend.images import FetchReport, ImageFetcher
from backend.rounds.collect import CollectedRound, task_counts
from backend.rounds.predictions import build_predictions
from backend.rounds.progress import RoundRun
from backend.rounds.summary import RoundSummary
from backend.settings import Settings
from model import strategies
from model.config import ModelConfig
from model.outputs import ScoreOutputs

if TYPE_CHECKING:
    from backend.rounds.train import TrainedRound

log = logging.getLogger(__name__)
SCORE_CHUNK_IMAGES = 1024  # images held in memory at once while scoring the pool


def array_chunks(
    fetcher: ImageFetcher, items: list[tuple[int, str]], report: FetchReport, model_config: ModelConfig
) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
    """(offset, [(task id, model-ready array)]) per SCORE_CHUNK_IMAGES of ``items``, so memory
    stays bounded; each image is decoded and resized once across rounds (the fetcher's cache)."""
    for start in range(0, len(items), SCORE_CHUNK_IMAGES):
        yield (
            start,
            fetcher.fetch_arrays(
                items[start : start + SCORE_CHUNK_IMAGES],
                report,
                image_size=model_config.image_size,
                channels=model_config.channels,
            ),
        )


def load_arrays(
    fetcher: ImageFetcher,
    items: list[tuple[int, str]],
    model_config: ModelConfig,
    on_progress: Callable[[int, int], None],
) -> list[np.ndarray]:
    """The model-ready arrays of ``items`` that can be read, in order; ``on_progress(loaded,
    len(items))`` after each chunk. Failures go to a report of their own: scoring reports the
    pool's failures once, later in the round."""
    arrays: list[np.ndarray] = []
    for _, chunk in array_chunks(fetcher, items, FetchReport(), model_config):
        arrays += [array for _, array in chunk]
        on_progress(len(arrays), len(items))
    return arrays


def score_pool(
    model,
    model_config: ModelConfig,
    fetcher: ImageFetcher,
    items: list[tuple[int, str]],
    report: FetchReport,
    settings: Settings,
    on_progress: Callable[[int, int], None],
) -> tuple[list[int], ScoreOutputs | None]:
    """Score every (task id, url) in chunks so memory stays bounded; return ids + outputs.
    Images come as cached model-ready arrays: each is decoded and resized once across rounds."""
    ids: list[int] = []
    parts: list[ScoreOutputs] = []
    for start, chunk in array_chunks(fetcher, items, report, model_config):
        if chunk:
            outputs = score_images(
                model, [array for _, array in chunk], model_config, settings, settings.strategy
            )
            ids.extend(task_id for task_id, _ in chunk)
            parts.append(outputs)
        on_progress(min(start + SCORE_CHUNK_IMAGES, len(items)), len(items))
    return ids, ScoreOutputs.concat(parts) if parts else None


def rank_for_label_studio(
    strategy: str, outputs: ScoreOutputs, n_unlabeled: int, seed: int, budget: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores for all scored tasks: unlabeled ones ranked by the strategy, labeled ones after them.

    Returns (scores, clusters) aligned with the outputs' rows (unlabeled rows first).
    """
    n_total = len(outputs.predicted_loss)
    pool = outputs.subset(np.arange(n_unlabeled))
    labeled_embedding = outputs.embedding[n_unlabeled:] if n_total > n_unlabeled else None
    ranking = strategies.rank(
        strategy,
        pool,
        seed=seed,
        budget=min(budget, n_unlabeled) or None,
        labeled_embedding=labeled_embedding,
    )
    # labeled tasks follow the pool, most uncertain first, so the tab's top is always work to do
    labeled_order = n_unlabeled + np.argsort(-outputs.predicted_loss[n_unlabeled:], kind="stable")
    full_order = np.concatenate([np.asarray(ranking.order, dtype=np.int64), labeled_order])
    scores = strategies.ranking_to_scores(full_order)
    clusters = None
    if ranking.cluster is not None:
        clusters = np.full(n_total, -1, dtype=np.int64)
        clusters[:n_unlabeled] = ranking.cluster
    return scores, clusters


def rank_pool(
    settings: Settings, project_id: int, collected: CollectedRound, trained: TrainedRound, run: RoundRun
) -> list[tuple[int, TaskPrediction]]:
    """Every scored task's prediction: the model's label and the strategy's ranking as score."""
    unlabeled_ids = {tid for tid, _ in collected.split.unlabeled}
    # fetch_many keeps input order, and the pool lists unlabeled tasks first
    n_unlabeled = sum(1 for tid in trained.ids if tid in unlabeled_ids)
    if trained.outputs is None:
        raise NothingScored(collected.report, len(collected.split.all_items))
    scores, clusters = rank_for_label_studio(
        settings.strategy, trained.outputs, n_unlabeled, settings.seed, settings.query_batch_size
    )
    if not settings.push_clusters:
        clusters = None
    predictions = build_predictions(
        trained.ids, collected.schema.model_answers(trained.outputs.probs, collected.labels), scores, clusters
    )
    log.info(
        "project %s: scored %d tasks (%d unlabeled of %d) with %s in %.1fs",
        project_id,
        len(trained.ids),
        n_unlabeled,
        len(collected.split.unlabeled),
        settings.strategy,
        run.timings["score_s"],
    )
    return predictions


class NothingScored(RuntimeError):
    """No task image of the round could be scored (every download failed, transiently or not):
    there is nothing to rank, so the round is held back like one above the unscored share."""

    def __init__(self, report: FetchReport, n_tasks: int):
        self.reason = nothing_scored_reason(report, n_tasks)
        super().__init__(self.reason)


def nothing_scored_reason(report: FetchReport, n_tasks: int) -> str:
    """The words of a round that scored none of its ``n_tasks`` tasks, with the failures' kinds
    and a few examples (FetchReport.summary)."""
    summary = report.summary(examples=3)
    examples = "; ".join(summary["examples"].values()) or "no reason recorded"
    return (
        f"none of the {n_tasks} tasks' images could be scored ({len(report.failed)} "
        f"failed: {json.dumps(summary['reasons'])}; e.g. {examples}): "
        f"the previous version stays live"
    )


def unscored_reason(settings: Settings, collected: CollectedRound, scored_ids: list[int]) -> str | None:
    """Why the round must not publish: no task scored at all (``nothing_scored_reason``), or more
    of its tasks than PUBLISH_MAX_UNSCORED_SHARE got no score after a transient failure (Label
    Studio restarting, say), so its ranking would leave them out; None when it may publish.
    Otherwise tasks no retry can score (a missing image) do not count."""
    pool = [tid for tid, _ in collected.split.all_items]
    scored = set(scored_ids)
    if pool and not scored:
        return nothing_scored_reason(collected.report, len(pool))
    missing = [tid for tid in pool if tid not in scored and tid in collected.report.transient]
    if len(missing) <= settings.publish_max_unscored_share * len(pool):
        return None
    examples = "; ".join(collected.report.failed[tid] for tid in missing[:3])
    return (
        f"{len(missing)} of {len(pool)} tasks ({len(missing) / len(pool):.1%}) got no score "
        f"after transient image failures (e.g. {examples}); PUBLISH_MAX_UNSCORED_SHARE is "
        f"{settings.publish_max_unscored_share:.1%}: the previous version stays live"
    )


def held_back(project_id: int, collected: CollectedRound, reason: str, run: RoundRun) -> RoundSummary:
    """The summary of a round that publishes nothing because of ``unscored_reason`` (or
    ``NothingScored``)."""
    log.warning("project %s: round not published: %s", project_id, reason)
    return RoundSummary(
        RoundState.HELD_BACK,
        task_counts(collected),
        images=collected.report.summary(),
        reason=reason,
        timings_s=run.timings_summary(),
    )
