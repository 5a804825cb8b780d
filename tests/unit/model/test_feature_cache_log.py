"""The feature cache's index is an append-only log: a put adds one line (the index is never
rewritten per put), a round reads each cached row once, keys of deleted tasks can be dropped,
a line cut short by a killed writer is skipped, and a cache written with the former whole-file
index is read and carried over without extracting anything again."""

from __future__ import annotations

import json

import numpy as np

from backend.feature_round import pooled_features
from backend.images import FetchReport
from model import feature_cache
from model.feature_cache import FeatureCache
from model.feature_keys import item_key
from model.pooled import PooledFeatures

KEY = "small_cnn-0123456789abcdef"


def rows(n: int, seed: int = 0) -> PooledFeatures:
    matrix = np.random.default_rng(seed).standard_normal((n, 6 + 4)).astype(np.float32)
    return PooledFeatures.from_matrix(matrix, [2, 4], 4)


def test_a_put_appends_one_line_and_never_rewrites_the_index(tmp_path):
    cache = FeatureCache(tmp_path, KEY)
    cache.put_many([f"a{i}" for i in range(5)], rows(5))
    log = cache.directory / "index.jsonl"
    inode, before = log.stat().st_ino, log.read_bytes()
    for put in range(10):
        cache.put_many([f"b{put}-{i}" for i in range(3)], rows(3, seed=put + 1))
        after = log.read_bytes()
        assert log.stat().st_ino == inode and after.startswith(before)  # only appended
        assert after[len(before) :].count(b"\n") == 1
        before = after
    fresh = FeatureCache(tmp_path, KEY)
    assert len(fresh) == 35 and fresh.stored_rows() == 35
    found, missing = fresh.get_many(["b9-2", "a0"])
    assert missing == []
    np.testing.assert_array_equal(
        found.to_matrix(), np.stack([rows(3, seed=10).to_matrix()[2], rows(5).to_matrix()[0]])
    )


def test_a_reader_reads_only_the_lines_appended_since(tmp_path, monkeypatch):
    writer, reader = FeatureCache(tmp_path, KEY), FeatureCache(tmp_path, KEY)
    writer.put_many(["x"], rows(1))
    assert len(reader) == 1
    parsed = []
    real = json.loads
    monkeypatch.setattr(
        feature_cache.feature_index.json, "loads", lambda text, **kw: parsed.append(text) or real(text, **kw)
    )
    writer.put_many(["y"], rows(1, seed=2))
    parsed.clear()
    assert len(reader) == 2 and len(parsed) == 1  # one new line, not the whole index


def test_a_round_reads_each_cached_row_once(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path, KEY)
    items = [(task, f"/data/{task}.png") for task in range(1, 51)]
    cache.put_many([item_key(t, u) for t, u in items], rows(50))
    read = []
    lookup = FeatureCache._lookup

    def counting(self, keys, index):
        found, missing, unreadable = lookup(self, keys, index)
        read.append(0 if found is None else len(found))
        return found, missing, unreadable

    monkeypatch.setattr(FeatureCache, "_lookup", counting)
    ids, found, extracted = pooled_features(
        None, None, items, None, cache, FetchReport(), device="cpu", batch_size=8
    )
    assert ids == [t for t, _ in items] and extracted == 0 and len(found) == 50
    assert sum(read) == 50  # before: 100 (read twice)


def test_keys_of_deleted_tasks_are_dropped_and_their_rows_freed(tmp_path):
    cache = FeatureCache(tmp_path, KEY)
    items = [(task, f"/data/{task}.png") for task in range(1, 41)]
    cache.put_many([item_key(t, u) for t, u in items], rows(40))
    kept = items[:15]  # 25 tasks deleted in Label Studio
    ids, _, _ = pooled_features(
        None, None, kept, None, cache, FetchReport(), device="cpu", batch_size=8, whole_pool=True
    )
    assert ids == [t for t, _ in kept]
    fresh = FeatureCache(tmp_path, KEY)
    assert len(fresh) == 15 and item_key(*items[20]) not in fresh
    assert fresh.stored_rows() == 15  # over half orphaned: compacted
    assert len(list((cache.directory / "shards").iterdir())) == 1
    assert fresh.retain([item_key(t, u) for t, u in kept]) == 0
    found, missing = fresh.get_many([item_key(t, u) for t, u in kept])
    assert missing == []
    np.testing.assert_array_equal(found.to_matrix(), rows(40).to_matrix()[:15])


def test_a_line_cut_short_by_a_killed_writer_is_skipped(tmp_path):
    cache = FeatureCache(tmp_path, KEY)
    cache.put_many(["a"], rows(1))
    with open(cache.directory / "index.jsonl", "ab") as handle:
        handle.write(b'{"shard": "0123')  # killed mid-line
    cache.put_many(["b"], rows(1, seed=3))
    fresh = FeatureCache(tmp_path, KEY)
    assert len(fresh) == 2 and fresh.get_many(["a", "b"])[1] == []


def test_a_cache_with_the_former_index_is_read_and_carried_over(tmp_path):
    directory = tmp_path / KEY
    (directory / "shards").mkdir(parents=True)
    shard = "0123456789abcdef0123456789abcdef.npy"
    np.save(directory / "shards" / shard, rows(3).to_matrix())
    (directory / "index.json").write_text(
        json.dumps(
            {
                "format": "ls-al-feature-cache",
                "format_version": 1,
                "backbone_key": KEY,
                "tap_widths": [2, 4],
                "embedding_dim": 4,
                "shards": [{"name": shard, "rows": 3}],
                "items": {"a": [0, 0], "b": [0, 1], "c": [0, 2]},
            }
        )
    )
    cache = FeatureCache(tmp_path, KEY)
    found, missing = cache.get_many(["c", "a"])
    assert missing == [] and len(cache) == 3
    np.testing.assert_array_equal(found.to_matrix(), rows(3).to_matrix()[[2, 0]])
    cache.put_many(["d"], rows(1, seed=4))
    assert not (directory / "index.json").exists() and (directory / "index.jsonl").exists()
    assert len(FeatureCache(tmp_path, KEY)) == 4
    assert FeatureCache(tmp_path, KEY).get_many(["a", "b", "c", "d"])[1] == []
