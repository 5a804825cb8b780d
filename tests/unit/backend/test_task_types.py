"""The task-type seam, proven by a second task type that lives only here: a toy "image rating"
(a <Rating> of an <Image>, each number of stars a class), registered in the same registry the
backend uses and run through the same round, /setup and /predict code as image classification
(the in-process fake of the Label Studio client of the cold-start tests)."""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest

from backend import converters, task_types
from backend.app import create_app
from backend.converters import DROP_EMPTY, TaskError, TaskPrediction
from backend.images import FetchReport
from backend.model_store import ModelStore
from backend.pipeline import run_training_round
from backend.rounds.collect import split_tasks
from backend.rounds.predictions import build_predictions
from backend.settings import Settings
from backend.task_types import (
    ImageClassification,
    LabelingConfig,
    TaskType,
    UnsupportedConfig,
    schema_change,
    task_type_for,
)
from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient, png
from tests.unit.backend.test_labeling_config import DIGITS

RATING = """<View><Image name="photo" value="$image"/>
<Rating name="stars" toName="photo" maxRating="3"/></View>"""
DROP_OUT_OF_RANGE = "rating_out_of_range"


def _ratings_on_images(config: LabelingConfig) -> dict:
    return {name: tag for name, tag in config.controls_on(("Image",)).items() if tag.get("type") == "Rating"}


@dataclass(frozen=True)
class ImageRating(TaskType):
    """Toy: 1..maxRating stars of an image, each number of stars a class."""

    name = "image_rating_toy"
    title = "image rating"
    requirement = "the config needs <Image> with one <Rating>"
    object_tags = ("Image",)

    from_name: str
    to_name: str
    image_key: str
    labels: tuple[str, ...]

    @classmethod
    def recognizes(cls, config: LabelingConfig) -> bool:
        return bool(_ratings_on_images(config))

    @classmethod
    def from_config(cls, config: LabelingConfig) -> ImageRating:
        ((from_name, tag),) = _ratings_on_images(config).items()
        stars = int(config.attribute("Rating", from_name, "maxRating") or 5)
        if stars < 2:
            raise UnsupportedConfig(f"<Rating name={from_name!r}> needs maxRating of 2 or more")
        return cls(
            from_name,
            tag["to_name"][0],
            tag["inputs"][0]["value"],
            tuple(str(k) for k in range(1, stars + 1)),
        )

    def to_dict(self) -> dict:
        return {
            "task_type": self.name,
            "from_name": self.from_name,
            "to_name": self.to_name,
            "image_key": self.image_key,
            "labels": list(self.labels),
        }

    @property
    def input_key(self) -> str:
        return self.image_key

    def task_input(self, task: dict) -> str:
        url = (task.get("data") or {}).get(self.image_key)
        if not isinstance(url, str):
            raise TaskError(f"task data has no image under {self.image_key!r}")
        return url

    def vote(self, annotation: dict) -> tuple[str | None, str | None]:
        ratings = [
            (item.get("value") or {}).get("rating")
            for item in annotation["result"]
            if item.get("from_name") == self.from_name
        ]
        if not ratings:
            return None, DROP_EMPTY
        label = str(ratings[0])
        return (label, None) if label in self.labels else (None, DROP_OUT_OF_RANGE)

    def decide_label(self, task: dict) -> converters.LabelDecision:
        return converters.decide_by_vote(task, self.vote, (DROP_OUT_OF_RANGE, DROP_EMPTY))

    def training_target(self, label: str) -> int:
        return self.labels.index(label)

    def model_answers(self, probs, class_names):
        """The median number of stars (ordinal classes), not the top class."""
        cumulative = np.cumsum(np.asarray(probs), axis=1)
        median = (cumulative < 0.5).sum(axis=1).clip(max=len(class_names) - 1)
        return [(class_names[int(k)], float(probs[row, k])) for row, k in enumerate(median)]

    def prediction_result(self, pred: TaskPrediction) -> list[dict] | None:
        if pred.label not in self.labels:
            return None
        return [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "rating",
                "value": {"rating": int(pred.label)},
                "score": round(float(pred.probability), 6),
            }
        ]


