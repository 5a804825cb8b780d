"""What every task type provides: the interface the backend calls, and what they share.

A task type is one kind of Label Studio labeling task the backend can serve (image classification
first). An instance is bound to one project's labeling config: it knows the tags it reads, the
task data key of its input, its class names, how annotations become a training target and how the
model's outputs become a Label Studio prediction result. The round (``backend.rounds``),
/predict (``backend.ml_model``) and the HTTP checks (``backend.app``, ``backend.reconcile``) call
only this interface, so a new kind of task is one new module registered in ``backend.task_types``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from label_studio_tools.core.label_config import parse_config
from lxml import etree

if TYPE_CHECKING:  # converters imports this module's TaskType for its own annotations
    import numpy as np

    from backend.converters import LabelDecision, TaskPrediction


class UnsupportedConfig(ValueError):
    """The labeling config is no task type the backend serves; the message says why."""


@dataclass(frozen=True)
class LabelingConfig:
    """A project's labeling config, parsed once for the registry and every task type it asks."""

    text: str
    # control tags by name, as label_studio_tools' parse_config gives them:
    # {"type": "Choices", "to_name": [...], "inputs": [{"type": "Image", "value": "image"}],
    #  "labels": [...], ...}
    controls: dict

    @classmethod
    def parse(cls, label_config: str | None) -> LabelingConfig:
        if not label_config or not str(label_config).strip():
            raise UnsupportedConfig("the project has no labeling config")
        try:
            controls = parse_config(label_config)
        except Exception as exc:  # lxml syntax errors come wrapped in a Label Studio type
            raise UnsupportedConfig(f"the labeling config is not valid XML: {exc}") from None
        return cls(text=str(label_config), controls=controls)

    def controls_on(self, object_tags: Sequence[str]) -> dict:
        """The control tags attached to at least one object tag of these types (e.g. "Image")."""
        return {
            name: tag
            for name, tag in self.controls.items()
            if any(inp.get("type") in object_tags for inp in tag.get("inputs", []))
        }

    def attribute(self, tag_type: str, name: str, attribute: str) -> str | None:
        """An attribute of the <tag_type name=name> tag, None when absent.

        parse_config does not return tag attributes, so the config is read again here, with a
        parser that neither resolves entities nor reaches the network (the config is user input).
        """
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        root = etree.fromstring(self.text.encode("utf-8"), parser)
        for tag in root.iter(tag_type):
            if tag.get("name") == name:
                return tag.get(attribute)
        return None


class TaskType(ABC):
    """One kind of labeling task, bound to the labeling config of one project.

    Subclasses are registered with ``backend.task_types.register``; the registry picks the one
    that recognizes a project's config (``backend.task_types.task_type_for``).
    """

    name: ClassVar[str]  # stable identifier, e.g. "image_classification"
    title: ClassVar[str]  # how refusals name it, e.g. "image classification"
    requirement: ClassVar[str]  # what a config needs to be served by it
    object_tags: ClassVar[tuple[str, ...]]  # object tags its controls attach to, e.g. ("Image",)

    labels: tuple[str, ...]  # class names in config order: the model's classes, in its order

    # ------------------------------------------------------------------ the labeling config

    @classmethod
    @abstractmethod
    def recognizes(cls, config: LabelingConfig) -> bool:
        """Whether the config has the control tags this type serves: the config is then this
        type's to accept or to refuse with its own reason (``from_config``)."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: LabelingConfig) -> TaskType:
        """This type bound to a config it recognizes; UnsupportedConfig with the reason when the
        config uses those tags in a way it cannot serve."""

    @abstractmethod
    def to_dict(self) -> dict:
        """What a model trained for this config depends on (names, keys, classes in order), as
        plain data: stored with each version (checkpoint and published info)."""

    @property
    def hash(self) -> str:
        """Identifies ``to_dict``; stored with each published version to notice a changed
        labeling config."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    # ------------------------------------------------------------------ tasks -> training data

    @property
    @abstractmethod
    def input_key(self) -> str:
        """The ``task.data`` key holding what the model reads (the task index keeps only it)."""

    @abstractmethod
    def task_input(self, task: dict) -> str:
        """The URL of the image the model reads for a task; converters.TaskError when the task
        has none."""

    @abstractmethod
    def decide_label(self, task: dict) -> LabelDecision:
        """The task's training label from its annotations, or why it gives none."""

    @abstractmethod
    def training_target(self, label: str) -> int:
        """The model's training target for a label ``decide_label`` gave."""

    # ------------------------------------------------------------------ model outputs -> LS

    @abstractmethod
    def model_answers(self, probs: np.ndarray, class_names: Sequence[str]) -> list[tuple[str, float]]:
        """(answer, the model's probability of it) for each row of a model's class
        probabilities. ``class_names`` are the classes the model was trained with, which may
        differ from this config's ``labels`` when the config changed since."""

    @abstractmethod
    def prediction_result(self, pred: TaskPrediction) -> list[dict] | None:
        """The Label Studio result that pre-selects the prediction's answer, or None when this
        config cannot show it (e.g. a class the config no longer has). Whether to pre-select at
        all (confidence) is decided by converters.prediction_payload for every task type."""


def schema_change(published_info: dict | None, schema: TaskType) -> dict | None:
    """How the project's config differs from the one the published version was made for, or None
    when it does not (or the published version predates stored schemas: nothing to compare)."""
    info = published_info or {}
    old_hash, old = info.get("schema_hash"), info.get("schema")
    if not old_hash or old_hash == schema.hash:
        return None
    old_labels = list((old or {}).get("labels") or [])
    return {
        "from_hash": old_hash,
        "to_hash": schema.hash,
        "labels_added": [label for label in schema.labels if label not in old_labels],
        "labels_removed": [label for label in old_labels if label not in schema.labels],
    }
