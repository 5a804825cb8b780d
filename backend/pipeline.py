"""One training round for one project: fetch, train target + LPM, score the pool, push, publish.

Runs in an RQ worker, never in the web process. A round is a sequence of named phases, each in a
module of its own under ``backend/rounds/`` (``run_training_round`` shows the order): collect the
project's tasks and the labeled images, train and score the pool, save the version, rank, push
and publish, update the views; too few labels make it a cold-start round instead
(``backend.rounds.cold_start``). Every phase is logged with counts and durations and mirrored into
the project's status in Redis (``RoundRun.phase``), so progress is visible at /status.
"""

from __future__ import annotations

from backend.constants import RoundPhase, RoundState
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.rounds.cold_start import cold_start_reason, run_cold_start_round
from backend.rounds.collect import collect, task_counts
from backend.rounds.progress import RoundRun, StatusCallback
from backend.rounds.prospective import measure_live_version
from backend.rounds.publish import push_version, save_version, update_views
from backend.rounds.score import NothingScored, held_back, rank_pool, unscored_reason
from backend.rounds.summary import RoundSummary, plain_metrics
from backend.rounds.train import train_and_score
from backend.settings import Settings


def run_training_round(
    settings: Settings,
    project_id: int,
    status: StatusCallback,
    client: LabelStudioClient | None = None,
    store: ModelStore | None = None,
) -> RoundSummary:
    """Train, score, push and publish one new version. Returns the round's summary; a round
    that left too many tasks unscored (``unscored_reason``), or scored none (``NothingScored``),
    publishes nothing: it is held back and the previous version stays live."""
    client = client or LabelStudioClient.from_settings(settings)
    store = store or ModelStore(settings.model_dir, settings.keep_model_versions)
    run = RoundRun(status)
    collected = collect(settings, client, store, project_id, run)
    reason = cold_start_reason(len(collected.train_images), len(set(collected.targets)), settings)
    if reason is not None:
        return run_cold_start_round(settings, project_id, client, store, collected, reason, run)
    # before this round publishes: the version annotators saw, on the labels given since
    prospective = measure_live_version(
        store,
        project_id,
        collected.split.labeled,
        collected.split.first_annotation,
        settings.preselect_min_confidence,
    )
    try:
        trained = train_and_score(settings, store, project_id, collected, run)
    except NothingScored as exc:
        return held_back(project_id, collected, exc.reason, run)
    unscored = unscored_reason(settings, collected, trained.ids)
    if unscored is not None:
        return held_back(project_id, collected, unscored, run)
    save_version(store, project_id, collected, trained, run)
    predictions = rank_pool(settings, project_id, collected, trained, run)
    pushed = push_version(settings, client, store, project_id, collected, trained, predictions, run)
    with run.phase(phase=RoundPhase.UPDATING_VIEWS):
        warnings = update_views(settings, client, project_id, trained.version)
    return RoundSummary(
        RoundState.DONE,
        task_counts(collected),
        images=collected.report.summary(),
        model_version=trained.version,
        strategy=settings.strategy,
        pushed=pushed,
        metrics=plain_metrics(trained.result.metrics),
        recipe_search=trained.recipe_search or None,
        self_supervised=trained.self_supervised or None,
        prospective=prospective,
        timings_s=run.timings_summary(),
        warnings=tuple(warnings),
    )
