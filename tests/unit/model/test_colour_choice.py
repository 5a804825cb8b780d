"""The colour choice keeps colour exactly where colour tells the labeled classes apart.

Built cases: images whose class is their colour (and whose shape is random), and images whose class
is their shape (and whose colour is random); the "invariant features" are a description of the
shape alone, as a colour-invariant backbone would give.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model.colour_choice import MIN_GAIN, choose_colour, colour_histograms
from model.recipe_search import stratified_folds

HUES = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 30)]


def draw(shape: int, colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    grey = int(rng.integers(60, 200))
    image = Image.new("RGB", (32, 32), (grey, grey, grey))
    box = tuple(int(v) for v in rng.integers(2, 8, size=2)) + tuple(
        int(v) for v in rng.integers(24, 30, size=2)
    )
    (ImageDraw.Draw(image).ellipse if shape == 0 else ImageDraw.Draw(image).rectangle)(box, fill=colour)
    return image


def shape_features(shapes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a colour-invariant backbone sees: the shape (noisily), never the colour."""
    return np.stack([shapes + rng.normal(0, 0.3, len(shapes)), rng.normal(0, 1, len(shapes))], 1)


def case(colour_is_class: bool, n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = np.arange(n) % 2
    shapes = targets if not colour_is_class else rng.integers(0, 2, n)
    colours = targets if colour_is_class else rng.integers(0, 2, n)
    images = [draw(int(s), HUES[int(c)], rng) for s, c in zip(shapes, colours, strict=False)]
    return shape_features(shapes, rng), colour_histograms(images), targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colour_is_kept_where_it_is_the_class(seed):
    features, histograms, targets = case(colour_is_class=True, seed=seed)
    choice = choose_colour(features, histograms, targets, seed=seed)
    assert choice.keep_colour, choice.reason
    assert choice.with_colour_accuracy - choice.invariant_accuracy >= MIN_GAIN
    assert "kept" in choice.reason and f"{len(targets)} labels" in choice.reason
    # the per-fold accuracies behind each mean: the spread the dashboard shows
    assert len(choice.with_colour_fold_accuracy) == len(choice.invariant_fold_accuracy) == choice.folds
    assert np.mean(choice.with_colour_fold_accuracy) == pytest.approx(choice.with_colour_accuracy, abs=1e-3)
    assert np.mean(choice.invariant_fold_accuracy) == pytest.approx(choice.invariant_accuracy, abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colour_is_not_kept_where_it_varies_within_classes(seed):
    features, histograms, targets = case(colour_is_class=False, seed=seed)
    choice = choose_colour(features, histograms, targets, seed=seed)
    assert not choice.keep_colour, choice.reason
    assert choice.invariant_accuracy > 0.8


def test_too_few_labels_keep_the_default():
    features, histograms, targets = case(colour_is_class=True, n=3)
    choice = choose_colour(features, histograms, targets)
    assert not choice.keep_colour and "fewer than two" in choice.reason and choice.folds == 0


def test_grey_images_have_no_colour():
    grey = Image.new("RGB", (16, 16), (128, 128, 128))
    red = Image.new("RGB", (16, 16), (200, 20, 20))
    blue = Image.new("RGB", (16, 16), (20, 20, 200))
    h = colour_histograms([grey, red, blue])
    assert h[0].sum() == 0
    assert h[1].sum() == pytest.approx(1.0) and h[2].sum() == pytest.approx(1.0)
    assert np.argmax(h[1]) != np.argmax(h[2])


def test_the_histogram_does_not_tell_how_much_of_the_image_is_coloured():
    small, large = Image.new("RGB", (32, 32), (128, 128, 128)), Image.new("RGB", (32, 32), (128, 128, 128))
    ImageDraw.Draw(small).rectangle((12, 12, 18, 18), fill=HUES[0])
    ImageDraw.Draw(large).rectangle((2, 2, 29, 29), fill=HUES[0])
    h = colour_histograms([small, large])
    assert np.argmax(h[0]) == np.argmax(h[1])
    assert np.abs(h[0] - h[1]).sum() < 0.5  # only the blended pixels at the edge differ


def test_folds_are_disjoint_stratified_and_cover_every_label():
    targets = np.array([0] * 7 + [1] * 5 + [2] * 4)
    folds = stratified_folds(targets, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(targets)))
    for fold in folds:
        assert set(targets[fold]) == {0, 1, 2}
