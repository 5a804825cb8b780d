"""Cold start, measured by what annotators' first labels are worth: accuracy of a model trained
on the first k tasks of a cold-start ranking (TypiClust coarse to fine on the label-free pixel
embedding, model/cold_start.py) vs the first k of a random order.

    scripts/python.sh benchmarks/coldstart_accuracy.py [--domains digits,textures,shapes,letters]
        [--labels 50] [--steps 600] [--methods random,typical,stratified]
        [--embedding pixels|selfsup|transfer]

Rankings: ``typical`` (each cluster's most typical member first: TypiClust as published),
``stratified`` (a random member of each cluster first) and ``random``. The backend pushes
``pick="auto"``: stratified on the self-supervised embedding; elsewhere typical where the
embedding's cluster structure (``cluster_structure``, shown in the table) is at most
``TYPICAL_MAX_INERTIA_RATIO``, stratified otherwise; its row is the one marked "(pushed)". A selection identical to one already trained (same rows) is not trained twice.

``--embedding``: what the rankings cluster, and what every selection trains from.
``pixels`` (what a cold-start round ranks on without configured weights): the label-free pixel
embedding, training from a random start. ``selfsup``: the L2-normalised embedding of the
domain's self-supervised backbone (``domain_suite.selfsup_weights``, 1,000 steps, learned once
on the pool and shared with the suite's ``selfsup_init`` recipe), training from those weights as
a project's first trained round does; what a cold-start round ranks on once the project's
self-supervised weights are learned (docs/how-it-works.md, "Cold start"), with the stratified pick.
``transfer``: the embedding of a pretrained file made here
(``domain_suite.transfer_weights``: the backbone trained supervised on other domains), as a
cold-start round ranks on configured pretrained weights (raw, as the backend embeds), and every
selection trains from those weights, as the first trained round does with such weights at 32 px
(``TRAIN_MODE=auto``, ``FULL_TRAINING_MAX_IMAGE_SIZE``). ``--report-only`` redraws the table from
the JSON.

Pools and test sets are the domain suite's (benchmarks/domain_suite.py: 1,500 pool images, 1,000
held-out test images per domain, the same split); both selections train with the backend's
default recipe at ``--steps`` optimizer steps (fewer than the default 2,000 so the comparison fits
in minutes on a CPU: it compares selections, the recipe is held equal), seeds paired.
Results: benchmarks/results/coldstart-accuracy.md (and .json); with ``--embedding selfsup``,
benchmarks/results/coldstart-accuracy-selfsup.md (and .json), and so on.
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
from model import ModelConfig, TrainConfig, build_network, score, train  # noqa: E402
from model.cold_start import (  # noqa: E402
    TYPICAL_MAX_INERTIA_RATIO,
    cluster_structure,
    pick_for,
    typiclust_order,
)
from model.pixel_pca import pixel_embedding  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "benchmarks" / "results" / "coldstart-accuracy"
SEEDS = (0, 1, 2)
CLUSTERS = 50  # QUERY_BATCH_SIZE default
FIRST_CLUSTERS = 10  # backend.rounds.cold_start.COLD_START_FIRST_CLUSTERS
SELFSUP_STEPS = 1000  # SELF_SUPERVISED_STEPS default
COVERAGE_AT = (10, 20)  # prefixes whose class coverage is reported besides --labels
TRANSFER_STEPS = 2000  # domain_suite's transfer recipes
EMBEDDINGS = ("pixels", "selfsup", "transfer")
# the kind of embedding each stands for in a cold-start round (model.cold_start.EMBEDDINGS)
BACKEND_EMBEDDING = {"pixels": "pixels", "selfsup": "self_supervised", "transfer": "backbone"}


def out_path(embedding: str) -> Path:
    return OUT if embedding == "pixels" else OUT.with_name(f"{OUT.name}-{embedding}")


def start_config(domain: str, data: domain_suite.DomainData, embedding: str) -> ModelConfig:
    """The model every selection of ``domain`` trains from: a random start for ``pixels``, the
    domain's self-supervised weights for ``selfsup``, the pretrained file made on other domains
    for ``transfer``."""
    if embedding == "pixels":
        return ModelConfig()
    if embedding == "transfer":
        weights = domain_suite.transfer_weights(
            domain, ModelConfig(), TRANSFER_STEPS, domain_suite.RESULTS_DIR, "cpu"
        )
    else:
        weights = domain_suite.selfsup_weights(
            domain, data, ModelConfig(), SELFSUP_STEPS, domain_suite.RESULTS_DIR, "cpu"
        )
    return ModelConfig(pretrained_weights=str(weights))


def pool_embedding(
    data: domain_suite.DomainData, embedding: str, model_config: ModelConfig, seed: int
) -> np.ndarray:
    if embedding == "pixels":
        pool = np.stack([np.asarray(im.convert("RGB")) for im in data.pool_images])
        return pixel_embedding(pool, seed=seed)
    network = build_network(model_config, num_classes=len(data.labels))
    features = score(network, data.pool_images, model_config, batch_size=256, device="cpu").embedding.astype(
        np.float32
    )
    if embedding != "selfsup":
        return features  # as the backend's cold start embeds configured pretrained weights
    # a contrastive backbone is trained on cosine similarity: directions, not norms, carry what
    # it learned, so each row is scaled to unit length
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-8)


def selections(
    data: domain_suite.DomainData, k: int, seed: int, methods: list[str], embedding: np.ndarray
) -> tuple[dict[str, np.ndarray], float]:
    """The first k pool rows of each method's ranking, and the embedding's cluster structure."""
    chosen = {}
    for method in methods:
        if method == "random":
            chosen[method] = domain_suite.draw_labeled(len(embedding), max(k, *COVERAGE_AT), seed)
        else:
            chosen[method] = typiclust_order(
                embedding, n_clusters=CLUSTERS, seed=seed, start_clusters=FIRST_CLUSTERS, pick=method
            )
    return chosen, cluster_structure(embedding, CLUSTERS, seed)


def classes_in(data: domain_suite.DomainData, rows: np.ndarray) -> int:
    return int(len(set(data.pool_targets[rows].tolist())))


def run(
    domains: list[str],
    k: int,
    steps: int,
    methods: list[str],
    embedding_kind: str = "pixels",
    seeds: tuple[int, ...] = SEEDS,
) -> list[dict]:
    torch.set_num_threads(1)
    records = []
    for domain in domains:
        data = domain_suite.load_domain_data(domain)
        model_config = start_config(domain, data, embedding_kind)
        # a learned backbone embeds the pool the same way for every seed: once per domain
        learned = (
            None if embedding_kind == "pixels" else pool_embedding(data, embedding_kind, model_config, seed=0)
        )
        for seed in seeds:
            embedding = (
                learned if learned is not None else pool_embedding(data, embedding_kind, model_config, seed)
            )
            chosen, structure = selections(data, k, seed, methods, embedding)
            trained: dict[tuple, dict] = {}
            for method, ranking in chosen.items():
                rows = ranking[:k]
                key = tuple(sorted(rows.tolist()))
                if key not in trained:
                    t = time.monotonic()
                    result = train(
                        [data.pool_images[i] for i in rows],
                        data.pool_targets[rows].tolist(),
                        data.labels,
                        model_config,
                        TrainConfig(auto_target_steps=steps, seed=seed, device="cpu"),
                    )
                    metrics = domain_suite.evaluate(result, data, model_config, "cpu")
                    trained[key] = {
                        "accuracy": metrics["accuracy"],
                        "train_s": round(time.monotonic() - t, 1),
                    }
                record = {
                    "domain": domain,
                    "classes": len(data.labels),
                    "method": method,
                    "seed": seed,
                    "labels": k,
                    "embedding": embedding_kind,
                    "classes_covered": classes_in(data, rows),
                    **{f"classes_covered_at_{n}": classes_in(data, ranking[:n]) for n in COVERAGE_AT},
                    "structure": round(structure, 3),
                    **trained[key],
                }
                print(json.dumps(record), flush=True)
                records.append(record)
    return records


def pushed_method(structure: float, embedding: str) -> str:
    """What the backend's cold-start round (``COLDSTART_PICK=auto``) pushes for this embedding and
    cluster structure (``model.cold_start.pick_for``, then the structure rule)."""
    pick = pick_for("auto", BACKEND_EMBEDDING[embedding])
    if pick != "auto":
        return pick
    return "typical" if structure <= TYPICAL_MAX_INERTIA_RATIO else "stratified"


def coverage_cell(rows: list[dict], n: int) -> str:
    """Mean classes among the first ``n`` picks; "–" for runs recorded before it was measured."""
    values = [r[f"classes_covered_at_{n}"] for r in rows if f"classes_covered_at_{n}" in r]
    return f"{np.mean(values):.1f}" if len(values) == len(rows) else "–"


def markdown(records: list[dict], k: int, steps: int, methods: list[str], embedding: str) -> str:
    domains = list(dict.fromkeys(r["domain"] for r in records))
    if embedding == "pixels":
        what = (
            "TypiClust coarse to fine on the label-free pixel embedding; every selection "
            "trains from a random start"
        )
    elif embedding == "transfer":
        what = (
            "TypiClust coarse to fine on the embedding of a pretrained file made on other "
            "domains (`domain_suite.transfer_weights`), as a cold-start round ranks on "
            "configured pretrained weights; every selection trains from those weights, as a "
            "project's first trained round does with them at 32 px"
        )
    else:
        what = (
            "TypiClust coarse to fine on the L2-normalised embedding of the domain's "
            f"self-supervised backbone ({SELFSUP_STEPS} steps on the pool); every selection "
            "trains from those weights, as a project's first trained round does"
        )
    coverage_heads = " | ".join(f"classes in first {n}" for n in COVERAGE_AT)
    lines = [
        f"# Cold start vs random: accuracy after the first {k} labels ({embedding})",
        "",
        f"`scripts/python.sh benchmarks/coldstart_accuracy.py --embedding {embedding} "
        f"--labels {k} --steps {steps} --domains {','.join(domains)} "
        f"--methods {','.join(methods)}`: the first {k} tasks of each cold-start ranking "
        f"({what}; each cluster's most typical member first (`typical`) or a random member "
        f"(`stratified`)) vs {k} at random, each trained with the default recipe at {steps} "
        "steps and tested on the domain suite's 1,000 held-out images. Mean ± std over seeds "
        f"{seeds_text(records)} (paired; more seeds of a domain: `--seeds`). `structure`: the "
        "embedding's cluster "
        'structure (k-means inertia over a same-covariance Gaussian\'s); "(pushed)" marks '
        "what a cold-start round pushes (model.cold_start.pick_for and module doc)."
        + (
            ' "–": not recorded (runs made before the benchmark reported the first 10 and 20).'
            if any(coverage_cell([r], n) == "–" for r in records for n in COVERAGE_AT)
            else ""
        ),
        "",
        f"| domain (classes) | structure | selection | {coverage_heads} | classes in first "
        f"{k} | accuracy % | paired gain vs random (points) |",
        "|---|---|---|" + "---|" * len(COVERAGE_AT) + "---|---|---|",
    ]
    for domain in domains:
        mine = [r for r in records if r["domain"] == domain]
        structure = float(np.mean([r["structure"] for r in mine]))
        by = {m: sorted((r for r in mine if r["method"] == m), key=lambda r: r["seed"]) for m in methods}
        for method, rows in by.items():
            if not rows:  # a method this domain was not run with
                continue
            acc = np.array([100 * r["accuracy"] for r in rows])
            coverage = " | ".join(coverage_cell(rows, n) for n in COVERAGE_AT)
            cov = np.array([r["classes_covered"] for r in rows])
            gain = ""
            if method != "random" and "random" in by:
                gains = [
                    100 * (c["accuracy"] - r["accuracy"]) for c, r in zip(rows, by["random"], strict=False)
                ]
                gain = f"{np.mean(gains):+.1f} ± {np.std(gains):.1f}"
            pushed = " (pushed)" if method == pushed_method(structure, embedding) else ""
            lines.append(
                f"| {domain} ({rows[0]['classes']}) | {structure:.2f} | {method}{pushed} "
                f"| {coverage} | {cov.mean():.1f} | {acc.mean():.1f} ± {acc.std():.1f} "
                f"| {gain} |"
            )
    return "\n".join(lines) + "\n"


def seeds_text(records: list[dict]) -> str:
    """The seeds of the table: one list when every domain has the same, else per domain."""
    by_domain = {
        d: sorted({r["seed"] for r in records if r["domain"] == d})
        for d in dict.fromkeys(r["domain"] for r in records)
    }
    lists = {tuple(s) for s in by_domain.values()}
    if len(lists) <= 1:
        return ", ".join(map(str, next(iter(lists), SEEDS)))
    return "; ".join(f"{d} {', '.join(map(str, s))}" for d, s in by_domain.items())


def merged(new: list[dict], path: Path) -> list[dict]:
    """``new`` with the records already at ``path`` for other domains or seeds (runs of different
    domains, or more seeds of a domain, share one table)."""
    if not path.exists():
        return new
    ran = {(r["domain"], r["seed"]) for r in new}
    return [r for r in json.loads(path.read_text()) if (r["domain"], r["seed"]) not in ran] + new


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", default="digits,textures,shapes,letters")
    parser.add_argument("--methods", default="random,typical,stratified")
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="pixels")
    parser.add_argument(
        "--seeds",
        default=",".join(map(str, SEEDS)),
        help="seeds to run (added to the table's other seeds of the domain)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="redraw the table from the JSON, training nothing"
    )
    args = parser.parse_args(argv)
    domains = [d for d in args.domains.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    out = out_path(args.embedding)
    seeds = tuple(int(s) for s in args.seeds.split(",") if s)
    new = [] if args.report_only else run(domains, args.labels, args.steps, methods, args.embedding, seeds)
    records = merged(new, out.with_suffix(".json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(records, indent=1))
    text = markdown(records, args.labels, args.steps, methods, args.embedding)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
