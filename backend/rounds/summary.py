"""A round's typed summary, and its plain form: a dict of plain values that RQ pickles as the
job's result (readable without this package, e.g. by rq-dashboard) and /status shows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.constants import RoundState

# states whose round published a new version
PUBLISHING_STATES = frozenset({RoundState.DONE, RoundState.COLD_START})


@dataclass(frozen=True)
class PushReport:
    """What pushing a version's predictions did."""

    predictions_pushed: int  # predictions Label Studio created
    tasks_deleted_during_round: int  # tasks deleted in Label Studio while the round ran
    preselected: int  # predictions that pre-select a choice

    def to_dict(self) -> dict:
        return {
            "predictions_pushed": self.predictions_pushed,
            "tasks_deleted_during_round": self.tasks_deleted_during_round,
            "preselected": self.preselected,
        }


@dataclass(frozen=True)
class TaskCounts:
    """What the collect phase found: every summary reports it."""

    tasks: int  # the project's tasks this round listed
    annotated_tasks: int  # tasks with a training label under the label rule
    labels: dict  # converters.label_report of the round
    annotations_used: int  # labeled tasks whose image could be read

    def to_dict(self) -> dict:
        return {
            "tasks": self.tasks,
            "annotated_tasks": self.annotated_tasks,
            "labels": self.labels,
            "annotations_used": self.annotations_used,
        }


@dataclass(frozen=True)
class ClusterRanking:
    """How a cold-start round's TypiClust ranking came out."""

    pick: str  # how each cluster's member was picked
    cluster_structure: float | None  # model.cold_start's structure measure (None: not measured)
    clusters: int  # clusters the pool was split into
    clusters_covered_by_labels: int  # of them, those that hold a labeled task

    def to_dict(self) -> dict:
        return {
            "pick": self.pick,
            "cluster_structure": self.cluster_structure,
            "clusters": self.clusters,
            "clusters_covered_by_labels": self.clusters_covered_by_labels,
        }


@dataclass(frozen=True)
class RoundSummary:
    """What one round did. Optional parts are None where a kind of round has none: a trained
    round has ``metrics``, a cold start its ``embedding`` and ``ranking``."""

    state: RoundState
    counts: TaskCounts
    images: dict  # FetchReport.summary() of the round
    model_version: str | None = None  # the version published (None: nothing published)
    reason: str | None = None  # why a cold start, a skip or a held-back round
    strategy: str | None = None  # how the published version ranked
    pushed: PushReport | None = None
    metrics: dict | None = None  # a trained round's metrics (plain values)
    embedding: str | None = None  # what a cold start ranked on
    ranking: ClusterRanking | None = None  # how a cold start's ranking came out
    recipe_search: dict | None = None  # what the recipe search did (full mode)
    self_supervised: dict | None = None  # where the backbone started from
    first_push: dict | None = None  # a cold start's quick first ranking
    prospective: dict | None = None  # the previous live version on later labels
    timings_s: dict[str, float] | None = None  # seconds per phase and in total
    warnings: tuple[str, ...] = ()  # what went wrong after publishing (e.g. the tab)

    @property
    def published(self) -> bool:
        """Whether this round published a new version."""
        return self.state in PUBLISHING_STATES

    def first_push_view(self) -> dict:
        """What a later push of the same round reports of this one (``first_push``)."""
        return {
            "model_version": self.model_version,
            "embedding": self.embedding,
            "pick": self.ranking.pick if self.ranking else None,
            "predictions_pushed": self.pushed.predictions_pushed if self.pushed else 0,
        }

    def to_dict(self) -> dict:
        """The summary as plain values (states as their strings), parts that are None left out
        (``cluster_structure`` inside a ranking excepted)."""
        out: dict = {"state": self.state.value}
        optional = {
            "model_version": self.model_version,
            "reason": self.reason,
            "embedding": self.embedding,
            "strategy": self.strategy,
            "metrics": self.metrics,
            "recipe_search": self.recipe_search,
            "self_supervised": self.self_supervised,
            "first_push": self.first_push,
            "prospective": self.prospective,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        out.update(self.counts.to_dict())
        for part in (self.pushed, self.ranking):
            if part is not None:
                out.update(part.to_dict())
        out["images"] = self.images
        if self.timings_s is not None:
            out["timings_s"] = self.timings_s
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def plain_metrics(metrics: dict | None) -> dict:
    """Metrics as plain JSON values (numpy scalars unwrapped, floats rounded, others dropped)."""
    out = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float):
            value = round(value, 5)
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def short_metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in plain_metrics(metrics).items())
