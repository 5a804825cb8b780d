"""Image classification: one <Choices> (one choice per annotation) on one <Image>.

Label names always come from the project's labeling config (one source of truth): the order of
the <Choice> tags is the class order of the model trained for that config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.converters import DROP_EMPTY, LabelDecision, TaskError, TaskPrediction, decide_by_vote
from backend.task_types.base import LabelingConfig, TaskType, UnsupportedConfig
from backend.task_types.registry import register

# Why an annotation gives no vote, beyond converters' DROP_EMPTY (keys of the label report).
DROP_NOT_SINGLE = "not_a_single_choice"  # several choices, or none on the configured <Choices>
DROP_UNKNOWN = "choice_not_in_config"  # a label the current config does not have (renamed?)
# When no annotation of a task gives a label, the most telling reason is reported.
DROP_PRIORITY = (DROP_UNKNOWN, DROP_NOT_SINGLE, DROP_EMPTY)

# Label Studio's <Choices choice=...> values that let an annotation hold one label only
# (the attribute is absent: "single"). "multiple" is refused: see ImageClassification.from_config.
SINGLE_CHOICE_MODES = ("single", "single-radio")


def choices_mode(config: LabelingConfig, from_name: str) -> str:
    """The ``choice`` attribute of the <Choices name=from_name> tag ("single" when absent)."""
    return (config.attribute("Choices", from_name, "choice") or "single").strip().lower()


@register
@dataclass(frozen=True)
class ImageClassification(TaskType):
    name = "image_classification"
    title = "image classification"
    requirement = "the config needs <Image> with one <Choices>"
    object_tags = ("Image",)

    from_name: str  # the <Choices name=...>
    to_name: str  # the <Image name=...>
    image_key: str  # task.data key holding the image URL (<Image value="$image">)
    labels: tuple[str, ...]  # class names in config order (alias when given, as LS stores results)

    # ------------------------------------------------------------------ the labeling config

    @classmethod
    def recognizes(cls, config: LabelingConfig) -> bool:
        return bool(_choices_on_images(config))

    @classmethod
    def from_config(cls, config: LabelingConfig) -> ImageClassification:
        """The one <Choices> attached to one <Image>; anything else is refused with a reason."""
        choices = _choices_on_images(config)
        if not choices:
            raise UnsupportedConfig(cls.requirement)
        if len(choices) > 1:
            raise UnsupportedConfig(
                f"several <Choices> on images ({', '.join(sorted(choices))}); exactly one is supported"
            )
        from_name, tag = next(iter(choices.items()))
        image_inputs = [inp for inp in tag["inputs"] if inp.get("type") == "Image"]
        if len(tag["to_name"]) != 1 or len(image_inputs) != 1:
            raise UnsupportedConfig(f"<Choices name={from_name!r}> must point at exactly one <Image>")
        if tag.get("dynamic_labels"):
            raise UnsupportedConfig(
                f"<Choices name={from_name!r}> uses dynamic labels, which a trained classifier cannot follow"
            )
        labels = tuple(tag.get("labels") or ())
        if len(labels) < 2:
            raise UnsupportedConfig(
                f"<Choices name={from_name!r}> needs at least 2 choices, has {len(labels)}"
            )
        if len(set(labels)) != len(labels):
            raise UnsupportedConfig(f"<Choices name={from_name!r}> has duplicate choice values")
        mode = choices_mode(config, from_name)
        if mode not in SINGLE_CHOICE_MODES:
            raise UnsupportedConfig(
                f"<Choices name={from_name!r}> has choice={mode!r}: annotations may then hold "
                "several labels, and a single-label classifier cannot learn from them; use "
                'choice="single" or "single-radio"'
            )
        image_key = image_inputs[0].get("value", "")
        if not image_key:
            raise UnsupportedConfig('the <Image> tag needs value="$<data key>"')
        return cls(from_name=from_name, to_name=tag["to_name"][0], image_key=image_key, labels=labels)

    def to_dict(self) -> dict:
        # no "task_type" key (a new type should add its name): the hashes of versions published
        # before task types existed stay valid, so an upgrade retrains nothing
        return {
            "from_name": self.from_name,
            "to_name": self.to_name,
            "image_key": self.image_key,
            "labels": list(self.labels),
        }

    # ------------------------------------------------------------------ tasks -> training data

    @property
    def input_key(self) -> str:
        return self.image_key

    def task_input(self, task: dict) -> str:
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise TaskError("task has no data object")
        url = data.get(self.image_key)
        if not isinstance(url, str) or not url.strip():
            raise TaskError(f"task data has no image under {self.image_key!r}")
        return url.strip()

    def annotation_vote(self, annotation: dict) -> tuple[str | None, str | None]:
        """(label, None) when the annotation chose exactly one label of the config, else
        (None, why)."""
        result = annotation.get("result")
        if not isinstance(result, list) or not result:
            return None, DROP_EMPTY
        ours = [item for item in result if isinstance(item, dict) and item.get("from_name") == self.from_name]
        choices = [
            c for item in ours for c in ((item.get("value") or {}).get("choices") or []) if isinstance(c, str)
        ]
        if len(choices) != 1:
            return None, DROP_NOT_SINGLE
        if choices[0] not in self.labels:
            return None, DROP_UNKNOWN
        return choices[0], None

    def decide_label(self, task: dict) -> LabelDecision:
        return decide_by_vote(task, self.annotation_vote, DROP_PRIORITY)

    def training_target(self, label: str) -> int:
        return self.labels.index(label)

    # ------------------------------------------------------------------ model outputs -> LS

    def model_answers(self, probs: np.ndarray, class_names: Sequence[str]) -> list[tuple[str, float]]:
        """The top class of each row and its probability."""
        top = np.asarray(probs).argmax(axis=1)
        return [(class_names[int(k)], float(probs[row, k])) for row, k in enumerate(top)]

    def prediction_result(self, pred: TaskPrediction) -> list[dict] | None:
        # a label the current config no longer has (renamed or removed since the model was
        # trained) is never pre-selected
        if pred.label not in self.labels or pred.probability is None:
            return None
        return [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "choices",
                "value": {"choices": [pred.label]},
                "score": round(float(pred.probability), 6),
            }
        ]


def _choices_on_images(config: LabelingConfig) -> dict:
    return {name: tag for name, tag in config.controls_on(("Image",)).items() if tag.get("type") == "Choices"}
