"""What a web process keeps to answer /predict (backend.serving): one Label Studio client and one
image cache object per process, each project's published version (parsed predictions, model,
kept embeddings) loaded once, at most PREDICT_CACHE_PROJECTS projects of them, and a slow load
of one project never stalling /predict of another.

/predict is called over real HTTP on loopback (the app served by a threaded WSGI server);
images are data: URIs, so no Label Studio is needed; the checkpoints are real (small) ones."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from backend import images, model_store, serving
from backend.app import EXTENSION, create_app
from backend.model_store import ModelStore
from backend.serving import LruCache
from backend.settings import Settings, SettingsError
from tests.unit.backend.test_checkpoint_security import publish
from tests.unit.backend.test_labeling_config import DIGITS


def image_uri(shade: int) -> str:
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(png, format="PNG")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()


def ask(url: str, project_id: int, task_ids) -> list[dict]:
    """POST /predict for new tasks (ids the round never stored) of ``project_id``."""
    response = requests.post(
        f"{url}/predict",
        timeout=60,
        data=json.dumps(
            {
                "project": f"{project_id}.1700000000",
                "label_config": DIGITS,
                "tasks": [{"id": t, "data": {"image": image_uri(t % 250)}} for t in task_ids],
            }
        ),
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture
def counting(monkeypatch):
    """Counts of the expensive steps: clients made, cache directory scans, checkpoints and
    predictions files read."""
    counts = {"clients": 0, "scans": 0, "checkpoints": [], "predictions": 0}
    made, scan = serving.LabelStudioClient.from_settings, images.cache_files
    load, read = model_store.load_checkpoint, ModelStore.read_predictions

    def from_settings(settings):
        counts["clients"] += 1
        return made(settings)

    def cache_files(directory):
        counts["scans"] += 1
        return scan(directory)

    def load_checkpoint(path, **kwargs):
        counts["checkpoints"].append(path.name)
        return load(path, **kwargs)

    def read_predictions(self, project_id, version):
        counts["predictions"] += 1
        return read(self, project_id, version)

    monkeypatch.setattr(serving.LabelStudioClient, "from_settings", from_settings)
    monkeypatch.setattr(images, "cache_files", cache_files)
    monkeypatch.setattr(model_store, "load_checkpoint", load_checkpoint)
    monkeypatch.setattr(ModelStore, "read_predictions", read_predictions)
    return counts


def backend(tmp_path, serve_wsgi, **env):
    """The model store and URL of a backend served on loopback (its Serving as ``.serving``)."""
    settings = Settings.from_env(
        {"MODEL_DIR": str(tmp_path / "models"), "DEVICE": "cpu", "REDIS_URL": "redis://127.0.0.1:1/0", **env}
    )
    store = ModelStore(settings.model_dir)
    app = create_app(settings, store=store)
    store.serving = app.extensions[EXTENSION].serving
    return store, serve_wsgi(app).url


def test_one_client_and_one_image_cache_scan_per_process(tmp_path, serve_wsgi, counting):
    store, url = backend(tmp_path, serve_wsgi)
    version = publish(store, 5)
    for first_id in (100, 200, 300):  # three calls, each with new tasks
        answers = ask(url, 5, [first_id, first_id + 1])
        assert [a["model_version"] for a in answers] == [version, version]
        assert all(a["score"] == 0.25 for a in answers)  # the one ranked task's score
    assert counting["clients"] == 1
    assert counting["scans"] == 1  # before: one scan per call
    assert counting["checkpoints"] == [f"{version}.pt"] and counting["predictions"] == 1


def test_concurrent_calls_after_a_publish_load_the_version_once(tmp_path, serve_wsgi, counting):
    store, url = backend(tmp_path, serve_wsgi)
    version = publish(store, 5)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: ask(url, 5, [1000 + i]), range(16)))
    assert all(a["model_version"] == version for [a] in answers)
    assert counting["checkpoints"] == [f"{version}.pt"] and counting["predictions"] == 1
    newer = publish(store, 5)  # a publish: the newer version, once
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: ask(url, 5, [2000 + i]), range(16)))
    assert all(a["model_version"] == newer for [a] in answers)
    assert counting["checkpoints"] == [f"{version}.pt", f"{newer}.pt"]
    assert counting["predictions"] == 2


def test_at_most_predict_cache_projects_are_kept_least_recently_served_dropped_first(
    tmp_path, serve_wsgi, counting
):
    store, url = backend(tmp_path, serve_wsgi, PREDICT_CACHE_PROJECTS="2")
    versions = {project: publish(store, project) for project in (1, 2, 3)}
    for project in (1, 2, 1, 3):
        assert ask(url, project, [500])[0]["model_version"] == versions[project]
    assert counting["predictions"] == 3  # project 1's second call: kept
    # 2 was served least recently when 3 came: 2 went, 1 and 3 stay
    assert store.serving.cached_versions() == [(1, versions[1]), (3, versions[3])]
    counting["checkpoints"].clear()
    assert ask(url, 1, [501])[0]["model_version"] == versions[1]
    assert ask(url, 2, [501])[0]["model_version"] == versions[2]
    assert counting["checkpoints"] == [f"{versions[2]}.pt"]
    assert store.serving.cached_versions() == [(1, versions[1]), (2, versions[2])]
    with pytest.raises(SettingsError, match="PREDICT_CACHE_PROJECTS"):
        Settings.from_env({"PREDICT_CACHE_PROJECTS": "0"})


def test_a_slow_model_load_holds_up_only_its_own_project(tmp_path, serve_wsgi, monkeypatch):
    store, url = backend(tmp_path, serve_wsgi)
    slow, fast = publish(store, 1), publish(store, 2)
    release, loading = threading.Event(), threading.Event()
    load = model_store.load_checkpoint

    def load_checkpoint(path, **kwargs):
        if path.name == f"{slow}.pt":
            loading.set()
            assert release.wait(30)
        return load(path, **kwargs)

    monkeypatch.setattr(model_store, "load_checkpoint", load_checkpoint)
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(ask, url, 1, [700])
        assert loading.wait(30)
        started = time.monotonic()
        assert ask(url, 2, [700])[0]["model_version"] == fast  # while project 1 loads
        assert time.monotonic() - started < 10 and not held.done()
        release.set()
        assert held.result(timeout=60)[0]["model_version"] == slow


# ----------------------------------------------------------------------------- the cache itself


def test_the_lru_cache_loads_each_key_once_and_drops_the_least_recently_used():
    cache: LruCache[str, str] = LruCache(2)
    loads: list[str] = []

    def loader(key):
        return lambda: loads.append(key) or key.upper()

    assert [cache.get(k, loader(k)) for k in ("a", "b", "a", "c", "a", "b")] == list("ABACAB")
    assert loads == ["a", "b", "c", "b"] and cache.keys() == ["a", "b"]
    cache.get("a2", loader("a2"), replaces=lambda other: other.startswith("a"))
    assert cache.keys() == ["b", "a2"]
    with pytest.raises(ValueError):
        LruCache(0)


def test_a_failed_load_is_not_kept_and_concurrent_callers_share_one_load():
    cache: LruCache[str, int] = LruCache(4)
    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        assert gate.wait(10)
        return 7

    with ThreadPoolExecutor(6) as pool:
        results = [pool.submit(cache.get, "k", slow) for _ in range(6)]
        time.sleep(0.2)
        gate.set()
        assert [r.result(timeout=10) for r in results] == [7] * 6
    assert len(calls) == 1

    def broken():
        raise OSError("unreadable")

    with pytest.raises(OSError):
        cache.get("bad", broken)
    assert cache.keys() == ["k"] and cache.get("bad", lambda: 3) == 3
