"""Property-based fuzzing of /setup, /predict and /webhook over real HTTP with a real Redis.

Every generated body (JSON of random shape, the right keys with wrong types, missing fields,
strings near the body cap, non-UTF-8 bytes, deeply nested arrays) must get a 2xx or 4xx answer
with a JSON body, never a 5xx, and the server must still answer /health afterwards.
A second run fuzzes /predict with a published model, where tasks reach the image fetcher.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import free_port
from tests.unit.backend.test_labeling_config import DIGITS

pytestmark = pytest.mark.redis

BODY_CAP = 256 * 1024
SENT = {"count": 0}
ANSWERS: Counter = Counter()  # (path, status code) -> count, printed to show coverage
FUZZ = hsettings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "560")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# --- strategies -----------------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
)
json_any = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
project_ids = st.one_of(
    json_any,
    st.integers(-5, 2**65),
    st.from_regex(r"\A-?[0-9]{1,25}(\.[0-9]{0,12})?\Z"),
    st.sampled_from(["3.1700000000", "0", "-1", "1e5", "١٢", "²", " 7 ", "9" * 5000, "", "nan"]),
    st.builds(lambda v: {"id": v}, json_any | st.integers(1, 10**6)),
    st.builds(lambda v, c: {"id": v, "label_config": c}, st.integers(1, 50), json_any | st.just(DIGITS)),
)
configs = st.one_of(
    json_any,
    st.just(DIGITS),
    st.sampled_from(
        [
            "<View><Image",
            "<View/>",
            "x",
            '<View><Text name="t" value="$t"/></View>',
            DIGITS.replace('value="$image"', 'value=""'),
            DIGITS + "<!--" + "x" * 1000 + "-->",
        ]
    ),
)
urls = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "/data/upload/1/a.png",
            "http://169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
            "data:image/png;base64,AAAA",
            "data:,",
            "data:image/png;base64,!!!",
            "s3://b/k.png",
            "gs://b/k.png",
            "/data/local-files/?d=../../etc/passwd",
            "http://127.0.0.2:1/x.png",
            "ftp://x/y",
            "http://[::1]:1/x",
            "http://" + "a" * 300 + "/x",
            "javascript:alert(1)",
            "  ",
        ]
    ),
)
tasks_one = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-3, 2**40) | json_any,
        "data": json_any | st.fixed_dictionaries({"image": urls | json_any}),
        "annotations": json_any,
        "predictions": json_any,
    },
)
tasks_with_ids = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(1, 2**62)},
        optional={
            "data": json_any | st.fixed_dictionaries({"image": urls | json_any}),
            "annotations": json_any,
        },
    ),
    max_size=6,
    unique_by=lambda t: t["id"],
)
tasks = st.one_of(json_any, st.lists(tasks_one, max_size=6), tasks_with_ids)
actions = st.one_of(
    json_any,
    st.sampled_from(
        [
            "START_TRAINING",
            "ANNOTATION_CREATED",
            "ANNOTATION_UPDATED",
            "ANNOTATIONS_DELETED",
            "ANNOTATIONS_CREATED",
            "ANNOTATION_DELETED",
            "TASKS_CREATED",
            "TASKS_DELETED",
            "PROJECT_UPDATED",
            "",
            "start_training",
            "X" * 300,
        ]
    ),
)

COMMON = {
    "project": project_ids,
    "params": json_any
    | st.fixed_dictionaries({}, optional={"context": json_any, "login": json_any, "password": json_any}),
}
SHAPES = {
    "/setup": {
        **COMMON,
        "schema": configs,
        "hostname": json_any,
        "access_token": json_any,
        "model_version": json_any,
        "extra_params": json_any,
    },
    "/predict": {**COMMON, "tasks": tasks, "label_config": configs},
    "/webhook": {
        "action": actions,
        "project": project_ids,
        "annotation": json_any,
        "annotations": json_any,
        "task": json_any,
        "tasks": json_any,
    },
}


def shaped(path: str):
    """Dicts with the endpoint's keys (each present or not, each of any type) plus junk keys."""
    return st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries({}, optional=SHAPES[path]),
        st.dictionaries(st.text(max_size=6), json_any, max_size=2),
    )


