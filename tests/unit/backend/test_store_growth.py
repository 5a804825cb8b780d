"""What the model store keeps on disk and in memory as versions accumulate: old versions' files
are pruned together, and each web process holds at most one parsed predictions file per project
(backend.serving)."""

from __future__ import annotations

import json

from backend.model_store import ModelStore, Published
from backend.serving import Serving
from backend.settings import Settings


def fake_version(store: ModelStore, project_id: int, version: str) -> None:
    """The files a trained round leaves (contents do not matter to pruning)."""
    store.checkpoint_path(project_id, version).parent.mkdir(parents=True, exist_ok=True)
    store.checkpoint_path(project_id, version).write_bytes(b"checkpoint")
    store.predictions_path(project_id, version).write_text(
        json.dumps({"tasks": {"1": {"label": None, "probability": None, "score": 0.5}}})
    )
    store.save_neighbours(project_id, version, [1], [[0.0, 1.0]])


def test_pruning_a_version_deletes_all_of_its_files(tmp_path):
    store = ModelStore(tmp_path, keep_versions=2)
    versions = [f"al-2026010{d}-000000-abcdef" for d in range(1, 6)]
    for version in versions:
        fake_version(store, 7, version)
        store.publish(7, version)
    folder = store.project_dir(7) / "versions"
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(
        f"{v}{suffix}" for v in versions[-2:] for suffix in (".pt", ".predictions.json", ".neighbours.npz")
    )


def served(store: ModelStore, project_id: int, version: str) -> Published:
    return Published(version, store.checkpoint_path(project_id, version), "", {})


def test_one_parsed_predictions_file_per_project(tmp_path):
    store = ModelStore(tmp_path, keep_versions=5)
    serving = Serving(Settings(model_dir=tmp_path), store)
    for version in ("al-20260101-000000-aaaaaa", "al-20260102-000000-bbbbbb"):
        for project in (1, 2):
            fake_version(store, project, version)
    for version in ("al-20260101-000000-aaaaaa", "al-20260102-000000-bbbbbb"):
        for project in (1, 2):
            kept = serving.version(project, served(store, project, version))
            assert kept.predictions.get(1).score == 0.5
    assert sorted(serving.cached_versions()) == [(p, "al-20260102-000000-bbbbbb") for p in (1, 2)]


def test_an_unreadable_predictions_file_answers_empty_and_is_not_cached(tmp_path):
    store = ModelStore(tmp_path, keep_versions=5)
    serving = Serving(Settings(model_dir=tmp_path), store)
    version = "al-20260101-000000-aaaaaa"
    path = store.predictions_path(3, version)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert serving.version(3, served(store, 3, version)).predictions.items() == []
    assert store.stored_predictions(3, version).items() == []
    assert serving.cached_versions() == []
    path.write_text(json.dumps({"tasks": {"4": {"label": None, "probability": None, "score": 0.5}}}))
    assert serving.version(3, served(store, 3, version)).predictions.get(4).score == 0.5
    assert serving.cached_versions() == [(3, version)]
