"""Cold start, explained: a cold-start ranking covers classes faster than random only where the
embedding's neighbours share a class. No labels and no training.

    scripts/python.sh benchmarks/coldstart_purity.py [--embeddings pixels,gradients,selfsup]
        [--domains digits,mnist,shapes,letters,textures,photos] [--out benchmarks/results/coldstart-purity.md]

For every domain of the domain suite, seed (5) and pool shape:

* ``balanced``: POOL images drawn at random from the suite's pool (classes about equal);
* ``long-tailed``: each class's share falls geometrically from the largest to the smallest,
  TAIL_RATIO : 1 (which class is rare changes with the seed), as in many real projects;

and every embedding:

* ``pixels``: what a cold-start round ranks on without weights (``model.pixel_pca.pixel_embedding``);
* ``gradients``: histograms of oriented gradients (scikit-image's HOG on 32 px grey images,
  4 x 4 cells, 9 orientations), standardised, PCA to 64: hand-made features that see edges and
  form rather than where the ink is, free to compute;
* ``selfsup``: the domain suite's self-supervised backbone of the domain (learned on its pool at
  SELF_SUPERVISED_STEPS' default, and kept; learned here when missing, minutes per domain), rows
  scaled to unit length;

it reports:

* **10-NN agreement**: the share of each image's 10 nearest neighbours (Euclidean) that have its
  class. It measures what TypiClust assumes: that the embedding's clusters are the classes.
* **classes in the first 10 and 20 picks** of the ranking a cold-start round pushes (TypiClust
  into QUERY_BATCH_SIZE clusters, coarse to fine from 10, COLDSTART_PICK=auto as
  ``model.cold_start.pick_for`` makes it for the embedding), against the
  **expected** number a random order covers on the same pool (exact, no sampling noise:
  sum over classes of 1 - C(N - n_c, k) / C(N, k)). Gain: mean over seeds of picks minus
  expectation, ± std.

Single-threaded; pixels and gradients take about a minute per domain.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "coldstart-purity.md"
DOMAINS = ("digits", "mnist", "shapes", "letters", "textures", "photos")
EMBEDDINGS = ("pixels", "gradients", "selfsup")
SEEDS = (0, 1, 2, 3, 4)
POOL = 1000  # images of a balanced pool (drawn from the suite's pool of 1,500)
TAIL_RATIO = 10  # largest class : smallest class in a long-tailed pool
NEIGHBOURS = 10  # k of the k-NN agreement
COVERAGE_AT = (10, 20)
HOG_SIZE = 32  # px the gradient embedding reads
HOG_CELLS = 4  # cells per side
HOG_ORIENTATIONS = 9
DIMS = 64  # PCA dimensions of the gradient embedding (as of the pixel embedding)


# ------------------------------------------------------------------------- pure measurements


def expected_random_coverage(class_sizes, k: int) -> float:
    """Expected number of distinct classes among ``k`` items drawn without replacement from a
    pool with these class sizes: sum over classes of 1 - C(N - n_c, k) / C(N, k)."""
    sizes = [int(s) for s in class_sizes if s > 0]
    n = sum(sizes)
    k = min(int(k), n)
    if k <= 0:
        return 0.0
    total = math.comb(n, k)
    return float(sum(1 - math.comb(n - s, k) / total for s in sizes))


def knn_agreement(embedding: np.ndarray, targets: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Share of each item's ``k`` nearest neighbours (itself excluded) with its class, averaged."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embedding, dtype=np.float32)
    y = np.asarray(targets)
    k = min(k, len(x) - 1)
    if k < 1:
        raise ValueError("knn_agreement needs at least 2 items")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    # the first neighbour is the item itself, except for exact duplicates; drop it by identity
    agree = [np.mean(y[[j for j in row if j != i][:k]] == y[i]) for i, row in enumerate(idx)]
    return float(np.mean(agree))


def long_tailed_rows(targets: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Rows of a long-tailed subset: classes in a random order keep all, ..., 1/ratio of their
    items, falling geometrically (at least 2 each); sorted."""
    y = np.asarray(targets)
    classes = rng.permutation(np.unique(y))
    keep = []
    for rank, c in enumerate(classes):
        rows = np.flatnonzero(y == c)
        share = ratio ** (-rank / max(len(classes) - 1, 1))
        keep.append(rng.choice(rows, max(2, int(round(len(rows) * share))), replace=False))
    return np.sort(np.concatenate(keep))


