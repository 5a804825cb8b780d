"""What the model store keeps on disk and in memory as versions accumulate: old versions' files
are pruned together, and each web process holds at most one parsed predictions file per project."""
from __future__ import annotations

import json

from backend.model_store import ModelStore, _StoredPredictions


def fake_version(store: ModelStore, project_id: int, version: str) -> None:
    """The files a trained round leaves (contents do not matter to pruning)."""
    store.checkpoint_path(project_id, version).parent.mkdir(parents=True, exist_ok=True)
    store.checkpoint_path(project_id, version).write_bytes(b"checkpoint")
    store.predictions_path(project_id, version).write_text(json.dumps({"tasks": {"1": {"score": 0.5}}}))
    store.save_neighbours(project_id, version, [1], [[0.0, 1.0]])


def test_pruning_a_version_deletes_all_of_its_files(tmp_path):
    store = ModelStore(tmp_path, keep_versions=2)
    versions = [f"al-2026010{d}-000000-abcdef" for d in range(1, 6)]
    for version in versions:
        fake_version(store, 7, version)
        store.publish(7, version)
    folder = store.project_dir(7) / "versions"
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(f"{v}{suffix}" for v in versions[-2:]
                          for suffix in (".pt", ".predictions.json", ".neighbours.npz"))


def test_one_parsed_predictions_file_per_project(tmp_path):
    store = ModelStore(tmp_path, keep_versions=5)
    for version in ("al-20260101-000000-aaaaaa", "al-20260102-000000-bbbbbb"):
        for project in (1, 2):
            fake_version(store, project, version)
    for version in ("al-20260101-000000-aaaaaa", "al-20260102-000000-bbbbbb"):
        for project in (1, 2):
            assert _StoredPredictions.get(store.predictions_path(project, version))["tasks"]["1"]["score"] == 0.5
    cached = [c for c in _StoredPredictions.cached_files() if c.startswith(str(tmp_path))]
    assert sorted(cached) == sorted(str(store.predictions_path(p, "al-20260102-000000-bbbbbb"))
                                    for p in (1, 2))


def test_an_unreadable_predictions_file_answers_empty_and_is_not_cached(tmp_path):
    store = ModelStore(tmp_path, keep_versions=5)
    path = store.predictions_path(3, "al-20260101-000000-aaaaaa")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert _StoredPredictions.get(path) == {"tasks": {}}
    assert str(path) not in _StoredPredictions.cached_files()
