"""Versioned model checkpoints per project under MODEL_DIR.

Layout::

    MODEL_DIR/project-<id>/versions/<version>.pt   one checkpoint per trained version
    MODEL_DIR/project-<id>/versions/<version>.predictions.json   what that version pushed
    MODEL_DIR/project-<id>/versions/<version>.neighbours.npz   task ids + embeddings of what it
                                                   ranked, to place tasks created since (/predict)
    MODEL_DIR/project-<id>/current.json            the published version (what /predict serves)

A cold-start round (too few labels to train) publishes a ``coldstart-...`` version: it has a
predictions file (TypiClust scores, no labels) but no checkpoint, so no model is loaded for it.

A version is *published* only after its predictions are in Label Studio, so the pointer never names
a version whose predictions are incomplete. Writes are atomic (temp file, fsync, rename). These
files are written and read here only (the round saves through ``ModelStore``, /predict reads
through it).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.converters import TaskPrediction
from model.atomic import atomic_write, atomic_write_text
from model.checkpoint import CheckpointError, LoadedModel, load_checkpoint
from model.strategies import neighbour_embedding

log = logging.getLogger(__name__)
VERSION_RE = re.compile(r"^al-\d{8}-\d{6}-[0-9a-f]{6}$")  # a trained model
COLD_START_VERSION_RE = re.compile(r"^coldstart-\d{8}-\d{6}-[0-9a-f]{6}$")  # a cold-start ranking


def new_version(prefix: str = "al") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def new_cold_start_version() -> str:
    return new_version("coldstart")


def is_cold_start_version(version: str) -> bool:
    return bool(COLD_START_VERSION_RE.match(version or ""))


def is_own_version(version: str) -> bool:
    """A version this backend made: a trained model or a cold-start ranking."""
    return bool(VERSION_RE.match(version or "") or COLD_START_VERSION_RE.match(version or ""))


def version_sort_key(version: str) -> str:
    """Creation time of one of our versions (both kinds sort together); the string otherwise."""
    return version.split("-", 1)[1] if is_own_version(version) else version


class StoredPredictions:
    """What one version pushed to Label Studio, by task id (a read-only view of its file)."""

    def __init__(self, content: dict):
        self._content = content

    def get(self, task_id: int) -> TaskPrediction | None:
        hit = self._content["tasks"].get(str(task_id))
        if not hit:
            return None
        return TaskPrediction(hit["label"], hit["probability"], hit["score"], hit.get("cluster"))

    def items(self) -> list[tuple[int, TaskPrediction]]:
        """Every stored task's prediction, as (task id, prediction)."""
        return [
            (int(tid), TaskPrediction(hit["label"], hit["probability"], hit["score"], hit.get("cluster")))
            for tid, hit in self._content["tasks"].items()
        ]

    @property
    def about(self) -> dict:
        """How the version was made (what ``save_predictions`` was given besides the tasks)."""
        return {key: value for key, value in self._content.items() if key != "tasks"}


@dataclass(frozen=True)
class Published:
    version: str
    path: Path
    published_at: str
    info: dict

    @property
    def cold_start(self) -> bool:
        """A cold-start ranking: stored scores, no model to load."""
        return is_cold_start_version(self.version)


