"""benchmarks/feature_cache_cost.py on a few hundred rows: it measures our cache and a module
given by path (the way the 'before' figures were taken), and a round reads each row once."""

from __future__ import annotations

import inspect
import json

from benchmarks import feature_cache_cost as bench
from model import feature_cache


def test_it_measures_a_cache_given_by_path_and_ours(tmp_path):
    copy = tmp_path / "copied_cache.py"
    copy.write_text(inspect.getsource(feature_cache))
    out = tmp_path / "results"
    ours = bench.main(["--tasks", "300", "--new-tasks", "20", "--label", "ours", "--out", str(out)])
    copied = bench.main(
        [
            "--tasks",
            "300",
            "--new-tasks",
            "20",
            "--label",
            "copy",
            "--out",
            str(out),
            "--cache-module",
            str(copy),
        ]
    )
    for result in (ours, copied):
        assert result["rows_found"] == 320 and result["rows_read"] == 320  # each row once
        assert result["shard_bytes"] == 320 * result["row_bytes"] + 2 * 128  # two .npy headers
    saved = json.loads((out / "feature-cache-cost.json").read_text())
    assert set(saved) == {"ours", "copy"}
    table = (out / "feature-cache-cost.md").read_text()
    assert "| ours | 300 (+20) |" in table and "| copy | 300 (+20) |" in table


def test_a_cache_without_missing_is_read_the_former_way_twice():
    class Former:
        def get_many(self, keys):
            return list(keys), []

    assert bench.round_read(Former(), ["a", "b"]) == (4, 2)
