"""Cold start, measured by what annotators' first labels are worth: accuracy of a model trained
on the first k tasks of a cold-start ranking (TypiClust coarse to fine on the label-free pixel
embedding, model/coldstart.py) vs the first k of a random order.

    scripts/python.sh benchmarks/coldstart_accuracy.py [--domains digits,textures,shapes,letters]
        [--labels 50] [--steps 600] [--methods random,typical,stratified]

Rankings: ``typical`` (each cluster's most typical member first: TypiClust as published),
``stratified`` (a random member of each cluster first) and ``random``. The backend pushes
``pick="auto"``: typical where the embedding's cluster structure (``cluster_structure``, shown
in the table) is at most ``TYPICAL_MAX_INERTIA_RATIO``, stratified elsewhere; its row is the one
marked "(pushed)". A selection identical to one already trained (same rows) is not trained twice.

Pools and test sets are the domain suite's (benchmarks/domain_suite.py: 1,500 pool images, 1,000
held-out test images per domain, the same split); both selections train with the backend's
default recipe at ``--steps`` optimizer steps (fewer than the default 2,000 so the comparison fits
in minutes on a CPU: it compares selections, the recipe is held equal), seeds paired.
Results: benchmarks/results/coldstart-accuracy.md (and .json).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import domain_suite  # noqa: E402
from model import ModelConfig, TrainConfig, train  # noqa: E402
from model.coldstart import (TYPICAL_MAX_INERTIA_RATIO, cluster_structure,  # noqa: E402
                             pixel_embedding, typiclust_order)

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "benchmarks" / "results" / "coldstart-accuracy"
SEEDS = (0, 1, 2)
CLUSTERS = 50          # QUERY_BATCH_SIZE default
FIRST_CLUSTERS = 10    # backend.pipeline.COLDSTART_FIRST_CLUSTERS


def selections(data: domain_suite.DomainData, k: int, seed: int,
               methods: list[str]) -> tuple[dict[str, np.ndarray], float]:
    """The first k pool rows of each method's ranking, and the embedding's cluster structure."""
    pool = np.stack([np.asarray(im.convert("RGB")) for im in data.pool_images])
    embedding = pixel_embedding(pool, seed=seed)
    chosen = {}
    for method in methods:
        if method == "random":
            chosen[method] = domain_suite.draw_labeled(len(pool), k, seed)
        else:
            chosen[method] = typiclust_order(embedding, n_clusters=CLUSTERS, seed=seed,
                                             start_clusters=FIRST_CLUSTERS, pick=method)[:k]
    return chosen, cluster_structure(embedding, CLUSTERS, seed)


def run(domains: list[str], k: int, steps: int, methods: list[str]) -> list[dict]:
    torch.set_num_threads(1)
    records = []
    for domain in domains:
        data = domain_suite.load_domain_data(domain)
        for seed in SEEDS:
            chosen, structure = selections(data, k, seed, methods)
            trained: dict[tuple, dict] = {}
            for method, rows in chosen.items():
                key = tuple(sorted(rows.tolist()))
                if key not in trained:
                    t = time.monotonic()
                    result = train([data.pool_images[i] for i in rows],
                                   data.pool_targets[rows].tolist(), data.labels, ModelConfig(),
                                   TrainConfig(auto_target_steps=steps, seed=seed, device="cpu"))
                    metrics = domain_suite.evaluate(result, data, ModelConfig(), "cpu")
                    trained[key] = {"accuracy": metrics["accuracy"],
                                    "train_s": round(time.monotonic() - t, 1)}
                record = {"domain": domain, "method": method, "seed": seed, "labels": k,
                          "classes_covered": int(len(set(data.pool_targets[rows].tolist()))),
                          "structure": round(structure, 3), **trained[key]}
                print(json.dumps(record), flush=True)
                records.append(record)
    return records


def pushed_method(structure: float) -> str:
    """What the backend's ``pick="auto"`` chooses for this cluster structure."""
    return "typical" if structure <= TYPICAL_MAX_INERTIA_RATIO else "stratified"


def markdown(records: list[dict], k: int, steps: int, classes: dict[str, int],
             methods: list[str]) -> str:
    lines = [f"# Cold start vs random: accuracy after the first {k} labels",
             "",
             f"`scripts/python.sh benchmarks/coldstart_accuracy.py --labels {k} --steps {steps} "
             f"--domains {','.join(classes)} --methods {','.join(methods)}`: the first {k} tasks "
             "of each cold-start ranking (TypiClust coarse to fine on the pixel embedding, each "
             "cluster's most typical member first (`typical`) or a random member (`stratified`)) vs "
             f"{k} at random, each trained with the default recipe at {steps} steps and tested on "
             "the domain suite's 1,000 held-out images. Mean ± std over seeds "
             f"{', '.join(map(str, SEEDS))} (paired). `structure`: the pixel embedding's "
             "cluster structure (k-means inertia over a same-covariance Gaussian's; "
             f"`pick=\"auto\"` takes `typical` at or below {TYPICAL_MAX_INERTIA_RATIO}, else "
             "`stratified`); \"(pushed)\" marks what a cold-start round pushes.",
             "",
             "| domain (classes) | structure | selection | classes covered | accuracy % | "
             "paired gain vs random (points) |",
             "|---|---|---|---|---|---|"]
    for domain in dict.fromkeys(r["domain"] for r in records):
        mine = [r for r in records if r["domain"] == domain]
        structure = float(np.mean([r["structure"] for r in mine]))
        by = {m: sorted((r for r in mine if r["method"] == m), key=lambda r: r["seed"])
              for m in methods}
        for method, rows in by.items():
            if not rows:    # a method this domain was not run with
                continue
            acc = np.array([100 * r["accuracy"] for r in rows])
            cov = np.array([r["classes_covered"] for r in rows])
            gain = ""
            if method != "random" and "random" in by:
                gains = [100 * (c["accuracy"] - r["accuracy"]) for c, r in zip(rows, by["random"])]
                gain = f"{np.mean(gains):+.1f} ± {np.std(gains):.1f}"
            pushed = " (pushed)" if method == pushed_method(structure) else ""
            lines.append(f"| {domain} ({classes[domain]}) | {structure:.2f} | {method}{pushed} | "
                         f"{cov.mean():.1f} | {acc.mean():.1f} ± {acc.std():.1f} | {gain} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default="digits,textures,shapes,letters")
    parser.add_argument("--methods", default="random,typical,stratified")
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args(argv)
    domains = [d for d in args.domains.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    records = run(domains, args.labels, args.steps, methods)
    classes = {d: len(domain_suite.load_domain_data(d).labels) for d in domains}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(records, indent=1))
    text = markdown(records, args.labels, args.steps, classes, methods)
    OUT.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
