"""The task types the backend serves, and the one that serves a given labeling config."""

from __future__ import annotations

from backend.task_types.base import LabelingConfig, TaskType, UnsupportedConfig

# In registration order: when several types recognize a config, the first that accepts it serves.
_REGISTERED: list[type[TaskType]] = []


def register(task_type: type[TaskType]) -> type[TaskType]:
    """Add a task type (usable as a class decorator); a name is registered once."""
    if any(known.name == task_type.name for known in _REGISTERED):
        raise ValueError(f"task type {task_type.name!r} is already registered")
    _REGISTERED.append(task_type)
    return task_type


def unregister(name: str) -> None:
    """Remove the task type of this name (no-op when absent)."""
    _REGISTERED[:] = [known for known in _REGISTERED if known.name != name]


def registered() -> tuple[type[TaskType], ...]:
    return tuple(_REGISTERED)


def task_type_for(label_config: str | None) -> TaskType:
    """The registered task type bound to this labeling config; UnsupportedConfig otherwise, with
    the refusal of the type that recognized the config's tags, or what is supported when none
    did."""
    config = LabelingConfig.parse(label_config)
    refusals: list[tuple[type[TaskType], UnsupportedConfig]] = []
    for task_type in _REGISTERED:
        if not task_type.recognizes(config):
            continue
        try:
            return task_type.from_config(config)
        except UnsupportedConfig as exc:
            refusals.append((task_type, exc))
    if len(refusals) == 1:
        raise refusals[0][1]
    if refusals:
        raise UnsupportedConfig("; ".join(f"as {task_type.title}: {exc}" for task_type, exc in refusals))
    raise UnsupportedConfig(_none_fits(config))


def _none_fits(config: LabelingConfig) -> str:
    """Why no registered type serves the config: what each needs, and the control tags found on
    the object tags they read."""
    if not _REGISTERED:
        return "no task type is registered"
    object_tags = tuple(dict.fromkeys(tag for known in _REGISTERED for tag in known.object_tags))
    found = ", ".join(sorted(tag.get("type") for tag in config.controls_on(object_tags).values()))
    found = found or "no control tags on an " + " or ".join(f"<{tag}>" for tag in object_tags)
    if len(_REGISTERED) == 1:
        (only,) = _REGISTERED
        return f"only {only.title} is supported: {only.requirement} (found: {found})"
    supported = "; ".join(f"{known.title} ({known.requirement})" for known in _REGISTERED)
    return f"supported task types: {supported} (found: {found})"
