"""Which Label Studio labeling configs the backend can serve, and what it needs to know of one.

Label names always come from the project's labeling config (one source of truth): the order of the
<Choice> tags is the class order of the model trained for that config.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from label_studio_tools.core.label_config import parse_config
from lxml import etree


class UnsupportedConfig(ValueError):
    """The labeling config is not single-image classification; the message says why."""


@dataclass(frozen=True)
class ImageClassificationSchema:
    from_name: str          # the <Choices name=...>
    to_name: str            # the <Image name=...>
    image_key: str          # task.data key holding the image URL (<Image value="$image">)
    labels: tuple[str, ...]  # class names in config order (alias when given, as LS stores results)

    def to_dict(self) -> dict:
        return {"from_name": self.from_name, "to_name": self.to_name, "image_key": self.image_key,
                "labels": list(self.labels)}

    @property
    def hash(self) -> str:
        """Identifies what a model trained for this config depends on (names, labels, order);
        stored with each published version to notice a changed labeling config."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def schema_change(published_info: dict | None, schema: ImageClassificationSchema) -> dict | None:
    """How the project's config differs from the one the published version was made for, or None
    when it does not (or the published version predates stored schemas: nothing to compare)."""
    info = published_info or {}
    old_hash, old = info.get("schema_hash"), info.get("schema")
    if not old_hash or old_hash == schema.hash:
        return None
    old_labels = list((old or {}).get("labels") or [])
    return {"from_hash": old_hash, "to_hash": schema.hash,
            "labels_added": [label for label in schema.labels if label not in old_labels],
            "labels_removed": [label for label in old_labels if label not in schema.labels]}


# Label Studio's <Choices choice=...> values that let an annotation hold one label only
# (the attribute is absent: "single"). "multiple" is refused: see parse_image_classification.
SINGLE_CHOICE_MODES = ("single", "single-radio")


def choices_mode(label_config: str, from_name: str) -> str:
    """The ``choice`` attribute of the <Choices name=from_name> tag ("single" when absent).

    parse_config does not return tag attributes, so the config is read again here, with a parser
    that neither resolves entities nor reaches the network (the config is user input).
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.fromstring(str(label_config).encode("utf-8"), parser)
    for tag in root.iter("Choices"):
        if tag.get("name") == from_name:
            return (tag.get("choice") or "single").strip().lower()
    return "single"


def parse_image_classification(label_config: str | None) -> ImageClassificationSchema:
    """Find the one <Choices> attached to one <Image>; anything else is refused with a reason."""
    if not label_config or not str(label_config).strip():
        raise UnsupportedConfig("the project has no labeling config")
    try:
        parsed = parse_config(label_config)
    except Exception as exc:  # lxml syntax errors come wrapped in a Label Studio type
        raise UnsupportedConfig(f"the labeling config is not valid XML: {exc}") from None
    choices = {
        name: tag for name, tag in parsed.items()
        if tag.get("type") == "Choices"
        and any(inp.get("type") == "Image" for inp in tag.get("inputs", []))
    }
    other_image_controls = sorted(
        tag.get("type") for name, tag in parsed.items()
        if name not in choices and any(inp.get("type") == "Image" for inp in tag.get("inputs", []))
    )
    if not choices:
        found = ", ".join(other_image_controls) or "no control tags on an <Image>"
        raise UnsupportedConfig(
            "only image classification is supported: the config needs <Image> with one <Choices> "
            f"(found: {found})")
    if len(choices) > 1:
        raise UnsupportedConfig(
            f"several <Choices> on images ({', '.join(sorted(choices))}); exactly one is supported")
    from_name, tag = next(iter(choices.items()))
    image_inputs = [inp for inp in tag["inputs"] if inp.get("type") == "Image"]
    if len(tag["to_name"]) != 1 or len(image_inputs) != 1:
        raise UnsupportedConfig(f"<Choices name={from_name!r}> must point at exactly one <Image>")
    if tag.get("dynamic_labels"):
        raise UnsupportedConfig(f"<Choices name={from_name!r}> uses dynamic labels, which a "
                                "trained classifier cannot follow")
    labels = tuple(tag.get("labels") or ())
    if len(labels) < 2:
        raise UnsupportedConfig(f"<Choices name={from_name!r}> needs at least 2 choices, has "
                                f"{len(labels)}")
    if len(set(labels)) != len(labels):
        raise UnsupportedConfig(f"<Choices name={from_name!r}> has duplicate choice values")
    mode = choices_mode(label_config, from_name)
    if mode not in SINGLE_CHOICE_MODES:
        raise UnsupportedConfig(
            f"<Choices name={from_name!r}> has choice={mode!r}: annotations may then hold several "
            "labels, and a single-label classifier cannot learn from them; use choice=\"single\" "
            "or \"single-radio\"")
    image_key = image_inputs[0].get("value", "")
    if not image_key:
        raise UnsupportedConfig("the <Image> tag needs value=\"$<data key>\"")
    return ImageClassificationSchema(from_name=from_name, to_name=tag["to_name"][0],
                                     image_key=image_key, labels=labels)
