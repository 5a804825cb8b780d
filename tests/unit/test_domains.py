"""The non-digit domains (benchmarks/domains.py): deterministic, balanced, well-formed, the synthetic
ones not separable by colour, and loadable by the active-learning benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import domains
from benchmarks.al_benchmark import DATASETS, BenchConfig, load_dataset
from benchmarks.domains import DOMAINS, load_domain

torch.set_num_threads(1)

N = 288  # divisible by 4, 6 and 8: every domain exactly balanced
EXPECTED_CLASSES = {
    "shapes": ["circle", "square", "triangle", "star"],
    "letters": ["C", "E", "F", "G", "O", "P", "Q", "R"],
    "textures": ["stripes", "checkerboard", "dots", "waves", "blobs", "grid"],
    "photos": ["astronaut", "cat", "coffee", "rocket", "tissue", "grass", "gravel", "brick"],
    "colours": ["red", "yellow", "green", "blue"],
}
# drawn here with colour apart from the class; photos keep their photographs' colours, and in
# colours the colour is the class
SYNTHETIC = ("shapes", "letters", "textures")


@pytest.fixture(scope="module")
def generated():
    return {name: load_domain(name, N, seed=0) for name in DOMAINS}


def nearest_mean_colour_accuracy(images: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Fit class means of the images' mean RGB on the first half, classify the second half."""
    return nearest_class_mean_accuracy(images.reshape(len(images), -1, 3).mean(1), targets, num_classes)


