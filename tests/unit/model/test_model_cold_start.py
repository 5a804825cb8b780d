"""Cold start: the pixel embedding and the TypiClust ranking (model/cold_start.py, model/pixel_pca.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model import cold_start, rank
from model.cold_start import typiclust, typiclust_order
from model.pixel_pca import pixel_embedding, thumbnails


def blobs(sizes, dim=4, spread=0.3, seed=0):
    """Well separated Gaussian blobs; returns (points, blob id of each point)."""
    rng = np.random.default_rng(seed)
    dim = max(dim, len(sizes))
    centers = np.eye(dim)[: len(sizes)] * 20.0
    points = [centers[b] + spread * rng.normal(size=(size, dim)) for b, size in enumerate(sizes)]
    ids = np.concatenate([np.full(size, b) for b, size in enumerate(sizes)])
    return np.concatenate(points).astype(np.float32), ids


def is_permutation(order, n):
    return order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(n))


def test_whole_pool_permutation_and_deterministic_for_a_seed():
    x, _ = blobs([30, 20, 10])
    first = typiclust_order(x, n_clusters=3, seed=5)
    assert is_permutation(first, 60)
    np.testing.assert_array_equal(first, typiclust_order(x, n_clusters=3, seed=5))


def test_empty_pool_gives_an_empty_order():
    order = typiclust_order(np.zeros((0, 8), np.float32), n_clusters=10)
    assert order.shape == (0,) and order.dtype == np.int64
    assert typiclust_order(np.zeros((0, 8)), labeled_embedding=np.ones((3, 8))).shape == (0,)


def test_n_clusters_is_capped_at_the_pool_size():
    x, _ = blobs([2, 1])
    result = typiclust(x, n_clusters=50)
    assert is_permutation(result.order, 3) and len(result.covered) == 3


def test_covers_every_cluster_before_repeating_one():
    x, ids = blobs([40, 25, 15, 8, 5])
    result = typiclust(x, n_clusters=5, seed=0)
    first_round = result.cluster[result.order[:5]]
    assert sorted(first_round.tolist()) == [0, 1, 2, 3, 4]
    # the k-means clusters are the blobs here, so the first 5 picks hold one item of each blob
    assert sorted(ids[result.order[:5]].tolist()) == [0, 1, 2, 3, 4]
    # round-robin: every cluster's r-th item comes before any cluster's (r + 1)-th item
    seen = {c: 0 for c in range(5)}
    rounds = []
    for index in result.order:
        c = int(result.cluster[index])
        rounds.append(seen[c])
        seen[c] += 1
    assert rounds == sorted(rounds)


def test_largest_cluster_first_and_most_typical_item_first():
    x, ids = blobs([10, 40, 25])
    result = typiclust(x, n_clusters=3, seed=0)
    assert ids[result.order[:3]].tolist() == [1, 2, 0]
    for c in range(3):
        members = np.nonzero(result.cluster == c)[0]
        picked = [i for i in result.order if result.cluster[i] == c][0]
        assert result.typicality[picked] == result.typicality[members].max()


def test_uncovered_clusters_come_first():
    x, ids = blobs([40, 30, 20])
    # a labeled item sits in the largest blob: its cluster goes after the two uncovered ones
    labeled = x[ids == 0][:1] + 0.01
    result = typiclust(x, labeled_embedding=labeled, n_clusters=3, seed=0)
    assert ids[result.order[:3]].tolist() == [1, 2, 0]
    assert result.covered.sum() == 1 and result.covered[result.cluster[np.nonzero(ids == 0)[0][0]]]


def test_typical_items_are_central_not_outliers():
    rng = np.random.default_rng(0)
    core = rng.normal(size=(200, 2)) * 0.5
    outlier = np.array([[6.0, 6.0]])
    x = np.concatenate([outlier, core]).astype(np.float32)
    result = typiclust(x, n_clusters=1, seed=0)
    assert result.order[-1] == 0  # the outlier is the least typical
    assert np.linalg.norm(x[result.order[0]]) < 0.5  # the first pick sits in the dense core


def test_large_clusters_use_a_subsample_and_stay_a_permutation(monkeypatch):
    monkeypatch.setattr(cold_start, "TYPICALITY_SAMPLE", 50)
    monkeypatch.setattr(cold_start, "CHUNK_ROWS", 32)
    x, _ = blobs([300, 120], spread=1.0)
    result = typiclust(x, n_clusters=2, seed=1)
    assert is_permutation(result.order, 420)
    assert np.isfinite(result.typicality).all() and (result.typicality > 0).all()
    np.testing.assert_array_equal(result.order, typiclust(x, n_clusters=2, seed=1).order)


def test_minibatch_kmeans_path_for_large_pools(monkeypatch):
    monkeypatch.setattr(cold_start, "MINIBATCH_KMEANS_ABOVE", 100)
    x, ids = blobs([150, 100, 50])
    result = typiclust(x, n_clusters=3, seed=0)
    assert is_permutation(result.order, 300)
    assert sorted(ids[result.order[:3]].tolist()) == [0, 1, 2]


def test_duplicates_and_single_items():
    assert typiclust_order(np.zeros((5, 3)), n_clusters=3).tolist() == [0, 1, 2, 3, 4]
    assert typiclust_order(np.ones((1, 2)), n_clusters=4).tolist() == [0]


def test_labeled_embedding_must_match_the_pool_dimension():
    with pytest.raises(ValueError, match="labeled_embedding"):
        typiclust(np.zeros((4, 3)), labeled_embedding=np.zeros((2, 5)), n_clusters=2)


# ----------------------------------------------------------------------------- embedding


def test_pixel_embedding_shapes_and_determinism():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 24, 20, 3), dtype=np.uint8)
    first = pixel_embedding(images, size=8, dims=16, seed=3)
    assert first.shape == (40, 16) and first.dtype == np.float32
    np.testing.assert_array_equal(first, pixel_embedding(images, size=8, dims=16, seed=3))
    assert pixel_embedding(images[:5], size=8, dims=16).shape == (5, 5)  # capped at N
    assert pixel_embedding(images[:1]).shape == (1, 0)
    assert pixel_embedding(np.zeros((0, 8, 8), np.uint8)).shape == (0, 0)


def test_pixel_embedding_accepts_pil_images_of_any_mode_and_grayscale_arrays():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(6, 10, 10), dtype=np.uint8)
    pil = [Image.fromarray(g, "L") for g in gray[:3]] + [Image.fromarray(g).convert("RGBA") for g in gray[3:]]
    assert thumbnails(pil, 4).shape == (6, 4, 4, 3)
    assert thumbnails(gray, 4).shape == (6, 4, 4, 1)
    assert pixel_embedding(pil, size=4, dims=3).shape == (6, 3)
    assert pixel_embedding(gray, size=4, dims=3).shape == (6, 3)


def test_pixel_embedding_ignores_brightness_and_contrast():
    rng = np.random.default_rng(2)
    base = rng.integers(60, 160, size=(20, 8, 8), dtype=np.uint8)
    brighter = np.clip(base.astype(int) * 1.5 + 10, 0, 255).astype(np.uint8)
    emb = pixel_embedding(np.concatenate([base, brighter]), size=8, dims=10)
    assert np.allclose(emb[:20], emb[20:], atol=0.25 * np.abs(emb).max())


def test_digits_first_picks_cover_more_classes_than_random(digits):
    images, targets = digits
    embedding = pixel_embedding(images, seed=0)
    order = typiclust_order(embedding, n_clusters=20, seed=0)
    covered = len(set(targets[order[:20]].tolist()))
    random_cover = np.mean(
        [len(set(targets[np.random.default_rng(s).permutation(len(targets))[:20]])) for s in range(5)]
    )
    assert covered >= 9 and covered >= random_cover


def test_registered_as_a_strategy_on_the_score_embedding(outputs_factory):
    outputs = outputs_factory(40)
    ranking = rank("typiclust", outputs, seed=2, budget=6)
    assert is_permutation(ranking.order, 40)
    assert ranking.cluster.shape == (40,) and ranking.cluster.max() < 6
    first = ranking.cluster[ranking.order[:6]]
    assert len(set(first.tolist())) == 6  # one pick per cluster before any repeat


def test_coarse_to_fine_every_prefix_is_a_batch():
    x, ids = blobs([60, 50, 40, 30, 25, 20, 15, 10], spread=0.5)
    plain_first = typiclust_order(x, n_clusters=2, seed=0)[:2]
    order = typiclust_order(x, n_clusters=8, seed=0, start_clusters=2)
    assert is_permutation(order, len(x))
    np.testing.assert_array_equal(order, typiclust_order(x, n_clusters=8, seed=0, start_clusters=2))
    assert order[:2].tolist() == plain_first.tolist()  # the first batch: 2 clusters
    assert len(set(ids[order[:8]].tolist())) == 8  # by 8 picks every blob is covered
    assert (
        typiclust_order(x, n_clusters=8, seed=0, start_clusters=8).tolist()
        == typiclust_order(x, n_clusters=8, seed=0).tolist()
    )  # nothing to refine


def test_coarse_to_fine_respects_labeled_coverage():
    x, ids = blobs([40, 30, 20, 10])
    labeled = x[ids == 0][:2]
    result = typiclust(x, labeled_embedding=labeled, n_clusters=4, seed=0, start_clusters=1)
    assert ids[result.order[0]] != 0 and 0 not in ids[result.order[:3]].tolist()
    assert result.covered.sum() == 1


# ----------------------------------------------------------------------------- pick within clusters


def test_cluster_structure_separates_clusters_from_a_structureless_cloud():
    x, _ = blobs([60, 60, 60, 60, 60], dim=8)
    assert cold_start.cluster_structure(x, 5, seed=0) < 0.2
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(400, 8)) * np.linspace(0.5, 3.0, 8)  # one anisotropic Gaussian
    # correlated dimensions: the reference has the same covariance, so a rotation changes nothing
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    for points in (cloud, cloud @ rotation):
        assert 0.85 < cold_start.cluster_structure(points, 10, seed=0) < 1.15


def test_cluster_structure_of_degenerate_inputs_is_neutral():
    assert cold_start.cluster_structure(np.zeros((1, 4)), 5) == 1.0
    assert cold_start.cluster_structure(np.zeros((10, 0)), 5) == 1.0
    assert cold_start.cluster_structure(np.ones((10, 3)), 5) == 1.0  # no spread
    assert cold_start.cluster_structure(np.random.default_rng(0).normal(size=(10, 3)), 1) == 1.0


def test_stratified_pick_keeps_coverage_but_not_typicality():
    x, ids = blobs([40, 40, 40], spread=1.0)
    typical = typiclust(x, n_clusters=3, seed=0, pick="typical")
    picked = {seed: typiclust(x, n_clusters=3, seed=seed, pick="stratified") for seed in range(4)}
    for result in picked.values():
        assert result.pick == "stratified" and is_permutation(result.order, 120)
        assert sorted(ids[result.order[:3]].tolist()) == [0, 1, 2]  # one of each cluster first
    # the typical pick is each cluster's densest member; random members mostly are not
    densest = typical.typicality[typical.order[:3]]
    assert all(
        densest[i] == typical.typicality[typical.cluster == typical.cluster[j]].max()
        for i, j in enumerate(typical.order[:3])
    )
    # (the blobs are the clusters whatever the seed, so the typical run's typicality applies)
    densest_of = {c: typical.typicality[typical.cluster == c].max() for c in range(3)}
    not_densest = [
        typical.typicality[i] < densest_of[typical.cluster[i]] for r in picked.values() for i in r.order[:3]
    ]
    assert sum(not_densest) >= 6
    assert not picked[0].typicality.any()  # not computed for a stratified pick
    firsts = {tuple(sorted(r.order[:3].tolist())) for r in picked.values()}
    assert len(firsts) > 1  # the draw follows the seed
    np.testing.assert_array_equal(
        picked[0].order, typiclust(x, n_clusters=3, seed=0, pick="stratified").order
    )


def test_auto_pick_follows_the_measured_structure():
    clustered, _ = blobs([50, 50, 50, 50], dim=6)
    cloud = np.random.default_rng(2).normal(size=(200, 6)).astype(np.float32)
    on_clusters = typiclust(clustered, n_clusters=4, seed=0, pick="auto", start_clusters=2)
    on_cloud = typiclust(cloud, n_clusters=4, seed=0, pick="auto", start_clusters=2)
    assert on_clusters.pick == "typical" and on_clusters.structure < cold_start.TYPICAL_MAX_INERTIA_RATIO
    assert on_cloud.pick == "stratified" and on_cloud.structure > cold_start.TYPICAL_MAX_INERTIA_RATIO
    assert typiclust(cloud, n_clusters=4, pick="typical").structure is None  # not measured
    with pytest.raises(ValueError, match="pick"):
        typiclust(cloud, n_clusters=4, pick="densest")


@pytest.mark.parametrize(
    "setting, embedding, expected",
    [
        ("auto", "self_supervised", "stratified"),
        ("auto", "pixels", "auto"),
        ("auto", "backbone", "auto"),
        ("typical", "self_supervised", "typical"),
        ("stratified", "pixels", "stratified"),
    ],
)
def test_the_pick_on_each_embedding(setting, embedding, expected):
    assert cold_start.pick_for(setting, embedding) == expected


def test_an_unknown_embedding_kind_is_refused():
    with pytest.raises(ValueError, match="embedding"):
        cold_start.pick_for("auto", "selfsup")
