"""Versioned model checkpoints per project under MODEL_DIR.

Layout::

    MODEL_DIR/project-<id>/versions/<version>.pt   one checkpoint per trained version
    MODEL_DIR/project-<id>/current.json            the published version (what /predict serves)

A version is *published* only after its predictions are in Label Studio, so the pointer never names
a version whose predictions are incomplete. Writes are atomic (temp file, fsync, rename).
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from model.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)
VERSION_RE = re.compile(r"^al-\d{8}-\d{6}-[0-9a-f]{6}$")


def new_version() -> str:
    return f"al-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class Published:
    version: str
    path: Path
    published_at: str
    info: dict


class ModelStore:
    def __init__(self, model_dir: Path, keep_versions: int = 5):
        self.model_dir = Path(model_dir)
        self.keep_versions = keep_versions
        self._cache: dict[int, tuple[str, object]] = {}
        self._lock = threading.Lock()

    def project_dir(self, project_id: int) -> Path:
        return self.model_dir / f"project-{int(project_id)}"

    def checkpoint_path(self, project_id: int, version: str) -> Path:
        if not VERSION_RE.match(version):
            raise ValueError(f"not a model version: {version!r}")
        return self.project_dir(project_id) / "versions" / f"{version}.pt"

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
            path = self.checkpoint_path(project_id, version)
        except ValueError:
            return None
        return Published(version, path, data.get("published_at", ""), data.get("info", {}))

    def publish(self, project_id: int, version: str, info: dict | None = None) -> None:
        path = self.checkpoint_path(project_id, version)
        if not path.exists():
            raise FileNotFoundError(f"cannot publish {version}: {path} is missing")
        atomic_write_text(self.project_dir(project_id) / "current.json", json.dumps({
            "version": version, "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "info": info or {}}, indent=2))
        self.prune(project_id)

    def versions(self, project_id: int) -> list[str]:
        folder = self.project_dir(project_id) / "versions"
        if not folder.exists():
            return []
        names = [p.stem for p in folder.glob("al-*.pt") if VERSION_RE.match(p.stem)]
        return sorted(names)   # the version string sorts by creation time

    def prune(self, project_id: int) -> list[str]:
        """Delete all but the newest keep_versions checkpoints; never the published one."""
        current = self.published(project_id)
        versions = self.versions(project_id)
        doomed = [v for v in versions[:-self.keep_versions] if not current or v != current.version]
        for version in doomed:
            try:
                self.checkpoint_path(project_id, version).unlink()
            except FileNotFoundError:
                pass
        if doomed:
            log.info("project %s: pruned %d old model version(s)", project_id, len(doomed))
        return doomed

    def load_published(self, project_id: int, device: str = "cpu"):
        """The published model (cached per process), or None before the first published version.

        A corrupt checkpoint is logged and treated as no model, so /predict answers honestly
        instead of failing.
        """
        current = self.published(project_id)
        if current is None:
            return None
        with self._lock:
            cached = self._cache.get(project_id)
            if cached and cached[0] == current.version:
                return cached[1]
            try:
                loaded = load_checkpoint(current.path, device=device)
            except (CheckpointError, FileNotFoundError) as exc:
                log.error("project %s: cannot load model %s: %s", project_id, current.version, exc)
                return None
            self._cache[project_id] = (current.version, loaded)
            return loaded