class ModelStore:
    def __init__(self, model_dir: Path, keep_versions: int = 5):
        self.model_dir = Path(model_dir)
        self.keep_versions = keep_versions

    def project_dir(self, project_id: int) -> Path:
        return self.model_dir / f"project-{int(project_id)}"

    def checkpoint_path(self, project_id: int, version: str) -> Path:
        if not VERSION_RE.match(version):
            raise ValueError(f"not a model version: {version!r}")
        return self.project_dir(project_id) / "versions" / f"{version}.pt"

    def predictions_path(self, project_id: int, version: str) -> Path:
        """What a version pushed to Label Studio (both kinds of versions have one)."""
        if not is_own_version(version):
            raise ValueError(f"not a model version: {version!r}")
        return self.project_dir(project_id) / "versions" / f"{version}.predictions.json"

    def save_predictions(
        self, project_id: int, version: str, predictions: Iterable[tuple[int, TaskPrediction]], **about
    ) -> None:
        """Keep what a version pushed, for /predict to answer from; ``about`` says how it was made
        (e.g. its strategy)."""
        atomic_write_text(
            self.predictions_path(project_id, version),
            json.dumps(
                {
                    **about,
                    "tasks": {
                        str(tid): {
                            "label": p.label,
                            "probability": p.probability,
                            "score": p.score,
                            "cluster": p.cluster,
                        }
                        for tid, p in predictions
                    },
                }
            ),
        )

    def read_predictions(self, project_id: int, version: str) -> StoredPredictions:
        """What ``version`` pushed, parsed from its file; OSError or ValueError when the file is
        missing or unreadable. Each call parses the file: /predict keeps what it parsed
        (backend.serving)."""
        path = self.predictions_path(project_id, version)
        content = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(content, dict) or not isinstance(content.get("tasks"), dict):
            raise ValueError(f"{path} holds no 'tasks' object")
        return StoredPredictions(content)

    def stored_predictions(self, project_id: int, version: str) -> StoredPredictions:
        """What ``version`` pushed (empty, logged, when its file is unreadable)."""
        try:
            return self.read_predictions(project_id, version)
        except (OSError, ValueError) as exc:
            log.warning("project %s: stored predictions of %s unreadable (%s)", project_id, version, exc)
            return StoredPredictions({"tasks": {}})

    def neighbours_path(self, project_id: int, version: str) -> Path:
        """Task ids and (projected) embeddings of every task a trained version ranked."""
        if not VERSION_RE.match(version):
            raise ValueError(f"not a trained model version: {version!r}")
        return self.project_dir(project_id) / "versions" / f"{version}.neighbours.npz"

    def save_neighbours(self, project_id: int, version: str, task_ids, embedding) -> None:
        """Keep what /predict needs to place a new task by its nearest ranked task."""
        task_ids = np.asarray(task_ids, dtype=np.int64)
        embedding = neighbour_embedding(embedding)
        if len(task_ids) != len(embedding):
            raise ValueError(f"{len(task_ids)} task ids but {len(embedding)} embeddings")
        atomic_write(
            self.neighbours_path(project_id, version),
            lambda handle: np.savez(handle, task_ids=task_ids, embedding=embedding),
        )

    def load_neighbours(self, project_id: int, version: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(task ids, embeddings) of a version, or None when the version has none (published
        before they were kept) or the file is unreadable. Read on every call: /predict keeps
        what it read (backend.serving)."""
        path = self.neighbours_path(project_id, version)
        try:
            with np.load(path, allow_pickle=False) as data:
                loaded = (data["task_ids"], data["embedding"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            log.error("project %s: unreadable %s (%s)", project_id, path, exc)
            return None
        return loaded

    def published(self, project_id: int) -> Published | None:
        pointer = self.project_dir(project_id) / "current.json"
        try:
            data = json.loads(pointer.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("project %s: unreadable %s (%s); serving as untrained", project_id, pointer, exc)
            return None
        version = data.get("version", "")
        try:
            path = (
                self.predictions_path(project_id, version)
                if is_cold_start_version(version)
                else self.checkpoint_path(project_id, version)
            )
        except ValueError:
            return None
        return Published(version, path, data.get("published_at", ""), data.get("info", {}))

    def publish(self, project_id: int, version: str, info: dict | None = None) -> None:
        path = (
            self.predictions_path(project_id, version)
            if is_cold_start_version(version)
            else self.checkpoint_path(project_id, version)
        )
        if not path.exists():
            raise FileNotFoundError(f"cannot publish {version}: {path} is missing")
        atomic_write_text(
            self.project_dir(project_id) / "current.json",
            json.dumps(
                {
                    "version": version,
                    "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "info": info or {},
                },
                indent=2,
            ),
        )
        self.prune(project_id)

    def versions(self, project_id: int) -> list[str]:
        folder = self.project_dir(project_id) / "versions"
        if not folder.exists():
            return []
        names = [p.stem for p in folder.glob("al-*.pt") if VERSION_RE.match(p.stem)]
        return sorted(names)  # the version string sorts by creation time

    def prune(self, project_id: int) -> list[str]:
        """Delete all but the newest keep_versions checkpoints; never the published one."""
        current = self.published(project_id)
        versions = self.versions(project_id)
        doomed = [v for v in versions[: -self.keep_versions] if not current or v != current.version]
        for version in doomed:
            try:
                self.checkpoint_path(project_id, version).unlink()
            except FileNotFoundError:
                pass
            self.neighbours_path(project_id, version).unlink(missing_ok=True)
            self.predictions_path(project_id, version).unlink(missing_ok=True)
        # cold-start rankings have only a predictions file: keep the newest keep_versions
        folder = self.project_dir(project_id) / "versions"
        cold = (
            sorted(p.name[: -len(".predictions.json")] for p in folder.glob("coldstart-*.predictions.json"))
            if folder.exists()
            else []
        )
        for version in cold[: -self.keep_versions]:
            if not current or version != current.version:
                self.predictions_path(project_id, version).unlink(missing_ok=True)
                doomed.append(version)
        if doomed:
            log.info("project %s: pruned %d old model version(s)", project_id, len(doomed))
        return doomed

    def load_published(self, project_id: int, device: str = "cpu"):
        """The published model, or None before the first published version and while a
        cold-start ranking (no model) is published.

        A corrupt checkpoint is logged and treated as no model, so /predict answers honestly
        instead of failing.
        """
        return self.load_model(project_id, self.published(project_id), device)

    def load_model(
        self, project_id: int, current: Published | None, device: str = "cpu"
    ) -> LoadedModel | None:
        """The model of ``current`` (a published version the caller read once), loaded from its
        file on every call (/predict keeps it: backend.serving); None when there is none (no
        version, a cold-start ranking, a corrupt file)."""
        if current is None or current.cold_start:
            return None
        try:
            return load_checkpoint(current.path, device=device)
        except (CheckpointError, FileNotFoundError) as exc:
            log.error("project %s: cannot load model %s: %s", project_id, current.version, exc)
            return None
