"""The dashboard's pure parts: progress bars from a round's status, the learning curve's SVG,
errors in words, the round history's entries, escaping of what users wrote."""

from __future__ import annotations

import calendar
import re

from backend import dashboard_html
from backend.dashboard_advice import image_problems, problems, round_error
from backend.dashboard_data import curve_points, phase_progress, round_in_progress
from backend.dashboard_plot import learning_curve_svg
from backend.round_history import accuracy_of, entry_from_summary
from backend.settings import Settings


def test_each_progress_report_becomes_a_fraction_with_words_and_time_left():
    record = {"training_progress": {"step": 50, "steps": 200, "seconds": 10.0}}
    assert phase_progress(record, "training") == {"fraction": 0.25, "text": "50 of 200 steps", "left_s": 30.0}
    scoring = phase_progress({"scoring_progress": {"done": 3, "total": 4}}, "scoring")
    assert scoring["fraction"] == 0.75 and scoring["text"] == "3 of 4 images"
    loading = phase_progress(
        {"self_supervised_progress": {"images_loaded": 7}}, "self_supervised_pretraining"
    )
    assert loading["fraction"] is None and loading["text"] == "7 images loaded"
    assert phase_progress({}, "pushing_predictions")["fraction"] is None


def test_a_round_in_progress_has_passed_current_and_coming_phases():
    assert round_in_progress({"state": "done"}) is None
    record = {
        "state": "running",
        "running_job_id": "j",
        "phase": "scoring",
        "started_at": "2026-01-01T00:00:00Z",
        "scoring_progress": {"done": 1, "total": 2},
    }
    running = round_in_progress(record, now=calendar.timegm((2026, 1, 1, 0, 0, 10)))
    states = {bar["phase"]: bar["state"] for bar in running["bars"]}
    assert states["training"] == "passed" and states["scoring"] == "now"
    assert states["pushing_predictions"] == "to come"
    assert running["words"] == "Scoring every task" and running["elapsed_s"] == 10.0
    cold = round_in_progress({**record, "phase": "cold_start_ranking"})
    assert "training" not in {bar["phase"] for bar in cold["bars"]}


def test_the_learning_curve_has_one_point_per_trained_version():
    history = [  # newest first, as the history keeps them
        {
            "state": "done",
            "model_version": "al-2",
            "annotations_used": 40,
            "metrics": {"val_acc": 0.8, "train_acc": 0.95},
        },
        {"state": "cold_start", "model_version": "coldstart-1", "annotations_used": 1},
        {
            "state": "done",
            "model_version": "al-1",
            "annotations_used": 20,
            "metrics": {"recipe_cv_acc": 0.6, "val_acc": 0.7, "train_acc": 0.9},
        },
    ]
    points = curve_points(history)
    assert [p["labels"] for p in points] == [20, 40]
    assert points[0]["accuracy"] == 0.6 and points[0]["accuracy_kind"] == "cross-validated"
    svg = learning_curve_svg(points)
    assert svg.count('class="point-accuracy"') == 2 and svg.count('class="point-train_acc"') == 2
    assert "al-1: 20 labels, accuracy estimate 60.0%" in svg
    assert "No trained version yet" in learning_curve_svg([])


def test_errors_are_said_in_words_with_what_to_do():
    settings = Settings(label_studio_url="http://ls.example:8080")
    down = round_error(
        settings,
        "GET /api/projects/1/: Label Studio at http://ls.example:8080 "
        "unreachable after 5 attempt(s) (ConnectionError)",
    )
    assert down["title"] == "Label Studio could not be reached" and "LABEL_STUDIO_URL" in down["todo"]
    assert "LABEL_STUDIO_API_KEY" in round_error(settings, "HTTP 401 after 1 attempt(s)")["todo"]
    images = image_problems(
        {
            "skipped_tasks": 3,
            "reasons": {"image URL refused": 2, "image download failed": 1},
            "examples": {"4": "image URL refused: host evil.example"},
        }
    )
    assert images[0]["title"].startswith("3 image(s)") and "ALLOWED_IMAGE_HOSTS" in images[0]["todo"]
    assert "task 4: image URL refused" in images[0]["detail"]
    found = problems(settings, {"state": "failed", "error": "boom"}, [], {"workers": 0})
    assert [p["title"] for p in found] == ["The last round failed", "No worker is running"]


def test_the_history_keeps_a_compact_entry_of_a_round():
    summary = {
        "state": "done",
        "model_version": "al-1",
        "annotations_used": 20,
        "metrics": {"val_acc": 0.7},
        "timings_s": {"train_s": 1.0, "total_s": 2.0},
        "images": {"skipped_tasks": 1, "reasons": {"x": 1}, "examples": {"9": "x: y"}},
        "labels": {"used": 20},
    }
    entry = entry_from_summary(summary, job_id="j", duration_s=2.345)
    assert entry["images"] == {"skipped_tasks": 1, "reasons": {"x": 1}}
    assert entry["duration_s"] == 2.35 and "labels" not in entry and entry["job_id"] == "j"
    assert re.match(r"\d{4}-\d\d-\d\dT", entry["finished_at"])