def nearest_class_mean_accuracy(feats: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Fit class means of ``feats`` on the first half, classify the second half."""
    half = len(feats) // 2
    means = np.stack([feats[:half][targets[:half] == c].mean(0) for c in range(num_classes)])
    dist = ((feats[half:, None, :] - means[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == targets[half:]).mean())


def test_registry_and_benchmark_dataset_names():
    assert set(DOMAINS) == set(EXPECTED_CLASSES)
    for name in DOMAINS:
        assert name in DATASETS


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_shapes_dtypes_balance_and_classes(generated, name):
    images, targets, names = generated[name]
    assert names == EXPECTED_CLASSES[name]
    assert images.shape == (N, 64, 64, 3) and images.dtype == np.uint8
    assert targets.shape == (N,) and targets.dtype == np.int64
    counts = np.bincount(targets, minlength=len(names))
    assert len(counts) == len(names) and (counts == N // len(names)).all()
    assert (
        not (np.diff(targets) == 0).all() and (targets[: len(names)] != np.arange(len(names))).any()
    )  # shuffled
    # every image has content (not a flat colour) and images differ from each other
    assert (images.reshape(N, -1).std(1) > 3).all()
    assert len({im.tobytes() for im in images}) == N


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_same_seed_is_byte_identical_and_seeds_differ(name):
    first, first_targets, _ = load_domain(name, 24, seed=0)
    again, again_targets, _ = load_domain(name, 24, seed=0)
    assert first.tobytes() == again.tobytes() and np.array_equal(first_targets, again_targets)
    other, other_targets, _ = load_domain(name, 24, seed=1)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first_targets, other_targets)


def test_counts_when_n_is_not_divisible():
    images, targets, names = load_domain("shapes", 10, seed=3, size=32)
    assert images.shape == (10, 32, 32, 3)
    assert sorted(np.bincount(targets, minlength=4).tolist()) == [2, 2, 3, 3]


@pytest.mark.parametrize("name, bound", [("shapes", 0.45), ("letters", 0.3), ("textures", 0.35)])
def test_mean_colour_does_not_separate_classes(generated, name, bound):
    images, targets, names = generated[name]
    # Chance is 1/C (0.25, 0.125, 0.17); a colour-coded set scores near 1 (checked below).
    assert nearest_mean_colour_accuracy(images, targets, len(names)) < bound


def test_the_colour_check_catches_a_colour_coded_set(generated):
    images, targets, names = generated["shapes"]
    tint = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.float32)
    coded = (0.5 * images + 0.5 * tint[targets][:, None, None, :]).astype(np.uint8)
    assert nearest_mean_colour_accuracy(coded, targets, len(names)) > 0.9


def test_colours_vary_within_every_class(generated):
    for name in SYNTHETIC:
        images, targets, names = generated[name]
        feats = images.reshape(len(images), -1, 3).mean(1)
        for c in range(len(names)):
            assert feats[targets == c].std(0).mean() > 25, (name, names[c])


def salient_colour_features(images: np.ndarray) -> np.ndarray:
    """Per image, the mean RGB of its 5 % most saturated pixels (the object in colours)."""
    flat = images.reshape(len(images), -1, 3).astype(np.float32)
    saturation = flat.max(2) - flat.min(2)
    top = np.argsort(-saturation, axis=1)[:, : flat.shape[1] // 20]
    return np.take_along_axis(flat, top[..., None], axis=1).mean(1)


def test_colours_are_told_apart_by_the_objects_colour_and_not_by_the_image_mean(generated):
    images, targets, names = generated["colours"]
    assert nearest_class_mean_accuracy(salient_colour_features(images), targets, len(names)) > 0.85
    # the greyish backgrounds of any hue cover most of the image: its mean colour tells little
    assert nearest_mean_colour_accuracy(images, targets, len(names)) < 0.6
    # the same features on shapes, whose colours are random: near chance
    shapes, shape_targets, shape_names = generated["shapes"]
    assert (
        nearest_class_mean_accuracy(salient_colour_features(shapes), shape_targets, len(shape_names)) < 0.45
    )


def test_load_domain_rejects_unknown_names_and_missing_fonts(tmp_path):
    with pytest.raises(ValueError, match="unknown domain"):
        load_domain("nope", 4)
    with pytest.raises(FileNotFoundError, match="no .ttf"):
        domains.generate_letters(4, seed=0, font_dir=str(tmp_path))
    assert all(path.endswith(".ttf") for path in domains.font_files())


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_load_dataset_splits_a_domain(name):
    cfg = BenchConfig(dataset=name, domain_size=48, test_size=12, device="cpu")
    data = load_dataset(cfg)
    assert data.labels == EXPECTED_CLASSES[name]
    assert len(data.pool_images) == 36 and len(data.test_images) == 12
    assert len(data.pool_targets) == 36 and len(data.test_targets) == 12
    assert data.pool_images[0].size == (64, 64) and data.pool_images[0].mode == "RGB"
    all_targets = np.concatenate([data.pool_targets, data.test_targets])
    assert sorted(np.bincount(all_targets).tolist()) == [48 // len(data.labels)] * len(data.labels)
    assert BenchConfig(dataset=name).fingerprint() != cfg.fingerprint()  # the size is part of it


def test_default_domain_size_leaves_earlier_fingerprints_unchanged():
    # The committed digits-ablation results were fingerprinted before domain_size existed.
    from benchmarks.al_benchmark import PRESETS

    assert BenchConfig(**PRESETS["digits-ablation"]).fingerprint() == "6521701554686a0c"
    assert BenchConfig(**PRESETS["mnist"]).fingerprint() == "476d01d697a513bb"


def test_photo_patches_come_from_their_own_photograph(generated):
    # Mean colour and edge energy alone tell a patch's photograph well above chance (1/8), and a
    # shuffled labelling does not: the class is where the patch was cut, not noise. (A learned
    # model is needed for the rest: 0.3 here against 0.47-0.86 trained on 20-100 labels,
    # benchmarks/results/domains.)
    images, targets, names = generated["photos"]
    x = images.astype(np.float32)
    feats = np.concatenate(
        [x.reshape(len(x), -1, 3).mean(1), np.abs(np.diff(x.mean(3), axis=2)).mean((1, 2))[:, None]], axis=1
    )
    true = nearest_class_mean_accuracy(feats, targets, len(names))
    shuffled = nearest_class_mean_accuracy(feats, np.random.default_rng(0).permutation(targets), len(names))
    assert true > 0.25 and shuffled < 0.2


def test_photos_need_scikit_image_with_a_clear_error(monkeypatch):
    import sys

    domains._photo.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # as if scikit-image were not installed
    monkeypatch.setitem(sys.modules, "skimage", None)
    try:
        with pytest.raises(ImportError, match="requirements-dev.txt"):
            load_domain("photos", 8, seed=0)
    finally:
        domains._photo.cache_clear()