@pytest.fixture
def rating_registered():
    task_types.register(ImageRating)
    yield ImageRating
    task_types.unregister(ImageRating.name)


def stars(value, **extra):
    return {
        "result": [{"from_name": "stars", "to_name": "photo", "type": "rating", "value": {"rating": value}}],
        **extra,
    }


# ----------------------------------------------------------------------------- the registry


def test_the_registry_picks_the_task_type_of_each_config(rating_registered):
    assert isinstance(task_type_for(DIGITS), ImageClassification)
    rating = task_type_for(RATING)
    assert isinstance(rating, ImageRating) and rating.labels == ("1", "2", "3")
    assert (rating.from_name, rating.to_name, rating.image_key) == ("stars", "photo", "image")
    # the registered type's own refusal reaches the caller unchanged
    with pytest.raises(UnsupportedConfig, match="maxRating of 2 or more"):
        task_type_for(RATING.replace('maxRating="3"', 'maxRating="1"'))


def test_a_config_no_type_serves_is_refused_naming_every_supported_type(rating_registered):
    boxes = (
        '<View><Image name="i" value="$img"/><RectangleLabels name="r" toName="i">'
        '<Label value="a"/></RectangleLabels></View>'
    )
    with pytest.raises(UnsupportedConfig) as refused:
        task_type_for(boxes)
    assert str(refused.value) == (
        "supported task types: image classification (the config needs <Image> with one "
        "<Choices>); image rating (the config needs <Image> with one <Rating>) "
        "(found: RectangleLabels)"
    )


def test_an_unregistered_type_is_refused_again():
    task_types.register(ImageRating)
    task_types.unregister(ImageRating.name)
    assert ImageRating not in task_types.registered()
    with pytest.raises(
        UnsupportedConfig,
        match=r"^only image classification is supported: .*"
        r"\(found: Rating\)$",
    ):
        task_type_for(RATING)


def test_a_name_is_registered_once(rating_registered):
    with pytest.raises(ValueError, match="already registered"):
        task_types.register(ImageRating)


def test_a_task_type_missing_part_of_the_interface_cannot_be_made():
    for missing in TaskType.__abstractmethods__:
        parts = {name: vars(ImageRating)[name] for name in TaskType.__abstractmethods__ if name != missing}
        partial = type("Partial", (TaskType,), parts)
        with pytest.raises(TypeError, match=missing):
            partial()


# ----------------------------------------------------------------------------- parse -> targets -> results


def test_annotations_become_targets_and_outputs_become_results_through_the_backend_helpers(rating_registered):
    rating = task_type_for(RATING)
    tasks = [
        {"id": 1, "data": {"image": "/a.png"}, "annotations": [stars(3), stars(3), stars(1)]},
        {"id": 2, "data": {"image": "/b.png"}, "annotations": [stars(1), stars(2)]},  # tie
        {"id": 3, "data": {"image": "/c.png"}, "annotations": [stars(9)]},
        {"id": 4, "data": {"image": "/d.png"}, "annotations": [stars(2, ground_truth=True), stars(1)]},
        {"id": 5, "data": {}, "annotations": [stars(2)]},
        {"id": 6, "data": {"image": "/f.png"}, "annotations": []},
    ]
    report = FetchReport()
    split = split_tasks(tasks, rating, report)  # the round's own split
    assert split.labeled == [(1, "/a.png", "3"), (4, "/d.png", "2")]
    assert split.unlabeled == [(2, "/b.png"), (3, "/c.png"), (6, "/f.png")]
    assert split.labels["dropped_by_reason"] == {DROP_OUT_OF_RANGE: 1, "tie": 1}
    assert split.labels["from_ground_truth"] == 1 and 5 in report.failed
    assert [rating.training_target(label) for _, _, label in split.labeled] == [2, 1]

    probs = np.array([[0.2, 0.2, 0.6], [0.45, 0.1, 0.45]])
    # the type's answer, not the top class: the median of the second row is 2 stars
    assert rating.model_answers(probs, rating.labels) == [("3", 0.6), ("2", 0.1)]
    predictions = build_predictions(
        [1, 4], rating.model_answers(probs, rating.labels), np.array([0.0, 1.0]), None
    )
    items = [
        converters.import_payload(tid, pred, rating, "v", min_confidence=0.5) for tid, pred in predictions
    ]
    assert items[0]["result"] == [
        {"from_name": "stars", "to_name": "photo", "type": "rating", "value": {"rating": 3}, "score": 0.6}
    ]
    assert items[1]["result"] == [] and items[1]["score"] == 1.0  # below PRESELECT_MIN_CONFIDENCE
    assert converters.prediction_payload(TaskPrediction("7", 0.9, 0.5), rating, "v")["result"] == []

    four = task_type_for(RATING.replace('maxRating="3"', 'maxRating="4"'))
    change = schema_change({"schema": rating.to_dict(), "schema_hash": rating.hash}, four)
    assert change["labels_added"] == ["4"] and change["labels_removed"] == []


