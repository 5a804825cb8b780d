"""The pure parts of scripts/benchmark_scale.py: slopes and their extrapolation, the CPU and
process bookkeeping it reads from /proc, and the tables it writes."""

import pytest

from scripts import benchmark_scale as bench


def test_two_sizes_give_the_line_through_them_and_its_100k_value():
    intercept, slope = bench.fit_line([1000, 10000], [6.0, 51.0])
    assert (intercept, slope) == pytest.approx((1.0, 0.005))
    fitted = bench.scaling([1000, 10000], [6.0, 51.0])
    assert fitted["per_1000_tasks"] == pytest.approx(5.0)
    assert fitted["extrapolated"] == pytest.approx(501.0) and fitted["extrapolated_to"] == 100_000


def test_three_sizes_are_fitted_by_least_squares():
    intercept, slope = bench.fit_line([1, 2, 3], [1.0, 2.0, 6.0])
    assert slope == pytest.approx(2.5) and intercept == pytest.approx(-2.0)


def test_a_slope_needs_two_different_sizes():
    with pytest.raises(ValueError, match="two different sizes"):
        bench.fit_line([1000, 1000], [1.0, 2.0])


def test_the_growth_exponent_tells_linear_from_quadratic():
    assert bench.growth_exponent([1000, 10000], [2.0, 20.0]) == pytest.approx(1.0)
    assert bench.growth_exponent([1000, 10000], [2.0, 200.0]) == pytest.approx(2.0)
    assert bench.growth_exponent([1000, 10000], [0.0, 200.0]) is None


def test_cpu_jiffies_count_idle_and_iowait_as_not_busy():
    stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n"
    assert bench.cpu_busy_jiffies(stat) == (160, 1180)
    with pytest.raises(ValueError):
        bench.cpu_busy_jiffies("intr 1 2 3\n")


@pytest.mark.parametrize(
    "command, parent, role",
    [
        ("/venv/bin/redis-server 127.0.0.1:0", "python -m backend.embedded_redis", "redis"),
        ("/venv/bin/python -m backend.embedded_redis --dir x", "bash serve.sh", "redis launcher"),
        ("/venv/bin/python -m backend.worker", "bash scripts/serve.sh", "rq worker"),
        ("/venv/bin/python -m backend.worker", "/venv/bin/python -m backend.worker", "rq work-horse"),
        ("/venv/bin/python /venv/bin/gunicorn backend.wsgi:app", "bash serve.sh", "http backend"),
        ("/ls/bin/python /ls/bin/label-studio start --no-browser", "python bench.py", "label studio"),
        ("bash scripts/serve.sh", "python bench.py", "other"),
    ],
)
def test_processes_are_named_by_their_command_line(command, parent, role):
    assert bench.process_role(command, parent) == role


def _record(round_no: int, tasks: int, push_s: float) -> dict:
    return {
        "round": round_no,
        "timings_s": {"list_tasks_s": tasks / 1000, "push_s": push_s, "total_s": 10 + push_s},
        "press_to_published_s": 11 + push_s,
        "push_ms_per_prediction": 1000 * push_s / tasks,
        "predictions_per_s": tasks / push_s,
        "images_per_s": 100.0,
        "next_s": {"first": 0.2, "median": 0.1},
        "tab_page_s": {"first": 0.5, "median": 0.4},
        "memory": {
            "total_peak_mb": 2000.0,
            "total_peak_pss_mb": 1500.0,
            "peak_mb_by_role": {"label studio": 400.0, "rq work-horse": 900.0},
        },
        "load": {"other_cores": 0.9, "loadavg_1m_max": 2.5},
    }


def _report(runs: list[dict]) -> dict:
    return {
        "label_studio": "1.23.2",
        "commands": ["scripts/benchmark_scale.py --sizes 1000,10000"],
        "note": "validation run",
        "machine": "2 CPU cores",
        "backend_env": {"RETRAIN_AFTER_ANNOTATIONS": "0"},
        "cores": 2,
        "runs": runs,
        "slopes": bench.slopes(runs),
    }


def test_slopes_are_fitted_per_flag_round_and_phase():
    runs = [
        {"tasks": n, "flag": False, "rounds": [_record(1, n, n / 500), _record(2, n, n / 50)]}
        for n in (1000, 10000)
    ]
    fitted = {(s["flag"], s["round"], s["metric"]): s for s in bench.slopes(runs)}
    push_1 = fitted[(False, 1, "phase push_s")]
    assert push_1["per_1000_tasks"] == pytest.approx(2.0) and push_1["exponent"] == pytest.approx(1)
    assert fitted[(False, 2, "phase push_s")]["extrapolated"] == pytest.approx(2000.0)
    assert fitted[(False, 1, "push ms / prediction")]["exponent"] == pytest.approx(0.0)
    # one size only: nothing to fit
    assert bench.slopes(runs[:1]) == []


def test_the_table_shows_sizes_rounds_slopes_and_a_busy_machine():
    runs = [
        {"tasks": n, "flag": flag, "rounds": [_record(1, n, n / 500), _record(2, n, n / 50)]}
        for flag in (False, True)
        for n in (1000, 10000)
    ]
    text = bench.markdown(_report(runs))
    assert "**validation run**" in text
    assert "## Memory-efficient prediction import flag off (stock)" in text
    assert "## Memory-efficient prediction import flag on" in text
    row = next(line for line in text.splitlines() if line.startswith("| phase push_s |"))
    # 1k: 2 / 20 s, 10k: 20 / 200 s, slopes 2 / 20 s per 1,000 tasks, 100k: 200 / 2000 s
    assert row == ("| phase push_s | 2.00 / 20.0 | 20.0 / 200 | 2.00 / 20.0 | 1.00 / 1.00 | 200 / 2000 |")
    header = next(line for line in text.splitlines() if line.startswith("| round 1 / round 2 |"))
    rule = text.splitlines()[text.splitlines().index(header) + 1]
    assert header.count("|") == rule.count("|")
    assert "**busy**: other work used 0.90 of 2 cores" in text
    assert (
        "| 1,000 | 1 | 500 | 100 | 0.20 / 0.10 | 0.50 / 0.40 | 400 | – | – | 900 | – | 2000 | 1500 |" in text
    )
    assert "| peak PSS all processes MB | 1500 / 1500 | 1500 / 1500 |" in text


def test_one_size_gives_a_table_without_slopes():
    runs = [{"tasks": 300, "flag": True, "rounds": [_record(1, 300, 1.0)]}]
    text = bench.markdown(_report(runs))
    assert "per 1,000 tasks" not in text and "| phase push_s | 1.00 |" in text


def test_the_table_says_where_the_images_came_from():
    runs = [{"tasks": 300, "flag": True, "rounds": [_record(1, 300, 1.0)]}]
    over_http = bench.markdown(_report(runs))
    from_disk = bench.markdown({**_report(runs), "read_local_files": True})
    assert "downloaded through Label Studio's HTTP" in over_http
    assert "`LOCAL_FILES_DOCUMENT_ROOT`" not in over_http
    assert "local-files folder on disk (`LOCAL_FILES_DOCUMENT_ROOT`)" in from_disk
