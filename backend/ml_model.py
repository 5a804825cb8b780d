"""The LabelStudioMLBase subclass: answers /predict from the published model of a project.

/predict must stay fast (Label Studio gives it 100 s and calls it when a task is opened), so tasks
scored by the last background round are answered from that round's stored predictions, and only
tasks created since are run through the model here. Training never starts here: only the worker's
jobs (backend.jobs) run a round, under the project's run lock.
"""

from __future__ import annotations

import logging

from label_studio_ml.model import LabelStudioMLBase

from backend import converters
from backend.constants import PlaceholderVersion
from backend.converters import TaskError, TaskPrediction
from backend.image_scoring import score_images
from backend.images import FetchReport
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore, Published
from backend.serving import ServedVersion, Serving
from backend.settings import Settings
from backend.task_types import task_type_for

log = logging.getLogger(__name__)


class ActiveLearningModel(LabelStudioMLBase):
    """Image classifier + loss prediction module for one Label Studio project."""

    def __init__(
        self,
        label_config=None,
        train_output=None,
        *,
        project_id: int,
        settings: Settings,
        store: ModelStore,
        client: LabelStudioClient | None = None,
        serving: Serving | None = None,
        **kwargs,
    ):
        """``serving``: the process's client, image fetcher and loaded versions (the app's, one
        per process); without it, this instance makes its own (tests, one-off scripts)."""
        super().__init__(label_config=label_config, train_output=train_output, **kwargs)
        self.project_id = project_id
        self.settings = settings
        self.store = store
        self.serving = serving or Serving(settings, store, client)
        self.schema = task_type_for(label_config)  # raises UnsupportedConfig

    def _published(self) -> Published | None:
        """The published version, read once per instance (one instance serves one request):
        every answer of the request, and the model that scores new tasks, come from it."""
        if not hasattr(self, "_published_cache"):
            self._published_cache = self.store.published(self.project_id)
        return self._published_cache

    @property
    def model_version(self) -> str:
        published = self._published()
        return published.version if published else PlaceholderVersion.UNTRAINED

    def predict(self, tasks, **kwargs) -> list[dict]:
        published = self._published()
        if published is None:
            return [converters.untrained_payload() for _ in tasks]
        served = self.serving.version(self.project_id, published)
        stored = served.predictions
        answers: list[dict | None] = [None] * len(tasks)
        to_compute: list[tuple[int, int, str]] = []  # (position, task id, url)
        for position, task in enumerate(tasks):
            task_id = task.get("id") if isinstance(task, dict) else None
            hit = stored.get(task_id) if isinstance(task_id, int) else None
            if hit:
                answers[position] = converters.prediction_payload(
                    hit, self.schema, published.version, self.settings.preselect_min_confidence
                )
                continue
            if published.cold_start:
                # no model yet and the task is new since the cold-start ranking: nothing to say
                answers[position] = converters.untrained_payload()
                continue
            try:
                url = self.schema.task_input(task)
            except TaskError as exc:
                answers[position] = self._placeholder(f"TaskError: {exc}")
                continue
            if not isinstance(task_id, int):
                answers[position] = self._placeholder("a task without an id")
                continue
            to_compute.append((position, task_id, url))

        if len(to_compute) > self.settings.predict_max_tasks:
            log.warning(
                "project %s: /predict got %d new tasks, above PREDICT_MAX_TASKS=%d; the "
                "background round scores the rest",
                self.project_id,
                len(to_compute),
                self.settings.predict_max_tasks,
            )
            for position, _, _ in to_compute[self.settings.predict_max_tasks :]:
                answers[position] = self._placeholder("left to the background scoring round")
            to_compute = to_compute[: self.settings.predict_max_tasks]
        if to_compute:
            self._compute(to_compute, answers, served)
        return [answer or self._placeholder("not answered") for answer in answers]

    def _placeholder(self, reason: str) -> dict:
        payload = converters.untrained_payload()
        payload["model_version"] = PlaceholderVersion.UNSCORED
        log.info("project %s: task not scored: %s", self.project_id, reason)
        return payload

    def _compute(
        self, items: list[tuple[int, int, str]], answers: list[dict | None], served: ServedVersion
    ) -> None:
        """Score tasks the last round did not see. Each gets the pushed score of its nearest task
        in that round's ranking (embedding space, unlabeled and labeled tasks): one scale with the
        push for every strategy, and a duplicate of a ranked task gets its twin's score."""
        from model import strategies

        # the version the request read once: a publish since then must not mix two versions
        version, stored = served.version, served.predictions
        loaded, neighbours = served.model()
        if loaded is None or neighbours is None or len(neighbours[0]) == 0:
            reason = (
                "published model unavailable"
                if loaded is None
                else "the published round kept no embeddings to place new tasks by (the next round does)"
            )
            for position, _, _ in items:
                answers[position] = self._placeholder(reason)
            return
        fetcher = self.serving.fetcher(loaded.model_config.image_size)
        report = FetchReport()
        position_of = {task_id: position for position, task_id, _ in items}
        fetched = fetcher.fetch_many([(task_id, url) for _, task_id, url in items], report)
        for task_id, reason in report.failed.items():
            answers[position_of[task_id]] = self._placeholder(reason)
        if not fetched:
            return
        # placed by embedding, not ranked: no MC-dropout samples whatever the strategy
        outputs = score_images(loaded.model, [img for _, img in fetched], loaded.model_config, self.settings)
        ranked_ids, ranked_embedding = neighbours
        try:
            nearest = strategies.place_by_nearest(outputs.embedding, ranked_embedding)
        except ValueError as exc:  # e.g. a neighbours file of another width: say so, do not fail
            for task_id, _ in fetched:
                answers[position_of[task_id]] = self._placeholder(str(exc))
            return
        answers_of_rows = self.schema.model_answers(outputs.probs, list(loaded.labels))
        for row, (task_id, _) in enumerate(fetched):
            twin = stored.get(int(ranked_ids[nearest[row]]))
            if twin is None:
                answers[position_of[task_id]] = self._placeholder("nearest ranked task not stored")
                continue
            label, probability = answers_of_rows[row]
            pred = TaskPrediction(label, probability, float(twin.score), twin.cluster)
            answers[position_of[task_id]] = converters.prediction_payload(
                pred, self.schema, version, self.settings.preselect_min_confidence
            )
