"""The pure parts of benchmarks/fault_injection.py: which pool tasks a version scores in Label
Studio, the verdict on what annotators are left with, and the table it prints."""

from benchmarks import fault_injection as faults


def prediction(task, version, score=0.5):
    return {"task": task, "model_version": version, "score": score}


def test_coverage_counts_pool_tasks_with_a_scored_prediction_per_version():
    predictions = [
        prediction(1, "v1"),
        prediction(2, "v1"),
        prediction(2, "v1"),  # twice: once
        prediction(3, "v1", score=None),  # no score
        prediction(99, "v1"),  # not in pool
        prediction(1, "v2"),
        prediction(3, "v2"),
    ]
    assert faults.coverage(predictions, [1, 2, 3]) == {"v1": 2, "v2": 2}
    assert faults.coverage([], [1, 2]) == {}


def test_the_verdict_tells_previous_complete_and_partial_apart():
    assert faults.verdict("v1", "v1", {"v1": 3, "v2": 2}, 3) == "previous version live"
    assert faults.verdict(None, None, {}, 3) == "previous version live"
    assert faults.verdict(None, "", {}, 3) == "previous version live"  # Label Studio's "none"
    assert faults.verdict("v1", "v2", {"v2": 3}, 3) == "complete new version live"
    assert faults.verdict("v1", "v2", {"v2": 2}, 3) == "PARTIAL new version live"
    assert faults.verdict(None, "v2", {}, 3) == "PARTIAL new version live"


def test_the_table_has_one_row_per_scenario_with_the_live_version_s_coverage():
    run = {
        "scenario": "ls-down",
        "pool_size": 10_000,
        "live_before": None,
        "live_after": "v2",
        "scored_after": {"v2": 10_000, "v1": 7},
        "verdict": "complete new version live",
        "wall_s": 412.5,
        "injected": {"what": "Label Studio killed for 60 s", "at_s": 80.1, "phase": "scoring"},
        "rounds": [
            {"state": "held_back", "reason": "8000 of 10000 tasks unscored"},
            {"state": "done", "reason": None},
        ],
    }
    table = faults.markdown({"scenarios": [run]})
    rows = table.strip().splitlines()
    assert len(rows) == 3
    assert "| none → v2 | 10,000 / 10,000 | complete new version live | 412.5 |" in rows[2]
    assert "held_back: 8000 of 10000 tasks unscored; done" in rows[2]


def test_temp_files_are_the_dot_files_left_under_the_directory(tmp_path):
    (tmp_path / "models" / "project-1").mkdir(parents=True)
    (tmp_path / "models" / "project-1" / "current.json").write_text("{}")
    (tmp_path / "models" / "project-1" / ".ckpt.pt.a1b2.tmp").write_bytes(b"x")
    (tmp_path / "image-cache" / "ab").mkdir(parents=True)
    (tmp_path / "image-cache" / "ab" / ".abcdef.99").write_bytes(b"x")
    assert faults.temp_files(tmp_path) == ["image-cache/ab/.abcdef.99", "models/project-1/.ckpt.pt.a1b2.tmp"]


def test_count_lines_counts_only_past_the_given_line(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("no space left\nother\nimage cache: no space left\nimage cache: no space left\n")
    assert faults.count_lines(log, "no space left") == 3
    assert faults.count_lines(log, "image cache: no space left", after_line=3) == 1
