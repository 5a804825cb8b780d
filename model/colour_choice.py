"""Whether colour tells a project's classes apart, decided from its own labels.

The self-supervised views and the training augmentation make the network look past colour (hue
rotation, grey and inverted views), which is right where colours vary within a class and wrong where
colour is the class. Which of the two a project is shows in its labels: add a description of each
labeled image's colours (``colour_histograms``) to the features of the colour-invariant backbone
and see, by cross-validation on the labeled set, whether the classes become easier to tell apart
(``choose_colour``). A few milliseconds for a few hundred labels; nothing is trained but a ridge
classifier. Measured on the domain suite: docs/results.md ("Colour, decided from the labels").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from model.recipe_search import stratified_folds

HUE_BINS = 12  # 30-degree sectors of the colour wheel
CHROMA_BINS = 3  # how colourful a pixel is: faint, clear, vivid
MIN_CHROMA = 0.08  # pixels less colourful than this (max - min of r, g, b in [0, 1]) count as grey
RIDGE = 10.0  # ridge penalty of the cross-validation classifier, on standardised features
MAX_FOLDS = 5
# Colour is kept when it raises the cross-validated accuracy by at least this much (a share of the
# labeled images), on average over the folds and on at least half of them: a small gain is within
# the noise of a few dozen labels, and keeping colour costs where colours vary within a class.
MIN_GAIN = 0.10


@dataclass(frozen=True)
class ColourChoice:
    keep_colour: bool
    reason: str
    invariant_accuracy: float | None = None  # cross-validated, backbone features alone
    with_colour_accuracy: float | None = None  # cross-validated, with the colour histograms
    folds: int = 0
    labels: int = 0
    invariant_fold_accuracy: tuple[float, ...] = ()  # per fold, backbone features alone
    with_colour_fold_accuracy: tuple[float, ...] = ()  # per fold, with the colour histograms

    def to_dict(self) -> dict:
        return asdict(self)


def colour_histograms(images: Sequence[Image.Image], side: int = 32) -> np.ndarray:
    """(n, HUE_BINS * CHROMA_BINS) float32: how an image's coloured pixels divide among (hue
    sector, chroma level), summing to 1 (all zero for a grey image); computed at ``side`` x
    ``side``. Shares of the coloured pixels, not of the image: how much of the image is coloured
    says something of an object's size and shape, which is not what is asked here."""
    out = np.zeros((len(images), HUE_BINS * CHROMA_BINS), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = (
            np.asarray(
                image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32
            ).reshape(-1, 3)
            / 255.0
        )
        top, bottom = rgb.max(1), rgb.min(1)
        chroma = top - bottom
        coloured = chroma >= MIN_CHROMA
        if not coloured.any():
            continue
        r, g, b = rgb[coloured].T
        c, mx = chroma[coloured], top[coloured]
        hue = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4)) / 6
        hue_bin = np.minimum((hue * HUE_BINS).astype(int), HUE_BINS - 1)
        chroma_bin = np.minimum(
            ((c - MIN_CHROMA) / (1 - MIN_CHROMA) * CHROMA_BINS).astype(int), CHROMA_BINS - 1
        )
        np.add.at(out[i], hue_bin * CHROMA_BINS + chroma_bin, 1.0 / len(c))
    return out


def _ridge_fold_accuracy(x: np.ndarray, y: np.ndarray, test: np.ndarray) -> float:
    train = np.setdiff1d(np.arange(len(y)), test)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    xs = (x - mean) / std
    xt = np.hstack([xs[train], np.ones((len(train), 1), dtype=xs.dtype)])
    classes = np.unique(y[train])
    onehot = (y[train][:, None] == classes[None]).astype(np.float64)
    weights = np.linalg.solve(xt.T @ xt + RIDGE * np.eye(xt.shape[1]), xt.T @ onehot)
    predicted = classes[(np.hstack([xs[test], np.ones((len(test), 1))]) @ weights).argmax(1)]
    return float((predicted == y[test]).mean())


def cross_validated(features: np.ndarray, targets: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Accuracy of a ridge classifier on each fold, trained on the others."""
    x = np.asarray(features, dtype=np.float64)
    return np.array([_ridge_fold_accuracy(x, targets, fold) for fold in folds])


def choose_colour(
    invariant_features: np.ndarray, histograms: np.ndarray, targets: Sequence[int], seed: int = 0
) -> ColourChoice:
    """Keep colour when the colour histograms, added to the colour-invariant backbone's features,
    raise the cross-validated accuracy on the labeled set by ``MIN_GAIN`` or more on average and
    on at least half of the folds, to ``MIN_GAIN`` or more above chance (a gain over a
    cross-validation that is itself below chance, as on a few labels, is noise); otherwise (and with fewer than two labels of some class) keep
    the default, colour-invariant."""
    y = np.asarray(targets)
    counts = np.bincount(np.unique(y, return_inverse=True)[1])
    k = int(min(MAX_FOLDS, counts.min())) if len(counts) >= 2 else 0
    if k < 2:
        return ColourChoice(
            False, "fewer than two labels of some class: colour-invariant (the default)", labels=len(y)
        )
    folds = stratified_folds(y.tolist(), k, seed)
    invariant = cross_validated(invariant_features, y, folds)
    with_colour = cross_validated(np.hstack([invariant_features, histograms]), y, folds)
    gain = with_colour - invariant
    chance = 1.0 / len(counts)
    keep = bool(
        gain.mean() >= MIN_GAIN and (gain > 0).sum() >= k / 2 and with_colour.mean() >= chance + MIN_GAIN
    )
    verdict = "kept" if keep else "colour-invariant"
    reason = (
        f"{verdict}: colour histograms {'raise' if gain.mean() >= 0 else 'lower'} the "
        f"{k}-fold accuracy on {len(y)} labels from {invariant.mean():.1%} to "
        f"{with_colour.mean():.1%} (keep at +{MIN_GAIN:.0%} or more)"
    )
    return ColourChoice(
        keep,
        reason,
        float(invariant.mean()),
        float(with_colour.mean()),
        k,
        len(y),
        tuple(round(float(a), 4) for a in invariant),
        tuple(round(float(a), 4) for a in with_colour),
    )
