"""The cold-start accuracy benchmark's table: paired gains, what is marked as pushed per
embedding, and runs of different domains sharing one JSON (no training here)."""

from __future__ import annotations

import json

from benchmarks import coldstart_accuracy as bench


def record(
    domain: str, method: str, seed: int, accuracy: float, structure: float = 0.9, embedding: str = "pixels"
) -> dict:
    return {
        "domain": domain,
        "classes": 4,
        "method": method,
        "seed": seed,
        "labels": 50,
        "embedding": embedding,
        "classes_covered": 4,
        "classes_covered_at_10": 3,
        "classes_covered_at_20": 4,
        "structure": structure,
        "accuracy": accuracy,
    }


def rows_of(text: str) -> dict[str, str]:
    return {line.split("|")[3].strip(): line for line in text.splitlines() if line.startswith("| shapes")}


def test_gains_are_paired_by_seed_and_the_pushed_pick_follows_the_structure():
    records = [
        record("shapes", "random", 0, 0.50),
        record("shapes", "random", 1, 0.60),
        record("shapes", "stratified", 0, 0.55),
        record("shapes", "stratified", 1, 0.61),
        record("shapes", "typical", 0, 0.40),
        record("shapes", "typical", 1, 0.50),
    ]
    rows = rows_of(bench.markdown(records, 50, 600, ["random", "typical", "stratified"], "pixels"))
    assert set(rows) == {"random", "typical", "stratified (pushed)"}  # structure 0.9 > 0.8
    assert "+3.0 ± 2.0" in rows["stratified (pushed)"]  # gains +5 and +1
    assert "-10.0 ± 0.0" in rows["typical"]
    clustered = [dict(r, structure=0.5) for r in records]
    assert "typical (pushed)" in rows_of(bench.markdown(clustered, 50, 600, ["random", "typical"], "pixels"))


def test_on_the_self_supervised_embedding_the_stratified_pick_is_pushed_whatever_the_structure():
    records = [
        record("shapes", m, 0, 0.5, structure=0.5, embedding="selfsup")
        for m in ("random", "typical", "stratified")
    ]
    text = bench.markdown(records, 50, 600, ["random", "typical", "stratified"], "selfsup")
    assert "stratified (pushed)" in rows_of(text) and "typical" in rows_of(text)
    assert "--embedding selfsup" in text


def test_a_run_keeps_the_other_domains_and_replaces_its_own(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([record("shapes", "random", 0, 0.1), record("letters", "random", 0, 0.2)]))
    merged = bench.merged([record("shapes", "random", 0, 0.9)], path)
    assert sorted((r["domain"], r["accuracy"]) for r in merged) == [("letters", 0.2), ("shapes", 0.9)]
    assert bench.merged([record("shapes", "random", 0, 0.9)], tmp_path / "none.json")[0]["accuracy"] == 0.9
    assert bench.out_path("pixels").name == "coldstart-accuracy"
    assert bench.out_path("selfsup").name == "coldstart-accuracy-selfsup"


def test_the_transfer_embedding_is_ranked_on_as_configured_weights_are():
    records = [
        record("shapes", m, 0, 0.5, structure=0.5, embedding="transfer") for m in ("random", "typical")
    ]
    rows = rows_of(bench.markdown(records, 50, 600, ["random", "typical"], "transfer"))
    assert "typical (pushed)" in rows
    assert bench.out_path("transfer").name == "coldstart-accuracy-transfer"


def test_more_seeds_of_a_domain_join_its_earlier_ones_and_the_table_names_them(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps(
            [record("shapes", "random", s, 0.5) for s in (0, 1, 2)] + [record("letters", "random", 0, 0.2)]
        )
    )
    merged = bench.merged([record("shapes", "random", 3, 0.7), record("shapes", "random", 1, 0.9)], path)
    shapes = sorted((r["seed"], r["accuracy"]) for r in merged if r["domain"] == "shapes")
    assert shapes == [(0, 0.5), (1, 0.9), (2, 0.5), (3, 0.7)]  # seed 1 replaced, 3 added
    assert bench.seeds_text(merged) == "shapes 0, 1, 2, 3; letters 0"
    assert bench.seeds_text([record("shapes", "random", s, 0.5) for s in (0, 1)]) == "0, 1"
