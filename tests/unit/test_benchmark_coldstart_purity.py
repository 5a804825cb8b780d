"""The cold-start purity benchmark's measurements: the exact random expectation, the k-NN
agreement, the long-tailed pools and the gradient embedding (no training here)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks import coldstart_purity as bench


def test_expected_random_coverage_equals_the_enumerated_mean():
    sizes = [3, 1, 2]
    items = [c for c, n in enumerate(sizes) for _ in range(n)]
    for k in range(0, 7):
        subsets = list(itertools.combinations(items, k))
        enumerated = np.mean([len(set(s)) for s in subsets]) if k else 0.0
        assert bench.expected_random_coverage(sizes, k) == pytest.approx(enumerated)
    assert bench.expected_random_coverage(sizes, 99) == pytest.approx(3.0)  # k capped at N


def test_knn_agreement_is_one_on_separated_classes_and_near_chance_on_shuffled_ones():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    separated = rng.normal(size=(200, 8)) * 0.1 + np.eye(8)[y] * 10
    assert bench.knn_agreement(separated, y) == pytest.approx(1.0)
    shuffled = bench.knn_agreement(rng.normal(size=(200, 8)), y)
    assert 0.1 < shuffled < 0.4  # chance is 0.25 (49 of 199 others share a class)


def test_knn_agreement_excludes_the_item_itself_even_among_duplicates():
    x = np.zeros((4, 2), dtype=np.float32)  # four identical points, two classes
    y = np.array([0, 0, 1, 1])
    assert bench.knn_agreement(x, y, k=3) == pytest.approx(1 / 3)


def test_long_tailed_rows_fall_geometrically_to_the_ratio():
    y = np.repeat(np.arange(5), 100)
    rows = bench.long_tailed_rows(y, 10, np.random.default_rng(3))
    sizes = sorted(np.bincount(y[rows]).tolist(), reverse=True)
    assert sizes == [100, 56, 32, 18, 10]
    assert len(set(rows.tolist())) == len(rows) and np.all(np.diff(rows) > 0)
    rare = {
        int(np.bincount(y[bench.long_tailed_rows(y, 10, np.random.default_rng(s))], minlength=5).argmin())
        for s in range(10)
    }
    assert len(rare) > 1  # which class is rare follows the seed


def test_the_gradient_embedding_separates_stripe_directions_whatever_their_phase():
    pytest.importorskip("skimage")
    rng = np.random.default_rng(0)
    grid = np.arange(32)
    images, targets = [], []
    for i in range(60):
        phase = rng.uniform(0, 8)
        horizontal = i % 2 == 0
        coord = np.broadcast_to(grid[:, None] if horizontal else grid[None, :], (32, 32))
        images.append(np.where(((coord + phase) // 4) % 2 == 0, 220, 30).astype(np.uint8))
        targets.append(int(horizontal))
    embedding = bench.gradient_embedding(np.stack(images))
    assert embedding.shape == (60, min(bench.DIMS, 60))
    assert bench.knn_agreement(embedding, np.array(targets)) > 0.95
