"""/predict and the push put every task on ONE score scale: a task created after the round is
placed by its nearest ranked task in embedding space and gets that task's pushed score, whatever
the strategy, so a re-uploaded image (exact duplicate) or a re-encoded one (near duplicate) gets
its twin's score. A real round (training, scoring, ranking) and the real /predict code path;
Label Studio is the in-process fake of test_cold_start_round (its API plays no part in the
mapping; the real Label Studio is covered in tests/e2e)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backend.ml_model import ActiveLearningModel
from backend.settings import Settings
from tests.unit.backend.test_cold_start_round import PROJECT, FakeClient, png, run
from tests.unit.backend.test_labeling_config import DIGITS

LABELS = {1: "0", 2: "1", 3: "two", 5: "0", 6: "1", 7: "two", 9: "0", 10: "1", 11: "two"}
NEAR = 1000  # new task ids: NEAR + twin id is a near duplicate, EXACT + twin id an exact one
EXACT = 2000


def near_duplicate(data: bytes, seed: int) -> bytes:
    """The same picture with +-2 of pixel noise, re-encoded (as a re-saved upload would be)."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    noise = np.random.default_rng(seed).integers(-2, 3, pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


class DuplicatingClient(FakeClient):
    def fetch_image_bytes(self, url, *, task_id, max_bytes, timeout_s):
        if task_id >= EXACT:
            return png(task_id - EXACT)
        if task_id >= NEAR:
            return near_duplicate(png(task_id - NEAR), task_id)
        return png(task_id)


@pytest.mark.parametrize("strategy", ["margin_diverse", "learning_loss", "margin"])
def test_new_duplicates_of_ranked_tasks_get_their_twins_scores(tmp_path, strategy):
    assert Settings().strategy == "margin_diverse"  # the default is among those tested
    settings = Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=30,
        strategy=strategy,
        self_supervised_steps=0,
    )
    client = DuplicatingClient(40, LABELS)
    summary, store, _ = run(settings, client)
    assert summary["state"] == "done"
    pushed = {p["task"]: p["score"] for p in client.imported}
    by_score = sorted(pushed, key=pushed.get)
    # twins: the round's first picks, the middle, a labeled task and the very last
    twins = by_score[:4] + [by_score[len(by_score) // 2], 2, by_score[-1]]
    new_tasks = [
        {"id": base + twin, "data": {"image": f"/data/upload/{PROJECT}/{base + twin}.png"}}
        for base in (EXACT, NEAR)
        for twin in twins
    ]
    model = ActiveLearningModel(
        label_config=DIGITS, project_id=PROJECT, settings=settings, store=store, client=client
    )
    answers = model.predict(new_tasks)
    assert all(a["model_version"] == summary["model_version"] for a in answers)
    got = {task["id"]: answer["score"] for task, answer in zip(new_tasks, answers, strict=False)}
    expected = {base + twin: pushed[twin] for base in (EXACT, NEAR) for twin in twins}
    assert got == expected


def test_a_version_without_kept_embeddings_answers_unscored_not_a_wrong_score(tmp_path):
    settings = Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=10,
        self_supervised_steps=0,
    )
    client = DuplicatingClient(16, LABELS)
    summary, store, _ = run(settings, client)
    store.neighbours_path(PROJECT, summary["model_version"]).unlink()  # e.g. an older release's round
    fresh = type(store)(settings.model_dir)
    model = ActiveLearningModel(
        label_config=DIGITS, project_id=PROJECT, settings=settings, store=fresh, client=client
    )
    [answer] = model.predict([{"id": EXACT + 3, "data": {"image": "/data/upload/5/x.png"}}])
    assert answer["model_version"] == "unscored" and answer["result"] == []


def test_predict_scores_with_the_version_it_read_even_when_another_is_published_meanwhile(
    tmp_path, monkeypatch
):
    from backend import model_store

    settings = Settings(
        model_dir=tmp_path / "models",
        image_size=16,
        query_batch_size=4,
        seed=0,
        device="cpu",
        train_steps=10,
        self_supervised_steps=0,
    )
    client = DuplicatingClient(16, LABELS)
    first, store, _ = run(settings, client)
    second, _, _ = run(settings, client)
    v1, v2 = first["model_version"], second["model_version"]
    store.publish(PROJECT, v1, info=store.published(PROJECT).info)  # v1 live again
    loaded_paths = []
    real_load = model_store.load_checkpoint
    monkeypatch.setattr(
        model_store, "load_checkpoint", lambda path, **kw: loaded_paths.append(path) or real_load(path, **kw)
    )
    serving = type(store)(settings.model_dir)
    read_predictions = serving.read_predictions

    def then_a_round_publishes(project_id, version):
        stored = read_predictions(project_id, version)
        type(store)(settings.model_dir).publish(PROJECT, v2)  # another process, in between
        return stored

    monkeypatch.setattr(serving, "read_predictions", then_a_round_publishes)
    model = ActiveLearningModel(
        label_config=DIGITS, project_id=PROJECT, settings=settings, store=serving, client=client
    )
    [answer] = model.predict([{"id": EXACT + 1, "data": {"image": "/data/upload/5/x.png"}}])
    assert serving.published(PROJECT).version == v2  # the publish did happen
    assert answer["model_version"] == v1 and answer["score"] is not None
    assert [path.name for path in loaded_paths] == [f"{v1}.pt"]  # v1's model, not v2's
