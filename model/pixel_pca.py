"""The label-free pixel embedding a cold start ranks on when no learned features exist yet:
downsample to ``size`` x ``size``, standardise each image (zero mean, unit variance over its own
pixels, so brightness and contrast do not dominate), then PCA to ``dims`` components.

Pure numpy + PIL + scikit-learn (no torch). Bounded cost for large pools: the PCA is fitted on at
most ``PCA_FIT_ROWS`` images (seeded subsample) and applied in chunks of ``TRANSFORM_ROWS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PCA_FIT_ROWS = 20_000  # images the PCA is fitted on (seeded subsample above it)
TRANSFORM_ROWS = 8 * 1_024  # rows the fitted PCA projects at a time


def thumbnails(images, size: int = 16) -> np.ndarray:
    """uint8 (N, size, size, C) from a uint8 array (N, H, W[, C]), C in {1, 3}, or a list of PIL
    images (any mode; converted to RGB, C = 3). Bilinear resize; an array already at ``size`` is
    returned as is. Lets a caller keep a large pool in memory as small thumbnails."""
    from PIL import Image

    if isinstance(images, np.ndarray):
        if images.ndim == 3:  # (N, H, W) grayscale
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with C in 1, 3; got {images.shape}")
        n, h, w, c = images.shape
        if (h, w) == (size, size):
            return images.astype(np.uint8, copy=False)
        out = np.empty((n, size, size, c), dtype=np.uint8)
        for i in range(n):
            pil = Image.fromarray(
                np.ascontiguousarray(images[i, ..., 0] if c == 1 else images[i]), "L" if c == 1 else "RGB"
            )
            out[i] = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR)).reshape(size, size, c)
        return out
    images = list(images)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        if img.mode != "RGB":
            img = img.convert("RGB")
        out[i] = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))
    return out


def pixel_embedding(
    images: np.ndarray | Sequence, size: int = 16, dims: int = 64, seed: int = 0
) -> np.ndarray:
    """A label-free embedding (N, d) float32, d = min(dims, N, pixels) (0 columns for N < 2).

    ``images``: uint8 array (N, H, W) or (N, H, W, C) with C in {1, 3}, or a list of PIL images
    (any mode; converted to RGB). Each image is resized to ``size`` x ``size`` (bilinear),
    standardised over its own pixels, and the pool is projected on its first ``dims`` principal
    components (PCA fitted on at most PCA_FIT_ROWS images). Deterministic for a seed.
    Embed the pool and the labeled images in ONE call so they share the projection.
    """
    if size < 1 or dims < 1:
        raise ValueError(f"size and dims must be >= 1, got {size}, {dims}")
    x = thumbnails(images, size)
    x = x.reshape(len(x), size * size * x.shape[-1]).astype(np.float32)
    n = len(x)
    if n < 2:
        return np.zeros((n, 0), dtype=np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= x.std(axis=1, keepdims=True) + 1e-3  # a blank image stays all zeros
    from sklearn.decomposition import PCA

    components = min(dims, n, x.shape[1])
    rng = np.random.default_rng(seed)
    fit_rows = x if n <= PCA_FIT_ROWS else x[np.sort(rng.choice(n, PCA_FIT_ROWS, replace=False))]
    pca = PCA(n_components=min(components, len(fit_rows)), random_state=seed)
    pca.fit(fit_rows)
    out = np.empty((n, pca.n_components_), dtype=np.float32)
    for start in range(0, n, TRANSFORM_ROWS):
        out[start : start + TRANSFORM_ROWS] = pca.transform(x[start : start + TRANSFORM_ROWS])
    return out
