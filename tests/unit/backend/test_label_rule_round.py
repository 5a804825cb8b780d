"""A round applies THE label rule (the task type's decide_label) and reports what it used and dropped
(the in-process fake of the Label Studio client of the cold-start tests; the real Label Studio is
covered in tests/integration/test_labels_label_studio.py)."""

from __future__ import annotations

from tests.unit.backend.test_cold_start_round import FakeClient, run, settings  # noqa: F401


def choice(label, **extra):
    return {
        "result": [
            {"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
        ],
        **extra,
    }


def test_a_round_reports_tasks_used_dropped_and_why(settings):  # noqa: F811
    client = FakeClient(12, {1: "1", 2: "1", 3: "1"})
    tasks = {t["id"]: t for t in client.tasks}
    tasks[3]["annotations"].append(choice("0"))  # 1-1: a tie
    tasks[4]["annotations"] = [{"id": 40, "result": []}]  # submitted empty
    tasks[5]["annotations"] = [choice("0", was_cancelled=True)]  # skipped
    tasks[6]["annotations"] = [choice("0"), choice("1", ground_truth=True)]
    summary, _, events = run(settings, client)
    assert summary["labels"] == {
        "labeled": 3,
        "from_ground_truth": 1,
        "dropped": 2,
        "dropped_by_reason": {"empty_result": 1, "tie": 1},
        "skipped_only": 1,
    }
    assert any(e.get("labels") == summary["labels"] for e in events)  # visible while it runs
    assert summary["annotations_used"] == 3
    # the tied and the empty task are still work to do: ranked with the pool, before labeled ones
    by_score = [p["task"] for p in sorted(client.imported, key=lambda p: p["score"])]
    assert set(by_score[-3:]) == {1, 2, 6}


def test_a_round_stores_the_schema_and_reports_a_changed_config(settings):  # noqa: F811
    from tests.unit.backend.test_labeling_config import DIGITS

    class RenamedLabel(FakeClient):
        config = DIGITS

        def get_project(self, project_id):
            return {"id": project_id, "label_config": self.config}

    client = RenamedLabel(8, {1: "two", 2: "two"})
    first, store, events = run(settings, client)
    info = store.published(5).info
    assert info["schema"]["labels"] == ["0", "1", "two"] and len(info["schema_hash"]) == 16
    assert any("labeling_config_change" in e and e["labeling_config_change"] is None for e in events)
    client.config = DIGITS.replace('alias="two"', 'alias="deux"')
    second, store, events = run(settings, client)
    (change,) = [e["labeling_config_change"] for e in events if "labeling_config_change" in e]
    assert change["labels_removed"] == ["two"] and change["labels_added"] == ["deux"]
    # the old label's annotations are not training data any more, and the round says so
    assert second["labels"]["dropped_by_reason"] == {"choice_not_in_config": 2}
    assert store.published(5).info["schema_hash"] != info["schema_hash"]
