"""The kinds of labeling task the backend serves, one module each, and the registry that picks
the one for a project's labeling config.

A new kind of task (object detection, multi-label classification, ...) is a new module here: a
``TaskType`` subclass (``base.py``) decorated with ``register`` and imported below. The round, the
HTTP handlers and /predict reach the task only through ``task_type_for`` and that interface.
"""

from backend.task_types.base import LabelingConfig, TaskType, UnsupportedConfig, schema_change

# imported for their registration; the order is the order in which they are asked
from backend.task_types.image_classification import ImageClassification
from backend.task_types.registry import register, registered, task_type_for, unregister

__all__ = [
    "ImageClassification",
    "LabelingConfig",
    "TaskType",
    "UnsupportedConfig",
    "register",
    "registered",
    "schema_change",
    "task_type_for",
    "unregister",
]
