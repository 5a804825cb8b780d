"""What the backend sets up in a Label Studio project so annotators see the ranking."""

from __future__ import annotations

import logging

from backend.constants import PlaceholderVersion
from backend.ls_client import LabelStudioClient, LabelStudioError

log = logging.getLogger(__name__)

SCORE_ORDERING = ["tasks:predictions_score"]  # ascending: lower score = more informative
UNCERTAINTY_SAMPLING = "Uncertainty sampling"  # exact value of label_studio projects.models
PLACEHOLDER_VERSIONS = tuple(PlaceholderVersion)  # /predict answers before/outside a round
# Only tasks Label Studio does not count as completed, so the top of the tab is always work to do.
# "Completed" is Label Studio's own is_labeled (the Data Manager's "Completed" column is empty until
# then): as many annotators as the task's overlap submitted a non-skipped annotation. With overlap
# (several annotators per task) a task that holds one annotation still needs more, so "no
# annotations" would hide it.
UNANNOTATED_FILTER = {
    "conjunction": "and",
    "items": [
        {"filter": "filter:tasks:completed_at", "operator": "empty", "type": "Datetime", "value": True}
    ],
}
# The filter earlier versions created; a tab still holding it is moved to UNANNOTATED_FILTER
# (a filter a user set on the tab is left alone).
LEGACY_FILTERS = (
    {
        "conjunction": "and",
        "items": [
            {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}
        ],
    },
)


def informative_view_data(title: str, template: dict | None) -> dict:
    """A tab ordered by score ascending. Column visibility is copied from an existing tab, since a
    tab created without hiddenColumns shows several columns blank."""
    data = {"title": title, "ordering": list(SCORE_ORDERING), "filters": UNANNOTATED_FILTER}
    hidden = (template or {}).get("hiddenColumns")
    if hidden:
        data["hiddenColumns"] = hidden
    return data


def ensure_informative_view(client: LabelStudioClient, project_id: int, title: str) -> int:
    """Create the "Most informative first" tab, or restore its ordering and filter; return its id.

    Creating a tab is not idempotent: after a lost answer or a 5xx the tabs are listed again
    before another POST, so a retried round never leaves two tabs of the same title.
    """
    attempt = 0
    while True:
        views = client.list_views(project_id)
        ours = [v for v in views if (v.get("data") or {}).get("title") == title]
        template = next((v.get("data") for v in views if v not in ours and v.get("data")), None)
        if ours:
            view = ours[0]
            data = dict(view.get("data") or {})
            if data.get("ordering") != SCORE_ORDERING or data.get("filters") in LEGACY_FILTERS:
                data["ordering"] = list(SCORE_ORDERING)
                if data.get("filters") in LEGACY_FILTERS:
                    data["filters"] = UNANNOTATED_FILTER
                client.update_view(view["id"], project_id, data)
            return int(view["id"])
        try:
            created = client.create_view(project_id, informative_view_data(title, template))
        except LabelStudioError as exc:
            if not exc.outcome_unknown or attempt >= client.retries:
                raise
            log.info(
                "project %s: creating tab %r failed (%s); checking before retrying", project_id, title, exc
            )
            client.wait_before_retry(attempt)
            attempt += 1
            continue
        log.info("project %s: created tab %r (id %s)", project_id, title, created.get("id"))
        return int(created["id"])


def set_uncertainty_sampling(client: LabelStudioClient, project_id: int) -> None:
    client.patch_project(project_id, {"sampling": UNCERTAINTY_SAMPLING})


def prune_prediction_versions(
    client: LabelStudioClient,
    project_id: int,
    current: str,
    keep: int,
    is_ours,
    sort_key=None,
    also_keep=frozenset(),
) -> list[str]:
    """Delete the predictions of this backend's older versions, keeping the newest `keep`.

    Label Studio never removes predictions itself, so every round would add one prediction per
    task. Only versions this backend made (``is_ours``) and its placeholder versions are touched;
    the current version and ``also_keep`` (the project's live version, read when a background
    job prunes after a newer round published) are always kept. ``sort_key`` orders our versions
    by creation time (the version string itself by default).
    """
    counts = client.get_json(f"/api/projects/{int(project_id)}/model-versions/")
    ours = sorted((v for v in counts if is_ours(v)), key=sort_key, reverse=True)
    keep_set = set(ours[: max(keep, 1)]) | {current} | set(also_keep)
    doomed = [v for v in counts if v not in keep_set and (is_ours(v) or v in PLACEHOLDER_VERSIONS)]
    for version in doomed:
        client.delete_model_version(project_id, version)
    if doomed:
        log.info("project %s: deleted predictions of %d old version(s)", project_id, len(doomed))
    return doomed
