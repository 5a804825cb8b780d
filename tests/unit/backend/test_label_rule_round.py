"""A round applies THE label rule (converters.decide_label) and reports what it used and dropped
(the in-process fake of the Label Studio client of the cold-start tests; the real Label Studio is
covered in tests/integration/test_labels_label_studio.py)."""
from __future__ import annotations

from tests.unit.backend.test_cold_start_round import FakeClient, run, settings  # noqa: F401


def choice(label, **extra):
    return {"result": [{"from_name": "digit", "to_name": "image", "type": "choices",
                        "value": {"choices": [label]}}], **extra}


def test_a_round_reports_tasks_used_dropped_and_why(settings):  # noqa: F811
    client = FakeClient(12, {1: "1", 2: "1", 3: "1"})
    tasks = {t["id"]: t for t in client.tasks}
    tasks[3]["annotations"].append(choice("0"))                        # 1-1: a tie
    tasks[4]["annotations"] = [{"id": 40, "result": []}]               # submitted empty
    tasks[5]["annotations"] = [choice("0", was_cancelled=True)]        # skipped
    tasks[6]["annotations"] = [choice("0"), choice("1", ground_truth=True)]
    summary, _, events = run(settings, client)
    assert summary["labels"] == {"labeled": 3, "from_ground_truth": 1, "dropped": 2,
                                 "dropped_by_reason": {"empty_result": 1, "tie": 1},
                                 "skipped_only": 1}
    assert any(e.get("labels") == summary["labels"] for e in events)   # visible while it runs
    assert summary["annotations_used"] == 3
    # the tied and the empty task are still work to do: ranked with the pool, before labeled ones
    by_score = [p["task"] for p in sorted(client.imported, key=lambda p: p["score"])]
    assert set(by_score[-3:]) == {1, 2, 6}