def gradient_embedding(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """HOG of each image (grey, HOG_SIZE px), standardised per feature, PCA to DIMS."""
    from skimage.feature import hog
    from sklearn.decomposition import PCA

    from model.pixel_pca import thumbnails

    grey = thumbnails(images, HOG_SIZE).astype(np.float32).mean(-1) / 255.0
    cell = HOG_SIZE // HOG_CELLS
    features = np.stack(
        [
            hog(
                g,
                orientations=HOG_ORIENTATIONS,
                pixels_per_cell=(cell, cell),
                cells_per_block=(2, 2),
                feature_vector=True,
            )
            for g in grey
        ]
    )
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    dims = min(DIMS, *features.shape)
    return PCA(n_components=dims, random_state=seed).fit_transform(features).astype(np.float32)


# ------------------------------------------------------------------------------------ runs


def selfsup_embedding(domain: str, data) -> np.ndarray:
    """The domain's self-supervised embedding of its pool, as the cold-start accuracy benchmark
    computes it (learned weights at SELF_SUPERVISED_STEPS' default, rows at unit length)."""
    from benchmarks import coldstart_accuracy

    config = coldstart_accuracy.start_config(domain, data, "selfsup")
    return coldstart_accuracy.pool_embedding(data, "selfsup", config, seed=0)


def pools(targets: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    balanced = np.sort(rng.choice(len(targets), min(POOL, len(targets)), replace=False))
    return {"balanced": balanced, "long-tailed": long_tailed_rows(targets, TAIL_RATIO, rng)}


def run(domains, embeddings) -> list[dict]:
    from backend.rounds.cold_start import COLD_START_FIRST_CLUSTERS
    from backend.settings import Settings
    from benchmarks import domain_suite
    from model.cold_start import pick_for, typiclust_order
    from model.pixel_pca import pixel_embedding

    clusters = Settings().query_batch_size  # a cold-start round's clusters, by default

    records = []
    for domain in domains:
        data = domain_suite.load_domain_data(domain)
        images = np.stack([np.asarray(im.convert("RGB")) for im in data.pool_images])
        targets = np.asarray(data.pool_targets)
        # a learned backbone embeds each image the same whatever the pool: once per domain
        learned = selfsup_embedding(domain, data) if "selfsup" in embeddings else None
        for seed in SEEDS:
            for pool_kind, rows in pools(targets, seed).items():
                y = targets[rows]
                sizes = np.bincount(y, minlength=len(data.labels))
                for name in embeddings:
                    if name == "pixels":
                        x = pixel_embedding(images[rows], seed=seed)
                    elif name == "gradients":
                        x = gradient_embedding(images[rows], seed=seed)
                    else:
                        assert learned is not None  # learned above whenever "selfsup" is asked
                        x = learned[rows]
                    # the pick a cold-start round makes on this kind of embedding
                    pick = pick_for("auto", "self_supervised" if name == "selfsup" else "pixels")
                    order = typiclust_order(
                        x, n_clusters=clusters, seed=seed, start_clusters=COLD_START_FIRST_CLUSTERS, pick=pick
                    )
                    record = {
                        "domain": domain,
                        "pool": pool_kind,
                        "embedding": name,
                        "seed": seed,
                        "pool_size": int(len(rows)),
                        "classes": len(data.labels),
                        "knn_agreement": round(knn_agreement(x, y), 4),
                    }
                    for k in COVERAGE_AT:
                        record[f"covered_at_{k}"] = int(len(set(y[order[:k]].tolist())))
                        record[f"random_at_{k}"] = round(expected_random_coverage(sizes, k), 3)
                    print(json.dumps(record), flush=True)
                    records.append(record)
    return records


def markdown(records: list[dict], seconds: float) -> str:
    lines = [
        "# Cold start: where it beats random, and why",
        "",
        "`scripts/python.sh benchmarks/coldstart_purity.py` (module doc): for each domain, pool",
        f"shape ({POOL} images drawn at random, or long-tailed {TAIL_RATIO}:1) and embedding, the",
        f"share of each image's {NEIGHBOURS} nearest neighbours with its class, and the classes in",
        "the first 10 and 20 picks of the ranking a cold-start round pushes against the exact",
        f"expectation of a random order on the same pool. Mean over seeds {', '.join(map(str, SEEDS))};",
        f"gain ± std over seeds. Measured in {seconds:.0f} s.",
        "",
        "| domain | pool | embedding | 10-NN agreement | first 10: picked / random | gain | "
        "first 20: picked / random | gain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["domain"], r["pool"], r["embedding"]), []).append(r)
    for (domain, pool_kind, name), rows in groups.items():
        cells = [f"{np.mean([r['knn_agreement'] for r in rows]):.2f}"]
        for k in COVERAGE_AT:
            picked = np.array([r[f"covered_at_{k}"] for r in rows], dtype=float)
            expected = np.array([r[f"random_at_{k}"] for r in rows])
            gain = picked - expected
            cells += [
                f"{picked.mean():.1f} / {expected.mean():.1f}",
                f"{gain.mean():+.1f} ± {gain.std():.1f}",
            ]
        lines.append(
            f"| {domain} ({rows[0]['classes']}) | {pool_kind} | {name} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--embeddings", default=",".join(EMBEDDINGS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    embeddings = [e for e in args.embeddings.split(",") if e]
    unknown = set(embeddings) - set(EMBEDDINGS)
    if unknown:
        parser.error(f"unknown embeddings {sorted(unknown)}; choose from {EMBEDDINGS}")
    import torch

    torch.set_num_threads(1)
    started = time.monotonic()
    records = run([d for d in args.domains.split(",") if d], embeddings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    text = markdown(records, time.monotonic() - started)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