VALID = {
    "/setup": {
        "project": "3.1700000000",
        "schema": DIGITS,
        "hostname": "http://127.0.0.1:8080",
        "access_token": "creator-token",
        "model_version": "untrained",
        "extra_params": {},
    },
    "/predict": {
        "project": "3.1700000000",
        "label_config": DIGITS,
        "params": {"context": None},
        "tasks": [{"id": 1, "data": {"image": "/data/upload/3/a.png"}}],
    },
    "/webhook": {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 3, "label_config": DIGITS},
        "annotation": {"id": 1},
    },
}


def mutated(path: str):
    """A valid body with up to two keys dropped and up to two replaced by anything: reaches
    the code behind the validation, where the first fuzz round found its 500s."""
    keys = sorted(VALID[path])
    replacement = st.one_of(*[st.tuples(st.just(k), SHAPES[path].get(k, json_any)) for k in keys])

    def build(drop, replace):
        body = {**VALID[path], **dict(replace)}
        return {k: v for k, v in body.items() if k not in drop}

    return st.builds(build, st.sets(st.sampled_from(keys), max_size=2), st.lists(replacement, max_size=2))


def near_cap(path: str):
    key = {"/setup": "schema", "/predict": "label_config", "/webhook": "action"}[path]

    def body(n, project):
        return json.dumps({key: "x" * n, "project": project, "tasks": [{"id": 1}]}).encode()

    return st.builds(body, st.integers(BODY_CAP - 2000, BODY_CAP + 2000), st.sampled_from([1, "1.2"]))


raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=64).map(lambda b: b"\xff\xfe\xfd" + b),  # not UTF-8
    st.binary(max_size=32).map(lambda b: b'{"project": "1", "schema": "' + b + b'"}'),
    st.text(max_size=40).map(lambda t: t.encode("utf-16")),
    st.integers(10, 100_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.integers(10, 50_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"1",
            b'"s"',
            b"NaN",
            b"{",
            b'{"project": 1}x',
            b'{"project": "\\ud800"}',
            b"\x00" * 10,
        ]
    ),
)


def payloads(path: str):
    return st.one_of(
        mutated(path).map(lambda d: json.dumps(d).encode()),
        mutated(path).map(lambda d: json.dumps(d).encode()),  # twice: more weight
        shaped(path).map(lambda d: json.dumps(d).encode()),
        json_any.map(lambda d: json.dumps(d).encode()),
        raw_bodies,
        near_cap(path),
    )


# --- the server ---------------------------------------------------------------------------------
def make_settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "MODEL_DIR": str(tmp_path / "models"),
            "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "LABEL_STUDIO_API_KEY": "fuzz-legacy-token",
            "LABEL_STUDIO_RETRIES": "0",
            "IMAGE_FETCH_TIMEOUT_S": "2",
            "RETRAIN_AFTER_ANNOTATIONS": "3",
            "MAX_REQUEST_BYTES": str(BODY_CAP),
            "QUEUE_NAME": f"fuzz-{os.getpid()}",
            "DEVICE": "cpu",
        }
    )


def check_answer(session: requests.Session, url: str, body: bytes) -> None:
    SENT["count"] += 1
    response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code < 500, (body[:300], response.status_code, response.text[:500])
    assert 200 <= response.status_code < 500
    ANSWERS[(url.rsplit("/", 1)[-1], response.status_code)] += 1
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
    answer = response.json()
    if response.status_code >= 400:
        assert answer["status"] == "error" and isinstance(answer["error"], str), answer


