"""What a web process keeps to answer /predict (backend.ml_model), made once per process rather
than once per call: one Label Studio client (one token exchange), one image fetcher and with it
one image cache object (whose directory is scanned once, not on every call that scores a new
task), and the published versions of the PREDICT_CACHE_PROJECTS projects served most recently.

A served version is loaded once per process: its parsed predictions file on first use, its model
and kept embeddings when a task new since the round first needs them. Concurrent /predict calls
after a publish wait for that one load instead of each parsing the same file; a load holds its
own version's lock only (``Once``), never the lock of the whole cache, so a slow ``torch.load``
of one project never stalls /predict of another. The least recently served project is dropped
first; a project's older version is dropped when its newer one is loaded.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from backend.image_scoring import image_fetcher
from backend.images import ImageFetcher
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore, Published, StoredPredictions
from backend.settings import Settings
from model.checkpoint import LoadedModel

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Neighbours = tuple[np.ndarray, np.ndarray]  # (task ids, embeddings) a version ranked


class Once(Generic[V]):
    """A value made by ``load`` on first use, by one caller while the others wait for it. A load
    that raises leaves it unmade: the next caller tries again."""

    def __init__(self, load: Callable[[], V]):
        self._load = load
        self._lock = threading.Lock()
        self._made = False
        self._value: V | None = None

    def get(self) -> V:
        with self._lock:
            if not self._made:
                self._value = self._load()
                self._made = True
        return self._value  # type: ignore[return-value]


class LruCache(Generic[K, V]):
    """At most ``capacity`` values, the least recently used dropped first. The map's lock is
    held only to find or add an entry; the value is loaded outside it (``Once``), so one slow
    load never blocks the other keys, and callers of the same key share one load."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"an LRU cache holds at least one entry, not {capacity}")
        self.capacity = capacity
        self._cells: OrderedDict[K, Once[V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], V], replaces: Callable[[K], bool] = lambda _: False) -> V:
        """The value of ``key``, loaded by ``load`` when absent; adding it drops the entries
        whose keys ``replaces`` accepts (e.g. an older version of the same project)."""
        with self._lock:
            cell = self._cells.get(key)
            if cell is None:
                for other in [k for k in self._cells if k != key and replaces(k)]:
                    del self._cells[other]
                cell = self._cells[key] = Once(load)
                while len(self._cells) > self.capacity:
                    self._cells.popitem(last=False)
            else:
                self._cells.move_to_end(key)
        try:
            return cell.get()
        except BaseException:
            with self._lock:  # a failed load is not kept: the next call loads again
                if self._cells.get(key) is cell:
                    del self._cells[key]
            raise

    def keys(self) -> list[K]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._cells)


class _NoModel(Exception):
    """The published checkpoint could not be loaded (logged by ModelStore.load_model)."""


@dataclass
class ServedVersion:
    """One published version as /predict uses it: what it pushed, and (on first need) its model
    and the embeddings of the tasks it ranked."""

    version: str
    predictions: StoredPredictions
    _model: Once[tuple[LoadedModel, Neighbours | None]]

    def model(self) -> tuple[LoadedModel | None, Neighbours | None]:
        """(the loaded model, its neighbours); (None, None) when the checkpoint cannot be
        loaded, which is tried again on the next call (the file may be restored)."""
        try:
            return self._model.get()
        except _NoModel:
            return None, None


class Serving:
    """The per-process state of /predict (see the module's docstring)."""

    def __init__(self, settings: Settings, store: ModelStore, client: LabelStudioClient | None = None):
        self.settings = settings
        self.store = store
        self._client = client
        self._fetcher: ImageFetcher | None = None
        self._sized: dict[int, ImageFetcher] = {}
        self._lock = threading.Lock()
        self._versions: LruCache[tuple[int, str], ServedVersion] = LruCache(settings.predict_cache_projects)

    @property
    def client(self) -> LabelStudioClient:
        with self._lock:
            if self._client is None:
                self._client = LabelStudioClient.from_settings(self.settings)
            return self._client

    def fetcher(self, image_size: int) -> ImageFetcher:
        """The process's fetcher holding images at ``image_size`` px (one per size, all sharing
        one source and one image cache object)."""
        client = self.client
        with self._lock:
            if self._fetcher is None:
                self._fetcher = image_fetcher(self.settings, client, image_size)
            sized = self._sized.get(image_size)
            if sized is None:
                sized = self._sized[image_size] = self._fetcher.resized_to(image_size)
            return sized

    def version(self, project_id: int, published: Published) -> ServedVersion:
        """``published`` (a version the caller read once) as /predict serves it, loaded once."""
        key = (project_id, published.version)
        try:
            return self._versions.get(
                key, lambda: self._load(project_id, published), replaces=lambda other: other[0] == project_id
            )
        except (OSError, ValueError) as exc:  # not kept: read again on the next call
            log.warning(
                "project %s: stored predictions of %s unreadable (%s)", project_id, published.version, exc
            )
            return ServedVersion(
                published.version,
                StoredPredictions({"tasks": {}}),
                Once(lambda: self._load_model(project_id, published)),
            )

    def cached_versions(self) -> list[tuple[int, str]]:
        """(project id, version) of every version held, least recently served first."""
        return self._versions.keys()

    def _load(self, project_id: int, published: Published) -> ServedVersion:
        predictions = self.store.read_predictions(project_id, published.version)
        return ServedVersion(
            published.version, predictions, Once(lambda: self._load_model(project_id, published))
        )

    def _load_model(self, project_id: int, published: Published) -> tuple[LoadedModel, Neighbours | None]:
        loaded = self.store.load_model(project_id, published, device=self.settings.device)
        if loaded is None:
            raise _NoModel(published.version)
        return loaded, self.store.load_neighbours(project_id, published.version)
