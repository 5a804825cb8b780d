"""Prospective accuracy: which tasks count (annotated after the version's watermark), the
guesses against the annotators' labels, the newest measurement per version on the dashboard."""

from __future__ import annotations

from backend import dashboard_html
from backend.converters import TaskPrediction
from backend.dashboard_data import prospective_by_version
from backend.images import FetchReport
from backend.rounds.collect import split_tasks
from backend.rounds.prospective import prospective_counts
from backend.task_types import task_type_for
from tests.unit.backend.test_labeling_config import DIGITS


def choice(value: str, annotation_id: int, cancelled: bool = False) -> dict:
    return {
        "id": annotation_id,
        "was_cancelled": cancelled,
        "result": []
        if cancelled
        else [{"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": [value]}}],
    }


def test_the_split_keeps_each_labeled_tasks_first_annotation_and_the_highest_id():
    tasks = [
        {"id": 1, "data": {"image": "/1.png"}, "annotations": [choice("0", 7), choice("0", 3)]},
        {"id": 2, "data": {"image": "/2.png"}, "annotations": [choice("1", 5)]},
        {"id": 3, "data": {"image": "/3.png"}, "annotations": [choice("1", 9, True)]},
        {"id": 4, "data": {"image": "/4.png"}, "annotations": []},
    ]
    split = split_tasks(tasks, task_type_for(DIGITS), FetchReport())
    assert [tid for tid, _, _ in split.labeled] == [1, 2]
    assert split.first_annotation == {1: 3, 2: 5}
    assert split.annotation_watermark == 9  # a skipped task's annotation counts as well
    assert split_tasks(tasks[3:], task_type_for(DIGITS), FetchReport()).annotation_watermark is None


def test_only_tasks_annotated_after_the_watermark_count_against_the_guesses():
    guesses = {
        1: TaskPrediction("0", 0.9, 0.1),
        2: TaskPrediction("1", 0.3, 0.0),
        3: TaskPrediction("0", 0.95, 0.2),
        4: TaskPrediction(None, None, 0.5),
        5: TaskPrediction("1", 0.99, 0.3),
    }
    labeled = [(1, "", "0"), (2, "", "1"), (3, "", "1"), (4, "", "0"), (5, "", "1"), (6, "", "0")]
    first = {1: 11, 2: 12, 3: 13, 4: 14, 5: 10, 6: 15}  # task 5: in the version's labels
    counts = prospective_counts(guesses.get, labeled, first, watermark=10, min_confidence=0.5)
    # task 4 had no guess, task 6 no prediction of the version: neither counts
    assert counts == {"tasks": 3, "correct": 2, "preselected": 2, "preselected_correct": 1}
    everything = prospective_counts(guesses.get, labeled, first, watermark=0, min_confidence=0.0)
    assert everything == {"tasks": 4, "correct": 3, "preselected": 4, "preselected_correct": 3}


def test_the_dashboard_shows_each_versions_newest_measurement_with_the_caveat():
    history = [  # newest first
        {"finished_at": "t3", "prospective": {"version": "al-2", "tasks": 0, "correct": 0}},
        {
            "finished_at": "t2",
            "prospective": {
                "version": "al-1",
                "tasks": 8,
                "correct": 6,
                "preselected": 4,
                "preselected_correct": 3,
            },
        },
        {"finished_at": "t1", "prospective": {"version": "al-1", "tasks": 2, "correct": 0}},
        {"finished_at": "t0"},
    ]
    shown = prospective_by_version(history)
    assert shown["al-1"]["tasks"] == 8 and shown["al-1"]["accuracy"] == 0.75
    assert shown["al-1"]["preselected_accuracy"] == 0.75 and shown["al-1"]["measured_at"] == "t2"
    assert shown["al-2"]["accuracy"] is None
    html = dashboard_html.prospective_html(shown["al-1"])
    assert "75.0%</span> of 8 tasks" in html and "pre-selected on 4: 75.0% kept" in html
    assert "no task annotated since" in dashboard_html.prospective_html(shown["al-2"])
    assert "next round" in dashboard_html.prospective_html(None, live=True)
    assert dashboard_html.prospective_html(None) == "–"  # never measured (or no guesses)
    row = {
        "version": "al-1",
        "live": True,
        "cold_start": False,
        "finished_at": None,
        "labels": 20,
        "mode": "frozen",
        "accuracy": None,
        "accuracy_kind": "",
        "train_acc": None,
        "lpm_spearman": None,
        "prospective": shown["al-1"],
        "refusal": None,
    }
    table = dashboard_html.versions_html({"versions": [row]}, lambda version: "/x")
    assert "75.0%</span> of 8 tasks" in table and "pessimistic" in table
    assert "chosen" in table or "served first" in table