def fuzz_endpoint(server, path: str) -> int:
    before = SENT["count"]
    with requests.Session() as session:

        @FUZZ
        @given(body=payloads(path))
        def run(body):
            check_answer(session, server.url + path, body)

        run()
        health = session.get(server.url + "/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "UP"
    return SENT["count"] - before


@pytest.fixture
def backend(redis_server, redis_conn, tmp_path, serve_wsgi):
    settings = make_settings(redis_server, tmp_path)
    return serve_wsgi(create_app(settings, redis_conn=redis_conn))


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook"])
def test_fuzzed_bodies_never_get_a_5xx(backend, path):
    sent = fuzz_endpoint(backend, path)
    codes = {code: n for (p, code), n in sorted(ANSWERS.items()) if p == path.strip("/")}
    print(f"\nfuzzed {path}: {sent} payloads, answers by status {codes} (total so far {SENT['count']})")
    assert sent >= 200


@pytest.mark.parametrize(
    "path, body",
    [
        ("/setup", b"[" * 100_000 + b"]" * 100_000),  # RecursionError -> 500
        ("/predict", json.dumps({"project": 1, "tasks": [], "label_config": "x"}).encode()),
        ("/predict", json.dumps({"project": 1, "tasks": [], "label_config": DIGITS, "params": "x"}).encode()),
        ("/predict", json.dumps({"project": 1, "tasks": [], "label_config": 5}).encode()),
        ("/webhook", json.dumps({"action": "START_TRAINING", "project": 5}).encode()),
        ("/webhook", json.dumps({"action": "START_TRAINING", "project": "5"}).encode()),
        ("/predict", json.dumps({"project": 1, "tasks": [{"id": []}], "label_config": DIGITS}).encode()),
        (
            "/predict",
            json.dumps({"project": 1, "tasks": [{"id": 1}, {"id": 1}], "label_config": DIGITS}).encode(),
        ),
    ],
)
def test_bodies_that_gave_a_500_before(backend, path, body):
    """Found by the fuzzer: each of these once gave a 500 (see the report in the commit)."""
    with requests.Session() as session:
        check_answer(session, backend.url + path, body)


def _publish_random_model(settings: Settings, project_id: int) -> None:
    """A published (untrained-weights) small model plus its stored predictions for task 1."""
    from backend.converters import TaskPrediction
    from backend.model_store import ModelStore, new_version
    from model.checkpoint import save_checkpoint
    from model.config import ModelConfig, TrainConfig
    from model.networks import build_network
    from model.trainer import TrainResult

    store = ModelStore(settings.model_dir)
    config = ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8)
    labels = ["0", "1", "two"]
    result = TrainResult(build_network(config, len(labels)), labels, config, TrainConfig(), {})
    version = new_version()
    save_checkpoint(store.checkpoint_path(project_id, version), result)
    store.save_predictions(
        project_id, version, [(1, TaskPrediction("0", 0.9, 0.3, None))], strategy="learning_loss"
    )
    store.save_neighbours(project_id, version, [1], np.zeros((1, result.model.embedding_dim)))
    store.publish(project_id, version)


def test_fuzzed_predict_with_a_published_model_never_gets_a_5xx(
    redis_server, redis_conn, tmp_path, serve_wsgi
):
    import base64
    import io

    from PIL import Image

    settings = make_settings(redis_server, tmp_path)
    for project_id in (1, 3):
        _publish_random_model(settings, project_id)
    server = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    png = io.BytesIO()
    Image.new("RGB", (12, 9), (200, 10, 10)).save(png, format="PNG")
    good = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    task = st.fixed_dictionaries(
        {},
        optional={
            "id": st.integers(0, 4) | json_any,
            "data": st.fixed_dictionaries({"image": st.just(good) | urls | json_any}) | json_any,
        },
    )
    body = st.fixed_dictionaries(
        {
            "tasks": st.lists(task, max_size=5) | json_any,
            "project": st.sampled_from([1, "3.1700000000", {"id": 1}]) | project_ids,
        },
        optional={"label_config": st.just(DIGITS) | configs, "params": COMMON["params"]},
    ).map(lambda d: json.dumps(d).encode())
    before = SENT["count"]
    with requests.Session() as session:

        @hsettings(FUZZ, max_examples=int(os.environ.get("FUZZ_MODEL_EXAMPLES", "320")))
        @given(payload=body)
        def run(payload):
            check_answer(session, server.url + "/predict", payload)

        run()
        # a well-formed call still answers one prediction per task, in order, from the model
        r = session.post(
            server.url + "/predict",
            json={
                "project": "1.17",
                "label_config": DIGITS,
                "tasks": [
                    {"id": 1, "data": {"image": good}},
                    {"id": 9, "data": {"image": good}},
                    {"id": 10, "data": {"image": "http://169.254.169.254/"}},
                ],
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert (
            session.post(
                server.url + "/predict",
                json={
                    "project": 1,
                    "label_config": DIGITS,
                    "params": "x",
                    "tasks": [{"id": 1, "data": {"image": good}}],
                },
                timeout=30,
            ).status_code
            == 200
        )
        assert [p["model_version"] != "untrained" for p in results] == [True, True, True]
        assert results[0]["score"] == 0.3 and results[2]["model_version"] == "unscored"
        assert session.get(server.url + "/health", timeout=5).status_code == 200
    print(f"\nfuzzed /predict with a model: {SENT['count'] - before} payloads (total so far {SENT['count']})")