# ----------------------------------------------------------------------------- a whole round


class RatingClient(FakeClient):
    """Tasks of 4 kinds of images (see png): kinds 0-1 rated 1 star, kinds 2-3 rated 3 stars."""

    def __init__(self, n_tasks: int, rated: list[int]):
        super().__init__(n_tasks, {})
        for task in self.tasks:
            if task["id"] in rated:
                task["annotations"] = [stars(1 if task["id"] % 4 < 2 else 3)]

    def get_project(self, project_id):
        return {"id": project_id, "label_config": RATING}


def test_a_round_setup_and_predict_serve_the_registered_type(rating_registered, tmp_path):
    settings = Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=20,
        preselect_min_confidence=0.0,
        self_supervised_steps=0,
        redis_url="redis://127.0.0.1:1/0",
    )  # nothing listens: /setup goes on
    store = ModelStore(settings.model_dir, settings.keep_model_versions)
    client = RatingClient(16, rated=[1, 2, 3, 4, 5, 6, 7, 8])
    # the round itself runs without Redis (one full listing instead of the task index)
    summary = run_training_round(
        dataclasses.replace(settings, redis_url=""), PROJECT, lambda **_: None, client=client, store=store
    ).to_dict()
    assert summary["state"] == "done" and summary["annotations_used"] == 8
    assert summary["predictions_pushed"] == 16 == summary["preselected"]
    results = [item["result"][0] for item in client.imported]
    assert {(r["from_name"], r["to_name"], r["type"]) for r in results} == {("stars", "photo", "rating")}
    assert {r["value"]["rating"] for r in results} <= {1, 2, 3}
    assert store.published(PROJECT).info["schema"]["task_type"] == ImageRating.name

    app = create_app(settings, store=ModelStore(settings.model_dir)).test_client()
    setup = app.post("/setup", data=json.dumps({"project": str(PROJECT), "schema": RATING}))
    assert setup.status_code == 200 and setup.get_json() == {"model_version": summary["model_version"]}
    new_image = "data:image/png;base64," + base64.b64encode(png(99)).decode()
    answer = app.post(
        "/predict",
        data=json.dumps(
            {
                "project": str(PROJECT),
                "label_config": RATING,
                "tasks": [client.tasks[0], {"id": 99, "data": {"image": new_image}}],
            }
        ),
    ).get_json()
    stored, new = answer["results"]
    assert stored["result"] == next(i["result"] for i in client.imported if i["task"] == 1)
    assert new["model_version"] == summary["model_version"]
    assert new["result"][0]["type"] == "rating" and new["result"][0]["value"]["rating"] in (1, 2, 3)

    task_types.unregister(ImageRating.name)
    refused = app.post("/setup", data=json.dumps({"project": str(PROJECT), "schema": RATING}))
    assert refused.status_code == 400
    assert "only image classification is supported" in refused.get_json()["error"]
