"""Checkpoints: round trip, atomic replace, safe loading, old files stay loadable."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import CheckpointError, TrainConfig, load_checkpoint, save_checkpoint, score, train
from model.checkpoint import FORMAT, content_digest, plain

DIGIT_LABELS = [str(digit) for digit in range(10)]

FIXTURE = Path(__file__).parent / "data" / "checkpoint_v1.pt"


@pytest.fixture(scope="module")
def trained(digits):
    from model import ModelConfig

    images, targets = digits
    config = ModelConfig(image_size=8, small_cnn_width=4, lpm_width=8)
    result = train(
        images[:30], targets[:30].tolist(), DIGIT_LABELS, config, TrainConfig(epochs=2, batch_size=8)
    )
    return result, images[30:50]


def test_round_trip_gives_identical_predictions(tmp_path, trained):
    result, pool = trained
    path = tmp_path / "models" / "v1.pt"
    save_checkpoint(path, result, extra={"project": 7, "cycle": np.int64(3)})
    loaded = load_checkpoint(path)
    assert loaded.labels == DIGIT_LABELS
    assert loaded.model_config == result.model_config and loaded.train_config == result.train_config
    assert loaded.metrics["epochs"] == 2 and loaded.extra == {"project": 7, "cycle": 3}
    assert not loaded.model.training
    before = score(result.model, pool, result.model_config)
    after = score(loaded.model, pool, loaded.model_config)
    np.testing.assert_array_equal(before.probs, after.probs)
    np.testing.assert_array_equal(before.predicted_loss, after.predicted_loss)
    assert [p.name for p in path.parent.iterdir()] == ["v1.pt"]  # no temp files left


def test_saving_over_an_existing_file_replaces_it_and_keeps_others_loadable(tmp_path, trained):
    result, _ = trained
    save_checkpoint(tmp_path / "a.pt", result, extra={"version": 1})
    save_checkpoint(tmp_path / "b.pt", result, extra={"version": 2})
    save_checkpoint(tmp_path / "b.pt", result, extra={"version": 3})
    assert load_checkpoint(tmp_path / "a.pt").extra == {"version": 1}
    assert load_checkpoint(tmp_path / "b.pt").extra == {"version": 3}


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, trained):
    result, _ = trained
    path = tmp_path / "model.pt"
    save_checkpoint(path, result, extra={"version": 1})
    with pytest.raises(TypeError):
        save_checkpoint(path, result, extra={"not plain": object()})
    assert load_checkpoint(path).extra == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip_bytes"])
def test_damaged_files_raise_checkpoint_error(tmp_path, trained, damage):
    result, _ = trained
    path = tmp_path / "model.pt"
    save_checkpoint(path, result)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        middle = len(data) // 2
        path.write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        )
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_and_foreign_files_raise_checkpoint_error(tmp_path, trained):
    result, _ = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"just": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=FORMAT):
        load_checkpoint(tmp_path / "foreign.pt")
    # Weights that do not match the stored configuration.
    save_checkpoint(tmp_path / "ok.pt", result)
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    payload["labels"] = payload["labels"][:3]
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="integrity"):
        load_checkpoint(tmp_path / "tampered.pt")
    payload["sha256"] = content_digest(payload)  # consistent digest, inconsistent weights
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "mismatch.pt")


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"format": FORMAT, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a safe checkpoint|corrupt"):
        load_checkpoint(tmp_path / "evil.pt")


def test_a_previously_saved_file_is_still_loadable():
    # data/checkpoint_v1.pt was written by format version 1 (see data/make_checkpoint_fixture.py)
    # together with the probabilities it predicted; later code must keep reading it.
    loaded = load_checkpoint(FIXTURE)
    images = fixture_images()
    probs = score(loaded.model, images, loaded.model_config).probs
    np.testing.assert_allclose(probs, np.asarray(loaded.extra["expected_probs"]), atol=1e-5)


def fixture_images() -> list[Image.Image]:
    """Deterministic images without randomness: gradients of increasing slope."""
    ramp = np.arange(8, dtype=np.float64)
    return [
        Image.fromarray(np.uint8(np.clip(np.add.outer(ramp * k, ramp[::-1] * (5 - k)) * 4, 0, 255)))
        for k in range(5)
    ]


def test_plain_converts_numpy_and_nan():
    assert plain({"a": np.float32(1.5), "b": (1, np.nan), "c": np.arange(2)}) == {
        "a": 1.5,
        "b": [1, None],
        "c": [0, 1],
    }


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_backbone_trains_and_round_trips(tmp_path, digits, backbone):
    from model import ModelConfig

    images, targets = digits
    config = ModelConfig(backbone=backbone, image_size=32)
    result = train(
        images[:6], targets[:6].tolist(), DIGIT_LABELS, config, TrainConfig(epochs=1, batch_size=4)
    )
    save_checkpoint(tmp_path / "tv.pt", result)
    loaded = load_checkpoint(tmp_path / "tv.pt")
    before = score(result.model, images[6:9], config)
    after = score(loaded.model, images[6:9], loaded.model_config)
    np.testing.assert_array_equal(before.probs, after.probs)
    np.testing.assert_array_equal(before.embedding, after.embedding)


def test_load_accepts_device_auto_as_the_backend_passes_it(tmp_path):
    """The backend's DEVICE setting defaults to "auto"; loading must resolve it (CPU here)."""
    import numpy as np
    from PIL import Image

    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.config import ModelConfig, TrainConfig
    from model.trainer import train

    images = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255, 10, 245)]
    result = train(
        images, [0, 1, 0, 1], ["a", "b"], ModelConfig(image_size=8), TrainConfig(epochs=1, batch_size=2)
    )
    save_checkpoint(tmp_path / "m.pt", result)
    loaded = load_checkpoint(tmp_path / "m.pt", device="auto")
    assert next(loaded.model.parameters()).device.type == "cpu"


class _DiskFills:
    """A file that takes ``room`` bytes, then refuses writes as a full disk does (ENOSPC)."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_a_full_disk_fails_the_save_with_enospc_and_leaves_no_temp_file(tmp_path, trained, monkeypatch):
    """torch's own writer turns the failed write into an opaque RuntimeError ("unexpected pos");
    the round's status must name the full disk."""
    import model.atomic

    result, _ = trained
    path = tmp_path / "model.pt"
    save_checkpoint(path, result, extra={"version": 1})
    real_fdopen = os.fdopen
    monkeypatch.setattr(
        model.atomic.os, "fdopen", lambda fd, *args, **kw: _DiskFills(real_fdopen(fd, *args, **kw), 1000)
    )
    with pytest.raises(OSError) as failure:
        save_checkpoint(path, result, extra={"version": 2})
    assert failure.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path).extra == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
