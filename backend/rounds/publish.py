"""The publish phase: a version's checkpoint saved, its predictions pushed into Label Studio and
kept for /predict, the version published (our pointer and Label Studio's), then the views updated
and older versions' predictions pruned."""

from __future__ import annotations

import logging

from backend import converters
from backend.constants import RoundPhase
from backend.converters import TaskPrediction
from backend.ls_client import LabelStudioClient, LabelStudioError
from backend.model_store import ModelStore, is_own_version, version_sort_key
from backend.prediction_push import push_predictions
from backend.rounds.collect import CollectedRound
from backend.rounds.predictions import first_tasks
from backend.rounds.progress import RoundRun, StatusCallback
from backend.rounds.summary import PushReport, plain_metrics, short_metrics
from backend.rounds.train import TrainedRound
from backend.settings import Settings
from backend.task_types import TaskType
from model import checkpoint as model_checkpoint

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Label Studio could not be pointed at a new version, so it was not published."""


def save_version(
    store: ModelStore, project_id: int, collected: CollectedRound, trained: TrainedRound, run: RoundRun
) -> None:
    """The trained model's checkpoint, with the labeling config it was trained for."""
    model_checkpoint.save_checkpoint(
        store.checkpoint_path(project_id, trained.version),
        trained.result,
        extra={
            "project_id": project_id,
            "version": trained.version,
            "schema": collected.schema.to_dict(),
            "schema_hash": collected.schema.hash,
        },
    )
    log.info(
        "project %s: trained %s (%s mode) on %d images in %.1fs: %s",
        project_id,
        trained.version,
        trained.mode,
        len(collected.train_images),
        run.timings["train_s"],
        short_metrics(trained.result.metrics),
    )


def push_version(
    settings: Settings,
    client: LabelStudioClient,
    store: ModelStore,
    project_id: int,
    collected: CollectedRound,
    trained: TrainedRound,
    predictions: list[tuple[int, TaskPrediction]],
    run: RoundRun,
) -> PushReport:
    """A trained version's predictions into Label Studio, then the version published."""
    # rank_pool refused a round without outputs; this states it for the type checker
    assert trained.outputs is not None
    with run.phase("push_s", RoundPhase.PUSHING_PREDICTIONS):
        # /predict places tasks created after this round by their nearest ranked task (its score)
        store.save_neighbours(project_id, trained.version, trained.ids, trained.outputs.embedding)
        pushed = push_and_publish(
            settings,
            client,
            store,
            project_id,
            trained.version,
            collected.schema,
            predictions,
            about={
                "strategy": settings.strategy,
                "annotation_watermark": collected.split.annotation_watermark,
            },
            info={
                "metrics": plain_metrics(trained.result.metrics),
                "annotations_used": len(collected.train_images),
            },
            status=run.status,
        )
    log.info(
        "project %s: pushed %d predictions of %s (%d pre-selecting a choice) in %.1fs",
        project_id,
        pushed.predictions_pushed,
        trained.version,
        pushed.preselected,
        run.timings["push_s"],
    )
    return pushed


def push_and_publish(
    settings: Settings,
    client: LabelStudioClient,
    store: ModelStore,
    project_id: int,
    version: str,
    schema: TaskType,
    predictions: list[tuple[int, TaskPrediction]],
    about: dict,
    info: dict,
    status: StatusCallback = lambda **_: None,
) -> PushReport:
    """Bulk-push a version's predictions, store them for /predict, publish, point LS at them.

    Order matters: Label Studio refuses a project model_version without predictions, and the
    pointer is published only once every prediction is in Label Studio. ``about`` (how the
    version ranked) is stored with the predictions, ``info`` with the published pointer.
    """
    payload = [
        converters.import_payload(tid, pred, schema, version, settings.preselect_min_confidence)
        for tid, pred in predictions
    ]
    # chunked, each chunk checked rather than blindly re-posted; tasks deleted meanwhile dropped
    push = push_predictions(client, project_id, payload, version, settings.prediction_chunk_size)
    # the config a version was made for: a later change of the project's config retrains
    info = {
        **info,
        "schema": schema.to_dict(),
        "schema_hash": schema.hash,
        "first_tasks": first_tasks(predictions),
    }
    store.save_predictions(project_id, version, predictions, **about)
    # the job's status callback refuses this phase once its run lock is lost (backend.jobs):
    # a round another worker may have taken over never publishes
    status(phase=RoundPhase.PUBLISHING)
    publish(client, store, project_id, version, info)
    return PushReport(
        predictions_pushed=push.created,
        tasks_deleted_during_round=len(push.deleted_tasks),
        preselected=sum(1 for item in payload if item["result"]),
    )


