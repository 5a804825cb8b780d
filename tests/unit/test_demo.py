"""The demo's pure parts: its images of any source, their labeling configs, and the report of
what the pushed ranking is worth (the real Label Studio run is scripts/demo.sh itself)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from scripts import demo, demo_data


def test_the_digits_config_is_the_generic_one_with_ten_digits():
    root = ET.fromstring(demo_data.DIGITS_LABEL_CONFIG)
    choices = root.find("Choices")
    assert choices is not None and choices.get("name") == "digit"
    assert [c.get("value") for c in choices.findall("Choice")] == [str(d) for d in range(10)]


def test_a_domain_source_renders_labelled_colour_images_and_its_own_project(tmp_path):
    rendered, names = demo_data.render_source("shapes", tmp_path, 12, seed=3)
    assert len(rendered) == 12 and len({p.name for p, _ in rendered}) == 12
    assert {label for _, label in rendered} <= set(names) and len(names) == 4
    with Image.open(rendered[0][0]) as image:
        assert image.mode == "RGB" and image.size == (64, 64)
    again, _ = demo_data.render_source("shapes", tmp_path / "again", 12, seed=3)
    assert [label for _, label in again] == [label for _, label in rendered]  # seeded
    assert demo.project_title("shapes") != demo.project_title("mnist")
    assert demo.project_title("digits") == demo.project_title("mnist")
    config = ET.fromstring(demo_data.choices_label_config(demo.CHOICE_NAMES["shapes"], names))
    assert [c.get("value") for c in config.iter("Choice")] == names


def test_an_unknown_source_or_count_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        demo_data.render_source("faces", tmp_path / "x", 5)
    with pytest.raises(ValueError, match="count"):
        demo_data.render_source("textures", tmp_path / "y", 0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def prediction(task: int, score: float, choice: str | None, name: str = "shape") -> dict:
    result = (
        []
        if choice is None
        else [{"from_name": name, "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]
    )
    return {"task": task, "score": score, "result": result}


def test_the_report_reads_the_served_order_lowest_score_first():
    truth = {i: "circle" for i in range(10)}
    # tasks 0-4 scored low (served first): wrong or without a choice; 5-9 high: right
    predictions = (
        [prediction(i, 0.1 * i, "square" if i % 2 else None) for i in range(5)]
        + [prediction(i, 1 + i, "circle") for i in range(5, 10)]
        + [prediction(99, 0.0, "circle")]
    )  # not an unlabeled task: ignored
    report = demo.ranking_report(predictions, truth, "shape")
    assert report["tasks"] == 10 and report["fifth"] == 2
    assert report["preselected"] == 7 and report["preselected_right"] == 5
    assert report["right_served_first"] == 0.0 and report["right_served_last"] == 1.0
    reversed_scores = [dict(p, score=-p["score"]) for p in predictions]
    flipped = demo.ranking_report(reversed_scores, truth, "shape")
    assert flipped["right_served_first"] == 1.0 and flipped["right_served_last"] == 0.0


def test_the_report_counts_only_the_projects_choice_and_needs_a_known_task():
    truth = {1: "circle", 2: "star"}
    other_tag = [prediction(1, 0.5, "circle", name="colour"), prediction(2, 0.6, "star")]
    report = demo.ranking_report(other_tag, truth, "shape")
    assert report["preselected"] == 1 and report["preselected_right"] == 1
    with pytest.raises(ValueError, match="no prediction"):
        demo.ranking_report([prediction(7, 0.1, "star")], truth, "shape")


def test_every_domain_source_has_a_choice_name():
    assert set(demo_data.SOURCES + demo_data.DOMAIN_SOURCES) <= set(demo.CHOICE_NAMES)
    assert np.all([demo.project_title(s).endswith("active learning demo") for s in demo.CHOICE_NAMES])


def test_the_progress_line_names_the_phase_and_the_self_supervised_steps():
    record = {
        "state": "running",
        "phase": "self_supervised_pretraining",
        "self_supervised_progress": {"step": 190, "steps": 1000},
        "labels": {"labeled": 13},
    }
    assert demo.progress_line(record) == (
        "running, self_supervised_pretraining, self-supervised step 190 of 1000, round on 13 labels"
    )
    assert demo.progress_line({}) == "waiting"
