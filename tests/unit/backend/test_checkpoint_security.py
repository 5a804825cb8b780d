"""Tampered or malicious checkpoints are refused; the backend then answers without a model.

Flipping any byte of a saved checkpoint must either be refused with CheckpointError or leave
the loaded model identical (bytes the container never reads); it must never load different
weights or raise anything else. A pickle that would run code is refused without running it.
ModelStore.load_published returns None for a bad file and /predict keeps answering.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from backend.converters import TaskPrediction
from backend.model_store import ModelStore, new_version
from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.config import ModelConfig, TrainConfig
from model.networks import build_network
from model.trainer import TrainResult
from tests.unit.backend.test_labeling_config import DIGITS

LABELS = ["0", "1", "two"]


def small_result() -> TrainResult:
    torch.manual_seed(0)
    config = ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8)
    return TrainResult(build_network(config, len(LABELS)), LABELS, config, TrainConfig(), {"accuracy": 0.5})


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, small_result(), extra={"project_id": 1})
    return path.read_bytes(), load_checkpoint(path)


def same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_flipped_byte_is_refused_or_harmless(checkpoint_bytes, tmp_path):
    original, reference = checkpoint_bytes
    step = max(1, len(original) // 120)
    refused = harmless = 0
    path = tmp_path / "tampered.pt"
    for position in range(0, len(original), step):
        data = bytearray(original)
        data[position] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError:
            refused += 1
            continue
        # a byte the reader ignores (zip padding, an unchecked CRC field): same model or bust
        assert same_weights(loaded, reference) and loaded.labels == reference.labels, position
        assert loaded.model_config == reference.model_config and loaded.extra == reference.extra
        harmless += 1
    print(
        f"\nflipped {refused + harmless} bytes of {len(original)}: {refused} refused, "
        f"{harmless} ignored by the reader with the model unchanged"
    )
    assert refused > 0


def test_a_flipped_weight_byte_fails_the_integrity_check(checkpoint_bytes, tmp_path):
    original, reference = checkpoint_bytes
    # find the raw bytes of the first weight tensor inside the zip and flip one of them
    weight = next(iter(reference.model.state_dict().values())).reshape(-1)
    raw = weight.contiguous().view(torch.uint8).numpy().tobytes()[:16]
    position = original.find(raw)
    assert position > 0
    data = bytearray(original)
    data[position + 3] ^= 0x01
    path = tmp_path / "tampered.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "learning-loss-checkpoint", "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def publish(store: ModelStore, project_id: int) -> str:
    version = new_version()
    result = small_result()
    save_checkpoint(store.checkpoint_path(project_id, version), result)
    store.save_predictions(
        project_id, version, [(1, TaskPrediction("1", 0.8, 0.25, None))], strategy="learning_loss"
    )
    store.save_neighbours(project_id, version, [1], np.zeros((1, result.model.embedding_dim)))
    store.publish(project_id, version)
    return version


def test_a_tampered_published_checkpoint_gives_no_model_and_predict_still_answers(tmp_path):
    import base64
    import io

    from PIL import Image

    from backend.app import create_app
    from backend.settings import Settings

    settings = Settings.from_env(
        {"MODEL_DIR": str(tmp_path / "models"), "DEVICE": "cpu", "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    store = ModelStore(settings.model_dir)
    version = publish(store, 5)
    assert store.load_published(5) is not None
    path = store.checkpoint_path(5, version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    fresh = ModelStore(settings.model_dir)  # a new process: nothing cached
    assert fresh.published(5).version == version
    assert fresh.load_published(5) is None

    png = io.BytesIO()
    Image.new("RGB", (8, 8), (5, 5, 5)).save(png, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    app = create_app(settings, store=fresh)
    response = app.test_client().post(
        "/predict",
        data=json.dumps(
            {
                "project": "5.1700000000",
                "label_config": DIGITS,
                "tasks": [{"id": 1, "data": {"image": uri}}, {"id": 2, "data": {"image": uri}}],
            }
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    results = response.get_json()["results"]
    assert len(results) == 2
    assert results[0]["model_version"] == version  # stored prediction of the round
    assert results[1]["result"] == [] and results[1]["model_version"] != version  # no model
