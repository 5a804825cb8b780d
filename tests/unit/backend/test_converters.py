import pytest

from backend import converters
from backend.converters import TaskError, TaskPrediction
from backend.task_types import task_type_for
from tests.unit.backend.test_labeling_config import DIGITS

SCHEMA = task_type_for(DIGITS)


def annotation(label, **extra):
    return {
        "result": [
            {"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
        ],
        **extra,
    }


@pytest.mark.parametrize(
    "value, expected", [(7, 7), ("7", 7), ("7.1700000000", 7), ({"id": 7, "title": "x"}, 7)]
)
def test_project_ids_in_every_form_label_studio_sends(value, expected):
    assert converters.parse_project_id(value) == expected


@pytest.mark.parametrize("value", [None, "", "abc", {}, 0, -3, True, "x.1"])
def test_bad_project_ids_are_refused(value):
    with pytest.raises(ValueError):
        converters.parse_project_id(value)


def test_image_url_comes_from_the_configured_key():
    assert SCHEMA.task_input({"data": {"image": " /data/upload/1/a.png "}}) == "/data/upload/1/a.png"
    for bad in ({}, {"data": None}, {"data": {"img": "x"}}, {"data": {"image": 3}}):
        with pytest.raises(TaskError):
            SCHEMA.task_input(bad)


def test_a_tie_is_no_label_and_cancelled_annotations_do_not_vote():
    # before the rule the newest annotation ("1") won a 1-1 disagreement
    task = {
        "annotations": [
            annotation("0", id=1, updated_at="2026-01-01T00:00:00Z"),
            annotation("1", id=2, updated_at="2026-01-02T00:00:00Z"),
            annotation("0", id=3, updated_at="2026-01-03T00:00:00Z", was_cancelled=True),
        ]
    }
    assert SCHEMA.decide_label(task) == converters.LabelDecision(None, "tie")


def test_the_majority_of_completed_annotations_wins_over_the_newest():
    task = {
        "annotations": [
            annotation("0", id=1, updated_at="2026-01-01T00:00:00Z"),
            annotation("0", id=2, updated_at="2026-01-02T00:00:00Z"),
            annotation("1", id=3, updated_at="2026-01-03T00:00:00Z"),
        ]
    }
    assert SCHEMA.decide_label(task) == converters.LabelDecision("0", source="majority")


def test_ground_truth_comes_first():
    task = {"annotations": [annotation("0"), annotation("0"), annotation("two", ground_truth=True)]}
    assert SCHEMA.decide_label(task) == converters.LabelDecision("two", source="ground_truth")
    # a ground truth that is empty or cancelled does not count as one
    task["annotations"][2] = annotation("two", ground_truth=True, was_cancelled=True)
    assert SCHEMA.decide_label(task).label == "0"
    # ground truths that disagree are a tie, whatever the other annotators say
    disagreeing = {
        "annotations": [
            annotation("0", ground_truth=True),
            annotation("1", ground_truth=True),
            annotation("0"),
        ]
    }
    assert SCHEMA.decide_label(disagreeing).dropped == "tie"


def test_empty_multi_choice_and_unknown_annotations_are_dropped_with_their_reason():
    empty = {"result": []}
    several = {
        "result": [
            {"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": ["0", "1"]}}
        ]
    }
    other_control = {"result": [{"from_name": "other", "type": "choices", "value": {"choices": ["0"]}}]}
    cases = {
        "empty_result": [empty],
        "not_a_single_choice": [several],
        "choice_not_in_config": [annotation("9")],
    }
    for reason, annotations in cases.items():
        decision = SCHEMA.decide_label({"annotations": annotations})
        assert (decision.label, decision.dropped) == (None, reason)
    assert SCHEMA.decide_label({"annotations": [other_control]}).dropped == "not_a_single_choice"
    # an unusable annotation never votes: the other one decides
    assert SCHEMA.decide_label({"annotations": [empty, several, annotation("1")]}).label == "1"


def test_skipped_only_and_unannotated_tasks_are_unlabeled_but_not_dropped():
    skipped = SCHEMA.decide_label({"annotations": [annotation("0", was_cancelled=True)]})
    assert skipped == converters.LabelDecision(None, skipped=True)
    assert SCHEMA.decide_label({"annotations": []}) == converters.LabelDecision(None)
    assert SCHEMA.decide_label({}) == converters.LabelDecision(None)
    # a result Label Studio stored as null is not a completed annotation (LS does not count it)
    assert SCHEMA.decide_label({"annotations": [{"result": None}]}).dropped is None


def test_the_label_report_counts_used_dropped_and_why():
    tasks = [
        {"annotations": [annotation("0")]},
        {"annotations": [annotation("1", ground_truth=True)]},
        {"annotations": [annotation("0"), annotation("1")]},
        {"annotations": [{"result": []}]},
        {"annotations": [annotation("0", was_cancelled=True)]},
        {"annotations": []},
    ]
    report = converters.label_report([SCHEMA.decide_label(t) for t in tasks])
    assert report == {
        "labeled": 2,
        "from_ground_truth": 1,
        "dropped": 2,
        "dropped_by_reason": {"empty_result": 1, "tie": 1},
        "skipped_only": 1,
    }


def test_labels_outside_the_config_and_other_controls_are_not_training_data():
    task = {
        "annotations": [
            annotation("9"),
            {"result": [{"from_name": "other", "type": "choices", "value": {"choices": ["0"]}}]},
        ]
    }
    assert SCHEMA.decide_label(task).label is None
    assert SCHEMA.decide_label({"annotations": []}).label is None


def test_prediction_payload_is_a_choices_result_with_score_and_version():
    payload = converters.prediction_payload(
        TaskPrediction("two", 0.91234567, 0.25, cluster=3), SCHEMA, "al-20260101-000000-abcdef"
    )
    assert payload["score"] == 0.25 and payload["cluster"] == 3
    assert payload["model_version"] == "al-20260101-000000-abcdef"
    (result,) = payload["result"]
    assert result["from_name"] == "digit" and result["to_name"] == "image"
    assert result["value"] == {"choices": ["two"]} and result["type"] == "choices"
    item = converters.import_payload(12, TaskPrediction("0", 0.5, 0.1), SCHEMA, "v")
    assert item["task"] == 12 and "cluster" not in item


def test_untrained_answer_is_honest():
    payload = converters.untrained_payload()
    assert payload["result"] == [] and payload["model_version"] == "untrained"
    assert 0.0 <= payload["score"] <= 1.0


def test_a_label_the_config_no_longer_has_is_never_preselected():
    # a model trained before "2" was renamed still predicts the old name until the next round
    payload = converters.prediction_payload(TaskPrediction("2", 0.99, 0.4), SCHEMA, "v")
    assert payload["result"] == [] and payload["score"] == 0.4


def test_neighbouring_scores_of_a_two_million_task_project_stay_distinct():
    # ranking_to_scores gives positions k / (N - 1); at N = 2M neighbours differ by 5e-7, which
    # 6-decimal rounding tied. The pushed payload (JSON over HTTP) must keep them apart.
    import json

    import numpy as np

    from model.strategies import ranking_to_scores

    n = 2_000_000
    scores = ranking_to_scores(np.arange(n))[:1000]
    schema = task_type_for(DIGITS)
    pushed = [
        json.loads(json.dumps(converters.import_payload(k, TaskPrediction("0", 0.9, float(s)), schema, "v")))[
            "score"
        ]
        for k, s in enumerate(scores)
    ]
    assert len(set(pushed)) == len(pushed)
    assert pushed == sorted(pushed) and pushed == scores.tolist()