def publish(client: LabelStudioClient, store: ModelStore, project_id: int, version: str, info: dict) -> None:
    """Make ``version`` the live one in both places, Label Studio's project first (the tab's
    ranking), then our pointer (what /predict serves); PublishError and nothing changed when
    Label Studio cannot be pointed at it."""
    previous = store.published(project_id)
    point_label_studio_at(client, project_id, version)
    try:
        store.publish(project_id, version, info=info)
    except Exception:
        if previous is not None:  # Label Studio back to the version /predict still serves
            try:
                client.patch_project(project_id, {"model_version": previous.version})
            except LabelStudioError as exc:
                log.error(
                    "project %s: Label Studio points at %s, which was not published: %s",
                    project_id,
                    version,
                    exc,
                )
        raise


def point_label_studio_at(client: LabelStudioClient, project_id: int, version: str) -> None:
    """Set the project's model_version in Label Studio and check it took: the PATCH is retried
    by the client (connection errors, lost answers, 5xx, 429), and an answer that does not name
    the version, or a failure, is checked by reading the project. PublishError when Label Studio
    does not point at ``version``."""
    failure = None
    try:
        answer = client.patch_project(project_id, {"model_version": version})
        if answer.get("model_version") == version:
            return
    except LabelStudioError as exc:  # after the client's retries; it may still have taken
        failure = exc
    try:
        live = client.get_project(project_id).get("model_version")
    except LabelStudioError as exc:
        raise PublishError(f"could not point Label Studio at {version}: {failure or exc}") from None
    if live != version:
        raise PublishError(
            f"could not point Label Studio at {version}: its model_version is "
            f"{live!r}" + (f" ({failure})" if failure else "")
        )


def update_views(settings: Settings, client: LabelStudioClient, project_id: int, version: str) -> list[str]:
    """The "Most informative first" tab, optional uncertainty sampling, old versions' cleanup.
    The version is published already: what fails here is a warning of the round (returned),
    never its failure."""
    from backend import ls_project  # local import: keeps this module's import graph small

    warnings = []
    try:
        ls_project.ensure_informative_view(client, project_id, settings.informative_view_title)
        if settings.set_uncertainty_sampling:
            ls_project.set_uncertainty_sampling(client, project_id)
    except Exception as exc:  # LabelStudioError, or an answer of an unexpected shape
        log.warning(
            "project %s: %s is published, but its tab could not be updated: %s", project_id, version, exc
        )
        warnings.append(f"the tab could not be updated: {type(exc).__name__}: {exc}"[:500])
    # Label Studio deletes a version's predictions one by one: in a job of its own, the round
    # ends (and the next one may start) without waiting for it.
    from backend import queueing

    if not queueing.enqueue_prune(settings, project_id, version):  # no queue: do it here
        prune_old_predictions(settings, client, project_id, version)
    return warnings


def prune_old_predictions(
    settings: Settings, client: LabelStudioClient, project_id: int, version: str
) -> list[str]:
    """Delete older versions' predictions, keeping ``version`` and the project's live version."""
    from backend import ls_project

    try:
        live = client.get_project(project_id).get("model_version")
        return ls_project.prune_prediction_versions(
            client,
            project_id,
            version,
            settings.keep_prediction_versions,
            is_own_version,
            sort_key=version_sort_key,
            also_keep={live} if live else set(),
        )
    except Exception as exc:  # housekeeping: never fails a round that already published
        log.warning("project %s: could not delete old predictions: %s", project_id, exc)
        return []
