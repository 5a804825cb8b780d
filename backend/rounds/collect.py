"""The collect phase: the project's labeling config and tasks from Label Studio, split by the
label rule, and the images of the tasks with a training label."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from PIL import Image

from backend import converters, reconcile, task_index, training_state
from backend.constants import RoundPhase
from backend.converters import TaskError
from backend.image_scoring import image_fetcher
from backend.images import FetchReport, ImageFetcher
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.rounds.configs import model_config_from
from backend.rounds.progress import RoundRun
from backend.rounds.summary import TaskCounts
from backend.settings import Settings
from backend.task_types import TaskType, schema_change, task_type_for
from model.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class LabeledSplit:
    labeled: list[tuple[int, str, str]]  # (task id, image url, label)
    unlabeled: list[tuple[int, str]]  # (task id, image url)
    labels: dict = field(default_factory=dict)  # converters.label_report of the round
    # Label Studio numbers annotations in creation order: a labeled task's first annotation id,
    # and the highest id of any task, say which tasks were annotated after this round collected
    first_annotation: dict[int, int] = field(default_factory=dict)  # labeled task id -> id
    annotation_watermark: int | None = None

    @property
    def all_items(self) -> list[tuple[int, str]]:
        """(task id, image url) of every task: the unlabeled ones first, then the labeled."""
        return self.unlabeled + [(tid, url) for tid, url, _ in self.labeled]


def split_tasks(tasks: list[dict], schema: TaskType, report: FetchReport) -> LabeledSplit:
    """Labeled (under the task type's decide_label) and unlabeled tasks; tasks whose annotations
    give no training label (a tie, empty, ...) stay in the pool and are counted in ``labels``."""
    labeled, unlabeled, decisions = [], [], []
    first_annotation: dict[int, int] = {}
    watermark: int | None = None
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
        ids = annotation_ids(task)
        if ids:
            watermark = max(ids) if watermark is None else max(watermark, max(ids))
        if decision.label is None:
            unlabeled.append((task_id, url))
        else:
            labeled.append((task_id, url, decision.label))
            if ids:
                first_annotation[task_id] = min(ids)
    return LabeledSplit(labeled, unlabeled, converters.label_report(decisions), first_annotation, watermark)


def annotation_ids(task: dict) -> list[int]:
    """The ids of a task's annotations (skipped ones too), as Label Studio numbered them."""
    annotations = task.get("annotations")
    if not isinstance(annotations, list):
        return []
    return [a["id"] for a in annotations if isinstance(a, dict) and type(a.get("id")) is int]


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
    train_images: list[tuple[int, Image.Image]]  # (task id, image) of the usable labeled tasks
    targets: list[int]  # class index of each train image

    @property
    def labels(self) -> list[str]:
        return list(self.schema.labels)


def collect(
    settings: Settings, client: LabelStudioClient, store: ModelStore, project_id: int, run: RoundRun
) -> CollectedRound:
    """The project's config and tasks from Label Studio, split by the label rule, and the images
    of the tasks with a training label."""
    with run.phase("list_tasks_s", RoundPhase.FETCHING_TASKS):
        project = client.get_project(project_id)
        # Label Studio's own count as the round starts: the reconciler's reference (like with like)
        run.status(**{training_state.LS_COUNT_IN_ROUND: reconcile.label_studio_count(project)})
        schema = task_type_for(project.get("label_config"))
        previous = store.published(project_id)
        run.status(labeling_config_change=schema_change(previous.info if previous else None, schema))
        tasks = task_index.tasks_for_round(settings, client, project_id, project, schema, run.status)
        report = FetchReport()
        split = split_tasks(tasks, schema, report)
    log.info(
        "project %s: %d tasks, %d annotated, %d unlabeled (%.1fs); labels: %s",
        project_id,
        len(tasks),
        len(split.labeled),
        len(split.unlabeled),
        run.timings["list_tasks_s"],
        json.dumps(split.labels),
    )

    model_config = model_config_from(settings)
    # images are held at the model's input size (pretrained weights set their own, e.g. 224 px)
    fetcher = image_fetcher(settings, client, model_config.image_size)
    with run.phase(
        "download_train_s",
        RoundPhase.DOWNLOADING_TRAINING_IMAGES,
        annotated_tasks_in_round=len(split.labeled),
        labels=split.labels,
    ):
        train_images = fetcher.fetch_many([(tid, url) for tid, url, _ in split.labeled], report)
    label_of = {task_id: label for task_id, _, label in split.labeled}
    targets = [schema.training_target(label_of[tid]) for tid, _ in train_images]
    return CollectedRound(schema, len(tasks), split, model_config, fetcher, report, train_images, targets)


def task_counts(collected: CollectedRound) -> TaskCounts:
    """What the collect phase found, as every round summary reports it."""
    return TaskCounts(
        tasks=collected.n_tasks,
        annotated_tasks=len(collected.split.labeled),
        labels=collected.split.labels,
        annotations_used=len(collected.train_images),
    )