def test_what_users_wrote_is_escaped():
    view = {
        "project_id": 1,
        "live_version": "al-1",
        "published_at": None,
        "running": None,
        "history": [{"state": "failed", "error": "<script>alert(1)</script>"}],
        "versions": [],
        "curve": [],
        "rollback": None,
        "pending_changes": 0,
        "queued_job_id": None,
        "next_automatic_round": None,
        "top_tasks": [{"task_id": 3, "score": 0.0, "label": "<img src=x>", "probability": 0.5}],
        "problems": [{"title": "t", "detail": "<b>x</b>", "todo": "y"}],
    }
    links = {
        "make_live": lambda v: f"/make/{v}",
        "task": lambda t: f"http://ls/{t}",
        "thumbnail": lambda t: f"/thumb/{t}",
    }
    page = dashboard_html.page_html([view], lambda pid: links, "/progress", "n0nce", [])
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
    assert "<img src=x>" not in page and "<b>x</b>" not in page
    assert page.count("<script") == 1 and 'nonce="n0nce"' in page


def test_the_accuracy_estimate_carries_its_spread_over_the_folds():
    searched = {
        "state": "done",
        "metrics": {"recipe_cv_acc": 0.7, "val_acc": 0.9},
        "recipe_search": {"chosen": "b", "fold_acc": {"a": [0.1, 0.2, 0.3], "b": [0.6, 0.8, 0.7]}},
    }
    assert accuracy_of(searched) == {
        "mean": 0.7,
        "std": 0.1,
        "folds": [0.6, 0.8, 0.7],
        "kind": "3-fold cross-validated",
    }
    held_out = accuracy_of({"metrics": {"val_acc": 0.9}})
    assert held_out["mean"] == 0.9 and held_out["std"] is None and held_out["kind"] == "held-out"
    colour = {
        "keep_colour": False,
        "invariant_fold_accuracy": [0.5, 0.7],
        "with_colour_fold_accuracy": [0.9, 0.9],
    }
    probe = accuracy_of({"metrics": {}, "self_supervised": {"colour": colour}})
    assert probe["mean"] == 0.6 and probe["std"] == 0.1414  # the features the round kept
    assert probe["kind"] == "2-fold cross-validated linear probe"
    kept = accuracy_of({"self_supervised": {"colour": {**colour, "keep_colour": True}}})
    assert kept["mean"] == 0.9 and kept["std"] == 0.0
    assert accuracy_of({"metrics": {"train_acc": 1.0}}) is None
    entry = entry_from_summary(searched, job_id="j", duration_s=1.0)
    assert entry["accuracy"]["std"] == 0.1 and "recipe_search" not in entry


def test_the_spread_is_on_the_page_and_in_the_plot():
    entry = {
        "state": "done",
        "model_version": "al-1",
        "annotations_used": 30,
        "accuracy": {"mean": 0.7, "std": 0.1, "folds": [0.6, 0.8, 0.7], "kind": "3-fold cross-validated"},
        "metrics": {"train_acc": 0.95},
    }
    older = {
        "state": "done",
        "model_version": "al-0",
        "annotations_used": 10,
        "metrics": {"recipe_cv_acc": 0.5},
    }  # recorded before the spread was kept
    points = curve_points([entry, older])
    assert [(p["accuracy"], p["accuracy_std"]) for p in points] == [(0.5, None), (0.7, 0.1)]
    svg = learning_curve_svg(points)
    assert svg.count('class="spread-accuracy"') == 1  # only the point with a spread has a bar
    # 60% to 80% on a 250 px plot with a 14 px top and 40 px bottom margin: y = 250-40-f*196
    bar = re.search(r'class="spread-accuracy" d="M([\d.]+),([\d.]+)V([\d.]+)', svg)
    assert (float(bar.group(2)), float(bar.group(3))) == (92.4, 53.2)
    assert "al-1: 30 labels, accuracy estimate 70.0% ± 10.0" in svg
    row = {
        "version": "al-1",
        "live": True,
        "cold_start": False,
        "finished_at": None,
        "labels": 30,
        "mode": "full",
        "accuracy": 0.7,
        "accuracy_std": 0.1,
        "accuracy_kind": "3-fold cross-validated",
        "train_acc": 0.95,
        "lpm_spearman": None,
        "prospective": None,
        "refusal": None,
    }
    table = dashboard_html.versions_html({"versions": [row]}, lambda version: "/x")
    assert '70.0% ± 10.0 <span class="muted">(3-fold cross-validated)</span>' in table
