"""Cold start, measured by what annotators' first labels are worth: accuracy of a model trained
on the first k tasks of the cold-start ranking (what a cold-start round pushes: TypiClust coarse to
fine on the label-free pixel embedding, model/coldstart.py) vs the first k of a random order.

    scripts/python.sh benchmarks/coldstart_accuracy.py [--domains digits,textures] [--labels 50] [--steps 600]

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
from model.coldstart import pixel_embedding, typiclust_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "benchmarks" / "results" / "coldstart-accuracy"
SEEDS = (0, 1, 2)
CLUSTERS = 50          # QUERY_BATCH_SIZE default
FIRST_CLUSTERS = 10    # backend.pipeline.COLDSTART_FIRST_CLUSTERS


def selections(data: domain_suite.DomainData, k: int, seed: int) -> dict[str, np.ndarray]:
    pool = np.stack([np.asarray(im.convert("RGB")) for im in data.pool_images])
    embedding = pixel_embedding(pool, seed=seed)
    pushed = typiclust_order(embedding, n_clusters=CLUSTERS, seed=seed, start_clusters=FIRST_CLUSTERS)
    return {"random": domain_suite.draw_labeled(len(pool), k, seed), "cold start": pushed[:k]}


def run(domains: list[str], k: int, steps: int) -> list[dict]:
    torch.set_num_threads(1)
    records = []
    for domain in domains:
        data = domain_suite.load_domain_data(domain)
        for seed in SEEDS:
            for method, rows in selections(data, k, seed).items():
                t = time.monotonic()
                result = train([data.pool_images[i] for i in rows], data.pool_targets[rows].tolist(),
                               data.labels, ModelConfig(),
                               TrainConfig(auto_target_steps=steps, seed=seed, device="cpu"))
                metrics = domain_suite.evaluate(result, data, ModelConfig(), "cpu")
                record = {"domain": domain, "method": method, "seed": seed, "labels": k,
                          "classes_covered": int(len(set(data.pool_targets[rows].tolist()))),
                          "accuracy": metrics["accuracy"], "train_s": round(time.monotonic() - t, 1)}
                print(json.dumps(record), flush=True)
                records.append(record)
    return records


def markdown(records: list[dict], k: int, steps: int, classes: dict[str, int]) -> str:
    lines = [f"# Cold start vs random: accuracy after the first {k} labels",
             "",
             f"`python benchmarks/coldstart_accuracy.py --labels {k} --steps {steps}`: the first {k} tasks of "
             "the cold-start ranking (TypiClust coarse to fine on the pixel embedding, what a cold-start "
             f"round pushes) vs {k} at random, each trained with the default recipe at {steps} steps and "
             "tested on the domain suite's 1,000 held-out images. Mean ± std over seeds "
             f"{', '.join(map(str, SEEDS))} (paired).",
             "",
             "| domain (classes) | selection | classes covered | accuracy % | paired gain (points) |",
             "|---|---|---|---|---|"]
    for domain in dict.fromkeys(r["domain"] for r in records):
        by = {m: sorted((r for r in records if r["domain"] == domain and r["method"] == m),
                        key=lambda r: r["seed"]) for m in ("random", "cold start")}
        gains = [100 * (c["accuracy"] - r["accuracy"]) for c, r in zip(by["cold start"], by["random"])]
        for method, rows in by.items():
            acc = np.array([100 * r["accuracy"] for r in rows])
            cov = np.array([r["classes_covered"] for r in rows])
            gain = (f"{np.mean(gains):+.1f} ± {np.std(gains):.1f}" if method == "cold start" else "")
            lines.append(f"| {domain} ({classes[domain]}) | {method} | {cov.mean():.1f} | "
                         f"{acc.mean():.1f} ± {acc.std():.1f} | {gain} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default="digits,textures")
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args(argv)
    domains = [d for d in args.domains.split(",") if d]
    records = run(domains, args.labels, args.steps)
    classes = {d: len(domain_suite.load_domain_data(d).labels) for d in domains}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(records, indent=1))
    text = markdown(records, args.labels, args.steps, classes)
    OUT.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
